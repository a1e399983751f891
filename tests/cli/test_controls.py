"""The command line end to end: controls."""

import numpy as np
import torch

import pyprobvae as ppv
from pyprobvae.cli import main
from pyprobvae.runs import Run


def test_cli_traverse_orders_by_kl_and_sample_temperature(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--epochs", "3", "--hidden", "16", "--latent-dim", "3", "--iwae-samples", "5",
                 "--quiet", "--out", out]) == 0
    assert main(["traverse", out, "--dims", "2", "--steps", "4", "--out", str(tmp_path / "t.npy")]) == 0
    strips = np.load(tmp_path / "t.npy")
    assert strips.shape == (2, 4, 1, 8, 8)
    run = Run(out)
    kl = ppv.evaluation.metrics.kl_per_dimension(run.model, run.model_data("test"))
    top = int(kl.argmax())
    expected = run.model.traverse(run.model_data("test")[:1], [top], torch.linspace(-3, 3, 4))
    np.testing.assert_allclose(strips[0], expected[0].numpy(), rtol=1e-5, atol=1e-6)
    assert main(["sample", out, "--temperature", "0", "--n", "3", "--out", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    np.testing.assert_allclose(samples, samples[:1].repeat(3, 0))
    assert main(["traverse", out, "--index", "9999", "--out", str(tmp_path / "t.png")]) == 2
    assert "test example 9999 does not exist" in capsys.readouterr().err
