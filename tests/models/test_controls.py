"""Controlled sampling: temperature and latent traversals."""

import numpy as np
import pyro
import pytest
import torch

import pyprobvae as ppv
from pyprobvae.cli import main
from pyprobvae.runs import Run


def _vae(kind="vae"):
    pyro.set_rng_seed(0)
    return ppv.build_vae((1, 8, 8), model=kind, latent_dim=3, hidden=[16], likelihood="categorical", num_levels=17)


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_temperature_zero_decodes_the_mean_and_scales_the_spread(kind, monkeypatch):
    model = _vae(kind)
    zero = model.sample(5, temperature=0.0)
    torch.testing.assert_close(zero, model.decode(torch.zeros(5, 3)).expand_as(zero))
    monkeypatch.setattr(model, "_decode", lambda z, condition: z)
    torch.manual_seed(0)
    codes = model.sample(20000, temperature=0.5)
    # z_T = 0.5 z with z ~ N(0, I): standard deviation 0.5 (standard error ~0.0025)
    assert torch.allclose(codes.std(0), torch.full((3,), 0.5), atol=0.0125)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.sample(2, temperature=-0.1)


def test_traverse_varies_one_dimension_at_a_time(monkeypatch):
    model = _vae()
    x = ppv.load_dataset("digits", "test").x[:1]
    code = model.encode(x)[0]
    # a "decoder" that writes the code into the first pixels, so the output shows the codes it got
    monkeypatch.setattr(model, "_decode", lambda z, condition: torch.nn.functional.pad(z, (0, 61)).reshape(-1, 1, 8, 8))
    values = torch.linspace(-2, 2, 5)
    codes = model.traverse(x, [2, 0], values).reshape(2, 5, 64)[..., :3]
    for row, d in enumerate([2, 0]):
        torch.testing.assert_close(codes[row, :, d], values)
        others = [j for j in range(3) if j != d]
        torch.testing.assert_close(codes[row][:, others], code[others].expand(5, 2))
    with pytest.raises(ValueError, match="one input"):
        model.traverse(ppv.load_dataset("digits", "test").x[:2], [0], values)
    with pytest.raises(ValueError, match=r"latent dimensions must lie in \[0, 3\)"):
        model.traverse(x, [3], values)


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
