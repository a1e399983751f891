"""The command line end to end: autoencoder."""

import json
import os

import numpy as np
import pytest

from pyprobvae.cli import main
from pyprobvae.runs import Run


@pytest.mark.slow
def test_random_codes_of_the_autoencoder_score_worse_than_vae_samples(tmp_path):
    """The seed's claim, measured: decoding z ~ N(0, I) through an autoencoder is far from the data."""
    scores = {}
    for kind in ("vae", "ae"):
        out = str(tmp_path / kind)
        assert main(["train", "--model", kind, "--epochs", "30", "--iwae-samples", "10", "--quiet", "--out", out]) == 0
        with open(os.path.join(out, "metrics.json")) as f:
            scores[kind] = json.load(f)["sample_scores"]
    vae, ae = scores["vae"]["prior"], scores["ae"]["standard_normal"]
    assert ae["frechet_distance"] > 1.5 * vae["frechet_distance"]
    # a Gaussian fitted to the autoencoder's codes repairs much of it
    assert scores["ae"]["fitted_gaussian"]["frechet_distance"] < ae["frechet_distance"]


def test_cli_autoencoder(tmp_path, capsys):
    out = str(tmp_path / "ae")
    assert main(["train", "--model", "ae", "--epochs", "1", "--hidden", "16", "--latent-dim", "2",
                 "--iwae-samples", "5", "--quiet", "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-2])
    assert summary["test_nll"] is None
    for codes in ("standard", "fitted"):
        path = str(tmp_path / f"{codes}.npy")
        assert main(["sample", out, "--codes", codes, "--n", "5", "--out", path]) == 0
        assert np.load(path).shape == (5, 1, 8, 8)
    assert Run(out).model.config.model == "ae"
    assert main(["train", "--model", "ae", "--guide", "flow", "--epochs", "1", "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "point guide" in capsys.readouterr().err


def test_cli_codes_needs_an_autoencoder(tmp_path, capsys):
    out = str(tmp_path / "vae")
    assert main(["train", "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--iwae-samples", "5",
                 "--quiet", "--out", out]) == 0
    assert main(["sample", out, "--codes", "fitted", "--out", str(tmp_path / "s.png")]) == 2
    assert "--codes applies to autoencoder runs" in capsys.readouterr().err
