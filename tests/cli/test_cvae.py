"""The command line end to end: cvae."""

import json
import math
import os

import numpy as np
import pytest
import torch

from pyprobvae.cli import main
from pyprobvae.models import ConditionalVAE
from pyprobvae.runs import Run


@pytest.mark.slow
def test_cvae_samples_are_classified_as_their_class(tmp_path):
    """The issue's claim: samples of class y look like y. Chance is 0.1; 1000 samples, SE <= 0.016."""
    out = str(tmp_path / "cvae")
    assert main(["train", "--model", "cvae", "--epochs", "40", "--iwae-samples", "10", "--quiet", "--out", out]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        scores = json.load(f)["sample_scores"]["prior"]
    assert scores["conditional_accuracy"] > 0.6  # seeds 0-7: 0.85-0.93, mean 0.89, sd 0.03; margin 10 sd
    # and every class is produced: the histogram entropy is near log 10
    assert scores["class_entropy"] > 0.9 * math.log(10)  # seeds 0-7: 0.993-0.996 log 10, sd 0.001 log 10; margin > 90 sd
    for name in ("samples.png", "class_interpolation.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0


def test_cli_cvae(tmp_path, capsys):
    out = str(tmp_path / "cvae")
    assert main(["train", "--model", "cvae", "--prior", "learned", "--epochs", "2", "--hidden", "16",
                 "--latent-dim", "2", "--iwae-samples", "5", "--quiet", "--out", out]) == 0
    run = Run(out)
    assert isinstance(run.model, ConditionalVAE) and run.model.config.prior == "learned"
    assert main(["sample", out, "--label", "3", "--n", "4", "--out", str(tmp_path / "three.npy")]) == 0
    torch.manual_seed(0)
    expected = run.model.sample(4, temperature=1.0, y=torch.full((4,), 3))
    np.testing.assert_allclose(np.load(tmp_path / "three.npy"), expected.numpy(), rtol=1e-5, atol=1e-6)
    # without --label: every class, --n rounded up to a multiple of 10
    assert main(["sample", out, "--n", "15", "--out", str(tmp_path / "grid.npy")]) == 0
    assert np.load(tmp_path / "grid.npy").shape == (20, 1, 8, 8)
    assert main(["interpolate", out, "--classes", "1,7", "--pairs", "2", "--steps", "4",
                 "--out", str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape == (2, 4, 1, 8, 8)
    for verb in (["interpolate", out], ["traverse", out], ["reconstruct", out]):
        assert main(verb + ["--out", str(tmp_path / f"{verb[0]}.png")]) == 0
    assert main(["encode", out, "--out", str(tmp_path / "z.npy")]) == 0
    capsys.readouterr()
    assert main(["sample", out, "--label", "10", "--out", str(tmp_path / "x.png")]) == 2
    assert "label 10 is outside the model's classes 0 to 9" in capsys.readouterr().err
    assert main(["interpolate", out, "--classes", "1,x", "--out", str(tmp_path / "x.png")]) == 2
    assert "expected comma-separated integers" in capsys.readouterr().err
    assert main(["interpolate", out, "--classes", "1,2,3", "--out", str(tmp_path / "x.png")]) == 2
    assert "--classes takes two classes A,B, got 1,2,3" in capsys.readouterr().err

    vae = str(tmp_path / "vae")
    assert main(["train", "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--iwae-samples", "5",
                 "--quiet", "--out", vae]) == 0
    capsys.readouterr()
    assert main(["sample", vae, "--label", "3", "--out", str(tmp_path / "x.png")]) == 2
    assert "unconditional and takes no label" in capsys.readouterr().err
    assert main(["interpolate", vae, "--classes", "1,2", "--out", str(tmp_path / "x.png")]) == 2
    assert "--classes needs a conditional run" in capsys.readouterr().err
    assert main(["train", "--prior", "learned", "--epochs", "1", "--quiet", "--out", str(tmp_path / "y")]) == 2
    assert "needs the conditional VAE" in capsys.readouterr().err
