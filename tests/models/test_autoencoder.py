"""The deterministic autoencoder baseline: a point guide, no prior term, not generative."""

import json
import os
from dataclasses import replace

import numpy as np
import pyro
import pytest
import torch

import pyprobvae as ppv
from pyprobvae.cli import main
from pyprobvae.infer import elbo_terms
from pyprobvae.runs import Run


@pytest.fixture(scope="module")
def digits():
    return ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")


def _model(kind, latent_dim=4):
    pyro.set_rng_seed(0)
    return ppv.build_vae((1, 8, 8), model=kind, latent_dim=latent_dim, hidden=[64],
                         likelihood="categorical", num_levels=17)


def test_objective_is_the_reconstruction_log_likelihood_alone(digits):
    ae = _model("ae")
    x = digits[1].x[:10]
    terms = elbo_terms(ae.model, ae.guide, x)
    assert torch.equal(terms.kl, torch.zeros(10))
    expected = ae.decoder(ae.encoder(x)).log_prob(x)
    torch.testing.assert_close(terms.log_likelihood, expected)


def test_autoencoder_options(digits):
    with pytest.raises(ValueError, match="point guide"):
        ppv.build_vae((1, 8, 8), model="ae", guide="mixture")
    with pytest.raises(ValueError, match="unknown model 'gan'"):
        ppv.build_vae((1, 8, 8), model="gan")
    assert not _model("ae").generative and _model("vae").generative


def test_fitted_gaussian_matches_the_codes(digits, monkeypatch):
    ae = _model("ae")
    x = digits[0].x
    codes = ae.encode(x)
    monkeypatch.setattr(ae, "_decode", lambda z, condition: z)  # return the drawn codes themselves
    torch.manual_seed(0)
    draws = ae.sample(20000, fitted_to=x)
    se = codes.std(0) / 20000 ** 0.5
    assert ((draws.mean(0) - codes.mean(0)).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(draws.T), torch.cov(codes.T), rtol=0.05, atol=0.05 * codes.var(0).max().item())


def test_evaluate_reports_no_bound_for_the_autoencoder(digits):
    train, test = replace(digits[0], x=digits[0].x[:300], y=digits[0].y[:300]), digits[1]
    ae = _model("ae")
    history = ppv.fit(ae, train, test, ppv.TrainConfig(epochs=5, lr=3e-3), progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    metrics = ppv.evaluate(ae, test.x, iwae_samples=10)
    assert metrics["test_elbo"] is metrics["test_nll"] is metrics["kl"] is None
    assert np.isfinite(metrics["recon_nll"]) and np.isfinite(metrics["recon_mse"])


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
