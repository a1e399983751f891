"""Every variational family inside the VAE: training, evaluation, the stratified bound, the CLI."""

import math
from dataclasses import replace

import pytest
import torch

import pyprobvae as ppv
from pyprobvae.infer import elbo_terms, stratified_estimate
from tests.common import tiny_model

GUIDES = [
    dict(family="diagonal"),
    dict(family="mixture", num_components=3),
    dict(family="flow", flow="planar", flow_depth=2),
    dict(family="flow", flow="radial", flow_depth=2),
    dict(family="flow", flow="iaf", flow_depth=2),
    dict(family="flow", flow="spline", flow_depth=2),
]


@pytest.fixture(scope="module")
def digits():
    train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
    return replace(train, x=train.x[:300], y=train.y[:300]), replace(test, x=test.x[:100], y=test.y[:100])


def _vae(options, latent_dim=3):
    return tiny_model(latent_dim=latent_dim, hidden=(32,), **options)


@pytest.mark.parametrize("options", GUIDES, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_every_guide_trains_and_evaluates(options, digits):
    train, test = digits
    vae = _vae(options)
    history = ppv.fit(vae, train, test, ppv.TrainConfig(epochs=4, batch_size=50, lr=3e-3), progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    metrics = ppv.evaluate(vae, test.x, iwae_samples=20)
    assert all(math.isfinite(metrics[k]) for k in ("test_elbo", "test_nll", "kl", "recon_mse"))
    assert vae.encode(test.x).shape == (100, 3)
    assert vae.sample(4).shape == (4, 1, 8, 8)


def test_stratified_bound_is_not_looser_than_the_elbo(digits):
    """E[L_strat] >= ELBO: compare means over repeated draws, with a 5-standard-error margin."""
    x = digits[1].x[:20]
    vae = _vae(dict(family="mixture", num_components=4))
    with torch.no_grad():
        strat = torch.stack([stratified_estimate(vae.model, vae.guide, x).bound for _ in range(400)])
        plain = torch.stack([elbo_terms(vae.model, vae.guide, x, analytic_kl=False).elbo for _ in range(400)])
    diff = strat.mean(0) - plain.mean(0)
    se = (strat.var(0) / 400 + plain.var(0) / 400).sqrt()
    assert (diff > -5 * se).all()
    assert diff.mean() > 5 * se.mean()  # a random mixture is far from the posterior: the bound is strictly tighter


def test_stratified_terms_are_consistent(digits):
    x = digits[1].x[:10]
    vae = _vae(dict(family="mixture", num_components=2))
    estimate = stratified_estimate(vae.model, vae.guide, x)
    assert estimate.terms.log_likelihood.shape == estimate.terms.kl.shape == estimate.bound.shape == (10,)
    # log sum_k pi_k w_k >= sum_k pi_k log w_k (Jensen), draw by draw: the bound is never below its ELBO estimate
    assert (estimate.bound >= estimate.terms.elbo - 1e-5).all()
    torch.testing.assert_close(estimate.objective, estimate.bound)


def test_stratified_needs_a_mixture_guide(digits):
    vae = _vae(dict(family="diagonal"))
    with pytest.raises(ValueError, match="stratified estimator needs a guide with exactly one latent site drawn from a mixture"):
        stratified_estimate(vae.model, vae.guide, digits[1].x[:4])


