"""
Tests of the mixture of diagonal Normals and of the mixture guide family.

Monte Carlo checks allow 5 standard errors, estimated from the samples; the
one-sample Kolmogorov-Smirnov checks use the alpha = 0.01 critical value
1.63 / sqrt(n).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.special import ndtri

from pyprobvae.distributions import MixtureOfDiagonalNormals
from pyprobvae.families.mixture import DiagonalNormalMixture

NUM_SE = 5.0


def brute_force_log_prob(locs, scales, logits, value):
    """log sum_k pi_k prod_d N(value_d; mu_kd, sigma_kd), one term at a time."""
    weights = logits.exp() / logits.exp().sum(-1, keepdim=True)
    num_components, dim = locs.shape[-2:]
    density = 0.0
    for k in range(num_components):
        product = 1.0
        for d in range(dim):
            mu, sigma, x = locs[..., k, d], scales[..., k, d], value[..., d]
            product = product * torch.exp(-((x - mu) ** 2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
        density = density + weights[..., k] * product
    return torch.log(density)


def brute_force_moments(locs, scales, logits):
    """Mean and variance from E[z] = sum_k pi_k mu_k and E[z^2] = sum_k pi_k (sigma_k^2 + mu_k^2)."""
    weights = logits.exp() / logits.exp().sum(-1, keepdim=True)
    mean = second_moment = 0.0
    for k in range(locs.size(-2)):
        mean = mean + weights[..., k, None] * locs[..., k, :]
        second_moment = second_moment + weights[..., k, None] * (scales[..., k, :] ** 2 + locs[..., k, :] ** 2)
    return mean, second_moment - mean**2


def mixture_cdf_1d(locs, scales, logits, z):
    weights = logits.softmax(-1)
    return sum(weights[k] * 0.5 * (1 + torch.erf((z - locs[k, 0]) / (scales[k, 0] * math.sqrt(2)))) for k in range(locs.size(0)))


def params(dim, batch_shape=(), dtype=torch.float32, seed=0):
    """Three components that overlap (so that every parameter matters) with unequal weights."""
    generator = torch.Generator().manual_seed(seed)
    locs = 1.5 * torch.randn(batch_shape + (3, dim), generator=generator, dtype=dtype)
    scales = 0.5 + torch.rand(batch_shape + (3, dim), generator=generator, dtype=dtype)
    logits = torch.randn(batch_shape + (3,), generator=generator, dtype=dtype)
    return locs, scales, logits


def ks_statistic(samples, cdf):
    """sup_z |F_n(z) - F(z)| of the empirical CDF of 1-D samples."""
    n = samples.numel()
    values = cdf(samples.sort().values)
    ranks = torch.arange(1, n + 1, dtype=values.dtype)
    return max((ranks / n - values).max().item(), (values - (ranks - 1) / n).max().item())


# Test functions f(z) with E_q[f] in closed form: for z ~ N(mu, diag(s^2)),
# E[sum_d z_d^2] = sum_d (mu_d^2 + s_d^2) and E[sin(a.z + b)] = sin(a.mu + b) exp(-sum_d a_d^2 s_d^2 / 2).
# TEST_FUNCTIONS maps a name to (f, E[f] under each component).
SIN_A, SIN_B = torch.tensor([0.7, -0.4, 1.1]), 0.3


def _square(z):
    return z.pow(2).sum(-1)


def _square_mean(locs, scales):
    return (locs.pow(2) + scales.pow(2)).sum(-1)


def _sin(z):
    a = SIN_A[: z.size(-1)]
    return torch.sin((a * z).sum(-1) + SIN_B)


def _sin_mean(locs, scales):
    a = SIN_A[: locs.size(-1)]
    return torch.sin((a * locs).sum(-1) + SIN_B) * torch.exp(-0.5 * (a.pow(2) * scales.pow(2)).sum(-1))


TEST_FUNCTIONS = {"square": (_square, _square_mean), "sin": (_sin, _sin_mean)}


def exact_expectation(name, locs, scales, logits):
    return (logits.softmax(-1) * TEST_FUNCTIONS[name][1](locs, scales)).sum(-1)


def leaf_params(dim):
    return [p.clone().requires_grad_() for p in params(dim)]


def monte_carlo_gradient(estimate, parameters, num_batches=40):
    """Mean and standard error over independent batches of the gradient of ``estimate()``."""
    grads = []
    for _ in range(num_batches):
        grads.append(torch.autograd.grad(estimate(), parameters))
    stacked = [torch.stack(g) for g in zip(*grads)]
    return [g.mean(0) for g in stacked], [g.std(0) / math.sqrt(num_batches) for g in stacked]


def assert_gradients_match(estimate, name, dim):
    parameters = leaf_params(dim)
    torch.manual_seed(0)
    means, errors = monte_carlo_gradient(lambda: estimate(*parameters), parameters)
    exact = torch.autograd.grad(exact_expectation(name, *parameters), parameters)
    for label, mean, error, truth in zip(("locs", "scales", "logits"), means, errors, exact):
        assert torch.isfinite(mean).all(), label
        # the Monte Carlo error must be small enough for the check to mean something
        assert NUM_SE * error.max() < 0.25 * truth.abs().max(), (label, error, truth)
        assert ((mean - truth).abs() <= NUM_SE * error).all(), (label, mean, truth, error)


@pytest.mark.parametrize("dim", [1, 3])
def test_log_prob_matches_brute_force(dim):
    locs, scales, logits = params(dim, batch_shape=(2, 3), dtype=torch.float64)
    value = 2 * torch.randn(4, 1, 3, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    q = MixtureOfDiagonalNormals(locs, scales, logits)
    actual = q.log_prob(value)
    assert actual.shape == (4, 2, 3)
    assert torch.allclose(actual, brute_force_log_prob(locs, scales, logits, value), rtol=1e-10, atol=1e-12)


def test_log_prob_with_one_component_is_the_diagonal_normal():
    locs, scales, _ = params(3, batch_shape=(5,), dtype=torch.float64)
    locs, scales = locs[..., :1, :], scales[..., :1, :]
    value = torch.randn(7, 5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    q = MixtureOfDiagonalNormals(locs, scales, torch.randn(5, 1, dtype=torch.float64))
    expected = dist.Normal(locs.squeeze(-2), scales.squeeze(-2)).to_event(1).log_prob(value)
    assert torch.allclose(q.log_prob(value), expected, rtol=1e-12)


def test_mean_and_variance_match_brute_force():
    locs, scales, logits = params(3, batch_shape=(2,), dtype=torch.float64)
    q = MixtureOfDiagonalNormals(locs, scales, logits)
    mean, variance = brute_force_moments(locs, scales, logits)
    assert torch.allclose(q.mean, mean, rtol=1e-12)
    assert torch.allclose(q.variance, variance, rtol=1e-12)
    assert torch.allclose(q.component_log_weights.exp().sum(-1), torch.ones(2, dtype=torch.float64))


def test_marginal_quantiles_solve_the_marginal_cdf():
    locs, scales, logits = params(3, batch_shape=(2,), dtype=torch.float64)
    locs[1, 2] += 8.0  # a component far from the others: a marginal with a gap
    q = MixtureOfDiagonalNormals(locs, scales, logits)
    levels = torch.tensor([1e-6, 0.05, 0.3, 0.5, 0.9, 1 - 1e-6], dtype=torch.float64)
    quantiles = q.marginal_icdf(levels)
    assert quantiles.shape == (6, 2, 3) and quantiles.dtype == torch.float64
    for b in range(2):
        for d in range(3):
            cdf = mixture_cdf_1d(locs[b, :, d : d + 1], scales[b, :, d : d + 1], logits[b], quantiles[:, b, d])
            assert torch.allclose(cdf, levels, rtol=0, atol=1e-13)
    assert (quantiles.diff(dim=0) > 0).all()


def test_marginal_quantiles_of_one_component_are_the_normal_ones():
    locs, scales, _ = params(2, dtype=torch.float64)
    q = MixtureOfDiagonalNormals(locs[:1], scales[:1], torch.zeros(1, dtype=torch.float64))
    levels = torch.tensor([0.0, 0.025, 0.5, 0.975, 1.0], dtype=torch.float64)
    expected = dist.Normal(locs[0], scales[0]).icdf(levels.unsqueeze(-1))
    assert torch.allclose(q.marginal_icdf(levels), expected, rtol=1e-12, atol=1e-12)  # +-inf at 0 and 1 too


def test_marginal_median_of_a_symmetric_float32_mixture_is_its_centre():
    # Two equal-weight components 13.5 scales apart: the CDF is flat (density
    # ~1e-10) around the centre, so weights that sum to 1 - 2e-9 (float32
    # log-weights exponentiated) moved the root of F = 1/2 by 0.085.
    locs = torch.tensor([[-0.6745], [0.6745]])
    q = MixtureOfDiagonalNormals(locs, torch.full((2, 1), 0.1), torch.zeros(2))
    assert q.marginal_icdf([0.5]).abs().item() < 1e-6


def test_marginal_quantiles_match_the_samples():
    # The empirical p-quantile of n draws has standard error sqrt(p (1 - p) / n) / f(x_p).
    n = 200_000
    locs, scales, logits = params(1)
    q = MixtureOfDiagonalNormals(locs, scales, logits)
    levels = torch.tensor([0.1, 0.5, 0.9])
    quantiles = q.marginal_icdf(levels).squeeze(-1)
    torch.manual_seed(0)
    empirical = torch.quantile(q.sample((n,)).squeeze(-1), levels)
    density = q.log_prob(quantiles.unsqueeze(-1)).exp()
    standard_error = (levels * (1 - levels) / n).sqrt() / density
    assert ((empirical - quantiles).abs() < NUM_SE * standard_error).all()


@pytest.mark.parametrize("levels", [[-0.1, 0.5], [0.5, 1.5], [[0.5]], [float("nan")]])
def test_marginal_quantiles_reject_bad_levels(levels):
    locs, scales, logits = params(2)
    with pytest.raises(ValueError, match="quantile levels"):
        MixtureOfDiagonalNormals(locs, scales, logits).marginal_icdf(levels)


@pytest.mark.parametrize("method", ["rsample", "sample"])
@pytest.mark.parametrize("dim", [1, 3])
def test_sample_moments(dim, method):
    n = 100_000
    locs, scales, logits = params(dim, batch_shape=(2,))
    q = MixtureOfDiagonalNormals(locs.requires_grad_(), scales, logits)
    torch.manual_seed(0)
    z = getattr(q, method)((n,)).detach().double()
    assert z.shape == (n, 2, dim)
    mean, variance = brute_force_moments(*(p.detach().double() for p in (locs, scales, logits)))
    sample_mean, sample_variance = z.mean(0), z.var(0)
    fourth_moment = (z - sample_mean).pow(4).mean(0)
    assert ((sample_mean - mean).abs() <= NUM_SE * (sample_variance / n).sqrt()).all()
    assert ((sample_variance - variance).abs() <= NUM_SE * ((fourth_moment - sample_variance**2) / n).sqrt()).all()


@pytest.mark.parametrize("method", ["rsample", "sample"])
def test_one_dimensional_samples_follow_the_mixture_cdf(method):
    n = 20_000
    locs, scales, logits = params(1)
    torch.manual_seed(0)
    z = getattr(MixtureOfDiagonalNormals(locs, scales, logits), method)((n,)).squeeze(-1).double()
    statistic = ks_statistic(z, lambda x: mixture_cdf_1d(*(p.double() for p in (locs, scales, logits)), x))
    assert statistic < 1.63 / math.sqrt(n)


def test_cdf_check_rejects_a_wrong_distribution():
    n = 20_000
    locs, scales, logits = params(1)
    torch.manual_seed(0)
    z = MixtureOfDiagonalNormals(locs, 1.2 * scales, logits).sample((n,)).squeeze(-1).double()
    statistic = ks_statistic(z, lambda x: mixture_cdf_1d(*(p.double() for p in (locs, scales, logits)), x))
    assert statistic > 1.63 / math.sqrt(n)


@pytest.mark.parametrize("name", ["square", "sin"])
@pytest.mark.parametrize("dim", [1, 3])
def test_pathwise_gradients_match_the_closed_form(dim, name):
    f = TEST_FUNCTIONS[name][0]

    def estimate(locs, scales, logits):
        return f(MixtureOfDiagonalNormals(locs, scales, logits).rsample((2500,))).mean()

    assert_gradients_match(estimate, name, dim)


def test_pathwise_gradients_of_a_single_component_are_the_reparameterization_trick():
    locs, scales = torch.tensor([[0.5, -1.0]], requires_grad=True), torch.tensor([[2.0, 0.5]], requires_grad=True)
    torch.manual_seed(0)
    z = MixtureOfDiagonalNormals(locs, scales, torch.zeros(1)).rsample((10,))
    grad_locs, grad_scales = torch.autograd.grad(z.pow(2).sum(), (locs, scales))
    eps = (z.detach() - locs.detach()) / scales.detach()
    assert torch.allclose(grad_locs, 2 * z.detach().sum(0, keepdim=True), rtol=1e-5)
    assert torch.allclose(grad_scales, (2 * z.detach() * eps).sum(0, keepdim=True), rtol=1e-5)


def rsample_at(q, z, monkeypatch):
    """The output of ``q.rsample()`` with the draws replaced by the points z."""
    monkeypatch.setattr(q, "sample", lambda sample_shape=torch.Size(): z)
    return q.rsample()


@pytest.mark.parametrize("name", ["sin", "cross"])
def test_pathwise_derivatives_by_quadrature(name, monkeypatch):
    # E_q[grad f(z) . dz/dtheta] on a grid over 8 standard deviations around
    # every component, against grad_theta E_q[f]: exact up to the quadrature.
    f, expectation = {
        "sin": (_sin, lambda *p: exact_expectation("sin", *p)),
        "cross": (lambda z: z[..., 0] * z[..., 1], lambda l, s, g: (g.softmax(-1) * l[..., 0] * l[..., 1]).sum(-1)),
    }[name]
    parameters = [p.clone().requires_grad_() for p in params(2, dtype=torch.float64)]
    step, axis = 0.1, torch.arange(-13.0, 13.0, 0.1, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    q = MixtureOfDiagonalNormals(*parameters)
    weights = q.log_prob(grid).detach().exp() * step**2
    assert torch.isclose(weights.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-10)
    estimate = (weights * f(rsample_at(q, grid, monkeypatch))).sum()
    exact = torch.autograd.grad(expectation(*parameters), parameters, materialize_grads=True)
    for actual, truth in zip(torch.autograd.grad(estimate, parameters), exact):
        assert torch.allclose(actual, truth, atol=1e-8), (actual, truth)


def test_location_and_scale_derivatives_are_pyros(monkeypatch):
    # pyro's MixtureOfDiagNormals has the same fields for locs and scales (and a biased one for the logits)
    locs, scales, logits = (p.double().requires_grad_() for p in params(3))
    torch.manual_seed(0)
    z = dist.MixtureOfDiagNormals(locs, scales, logits).rsample((100,))
    cotangent = torch.randn(100, 3, dtype=torch.float64)
    expected = torch.autograd.grad((cotangent * z).sum(), (locs, scales))
    z_ours = rsample_at(MixtureOfDiagonalNormals(locs, scales, logits), z.detach(), monkeypatch)
    assert torch.equal(z_ours, z.detach())
    for actual, reference in zip(torch.autograd.grad((cotangent * z_ours).sum(), (locs, scales)), expected):
        assert torch.allclose(actual, reference, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("dim", [1, 3])
def test_rsample_values_are_those_of_sample(dim):
    q = MixtureOfDiagonalNormals(*leaf_params(dim))
    torch.manual_seed(0)
    expected = q.sample((1000,))
    torch.manual_seed(0)
    assert torch.equal(q.rsample((1000,)), expected)
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.equal(q.rsample((1000,)), expected)


def test_coincident_components_have_finite_gradients():
    locs = torch.tensor([[1.0, -1.0, 0.5]]).repeat(2, 1).requires_grad_()
    scales, logits = torch.ones(2, 3, requires_grad=True), torch.zeros(2, requires_grad=True)
    torch.manual_seed(0)
    z = MixtureOfDiagonalNormals(locs, scales, logits).rsample((100,))
    grads = torch.autograd.grad(torch.sin(z).sum(), (locs, scales, logits))
    assert all(torch.isfinite(g).all() for g in grads)


def test_stratified_rsample_shape_and_component_means():
    n = 20_000
    locs, scales, logits = params(3, batch_shape=(2,))
    q = MixtureOfDiagonalNormals(locs, scales, logits)
    assert q.stratified_rsample().shape == (3, 2, 3)
    torch.manual_seed(0)
    z = q.expand((n, 2)).stratified_rsample()
    assert z.shape == (3, n, 2, 3)
    standard_error = scales.movedim(-2, 0) / math.sqrt(n)
    assert ((z.mean(1) - locs.movedim(-2, 0)).abs() <= NUM_SE * standard_error).all()


@pytest.mark.parametrize("name", ["square", "sin"])
@pytest.mark.parametrize("dim", [1, 3])
def test_stratified_estimate_is_unbiased(dim, name):
    n = 50_000
    f = TEST_FUNCTIONS[name][0]
    locs, scales, logits = params(dim)
    q = MixtureOfDiagonalNormals(locs, scales, logits).expand((n,))
    torch.manual_seed(0)
    estimates = (q.component_log_weights.exp().T * f(q.stratified_rsample())).sum(0)
    exact = exact_expectation(name, locs, scales, logits)
    assert (estimates.mean() - exact).abs() <= NUM_SE * estimates.std() / math.sqrt(n)


@pytest.mark.parametrize("name", ["square", "sin"])
@pytest.mark.parametrize("dim", [1, 3])
def test_stratified_gradients_match_the_closed_form(dim, name):
    f = TEST_FUNCTIONS[name][0]

    def estimate(locs, scales, logits):
        q = MixtureOfDiagonalNormals(locs, scales, logits).expand((2500,))
        return (q.component_log_weights.exp().T * f(q.stratified_rsample())).sum(0).mean()

    assert_gradients_match(estimate, name, dim)


def test_stratified_estimate_has_lower_variance_for_separated_components():
    # f(z) = |z|^2 under three well-separated components; per component,
    # Var[z_d^2] = 2 s^4 + 4 mu^2 s^2 for z_d ~ N(mu, s^2).
    n = 50_000
    locs = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    scales = torch.full((3, 3), 0.5)
    logits = torch.tensor([0.2, 0.0, -0.2])
    q = MixtureOfDiagonalNormals(locs, scales, logits)
    weights = logits.softmax(-1)
    component_mean = (locs**2 + scales**2).sum(-1)
    component_variance = (2 * scales**4 + 4 * locs**2 * scales**2).sum(-1)
    theory = {
        "pathwise": (weights * (component_variance + component_mean**2)).sum() - (weights * component_mean).sum() ** 2,
        "stratified": (weights**2 * component_variance).sum(),
    }
    torch.manual_seed(0)
    draws = {
        "pathwise": _square(q.rsample((n,))),
        "stratified": (weights[:, None] * _square(q.expand((n,)).stratified_rsample())).sum(0),
    }
    for key, values in draws.items():
        centered = values - values.mean()
        variance_standard_error = (centered.pow(2).var() / n).sqrt()
        assert (centered.pow(2).mean() - theory[key]).abs() <= NUM_SE * variance_standard_error, key
    # at equal cost (K evaluations of f), stratification removes the between-component variance
    ratio = draws["stratified"].var() / (draws["pathwise"].var() / 3)
    expected = theory["stratified"] / (theory["pathwise"] / 3)
    print(f"variance of the stratified estimate / mean of 3 pathwise draws: {ratio:.4f} (theory {expected:.4f})")
    assert ratio < 0.1


def test_expand():
    locs, scales, logits = params(3, batch_shape=(2,), dtype=torch.float64)
    q = MixtureOfDiagonalNormals(locs, scales, logits, validate_args=True)
    assert q.expand((2,)) is q
    expanded = q.expand((4, 2))
    assert expanded.batch_shape == (4, 2) and expanded.event_shape == (3,)
    assert expanded._validate_args
    value = torch.randn(5, 4, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(expanded.log_prob(value), q.log_prob(value), rtol=1e-12)
    assert torch.allclose(expanded.log_prob(value), brute_force_log_prob(locs, scales, logits, value), rtol=1e-10)
    assert torch.equal(expanded.mean, q.mean.expand(4, 2, 3))
    assert torch.equal(expanded.variance, q.variance.expand(4, 2, 3))
    assert expanded.rsample((6,)).shape == (6, 4, 2, 3)
    assert expanded.sample().shape == (4, 2, 3)
    assert expanded.stratified_rsample().shape == (3, 4, 2, 3)


def test_validation():
    locs, scales, logits = params(2)
    with pytest.raises(ValueError):
        MixtureOfDiagonalNormals(locs, -scales, logits, validate_args=True)
    MixtureOfDiagonalNormals(locs, -scales, logits, validate_args=False)
    with pytest.raises(ValueError):
        MixtureOfDiagonalNormals(locs, scales, logits[:2])
    with pytest.raises(ValueError):
        MixtureOfDiagonalNormals(locs, scales, logits, validate_args=True).log_prob(torch.tensor([float("nan"), 0.0]))


def test_family_shapes():
    family = DiagonalNormalMixture(in_features=5, latent_dim=3, num_components=4)
    assert (family.latent_dim, family.num_components) == (3, 4)
    q = family(torch.randn(7, 5))
    assert isinstance(q, MixtureOfDiagonalNormals)
    assert q.batch_shape == (7,) and q.event_shape == (3,)
    assert q.locs.shape == q.scales.shape == (7, 4, 3) and q.logits.shape == (7, 4)
    z = q.rsample()
    assert z.shape == (7, 3) and q.log_prob(z).shape == (7,)
    (q.log_prob(z) + z.pow(2).sum(-1)).sum().backward()
    for name, parameter in family.named_parameters():
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("latent_dim, num_components", [(1, 5), (2, 2), (8, 10)])
def test_family_components_start_apart(latent_dim, num_components):
    torch.manual_seed(0)
    q = DiagonalNormalMixture(4, latent_dim, num_components)(torch.zeros(1, 4))
    # a Latin hypercube of the N(0, 1) quantiles: components differ in every
    # coordinate by at least the smallest gap between consecutive quantiles
    quantiles = ndtri((torch.arange(num_components) + 0.5) / num_components)
    margin = math.sqrt(latent_dim) * quantiles.diff().min()
    distances = torch.cdist(q.locs[0], q.locs[0]) + torch.eye(num_components) * 1e9
    assert distances.min() >= margin - 1e-5
    assert torch.allclose(q.component_log_weights, torch.full((1, num_components), -math.log(num_components)))


def test_family_initialization_is_a_latin_hypercube_reproducible_under_the_global_seed():
    def loc_biases(seed):
        pyro.set_rng_seed(seed)
        family = DiagonalNormalMixture(4, 6, 3)
        return family._split(family.linear.bias.detach())[1]

    first, again, other = loc_biases(0), loc_biases(0), loc_biases(1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    quantiles = ndtri((torch.arange(3) + 0.5) / 3)
    for offsets in (first, other):
        torch.testing.assert_close(offsets.sort(0).values, quantiles[:, None].expand(3, 6))


def test_family_scales_are_at_least_min_scale():
    torch.manual_seed(0)
    family = DiagonalNormalMixture(4, 3, 2, min_scale=1e-3)
    scales = family(1e4 * torch.randn(64, 4)).scales
    assert (scales >= 1e-3).all()
    assert torch.isclose(scales.min(), torch.tensor(1e-3))


def test_family_in_a_pyro_guide():
    torch.manual_seed(0)
    family = DiagonalNormalMixture(4, 3, 2)
    x = torch.randn(8, 4)
    built = []

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x[:, :1])

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            built.append(family(x))
            pyro.sample("z", built[-1])

    guide_trace = pyro.poutine.trace(guide).get_trace(x)
    assert guide_trace.nodes["z"]["fn"] is built[-1]
    loss = Trace_ELBO().differentiable_loss(model, guide, x)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in family.parameters())


@pytest.mark.parametrize("locs, scales, logits", [
    ((3, 2), (3, 2), (3,)),
    ((5, 3, 2), (1, 2), (3,)),
    ((4, 1, 3, 2), (5, 3, 1), (5, 3)),
])
def test_infer_shapes_are_those_of_an_instance(locs, scales, logits):
    """Pyro's distribution convention: infer_shapes from the parameters' shapes, without building the distribution."""
    mixture = MixtureOfDiagonalNormals(torch.zeros(locs), torch.ones(scales), torch.zeros(logits))
    assert MixtureOfDiagonalNormals.infer_shapes(locs=locs, scales=scales, logits=logits) == (mixture.batch_shape, mixture.event_shape)
