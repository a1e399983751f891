"""
Tests of the evaluation metrics (pyprobvae.metrics) and the latent
interpolations (pyprobvae.interpolation, VAE.interpolate).
"""

import math

import pyro
import pytest
import torch

from pyprobvae import interpolation
from pyprobvae.data import Dataset, load_digits
from pyprobvae.evaluation.metrics import (
    ACTIVE_UNIT_THRESHOLD,
    active_units,
    evaluate,
    iwae_log_likelihood,
    kl_per_dimension,
)
from pyprobvae.infer.training import TrainConfig, dataset_elbo, fit
from tests.common import tiny_model

LATENT = 3


@pytest.fixture(scope="module")
def trained():
    """A tiny categorical VAE trained for a few epochs on part of digits, and held-out data."""
    train, test = load_digits("train"), load_digits("test")
    train = Dataset("digits", train.x[:400], train.y[:400], train.data_shape, 17, 10)
    vae = tiny_model(latent_dim=LATENT, hidden=(32,))
    fit(vae, train, None, TrainConfig(epochs=3, batch_size=40, lr=5e-3, seed=0), progress=False)
    return vae, test.x[:120]


# ------------------------------------------------------------ IWAE vs ELBO


def test_iwae_bound_is_tighter_than_the_elbo(trained):
    """L_K >= L_1 = ELBO in expectation. The ELBO of each example is averaged
    over 10 replicas (to shrink its Monte Carlo noise); the per-example
    difference of the two estimates has a standard error from its sample
    variance over examples."""
    vae, x = trained
    replicas = 10
    pyro.set_rng_seed(0)
    elbo = dataset_elbo(vae, x.repeat(replicas, 1, 1, 1)).elbo.reshape(replicas, len(x)).mean(0)
    pyro.set_rng_seed(1)
    iwae = iwae_log_likelihood(vae, x, 200)
    assert iwae.shape == elbo.shape == (len(x),)
    assert torch.isfinite(iwae).all()
    diff = iwae - elbo
    se = float(diff.std()) / math.sqrt(len(x))
    assert float(diff.mean()) >= -5 * se
    # for an imperfect amortized guide the bound is strictly tighter: here by
    # ~1.8 nats, ~13 standard errors
    assert float(diff.mean()) > 5 * se, (float(diff.mean()), se)


def test_iwae_with_one_sample_is_the_monte_carlo_elbo(trained):
    vae, x = trained
    # same random numbers: L_1 is exactly the single-sample ELBO with the KL estimated by log q - log p
    pyro.set_rng_seed(3)
    iwae1 = iwae_log_likelihood(vae, x, 1)
    pyro.set_rng_seed(3)
    mc_elbo = dataset_elbo(vae, x, analytic_kl=False).elbo
    torch.testing.assert_close(iwae1, mc_elbo, rtol=1e-5, atol=1e-3)
    # and in expectation it equals the analytic-KL ELBO: average 20 replicas
    # of each, compare the means with 5 standard errors of their difference
    replicas = 20
    rows = x.repeat(replicas, 1, 1, 1)
    pyro.set_rng_seed(4)
    iwae1 = iwae_log_likelihood(vae, rows, 1)
    pyro.set_rng_seed(5)
    analytic = dataset_elbo(vae, rows, analytic_kl=True).elbo
    diff = (iwae1 - analytic).reshape(replicas, len(x)).mean(0)  # per example, over replicas
    # independent replicas: the variance of the grand mean is sum of per-example variances / (R N^2)
    var = ((iwae1.reshape(replicas, -1).var(0) + analytic.reshape(replicas, -1).var(0)) / replicas).sum() / len(x) ** 2
    assert abs(float(diff.mean())) <= 5 * math.sqrt(float(var))


# ------------------------------------------------------------ active units and KL per dimension


def test_active_units_counts_dimensions_whose_posterior_mean_varies(trained, monkeypatch):
    vae, x = trained
    n = len(x)
    g = torch.Generator().manual_seed(0)
    means = torch.stack(
        [
            torch.randn(n, generator=g),  # variance ~1: active
            torch.full((n,), 2.5),  # constant (however far from 0): inactive
            0.05 * torch.randn(n, generator=g),  # variance ~0.0025 < 0.01: inactive
            0.2 * torch.randn(n, generator=g),  # variance ~0.04 > 0.01: active
        ],
        1,
    )
    monkeypatch.setattr(vae, "encode", lambda data, y=None: means[: len(data)])
    variances = means.var(0, unbiased=False)
    assert variances[2] < ACTIVE_UNIT_THRESHOLD < variances[3]
    assert active_units(vae, x).tolist() == [True, False, False, True]
    assert active_units(vae, x, threshold=1e-4).tolist() == [True, False, True, True]


def test_kl_per_dimension_sums_to_the_analytic_kl(trained):
    vae, x = trained
    per_dim = kl_per_dimension(vae, x)
    assert per_dim.shape == (LATENT,)
    assert (per_dim >= 0).all()
    kl = dataset_elbo(vae, x, analytic_kl=True).kl
    torch.testing.assert_close(per_dim.sum(), kl.mean(), rtol=1e-5, atol=1e-5)
    q = vae.encoder(x).base_dist
    formula = 0.5 * (q.loc**2 + q.scale**2 - torch.log(q.scale**2) - 1)
    torch.testing.assert_close(per_dim, formula.mean(0).detach(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ evaluate


def test_evaluate_returns_documented_keys_with_consistent_finite_values(trained):
    vae, x = trained
    pyro.set_rng_seed(0)
    result = evaluate(vae, x, iwae_samples=50)
    assert set(result) == {"test_elbo", "test_nll", "iwae_samples", "kl", "kl_per_dim", "recon_nll",
                           "recon_mse", "active_units", "latent_dim", "num_examples"}
    for key in ("test_elbo", "test_nll", "kl", "recon_nll", "recon_mse"):
        assert isinstance(result[key], float) and math.isfinite(result[key]), key
    assert result["iwae_samples"] == 50 and result["num_examples"] == len(x) and result["latent_dim"] == LATENT
    assert 0 <= result["active_units"] <= LATENT
    assert len(result["kl_per_dim"]) == LATENT and all(math.isfinite(v) for v in result["kl_per_dim"])
    # the parts add up
    assert result["test_elbo"] == pytest.approx(-result["recon_nll"] - result["kl"], abs=1e-4)
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], abs=1e-4)
    assert result["kl"] >= 0 and result["recon_nll"] > 0 and 0 <= result["recon_mse"] <= 1
    # test_nll is -L_50: compare with two independent IWAE estimates (K=50),
    # whose difference gives the Monte Carlo standard error of the mean
    pyro.set_rng_seed(10)
    a = iwae_log_likelihood(vae, x, 50)
    pyro.set_rng_seed(11)
    b = iwae_log_likelihood(vae, x, 50)
    se = float(((a - b) ** 2 / 2).sum().sqrt()) / len(x)
    assert abs(-result["test_nll"] - float(a.mean())) <= 5 * math.sqrt(2) * se, (result["test_nll"], float(a.mean()), se)
    # and it is above the ELBO: by ~1.8 nats here (test_iwae_bound_is_tighter_than_the_elbo)
    assert -result["test_nll"] > result["test_elbo"]


def test_evaluate_checks_the_data(trained):
    vae, x = trained
    with pytest.raises(ValueError, match="evaluation data.*off that grid"):
        evaluate(vae, x + 0.01, iwae_samples=2)


# ------------------------------------------------------------ interpolation


def _codes(seed=0, batch=4, dim=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=g, dtype=torch.float64), torch.randn(batch, dim, generator=g, dtype=torch.float64)


def test_linear_interpolation():
    z0, z1 = _codes()
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    path = interpolation.linear(z0, z1, t)
    assert path.shape == (4, 5, 5)
    torch.testing.assert_close(path[:, 0], z0, rtol=0, atol=1e-15)
    torch.testing.assert_close(path[:, -1], z1, rtol=0, atol=1e-15)
    torch.testing.assert_close(path[:, 2], (z0 + z1) / 2)
    # equal steps along the straight line
    steps = path.diff(dim=1)
    torch.testing.assert_close(steps, ((z1 - z0) / 4).unsqueeze(1).expand_as(steps))


def test_spherical_interpolation_keeps_the_norm_and_the_angle():
    z0, z1 = _codes()
    z1 = z1 / z1.norm(dim=-1, keepdim=True) * z0.norm(dim=-1, keepdim=True)  # |z0| = |z1|
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    path = interpolation.spherical(z0, z1, t)
    assert path.shape == (4, 9, 5)
    torch.testing.assert_close(path[:, 0], z0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(path[:, -1], z1, rtol=1e-12, atol=1e-12)
    norms = path.norm(dim=-1)
    torch.testing.assert_close(norms, z0.norm(dim=-1, keepdim=True).expand_as(norms), rtol=1e-12, atol=1e-12)
    # constant angular speed: the angle from z0 is t * omega
    omega = torch.acos((z0 * z1).sum(-1) / (z0.norm(dim=-1) * z1.norm(dim=-1)))
    angle = torch.acos(((path * z0.unsqueeze(1)).sum(-1) / (norms * z0.norm(dim=-1, keepdim=True))).clamp(-1, 1))
    torch.testing.assert_close(angle, omega.unsqueeze(1) * t, rtol=1e-6, atol=1e-6)
    # the straight line, by contrast, cuts inside the sphere
    assert (interpolation.linear(z0, z1, t)[:, 4].norm(dim=-1) < z0.norm(dim=-1) - 1e-3).all()


def test_spherical_interpolation_of_parallel_codes_is_linear():
    z0 = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    z1 = torch.stack([3 * z0[0], -z0[1]])  # parallel and antiparallel
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    path = interpolation.spherical(z0, z1, t)
    assert torch.isfinite(path).all()
    torch.testing.assert_close(path, interpolation.linear(z0, z1, t))


@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_vae_interpolate_endpoints_are_reconstructions(trained, method):
    vae, x = trained
    x0, x1 = x[:3], x[3:6]
    paths = vae.interpolate(x0, x1, steps=6, method=method)
    assert paths.shape == (3, 6, 1, 8, 8)
    torch.testing.assert_close(paths[:, 0], vae.reconstruct(x0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(paths[:, -1], vae.reconstruct(x1), rtol=1e-5, atol=1e-6)
    # the interior is decoded from the path between the codes
    z0, z1 = vae.encode(x0), vae.encode(x1)
    t = torch.linspace(0, 1, 6)
    expected = vae.decode(getattr(interpolation, method)(z0, z1, t)[:, 2])
    torch.testing.assert_close(paths[:, 2], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(paths[:, 2], paths[:, 0])


def test_vae_interpolate_rejects_bad_arguments(trained):
    vae, x = trained
    with pytest.raises(ValueError, match="steps >= 2"):
        vae.interpolate(x[:1], x[1:2], steps=1)
    with pytest.raises(ValueError, match="'cubic'"):
        vae.interpolate(x[:1], x[1:2], method="cubic")
