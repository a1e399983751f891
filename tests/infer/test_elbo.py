"""
Tests of the per-example ELBO (pyprobvae.infer.elbo) and the IWAE estimate
against closed forms.

The reference model is linear-Gaussian,

    z ~ N(0, I_d),   x | z ~ N(W z + b, sigma^2 I_D),

for which log p(x) = log N(x; b, W W^T + sigma^2 I), the posterior
p(z|x) = N(mu, Sigma) with Sigma = (I + W^T W / sigma^2)^-1 and
mu = Sigma W^T (x - b) / sigma^2, and for any Gaussian guide q = N(m, S)

    ELBO = log N(x; W m + b, sigma^2 I) - tr(W S W^T) / (2 sigma^2) - KL(q || N(0, I)),
    log p(x) - ELBO = KL(q || p(z|x)).

Everything in this file runs in float64 so that "equal to numerical
precision" can mean 1e-9.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from torch.distributions import kl_divergence

from pyprobvae.evaluation.metrics import iwae_log_likelihood
from pyprobvae.families import DiagonalNormal
from pyprobvae.infer.elbo import ELBOTerms, elbo_terms, log_importance_weights
from pyprobvae.priors import StandardNormal
from tests.common import tiny_model

DTYPE = torch.float64
d, D = 2, 3
W = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.6, -1.2]], dtype=DTYPE)
B = torch.tensor([0.2, -0.1, 0.4], dtype=DTYPE)
SIGMA = 0.7
# W with orthogonal columns: W^T W is diagonal, so is the posterior covariance.
W_ORTH = torch.tensor([[1.0, 2.0], [2.0, -1.0], [0.0, 0.5]], dtype=DTYPE)  # columns (1, 2, 0) . (2, -1, 0.5) = 0

# The mismatched diagonal guide: the exact posterior mean shifted by SHIFT,
# with fixed scales wider than the posterior's (so that the importance
# weights p/q are bounded and chi^2(p || q) is finite).
SHIFT = 0.3
GUIDE_SCALE = torch.tensor([0.6, 0.7], dtype=DTYPE)


@pytest.fixture(autouse=True)
def _clean_param_store():
    # VAE.model/guide register their modules in Pyro's global param store
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _posterior(x, w):
    precision = torch.eye(d, dtype=DTYPE) + w.T @ w / SIGMA**2
    cov = torch.linalg.inv(precision)
    mean = (x - B) @ w @ cov / SIGMA**2
    return mean, cov


def _log_marginal(x, w):
    cov = w @ w.T + SIGMA**2 * torch.eye(D, dtype=DTYPE)
    diff = x - B
    quad = (diff @ torch.linalg.inv(cov) * diff).sum(-1)
    return -0.5 * (D * math.log(2 * math.pi) + torch.logdet(cov) + quad)


def _gaussian_elbo(x, w, m, S):
    """Closed-form ELBO of the guide N(m, S) (m: (N, d), S: (d, d))."""
    resid = x - m @ w.T - B
    expected_loglik = -0.5 * D * math.log(2 * math.pi * SIGMA**2) - (
        (resid**2).sum(-1) + torch.trace(w @ S @ w.T)
    ) / (2 * SIGMA**2)
    kl = 0.5 * (torch.trace(S) + (m**2).sum(-1) - d - torch.logdet(S))
    return expected_loglik - kl


def _kl_gaussians(m, S, mu, Sigma):
    """KL(N(m, S) || N(mu, Sigma)) per row of m, mu."""
    Si = torch.linalg.inv(Sigma)
    diff = mu - m
    return 0.5 * (torch.trace(Si @ S) + (diff @ Si * diff).sum(-1) - d + torch.logdet(Sigma) - torch.logdet(S))


def _chi2(mu, Sigma, m, S):
    """chi^2(p || q) = E_q[(p/q)^2] - 1 for p = N(mu, Sigma), q = N(m, S), per row."""
    Si, Sinv = torch.linalg.inv(Sigma), torch.linalg.inv(S)
    A = 2 * Si - Sinv
    assert torch.linalg.eigvalsh(A).min() > 0, "chi^2 is infinite for this guide"
    h = 2 * mu @ Si - m @ Sinv
    c0 = (mu @ Si * mu).sum(-1) - 0.5 * (m @ Sinv * m).sum(-1)
    log_e = (
        -torch.logdet(Sigma) + 0.5 * torch.logdet(S) - 0.5 * torch.logdet(A) - c0
        + 0.5 * (h @ torch.linalg.inv(A) * h).sum(-1)
    )
    return log_e.exp() - 1


class LinearGaussian(nn.Module):
    """A Pyro model/guide pair with an exact marginal likelihood."""

    def __init__(self, guide="diagonal", w=W):
        super().__init__()
        self.kind = guide
        self.w = w

    # ``register`` is part of the interface pyprobvae's loops call (there are
    # no parameters to register here)
    def model(self, x, register=True):
        n = x.shape[0]
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(n, d, dtype=DTYPE), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.w.T + B, SIGMA).to_event(1), obs=x)

    def guide_params(self, x):
        mean, cov = _posterior(x, self.w)
        if self.kind in ("exact", "exact-diagonal"):
            return mean, cov
        return mean + SHIFT, torch.diag(GUIDE_SCALE**2)

    def guide(self, x, register=True):
        m, S = self.guide_params(x)
        with pyro.plate("data", x.shape[0]):
            if self.kind == "exact":
                pyro.sample("z", dist.MultivariateNormal(m, scale_tril=torch.linalg.cholesky(S)))
            else:  # "diagonal" (mismatched) or "exact-diagonal" (W_ORTH)
                pyro.sample("z", dist.Normal(m, S.diagonal().sqrt()).to_event(1))


def _data(n, w=W, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=DTYPE)
    return z @ w.T + B + SIGMA * torch.randn(n, D, generator=g, dtype=DTYPE)


# ------------------------------------------------------------ the reference itself


def test_reference_formulas_are_consistent():
    """Check the test's own closed forms: log p(x) - ELBO(q) = KL(q || posterior),
    the posterior from Bayes' rule on a grid, and chi^2 by quadrature."""
    x = _data(5)
    model = LinearGaussian()
    m, S = model.guide_params(x)
    mu, Sigma = _posterior(x, W)
    gap = _log_marginal(x, W) - _gaussian_elbo(x, W, m, S)
    torch.testing.assert_close(gap, _kl_gaussians(m, S, mu, Sigma), rtol=0, atol=1e-10)
    # exact posterior: zero gap
    torch.testing.assert_close(_gaussian_elbo(x, W, mu, Sigma), _log_marginal(x, W), rtol=0, atol=1e-10)

    # brute force on a grid for the first example: p(x) = sum p(x|z) p(z) dz,
    # posterior mean, and E_q[(p/q)^2].
    h = 0.02
    grid = torch.arange(-6, 6, h, dtype=DTYPE)
    zz = torch.cartesian_prod(grid, grid)
    x0 = x[:1]
    log_joint = (
        dist.Normal(0.0, 1.0).log_prob(zz).sum(-1)
        + dist.Normal(zz @ W.T + B, SIGMA).log_prob(x0).sum(-1)
    )
    log_px = torch.logsumexp(log_joint, 0) + 2 * math.log(h)
    torch.testing.assert_close(log_px, _log_marginal(x0, W)[0], rtol=0, atol=1e-6)
    post = (log_joint - log_px).exp() * h**2
    torch.testing.assert_close((post[:, None] * zz).sum(0), mu[0], rtol=0, atol=1e-6)
    q = dist.Normal(m[0], S.diagonal().sqrt()).log_prob(zz).sum(-1).exp()
    chi2_grid = ((log_joint - log_px).exp() ** 2 / q).sum() * h**2 - 1
    torch.testing.assert_close(chi2_grid, _chi2(mu, Sigma, m, S)[0], rtol=1e-5, atol=0)


# ------------------------------------------------------------ ELBO <= log p(x)


def test_elbo_terms_single_sample_is_brute_force_log_joint_minus_log_q():
    """One sample, checked term by term against formulas evaluated at the
    sampled z (captured through a trace)."""
    x = _data(7)
    model = LinearGaussian()
    pyro.set_rng_seed(1)
    terms = elbo_terms(model.model, model.guide, x, analytic_kl=False)
    pyro.set_rng_seed(1)
    z = poutine.trace(model.guide).get_trace(x).nodes["z"]["value"]
    m, S = model.guide_params(x)
    s = S.diagonal().sqrt()
    loglik = (-0.5 * ((x - z @ W.T - B) / SIGMA) ** 2 - math.log(SIGMA) - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_q = (-0.5 * ((z - m) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert isinstance(terms, ELBOTerms)
    assert terms.log_likelihood.shape == terms.kl.shape == (7,)
    torch.testing.assert_close(terms.log_likelihood, loglik, rtol=0, atol=1e-10)
    torch.testing.assert_close(terms.kl, log_q - log_prior, rtol=0, atol=1e-10)
    torch.testing.assert_close(terms.elbo, loglik - log_q + log_prior, rtol=0, atol=1e-10)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_elbo_is_below_log_marginal_for_mismatched_guide(analytic_kl):
    n_examples, n_samples = 10, 4000
    x = _data(n_examples)
    model = LinearGaussian("diagonal")
    pyro.set_rng_seed(0)
    # each example repeated n_samples times: independent z per row
    elbo = elbo_terms(model.model, model.guide, x.repeat(n_samples, 1), analytic_kl=analytic_kl).elbo
    elbo = elbo.reshape(n_samples, n_examples)
    mean, se = elbo.mean(0), elbo.std(0) / math.sqrt(n_samples)
    m, S = model.guide_params(x)
    exact_elbo = _gaussian_elbo(x, W, m, S)
    log_px = _log_marginal(x, W)
    # the estimator is unbiased for the closed-form ELBO ...
    assert ((mean - exact_elbo).abs() <= 5 * se).all(), (mean - exact_elbo) / se
    # ... which lies strictly below log p(x) by KL(q || posterior) (> 0.5 nats here)
    mu, Sigma = _posterior(x, W)
    assert (_kl_gaussians(m, S, mu, Sigma) > 0.5).all()
    assert (mean <= log_px + 5 * se).all()
    assert (mean < log_px - 0.3).all()


def test_elbo_equals_log_marginal_for_every_sample_with_exact_posterior_guide():
    """log p(x, z) - log q(z) = log p(x) for every z when q is the posterior."""
    x = _data(10)
    model = LinearGaussian("exact")
    pyro.set_rng_seed(0)
    rows = x.repeat(200, 1)
    log_px = _log_marginal(rows, W)
    terms = elbo_terms(model.model, model.guide, rows, analytic_kl=False)
    torch.testing.assert_close(terms.elbo, log_px, rtol=0, atol=1e-9)
    # the two terms vary with z individually, only their difference is constant
    assert terms.log_likelihood.reshape(200, 10).std(0).min() > 0.1
    # log_importance_weights is the same quantity
    torch.testing.assert_close(log_importance_weights(model.model, model.guide, rows), log_px, rtol=0, atol=1e-9)
    # analytic_kl=True: torch has no closed-form KL(MultivariateNormal || Independent(Normal)),
    # so the estimate falls back to log q - log p and is still exact
    terms = elbo_terms(model.model, model.guide, rows, analytic_kl=True)
    torch.testing.assert_close(terms.elbo, log_px, rtol=0, atol=1e-9)


def test_exact_diagonal_posterior_guide():
    """With W of orthogonal columns the posterior is diagonal: a mean-field
    guide is exact. Monte Carlo KL: exact per sample. Analytic KL: the KL term
    is exactly KL(posterior || prior) and the ELBO averages to log p(x)."""
    assert abs(float(W_ORTH[:, 0] @ W_ORTH[:, 1])) < 1e-12
    x = _data(10, W_ORTH)
    model = LinearGaussian("exact-diagonal", w=W_ORTH)
    mu, Sigma = _posterior(x, W_ORTH)
    assert (Sigma - torch.diag(Sigma.diagonal())).abs().max() < 1e-12
    n_samples = 2000
    rows = x.repeat(n_samples, 1)
    log_px = _log_marginal(rows, W_ORTH)
    pyro.set_rng_seed(0)
    terms = elbo_terms(model.model, model.guide, rows, analytic_kl=False)
    torch.testing.assert_close(terms.elbo, log_px, rtol=0, atol=1e-9)

    pyro.set_rng_seed(0)
    terms = elbo_terms(model.model, model.guide, rows, analytic_kl=True)
    kl = 0.5 * (torch.trace(Sigma) + (mu**2).sum(-1) - d - torch.logdet(Sigma))
    torch.testing.assert_close(terms.kl.reshape(n_samples, 10), kl.expand(n_samples, 10), rtol=0, atol=1e-10)
    elbo = terms.elbo.reshape(n_samples, 10)
    se = elbo.std(0) / math.sqrt(n_samples)
    assert ((elbo.mean(0) - log_px[:10]).abs() <= 5 * se).all()


# ------------------------------------------------------------ IWAE


def _iwae_replicas(model, x, K, replicas, max_rows=16384, seed=0):
    """``replicas`` independent IWAE estimates of each example: (replicas, N)."""
    pyro.set_rng_seed(seed)
    return iwae_log_likelihood(model, x.repeat(replicas, 1), K, max_rows=max_rows).reshape(replicas, len(x))


def test_iwae_increases_with_K_and_approaches_log_marginal():
    """
    Theory for L_K = E log mean_k w_k with w = p(x, z)/q(z):
    * L_1 = ELBO, so log p(x) - L_1 = KL(q || posterior) (closed form);
    * log p(x) - L_K = chi^2(p || q) / (2K) + O(K^-2) (delta method; the
      weights are bounded here, and the 50% slack covers the O(K^-2) term,
      whose relative size is ~ E[(w/p - 1)^3] / (chi^2 K));
    * L_K increases with K.
    Errors of the Monte Carlo averages: 5 standard errors from the sample
    variance over replicas.
    """
    x = _data(20)
    model = LinearGaussian("diagonal")
    log_px = _log_marginal(x, W)
    m, S = model.guide_params(x)
    mu, Sigma = _posterior(x, W)
    kl = _kl_gaussians(m, S, mu, Sigma).mean()
    chi2 = _chi2(mu, Sigma, m, S).mean()

    gaps, ses = {}, {}
    for K, replicas in [(1, 500), (10, 200), (100, 50), (1000, 20)]:
        gap = log_px - _iwae_replicas(model, x, K, replicas)
        gaps[K] = gap.mean()
        ses[K] = gap.var(0).sum().sqrt() / (math.sqrt(replicas) * len(x))

    assert abs(gaps[1] - kl) <= 5 * ses[1], (gaps[1], kl, ses[1])
    for K in (10, 100, 1000):
        predicted = chi2 / (2 * K)
        assert abs(gaps[K] - predicted) <= 5 * ses[K] + 0.5 * predicted, (K, gaps[K], predicted, ses[K])
    for K0, K1 in [(1, 10), (10, 100), (100, 1000)]:
        assert gaps[K1] <= gaps[K0] + 5 * math.hypot(ses[K0], ses[K1]), (K0, K1, gaps)
    # far from noise: the first steps are resolved, and K=1000 removes most of the gap
    assert gaps[1] - gaps[10] > 5 * math.hypot(ses[1], ses[10])
    assert gaps[10] - gaps[100] > 5 * math.hypot(ses[10], ses[100])
    assert gaps[1000] < gaps[1] / 20


def test_iwae_exact_posterior_is_log_marginal_whatever_the_chunking():
    """With the exact posterior every weight is p(x): any K and any chunking
    gives log p(x) exactly (tests the running log-sum-exp and the -log K)."""
    x = _data(5)
    model = LinearGaussian("exact")
    log_px = _log_marginal(x, W)
    for K, max_rows in [(1, 16384), (1000, 7), (100, 250), (3, 2), (64, 64)]:
        pyro.set_rng_seed(0)
        estimate = iwae_log_likelihood(model, x, K, max_rows=max_rows)
        assert estimate.shape == (5,)
        torch.testing.assert_close(estimate, log_px, rtol=0, atol=1e-9, msg=f"K={K}, max_rows={max_rows}")


def test_iwae_single_pass_is_log_mean_exp_of_importance_weights():
    x = _data(6)
    model = LinearGaussian("diagonal")
    K = 50
    pyro.set_rng_seed(3)
    estimate = iwae_log_likelihood(model, x, K, max_rows=10**6)
    pyro.set_rng_seed(3)
    rows = x.expand(K, 6, D).reshape(-1, D)
    log_w = log_importance_weights(model.model, model.guide, rows).reshape(K, 6)
    torch.testing.assert_close(estimate, log_w.logsumexp(0) - math.log(K), rtol=0, atol=1e-12)


def test_iwae_chunking_does_not_change_the_estimate_distribution():
    """K=100 in one pass vs passes of 30 rows (30, 30, 30, 10): same mean up to
    MC error. The averages use different random numbers, so compare with the
    combined standard error."""
    x = _data(4)
    model = LinearGaussian("diagonal")
    K, replicas = 100, 100
    big = _iwae_replicas(model, x, K, replicas, max_rows=16384, seed=0)
    small = _iwae_replicas(model, x, K, replicas, max_rows=30, seed=1)
    assert torch.isfinite(small).all()
    se = ((big.var(0) + small.var(0)) / replicas).sqrt()
    assert ((big.mean(0) - small.mean(0)).abs() <= 5 * se).all()
    # chunked K > max_rows is still a lower bound close to log p(x)
    log_px = _log_marginal(x, W)
    chi2 = _chi2(*_posterior(x, W), *model.guide_params(x))
    gap = log_px - small.mean(0)
    assert (gap <= chi2 / (2 * K) * 1.5 + 5 * small.std(0) / math.sqrt(replicas)).all()


def test_iwae_rejects_zero_samples():
    with pytest.raises(ValueError, match="num_samples"):
        iwae_log_likelihood(LinearGaussian(), _data(2), 0)


# ------------------------------------------------------------ agreement with Pyro


def _vae_and_data(seed=0):
    vae = tiny_model(seed=seed, data_shape=(1, 4, 4), hidden=(8,), likelihood="bernoulli").double()
    x = torch.bernoulli(torch.full((12, 1, 4, 4), 0.4, dtype=DTYPE), generator=torch.Generator().manual_seed(seed))
    return vae, x


def _grads(vae):
    return {name: p.grad.clone() for name, p in vae.named_parameters()}


@pytest.mark.parametrize("analytic_kl, pyro_elbo", [(True, TraceMeanField_ELBO), (False, Trace_ELBO)])
def test_elbo_terms_match_pyro(analytic_kl, pyro_elbo):
    vae, x = _vae_and_data()
    pyro.clear_param_store()

    pyro.set_rng_seed(5)
    ours = -elbo_terms(vae.model, vae.guide, x, analytic_kl=analytic_kl).elbo.sum()
    vae.zero_grad()
    ours.backward()
    ours_grads = _grads(vae)

    pyro.set_rng_seed(5)
    theirs = pyro_elbo().differentiable_loss(vae.model, vae.guide, x)
    vae.zero_grad()
    theirs.backward()
    theirs_grads = _grads(vae)

    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-10)
    assert ours_grads.keys() == theirs_grads.keys()
    for name in ours_grads:
        assert ours_grads[name].abs().sum() > 0, name  # every parameter gets a gradient
        torch.testing.assert_close(ours_grads[name], theirs_grads[name], rtol=1e-10, atol=1e-10, msg=name)

    # and the two estimators differ from each other (one sample of the KL is not the KL)
    pyro.set_rng_seed(5)
    other = -elbo_terms(vae.model, vae.guide, x, analytic_kl=not analytic_kl).elbo.sum()
    assert abs(float(other.detach() - ours.detach())) > 1e-3


# ------------------------------------------------------------ analytic KL of the family


def test_diagonal_normal_analytic_kl_against_formula_and_monte_carlo():
    torch.manual_seed(0)
    family = DiagonalNormal(in_features=5, latent_dim=3).double()
    with torch.no_grad():
        family.linear.weight.mul_(3)  # spread the means and scales away from N(0, 1)
    features = torch.randn(6, 5, dtype=DTYPE)
    q = family(features)
    p = StandardNormal(3).double()(6)
    assert q.batch_shape == p.batch_shape == (6,) and q.event_shape == p.event_shape == (3,)

    kl = kl_divergence(q, p)
    mu, sigma = q.base_dist.loc, q.base_dist.scale
    formula = 0.5 * (mu**2 + sigma**2 - torch.log(sigma**2) - 1).sum(-1)
    torch.testing.assert_close(kl, formula, rtol=1e-12, atol=1e-12)
    assert (kl > 0.1).all()

    n = 20000
    z = q.rsample((n,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    se = log_ratio.std(0) / math.sqrt(n)
    assert ((log_ratio.mean(0) - kl).abs() <= 5 * se).all(), (log_ratio.mean(0) - kl) / se

    # the scale is bounded below by min_scale, so the KL stays finite
    with torch.no_grad():
        family.linear.bias[3:] = -1e4
    q = family(features)
    assert torch.allclose(q.base_dist.scale, torch.full_like(q.base_dist.scale, family.min_scale))
    assert torch.isfinite(kl_divergence(q, p)).all()


# ------------------------------------------------------------ per-example, batch-independent


def _pinned_guide(guide, x, z):
    """``guide`` with its latent site "z" replayed at the value ``z`` (the
    distribution is still q(z|x), so the analytic KL is unchanged)."""
    trace = poutine.trace(guide).get_trace(x)
    trace.nodes["z"]["value"] = z
    return poutine.replay(guide, trace=trace)


def test_per_example_elbo_does_not_depend_on_the_batch():
    """Example i alone and inside a batch of 50, with the same latent value
    (the guide replayed at a fixed z): the same log-likelihood and KL."""
    vae, _ = _vae_and_data()
    x = torch.bernoulli(torch.full((50, 1, 4, 4), 0.4, dtype=DTYPE), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    z = torch.randn(50, 3, dtype=DTYPE)
    for latent in (z, vae.encode(x)):  # random codes and the posterior means
        batch = elbo_terms(vae.model, _pinned_guide(vae.guide, x, latent), x)
        assert batch.log_likelihood.shape == batch.kl.shape == (50,)
        for i in (0, 17, 49):
            alone = elbo_terms(vae.model, _pinned_guide(vae.guide, x[i : i + 1], latent[i : i + 1]), x[i : i + 1])
            torch.testing.assert_close(alone.log_likelihood, batch.log_likelihood[i : i + 1], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(alone.kl, batch.kl[i : i + 1], rtol=1e-12, atol=1e-12)
        # brute force: Bernoulli log-likelihood of the decoder's logits at z
        logits = vae.decoder[:-1](latent).reshape(50, 16)
        flat = x.reshape(50, 16)
        brute = (flat * torch.nn.functional.logsigmoid(logits) + (1 - flat) * torch.nn.functional.logsigmoid(-logits)).sum(-1)
        torch.testing.assert_close(batch.log_likelihood, brute, rtol=1e-12, atol=1e-12)

    # Monte Carlo KL with the same z: also per example
    batch = elbo_terms(vae.model, _pinned_guide(vae.guide, x, z), x, analytic_kl=False)
    alone = elbo_terms(vae.model, _pinned_guide(vae.guide, x[3:4], z[3:4]), x[3:4], analytic_kl=False)
    torch.testing.assert_close(alone.elbo, batch.elbo[3:4], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------ errors


def test_site_outside_the_data_plate_is_rejected():
    def model(x):
        scale = pyro.sample("global_scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, scale), obs=x)

    def guide(x):
        pyro.sample("global_scale", dist.LogNormal(torch.tensor(0.1), torch.tensor(0.5)))

    x = torch.randn(8)
    with pytest.raises(ValueError, match="plate") as info:
        elbo_terms(model, guide, x)
    assert "global_scale" in str(info.value)
    with pytest.raises(ValueError, match="plate"):
        log_importance_weights(model, guide, x)


def test_observed_site_outside_the_data_plate_is_rejected():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)  # one log-density for the whole batch

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))

    with pytest.raises(ValueError, match="plate") as info:
        elbo_terms(model, guide, torch.randn(8))
    assert "'x'" in str(info.value) or "'z'" in str(info.value)


def test_non_reparameterizable_latent_is_rejected_by_name():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("cluster_flag", dist.Bernoulli(torch.full((x.shape[0],), 0.5)))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("cluster_flag", dist.Bernoulli(torch.full((x.shape[0],), 0.3)))

    for fn in (lambda: elbo_terms(model, guide, torch.randn(8)), lambda: log_importance_weights(model, guide, torch.randn(8))):
        with pytest.raises(ValueError, match="cluster_flag") as info:
            fn()
        assert "reparameterizable" in str(info.value)


def test_masked_observations_do_not_count():
    mask = torch.tensor([True, True, False, False])

    def model(x):
        with pyro.plate("data", 4):
            z = pyro.sample("z", dist.Normal(torch.zeros(4), 1.0))
            with poutine.mask(mask=mask):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Normal(torch.full((4,), 0.5), 1.0))

    x = torch.randn(4, generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(0)
    terms = elbo_terms(model, guide, x, analytic_kl=False)
    pyro.set_rng_seed(0)
    expected = -Trace_ELBO().differentiable_loss(model, guide, x)
    assert (terms.log_likelihood[2:] == 0).all()
    torch.testing.assert_close(terms.elbo.sum(), expected)
