"""
Tests of the normalizing-flow family (pyprobvae.families.flow).

A flow guide is z = f_K o ... o f_1(z_0), z_0 ~ N(mu(h), diag sigma(h)^2), so

    log q(z) = log N(z_0; mu, sigma) - log |det dz/dz_0|.

The tests check the log-determinant against the autograd Jacobian, that q
integrates to one, that its own samples can be scored (planar and radial
maps have no inverse: Pyro's one-sample cache must survive Pyro's plates),
that the ELBO estimators run on it, and that it beats the mean-field guide on
a posterior that is not Gaussian.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn
from torch.autograd.functional import jacobian
from torch.distributions import kl_divergence

from pyprobvae.families import DiagonalNormal
from pyprobvae.families.flow import FLOWS, NormalizingFlow
from pyprobvae.infer.elbo import elbo_terms, log_importance_weights

IN_FEATURES = 5
BATCH = 16
# (flow, latent_dim): iaf has no 1-dimensional version.
CASES = [(flow, d) for flow in FLOWS for d in (1, 3) if (flow, d) != ("iaf", 1)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _layer_log_dets(q, z):
    """The input of every layer (the base draw first) and sum_k log|det df_k|, from the cache."""
    points = [z]
    for t in reversed(q.transforms):
        points.insert(0, t.inv(points[0]))
    log_det = sum(t.log_abs_det_jacobian(x, y).sum() for t, x, y in zip(q.transforms, points, points[1:]))
    return points[0], log_det


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("flow,latent_dim", CASES)
def test_log_det_and_log_prob_match_autograd_jacobian(flow, latent_dim, depth):
    torch.manual_seed(0)
    family = NormalizingFlow(IN_FEATURES, latent_dim, flow, depth).double()
    q = family(torch.randn(1, IN_FEATURES, dtype=torch.float64))
    z = q.rsample()
    log_q = q.log_prob(z)
    z0, log_det = _layer_log_dets(q, z)

    def push(x):
        for t in q.transforms:
            x = t(x)
        return x

    jac = jacobian(push, z0).reshape(latent_dim, latent_dim)
    sign, exact_log_det = torch.linalg.slogdet(jac)
    assert sign != 0
    assert abs(exact_log_det) > 1e-3  # the flow is not the identity
    torch.testing.assert_close(push(z0), z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_det, exact_log_det, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(log_q, q.base_dist.log_prob(z0) - exact_log_det, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("flow,latent_dim", CASES)
def test_own_samples_score_after_expand_and_carry_gradients(flow, latent_dim):
    torch.manual_seed(1)
    family = NormalizingFlow(IN_FEATURES, latent_dim, flow, 2)
    h = torch.randn(BATCH, IN_FEATURES, requires_grad=True)
    q = family(h)
    assert (q.batch_shape, q.event_shape, q.has_rsample) == ((BATCH,), (latent_dim,), True)

    assert all(t._cache_size == 1 for t in q.transforms)
    expanded = q.expand((BATCH,))
    assert all(a is b for a, b in zip(expanded.transforms, q.transforms))
    z = expanded.rsample()
    log_q = expanded.log_prob(z)
    assert log_q.shape == (BATCH,) and torch.isfinite(log_q).all()
    torch.testing.assert_close(q.log_prob(z), log_q, rtol=0, atol=0)

    (torch.randn_like(z) * z).sum().add(log_q.sum()).backward()
    assert h.grad.abs().sum() > 0
    for name, param in family.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("flow", FLOWS)
def test_guide_site_in_data_plate_scores_its_own_sample(flow):
    torch.manual_seed(2)
    family = NormalizingFlow(IN_FEATURES, 3, flow, 2)
    h = torch.randn(BATCH, IN_FEATURES)
    built = []

    def guide():
        built.append(family(h))
        with pyro.plate("data", BATCH):
            return pyro.sample("z", built[-1])

    site = poutine.trace(guide).get_trace().nodes["z"]
    (q,) = built
    # the plate's BroadcastMessenger replaced q by an expanded copy sharing its layers
    assert site["fn"] is not q
    assert all(a is b for a, b in zip(site["fn"].transforms, q.transforms))
    log_q = site["fn"].log_prob(site["value"])
    assert log_q.shape == (BATCH,) and torch.isfinite(log_q).all()
    torch.testing.assert_close(q.log_prob(site["value"]), log_q, rtol=0, atol=0)


@pytest.mark.parametrize(
    "flow,latent_dim,half_width,points", [("iaf", 2, 8.0, 401), ("spline", 2, 6.0, 301), ("spline", 1, 8.0, 4001)]
)
def test_density_integrates_to_one_on_a_grid(flow, latent_dim, half_width, points):
    # Riemann sum on [-L, L]^d with spacing delta. The density is continuous
    # and piecewise smooth, so the sum converges as delta -> 0, to within
    # ~1e-5 (iaf) and ~5e-4 (2-d spline, whose narrowest bins are a few
    # delta wide) at delta = 0.04 (0.004 in 1-d). The mass outside the box
    # is below 1.5e-4 (95%) when 20000 samples all fall inside.
    torch.manual_seed(3)
    family = NormalizingFlow(IN_FEATURES, latent_dim, flow, 2).double()
    h = torch.randn(1, IN_FEATURES, dtype=torch.float64)
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    grid = torch.cartesian_prod(*[axis] * latent_dim).reshape(-1, latent_dim)
    with torch.no_grad():
        assert (family(h.expand(20000, -1)).sample().abs() < half_width).all()
        log_q = family(h.expand(len(grid), -1)).log_prob(grid)
    total = log_q.exp().sum() * (axis[1] - axis[0]) ** latent_dim
    assert abs(total - 1) < 1e-3


@pytest.mark.parametrize("flow,latent_dim", [("planar", 1), ("planar", 2), ("radial", 1), ("radial", 2)])
def test_density_is_normalized_by_importance_sampling(flow, latent_dim):
    # For any normalized p0 with int p0^2 / q < inf, E_q[p0(z)/q(z)] = 1 with
    # a finite variance. Planar and radial maps move points by a bounded
    # amount, so q has the Gaussian tails of its base N(mu, sigma^2), and
    # p0 = N(m, s^2) with s <= sigma / 2 qualifies; m and s are fitted to an
    # independent pilot sample so that p0 overlaps q.
    torch.manual_seed(4)
    family = NormalizingFlow(IN_FEATURES, latent_dim, flow, flow_depth=3).double()
    num_samples = 200000
    with torch.no_grad():
        q = family(torch.randn(1, IN_FEATURES, dtype=torch.float64).expand(num_samples, -1))
        pilot = q.sample()
        z = q.rsample()
        scale = torch.minimum(pilot.std(0), q.base_dist.base_dist.scale[0]) / 2
        p0 = dist.Normal(pilot.mean(0), scale).to_event(1)
        ratio = (p0.log_prob(z) - q.log_prob(z)).exp()
    mean, se = ratio.mean(), ratio.std() / math.sqrt(num_samples)
    assert se < 0.01
    assert abs(mean - 1) < 4 * se


def _tiny_vae(flow, latent_dim=3, data_dim=4):
    decoder = nn.Linear(latent_dim, data_dim)
    features = nn.Sequential(nn.Linear(data_dim, IN_FEATURES), nn.Tanh())
    family = NormalizingFlow(IN_FEATURES, latent_dim, flow, 2)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 0.5).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", family(features(x)))

    return model, guide, family


@pytest.mark.parametrize("flow", FLOWS)
def test_elbo_and_importance_weights_run_with_flow_guide(flow):
    torch.manual_seed(5)
    model, guide, family = _tiny_vae(flow)
    x = torch.randn(BATCH, 4)

    prior = dist.Normal(torch.zeros(BATCH, 3), 1.0).to_event(1)
    with pytest.raises(NotImplementedError):
        kl_divergence(family(torch.zeros(BATCH, IN_FEATURES)), prior)

    pyro.set_rng_seed(6)
    analytic = elbo_terms(model, guide, x, analytic_kl=True)
    pyro.set_rng_seed(6)
    monte_carlo = elbo_terms(model, guide, x, analytic_kl=False)
    pyro.set_rng_seed(6)
    log_w = log_importance_weights(model, guide, x)

    assert analytic.elbo.shape == (BATCH,) and torch.isfinite(analytic.elbo).all()
    # no closed form: the "analytic" KL is the Monte Carlo log q(z) - log p(z)
    torch.testing.assert_close(analytic.kl, monte_carlo.kl)
    # log w = log p(x|z) + log p(z) - log q(z) is the one-sample ELBO
    torch.testing.assert_close(log_w, monte_carlo.elbo)

    (-analytic.elbo.mean()).backward()
    for name, param in family.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


# The banana: z ~ N(0, I_2), x | z ~ N(z_1^2 + z_2, 0.2^2), observed x = 1.
# The posterior is a thin curved ridge z_2 ~ 1 - z_1^2 with two lobes at
# z_1 ~ +-0.7. Integrating z_2 out, x | z_1 ~ N(z_1^2, 1 + 0.2^2), so
# log p(x) is a 1-d integral.
BANANA_X, BANANA_NOISE = 1.0, 0.2


def _banana_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z[:, 0] ** 2 + z[:, 1], BANANA_NOISE), obs=x)


def _banana_log_evidence():
    z1 = torch.linspace(-10, 10, 200001, dtype=torch.float64)
    x = torch.tensor(BANANA_X, dtype=torch.float64)
    log_f = dist.Normal(0.0, 1.0).log_prob(z1) + dist.Normal(z1**2, math.sqrt(1 + BANANA_NOISE**2)).log_prob(x)
    return float(log_f.logsumexp(0) + math.log(z1[1] - z1[0]))


def _fit_banana(family, particles=128, steps=1000, lr=0.02):
    """Adam on the ELBO, one particle per element of the data plate; then the ELBO and its standard error."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", family(x.new_ones(x.shape[0], 1)))

    optimizer = torch.optim.Adam(family.parameters(), lr=lr)
    x = torch.full((particles,), BANANA_X)
    for _ in range(steps):
        loss = -elbo_terms(_banana_model, guide, x).elbo.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        elbo = elbo_terms(_banana_model, guide, torch.full((50000,), BANANA_X), analytic_kl=False).elbo
    return float(elbo.mean()), float(elbo.std()) / math.sqrt(len(elbo))


@pytest.mark.slow
def test_iaf_guide_beats_diagonal_guide_on_a_banana_posterior():
    log_evidence = _banana_log_evidence()
    torch.manual_seed(7)
    diagonal, diagonal_se = _fit_banana(DiagonalNormal(1, 2))
    torch.manual_seed(7)
    flow, flow_se = _fit_banana(NormalizingFlow(1, 2, "iaf", flow_depth=2), steps=2000)
    numbers = f"log p(x) = {log_evidence:.3f}, iaf ELBO = {flow:.3f}, diagonal ELBO = {diagonal:.3f}"
    # Both are lower bounds (a gap is a KL, >= 0: these fail only by Monte Carlo noise beyond 4 SE),
    # and the flow closes most of the mean-field gap (about 1 nat), by more than 50 standard errors.
    # Seed spreads (torch seeds 7-22): at 500 steps the diagonal fit sometimes stalled (gap 1.3-1.4)
    # and the flow's gap ranged up to 0.37, failing two of the assertions; with 1000 steps the
    # diagonal gap is 0.97-1.00 and flow - diagonal 0.74-0.96 (sd 0.07, margin 5.6 sd, 50 SE <= 0.30);
    # the flow's own gap is the noisiest (0.03-0.24 at 1000 steps, margin 2.1 sd to the quarter),
    # so the flow trains for 2000 steps (margin 3.1 sd).
    assert diagonal < log_evidence + 4 * diagonal_se, numbers
    assert flow < log_evidence + 4 * flow_se, numbers
    assert 50 * max(flow_se, diagonal_se) < 0.5 < flow - diagonal, numbers
    assert log_evidence - flow < (log_evidence - diagonal) / 4, numbers


def test_unknown_flow_bad_depth_and_one_dimensional_iaf_are_refused():
    with pytest.raises(ValueError, match="planar, radial, iaf, spline"):
        NormalizingFlow(IN_FEATURES, 2, "maf", 2)
    with pytest.raises(ValueError, match="depth >= 1"):
        NormalizingFlow(IN_FEATURES, 2, "planar", flow_depth=0)
    with pytest.raises(ValueError, match="1-dimensional"):
        NormalizingFlow(IN_FEATURES, 1, "iaf", 2)
