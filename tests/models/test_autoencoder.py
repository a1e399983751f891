"""The deterministic autoencoder baseline: a point guide, no prior term, not generative."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import pyprobvae as ppv
from pyprobvae.infer import elbo_terms
from tests.common import tiny_model


def _model(kind, latent_dim=4):
    return tiny_model(kind, latent_dim=latent_dim, hidden=(64,))


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


