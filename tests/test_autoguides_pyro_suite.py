"""
Pyro's own autoguide test cases (pyro-ppl ``tests/infer/test_autoguide.py``),
written afresh for pyprobvae's two ``AutoContinuous`` guides, parametrized as
``"mixture"`` (:class:`AutoMixtureNormal`, K = 2) and the flows ``"planar"``,
``"radial"``, ``"iaf"``, ``"spline"`` (:class:`AutoFlowNormal`). The existing
tests of tests/test_autoguides.py (posterior moments, Predictive shapes, the
traced Predictive of the flows, shapes of median/quantiles) are not repeated.

Pyro's cases covered here, with what changed for these guides:

- ``test_scores``, ``test_factor``, ``test_shapes``: as Pyro's, with every
  latent vector of dimension D >= 2 (``"iaf"`` refuses D = 1).
- ``test_median``, ``test_quantiles``: Pyro's fit (100 steps of Adam, lr 0.05,
  betas (0.8, 0.99), 100 vectorized particles) for the mixture under
  Trace_ELBO, TraceGraph_ELBO, TraceEnum_ELBO and JitTrace_ELBO. The flows do
  not meet Pyro's 0.1 tolerance after those 100 steps: at a constant lr of
  0.05 their medians jitter (errors up to 0.10 for iaf and planar, 0.31 for
  spline over seeds 0-4; Pyro's own test leaves its flow, AutoIAFNormal, out of
  both cases), so they get 200 steps with the learning rate decaying
  geometrically to 0.002 (errors at most 0.04 over seeds 0-2), under
  Trace_ELBO and JitTrace_ELBO only (TraceGraph_ELBO and TraceEnum_ELBO run
  the same reparameterized estimator on these models, and draw the same
  samples; cases 2, 3 and 11 run every guide under all three). The spline
  flow is not run under JitTrace_ELBO (see ``SPLINE_JIT``).
- ``test_autoguide_serialization``: the guide itself traced, saved and loaded
  (mixture included).
- ``test_init_loc_fn``, ``test_init_scale`` (init_scale 1e-1 and 1e-4; Pyro's
  1e-8 is left out: it is below float32 resolution of a location of order 1).
  The mixture's initial spread is not ``init_scale`` but
  sqrt(init_scale^2 + 0.6745^2 init_spread^2), which is what is checked.
- ``test_median_module`` (PyroModule model), ``test_guide_list`` and
  ``test_nested_autoguide`` (AutoGuideList), ``test_linear_regression_smoke``
  and ``test_predictive``, ``test_subsample_model`` (global latents), a local
  latent in a subsampled plate, poutine handlers (condition, block, scale,
  mask), ``test_discrete_parallel``, ``test_empty_model_error`` and
  ``test_unpack_latent`` (LKJCholesky, Pyro's LKJCorrCholesky renamed).

Left out: ``test_iplate_smoke`` (xfail in Pyro: sequential plates are not
supported by any AutoContinuous); ``test_callable`` and
``test_callable_return_dict`` (AutoGuideList's handling of plain callables,
independent of the guides); ``test_subsample_guide`` and
``test_subsample_guide_2`` (they pass ``create_plates`` for local latents,
which ``AutoContinuous`` does not take); the cases that exist only for
AutoDelta, AutoLaplaceApproximation, AutoNormal, AutoCallable or Pyro's
structured/Gaussian guides.
"""

import io
import math
import warnings
from operator import attrgetter

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiscreteParallel,
    AutoGuideList,
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
)
from pyro.nn.module import PyroModule, PyroParam, PyroSample
from pyro.optim import Adam, ClippedAdam
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match
from torch import nn

from pyprobvae.autoguides import FLOWS, AutoFlowNormal, AutoMixtureNormal

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("mixture", *FLOWS)
ELBOS = (Trace_ELBO, TraceGraph_ELBO, TraceEnum_ELBO)

# Pyro's rational-quadratic spline writes its identity branch with boolean-mask
# indexing, ``outputs[outside] = inputs[outside]``, whose traced graph bakes in
# whether any input lay outside the bounding box [-3, 3]: a JitTrace_ELBO whose
# first step had a draw outside the box fails on a later step with none
# ("RuntimeError: shape '[]' is invalid for input of size 0"). With 100
# particles that happens on about half the seeds; a limitation of Pyro's
# transform, not of AutoFlowNormal.
SPLINE_JIT = "Pyro's Spline transform does not survive torch.jit tracing once the count of draws outside its box changes"


@pytest.fixture(autouse=True)
def fresh_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


def make_guide(name, model, **kwargs):
    """pyprobvae's guide ``name`` on ``model``; ``num_quantile_samples`` only reaches the flows."""
    if name == "mixture":
        kwargs.pop("num_quantile_samples", None)
        return AutoMixtureNormal(model, num_components=2, **kwargs)
    kwargs.pop("init_spread", None)
    return AutoFlowNormal(model, flow=name, **kwargs)


def make_elbo(Elbo, **kwargs):
    return Elbo(strict_enumeration_warning=False, **kwargs) if Elbo is not Trace_ELBO else Elbo(**kwargs)


def in_support(fn, value):
    return bool(fn.support.check(value).all())


# ---------------------------------------------------------------- 1. scores


@pytest.mark.parametrize("name", NAMES)
def test_scores(name):
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0).expand([10]).to_event(1))

    guide = make_guide(name, model)
    guide_trace = poutine.trace(guide).get_trace()
    model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace()
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    latent = f"_{type(guide).__name__}_latent"
    assert latent not in model_trace.nodes
    assert guide_trace.nodes[latent]["log_prob_sum"].item() != 0.0
    assert model_trace.nodes["z"]["log_prob_sum"].item() != 0.0
    # z's support is the real line, so its Delta site carries a zero log-Jacobian
    assert guide_trace.nodes["z"]["log_prob_sum"].item() == 0.0


# ---------------------------------------------------------------- 2. factor


@pytest.mark.parametrize("Elbo", ELBOS)
@pytest.mark.parametrize("name", NAMES)
def test_factor(name, Elbo):
    def model(log_factor):
        pyro.sample("z1", dist.Normal(0.0, 1.0))
        pyro.factor("f1", log_factor)
        pyro.sample("z2", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
        with pyro.plate("plate", 3):
            pyro.factor("f2", log_factor)
            pyro.sample("z3", dist.Normal(torch.zeros(3), torch.ones(3)))

    guide = make_guide(name, model)
    elbo = make_elbo(Elbo)
    elbo.loss(model, guide, torch.tensor(0.0))  # sets up the guide's parameters
    pyro.set_rng_seed(123)
    loss_5 = elbo.loss(model, guide, torch.tensor(5.0))
    pyro.set_rng_seed(123)
    loss_4 = elbo.loss(model, guide, torch.tensor(4.0))
    # Same draws, so the losses differ by the factors alone, -(1 + 3); the
    # slack is float32 rounding of losses of magnitude ~30 (ulp ~4e-6).
    assert loss_5 - loss_4 == pytest.approx(-1 - 3, abs=1e-4)


# ---------------------------------------------------------------- 3. shapes


def shapes_model():
    pyro.sample("z1", dist.Normal(0.0, 1.0))
    pyro.sample("z2", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
    with pyro.plate("plate", 3):
        pyro.sample("z3", dist.Normal(torch.zeros(3), torch.ones(3)))
    pyro.sample("z4", dist.MultivariateNormal(torch.zeros(2), torch.eye(2)))
    pyro.sample("z5", dist.Dirichlet(torch.ones(3)))
    pyro.sample("z6", dist.Normal(0, 1).expand((2,)).mask(torch.arange(2) > 0).to_event(1))


@pytest.mark.parametrize("Elbo", ELBOS)
@pytest.mark.parametrize("init_loc_fn", [init_to_feasible, init_to_mean, init_to_median, init_to_sample])
@pytest.mark.parametrize("name", NAMES)
def test_shapes(name, init_loc_fn, Elbo):
    guide = make_guide(name, shapes_model, init_loc_fn=init_loc_fn)
    loss = make_elbo(Elbo).loss(shapes_model, guide)
    assert math.isfinite(loss), loss
    model_trace = prune_subsample_sites(poutine.trace(shapes_model).get_trace())
    model_sites = {site_name: model_trace.nodes[site_name] for site_name in model_trace.stochastic_nodes}
    draws = guide()
    assert set(draws) == set(model_sites)
    for site_name, value in draws.items():
        assert value.shape == model_sites[site_name]["value"].shape, site_name
        assert in_support(model_sites[site_name]["fn"], value), (site_name, value)


# ---------------------------------------------------------------- 4, 5. median and quantiles


def xyz_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.LogNormal(0.0, 1.0))
    pyro.sample("z", dist.Beta(2.0, 2.0))


# Monte Carlo median of a flow from S draws: standard error
# sqrt(0.25 / S) / f(median) = 1.2533 sigma / sqrt(S), i.e. 0.040 sigma at
# S = 1000 and 0.0063 sigma at S = 40000. The posterior sds are 1 (x), 1 in
# log y at the median y = 1, so 1 in y, and 0.22 (z), hence 4 standard errors
# are at most 0.025, leaving 0.075 of the 0.1 tolerance for the fit, whose
# error was at most 0.04 over seeds 0-2.
FLOW_QUANTILE_SAMPLES = 40000


def _fit_xyz(name, Elbo):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    # init_to_median: Pyro's AutoContinuous default, which its case was written for
    guide = make_guide(name, xyz_model, init_loc_fn=init_to_median, num_quantile_samples=FLOW_QUANTILE_SAMPLES)
    if name == "mixture":  # Pyro's case as it is
        steps, optim = 100, Adam({"lr": 0.05, "betas": (0.8, 0.99)})
    else:  # see the module docstring
        steps = 200
        optim = ClippedAdam({"lr": 0.05, "betas": (0.8, 0.99), "lrd": (0.002 / 0.05) ** (1 / steps)})
    elbo = make_elbo(Elbo, num_particles=100, vectorize_particles=True)
    svi = SVI(xyz_model, guide, optim, elbo)
    with warnings.catch_warnings():
        if Elbo is JitTrace_ELBO:
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's pointer to torch.compile
        for _ in range(steps):
            svi.step()
    return guide


@pytest.fixture(scope="module")
def xyz_fits():
    """Fits shared by the median and quantile tests (one fit per guide and ELBO), keyed by (name, ELBO)."""
    cache = {}

    def get(name, Elbo):
        if (name, Elbo) not in cache:
            cache[name, Elbo] = _fit_xyz(name, Elbo)
        return cache[name, Elbo]

    return get


MEDIAN_CASES = [
    *[("mixture", Elbo) for Elbo in (*ELBOS, JitTrace_ELBO)],
    *[(flow, Elbo) for flow in FLOWS for Elbo in (Trace_ELBO, JitTrace_ELBO)],
]
MEDIAN_CASES = [
    pytest.param(*case, marks=pytest.mark.skip(reason=SPLINE_JIT)) if case == ("spline", JitTrace_ELBO) else case
    for case in MEDIAN_CASES
]


@pytest.mark.slow
@pytest.mark.parametrize("name,Elbo", MEDIAN_CASES)
def test_median(xyz_fits, name, Elbo):
    guide = xyz_fits(name, Elbo)
    pyro.set_rng_seed(0)
    median = guide.median()
    # The mixture's median is exact (bisection of its marginal CDFs); over seeds
    # 0-2 and the four ELBOs its largest error was 0.055.
    assert median["x"].item() == pytest.approx(0.0, abs=0.1)
    assert median["y"].item() == pytest.approx(1.0, abs=0.1)
    assert median["z"].item() == pytest.approx(0.5, abs=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("name,Elbo", MEDIAN_CASES)
def test_quantiles(xyz_fits, name, Elbo):
    guide = xyz_fits(name, Elbo)
    pyro.set_rng_seed(0)
    quantiles = guide.quantiles([0.1, 0.5, 0.9])
    pyro.set_rng_seed(0)  # the flows' same draws (the mixture's quantiles are deterministic)
    median = guide.median()
    for site in ("x", "y", "z"):
        assert quantiles[site].shape == (3,)
        # exact: the same bisection (mixture) or the same draws and order statistics (flows)
        assert torch.equal(median[site], quantiles[site][1]), site
    x, y, z = ([value.item() for value in quantiles[site]] for site in ("x", "y", "z"))
    # Pyro's gaps: the exact quantiles are x: -1.28, 0, 1.28; y: 0.28, 1, 3.60; z: 0.20, 0.5, 0.80
    assert -3.0 < x[0] and x[0] + 1.0 < x[1] and x[1] + 1.0 < x[2] and x[2] < 3.0, x
    assert 0.01 < y[0] and y[0] * 2.0 < y[1] and y[1] * 2.0 < y[2] and y[2] < 100.0, y
    assert 0.01 < z[0] and z[0] + 0.1 < z[1] and z[1] + 0.1 < z[2] and z[2] < 0.99, z


# ---------------------------------------------------------------- 6. serialization


@pytest.mark.parametrize("name", NAMES)
def test_guide_serialization(name):
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        with pyro.plate("plate", 2):
            pyro.sample("y", dist.LogNormal(0.0, 1.0))
            pyro.sample("z", dist.Beta(2.0, 2.0))

    guide = make_guide(name, model)
    guide()
    pyro.set_rng_seed(0)
    expected = guide.call()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.save/load's pointer to torch.export
        traced = torch.jit.trace_module(guide, {"call": ()}, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    pyro.set_rng_seed(0)
    actual = loaded.call()
    assert len(actual) == len(expected) == 3  # x, y, z in sorted order
    # As in Pyro's test: the loaded graph draws what the eager guide draws under
    # the same seed (observed bit for bit on CPU; allow float rounding).
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)
    assert actual[1].shape == actual[2].shape == (2,) and (actual[1] > 0).all()
    assert ((actual[2] > 0) & (actual[2] < 1)).all()
    expected_names = {n for n, _ in guide.named_parameters()}
    assert {n for n, _ in loaded.named_parameters()} == expected_names
    for n in expected_names:
        assert torch.equal(attrgetter(n)(loaded), attrgetter(n)(guide).data), n


# ---------------------------------------------------------------- 7. init_loc_fn


def x_y5_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5)))


@pytest.mark.parametrize("init_scale", [0.1, 0.3])
def test_init_loc_fn_mixture(init_scale):
    """
    The components start at c +- 0.6745 init_spread in every coordinate with
    equal weights and scales, so every marginal CDF is symmetric about c and
    the exact median is c. The 1e-5 tolerance covers float32 rounding of the
    locations c +- 0.6745 (asymmetric by ~1e-7) and of the result.
    """
    inits = {"x": torch.randn(()), "y": torch.randn(5)}
    guide = make_guide("mixture", x_y5_model, init_loc_fn=lambda site: inits[site["name"]], init_scale=init_scale)
    guide()
    median = guide.median()
    for site in inits:
        torch.testing.assert_close(median[site], inits[site], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", FLOWS)
def test_init_loc_fn_flow(name):
    inits = {"x": torch.randn(()), "y": torch.randn(5)}
    guide = make_guide(name, x_y5_model, init_loc_fn=lambda site: inits[site["name"]])
    guide()
    # real supports: the unconstrained loc is the constrained value itself
    unpacked = {site["name"]: value for site, value in guide._unpack_latent(guide.loc.detach())}
    for site in inits:
        torch.testing.assert_close(unpacked[site], inits[site])


# ---------------------------------------------------------------- 8. init_scale


def init_scale_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5)))
    with pyro.plate("plate", 10):
        pyro.sample("z", dist.Normal(0.0, 1.0))


NUM_INIT_DRAWS = 20000


@pytest.mark.parametrize("init_spread", [1.0, 1e-3])
@pytest.mark.parametrize("init_scale", [1e-1, 1e-4])
def test_init_scale_mixture(init_scale, init_spread):
    r"""
    Per coordinate, an initial draw is u = c + A + sigma eps: A = +-a with
    probability 1/2 each (the component; a = init_spread Phi^{-1}(3/4) =
    0.6745 init_spread for K = 2, one component on each side of c),
    eps ~ N(0, 1) independent, sigma = init_scale. So
    Var u = sigma^2 + a^2.

    Tolerance: the sample variance s^2 of n draws has variance
    (mu_4 - v^2) / n to first order, with v = sigma^2 + a^2 and
    mu_4 = a^4 + 6 a^2 sigma^2 + 3 sigma^4, so (4 a^2 sigma^2 + 2 sigma^4) / n;
    when sigma << a this vanishes and the second-order term, from the
    fluctuating share of draws from each component, 2 v^2 / n^2, is added
    as a bound. Then se(s) = se(s^2) / (2 s), and each coordinate's s must be
    within 5 se of sqrt(v). (With init_scale 0.1 and init_spread 1 this
    resolves the init_scale term: 5 se is 0.5% of s, the init_scale term
    1.1%.)
    """
    guide = make_guide("mixture", init_scale_model, init_scale=init_scale, init_spread=init_spread)
    guide()
    with torch.no_grad():
        draws = guide.get_posterior().sample((NUM_INIT_DRAWS,)).double()
    assert draws.shape == (NUM_INIT_DRAWS, 16)
    a = init_spread * torch.special.ndtri(torch.tensor(0.75, dtype=torch.float64))
    variance = init_scale**2 + a**2
    n = NUM_INIT_DRAWS
    se_variance = ((4 * a**2 * init_scale**2 + 2 * init_scale**4) / n + 2 * variance**2 / n**2).sqrt()
    se_sd = se_variance / (2 * variance.sqrt())
    error = draws.std(0) - variance.sqrt()
    assert (error.abs() < 5 * se_sd).all(), (error.abs().max() / se_sd, draws.std(0), variance.sqrt())


@pytest.mark.parametrize("init_scale", [1e-1, 1e-4])
@pytest.mark.parametrize("name", FLOWS)
def test_init_scale_flow(name, init_scale):
    """
    Pyro's band (0.5, 2) x init_scale for the rms over coordinates of the
    draws' standard deviations; the flow layers' random initial parameters
    move it, measured 0.97-1.07 x init_scale for every flow over seeds 0-2
    (single coordinates 0.69-1.35). 20000 draws estimate each sd to 0.5%.
    """
    guide = make_guide(name, init_scale_model, init_scale=init_scale)
    guide()
    with torch.no_grad():
        draws = guide.get_posterior().sample((NUM_INIT_DRAWS,)).double()
    rms = draws.var(0).mean().sqrt().item()
    assert 0.5 * init_scale < rms < 2.0 * init_scale, rms / init_scale


# ---------------------------------------------------------------- 9. PyroModule model


class ModuleModel(PyroModule):
    """Pyro's test_median_module model; with ``plate_size`` its y is in a plate (test_nested_autoguide's)."""

    def __init__(self, plate_size=None):
        super().__init__()
        self.x_loc = nn.Parameter(torch.tensor(1.0))
        self.x_scale = PyroParam(torch.tensor(0.1), constraints.positive)
        self.plate_size = plate_size

    def forward(self):
        pyro.sample("x", dist.Normal(self.x_loc, self.x_scale))
        if self.plate_size is None:
            pyro.sample("y", dist.Normal(2.0, 0.1))
        else:
            with pyro.plate("plate", self.plate_size):
                pyro.sample("y", dist.Normal(2.0, 0.1))


@pytest.mark.parametrize("Elbo", ELBOS)
@pytest.mark.parametrize("name", NAMES)
def test_median_module(name, Elbo):
    """
    20 steps at lr 0.005 move a parameter by at most ~0.1, so Pyro's case
    tests that the guide starts at init_to_median's point (Pyro's
    AutoContinuous default, passed explicitly) and stays there. For the
    mixture that needs a small init_spread: at the default 1.0 its components
    start 1.35 apart with scale 0.1 around posteriors of sd 0.1, stay apart
    after 20 steps, and the exact median of the still-bimodal mixture sits in
    the tail of the heavier component (x 0.52-0.58, y 1.58 over seeds 0-2).
    Measured errors: at most 0.054 (iaf), 0.03 (mixture, init_spread 0.01).
    The flows' medians from 10000 draws have Monte Carlo error 0.0013.
    """
    model = ModuleModel()
    guide = make_guide(name, model, init_loc_fn=init_to_median, init_spread=0.01, num_quantile_samples=10000)
    svi = SVI(model, guide, Adam({"lr": 0.005}), make_elbo(Elbo))
    for _ in range(20):
        svi.step()
    median = guide.median()
    assert median["x"].item() == pytest.approx(1.0, abs=0.1)
    assert median["y"].item() == pytest.approx(2.0, abs=0.1)


# ---------------------------------------------------------------- 10. AutoGuideList


@pytest.mark.parametrize("name", NAMES)
def test_guide_list(name):
    guide = AutoGuideList(x_y5_model)
    guide.append(AutoDelta(poutine.block(x_y5_model, expose=["x"])))
    guide.append(make_guide(name, poutine.block(x_y5_model, hide=["x"])))
    svi = SVI(x_y5_model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    for _ in range(3):
        svi.step()
    guide_trace = poutine.trace(guide).get_trace()
    check_model_guide_match(poutine.trace(x_y5_model).get_trace(), guide_trace)
    assert "AutoGuideList.0.x" in guide_trace.param_nodes
    assert all(p == "AutoGuideList.0.x" or p.startswith("AutoGuideList.1.") for p in guide_trace.param_nodes)
    assert {"x", "y", "_AutoGuideList.1_latent"} <= set(guide_trace.stochastic_nodes)
    assert set(guide.median()) == {"x", "y"}


@pytest.mark.parametrize("name", NAMES)
def test_nested_guide_list(name):
    model = ModuleModel(plate_size=2)  # the inner guide's latent has D = 2
    guide = AutoGuideList(model)
    guide.append(AutoDelta(poutine.block(model, expose=["x"])))
    inner = AutoGuideList(poutine.block(model, expose=["y"]))
    inner.z = make_guide(name, poutine.block(model, expose=["y"]))
    guide.append(inner)
    for _, module in guide.named_modules():
        if module is not guide and isinstance(module, (AutoGuideList, AutoDelta, AutoFlowNormal, AutoMixtureNormal)):
            assert module.master is not None and module.master() is guide, module._pyro_name
    svi = SVI(model, guide, Adam({"lr": 0.005}), Trace_ELBO())
    for _ in range(3):
        svi.step()
    guide_trace = poutine.trace(guide).get_trace()
    check_model_guide_match(poutine.trace(model).get_trace(), guide_trace)
    assert all(p.startswith("AutoGuideList.0.") or p.startswith("AutoGuideList.1.z.") for p in guide_trace.param_nodes)
    expected = {"locs", "scales", "logits"} if name == "mixture" else {"loc", "scale"}
    assert {f"AutoGuideList.1.z.{p}" for p in expected} <= set(guide_trace.param_nodes)
    # x from the AutoDelta, y from the inner guide, whose only latent sample is its auxiliary vector
    assert set(prune_subsample_sites(guide_trace).stochastic_nodes) == {"x", "y", "_AutoGuideList.1.z_latent"}


# ---------------------------------------------------------------- 11. linear regression and Predictive

N, D = 10, 3


class RandomLinear(nn.Linear, PyroModule):
    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features)
        self.weight = PyroSample(dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2))
        self.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))


class LinearRegression(PyroModule):
    def __init__(self):
        super().__init__()
        self.linear = RandomLinear(D, 1)

    def forward(self, x, y=None):
        mean = self.linear(x).squeeze(-1)
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("plate", N):
            return pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


@pytest.mark.parametrize("Elbo", ELBOS)
@pytest.mark.parametrize("name", NAMES)
def test_linear_regression_smoke(name, Elbo):
    x, y = torch.randn(N, D), torch.randn(N)
    model = LinearRegression()
    guide = make_guide(name, model)
    svi = SVI(model, guide, Adam({"lr": 0.005}), make_elbo(Elbo))
    assert math.isfinite(svi.step(x, y))
    assert guide.latent_dim == D + 1 + 1  # weight, bias, sigma


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "spline" else n for n in NAMES])
def test_predictive(name):
    """Pyro's case; the spline's trace takes ~4 s (its network for D = 5 has 50 x 50 hidden units)."""
    x, y = torch.randn(N, D), torch.randn(N)
    model = LinearRegression()
    guide = make_guide(name, model)
    guide(x, y=y)  # as in Pyro's test: set the guide up with obs observed
    model_trace = poutine.trace(model).get_trace(x, y=None)
    predictive = Predictive(model, guide=guide, num_samples=10)
    pyro.set_rng_seed(0)
    samples = predictive(x)
    sites = set(prune_subsample_sites(model_trace).stochastic_nodes)
    assert sites == {"linear.weight", "linear.bias", "sigma", "obs"} and sites <= set(samples)
    assert samples["obs"].shape == (10, N) and (samples["sigma"] > 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.save/load's pointer to torch.export
        # Pyro's check that two traces give the same graph holds except for the
        # spline, whose graph depends on which draws fall outside its box (see SPLINE_JIT)
        traced = torch.jit.trace_module(predictive, {"call": (x,)}, check_trace=name != "spline")
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    pyro.set_rng_seed(0)
    # as in Pyro's test only the count is compared: the traced draws differ from the eager ones
    assert len(loaded.call(x)) == len(samples)


# ---------------------------------------------------------------- 12. subsampling

FULL_SIZE = 50


def subsample_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(FULL_SIZE, generator=generator)
    return x, 2.0 * x + 0.5 * torch.randn(FULL_SIZE, generator=generator)


def global_subsample_model(x, y, subsample_size):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", FULL_SIZE, subsample_size=subsample_size):
        batch_x, batch_y = pyro.subsample(x, event_dim=0), pyro.subsample(y, event_dim=0)
        pyro.sample("obs", dist.Normal(w * batch_x, sigma), obs=batch_y)


@pytest.mark.parametrize("name", NAMES)
def test_subsample_global_latents(name):
    """
    The ELBO of a subsampled plate scales the likelihood by 50/20, so its
    expectation over subsamples is the full-data ELBO. With the guide fixed,
    the means of 100 losses at subsample sizes 20 and 50 agree within 5
    standard errors (of their difference, from the losses' sample spread).
    """
    x, y = subsample_data()
    guide = make_guide(name, global_subsample_model)
    svi = SVI(global_subsample_model, guide, Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(5):
        assert math.isfinite(svi.step(x, y, 20))
    assert guide.latent_dim == 2  # the globals only
    trace = poutine.trace(global_subsample_model).get_trace(x, y, 20)
    assert trace.nodes["obs"]["value"].shape == (20,) and trace.nodes["obs"]["scale"] == pytest.approx(2.5)
    elbo = Trace_ELBO()
    with torch.no_grad():
        losses = {size: torch.tensor([elbo.loss(global_subsample_model, guide, x, y, size) for _ in range(100)])
                  for size in (20, 50)}
    assert all(torch.isfinite(v).all() for v in losses.values())
    se = (losses[20].var() / 100 + losses[50].var() / 100).sqrt()
    assert (losses[20].mean() - losses[50].mean()).abs() < 5 * se, (losses[20].mean(), losses[50].mean(), se)


@pytest.mark.parametrize("name", NAMES)
def test_subsample_local_latent_is_silently_positional(name):
    """
    AutoContinuous supports only latents of fixed size, and a local latent in
    a subsampled plate has the subsample's size. No error results: the guide
    builds a latent vector for the 20 subsampled z, draws its own subsample
    indices in a plate it creates from the prototype trace (full size 50,
    subsample size 20), and the model, replayed, uses them. So the guide's
    i-th coordinate of z serves whichever datum is drawn i-th: it is not a
    posterior for any datum. This test records that behaviour.
    """
    x, y = subsample_data()

    def model(x, y):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", FULL_SIZE, subsample_size=20):
            batch_x, batch_y = pyro.subsample(x, event_dim=0), pyro.subsample(y, event_dim=0)
            z = pyro.sample("z", dist.Normal(loc, 1.0))
            pyro.sample("obs", dist.Normal(z + batch_x, 1.0), obs=batch_y)

    guide = make_guide(name, model)
    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    for _ in range(2):
        assert math.isfinite(svi.step(x, y))
    assert guide.latent_dim == 1 + 20 and guide._unconstrained_shapes["z"] == (20,)
    first, second = (poutine.trace(guide).get_trace(x, y) for _ in range(2))
    replayed = poutine.trace(poutine.replay(model, first)).get_trace(x, y)
    assert torch.equal(replayed.nodes["data"]["value"], first.nodes["data"]["value"])
    assert first.nodes["data"]["value"].shape == (20,)
    assert not torch.equal(first.nodes["data"]["value"], second.nodes["data"]["value"])


# ---------------------------------------------------------------- 13. poutine handlers


def handlers_model(data):
    x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    y = pyro.sample("y", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(x.sum(-1) + y.sum(-1), 1.0), obs=data)


def masked_handlers_model(data, mask):
    x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    y = pyro.sample("y", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", len(data)), poutine.mask(mask=mask):
        pyro.sample("obs", dist.Normal(x.sum(-1) + y.sum(-1), 1.0), obs=data)


HANDLERS_DATA = torch.tensor([0.5, -1.0, 2.0, 0.3, 1.1, -0.4])


@pytest.mark.parametrize("name", NAMES)
def test_condition_and_block_shrink_the_latent_vector(name):
    full = make_guide(name, handlers_model)
    full(HANDLERS_DATA)
    assert full.latent_dim == 5
    pyro.clear_param_store()  # the guides' parameters share names
    conditioned = poutine.condition(handlers_model, {"x": torch.tensor([0.5, -0.5])})
    guide = make_guide(name, conditioned)
    svi = SVI(conditioned, guide, Adam({"lr": 0.01}), Trace_ELBO())
    assert math.isfinite(svi.step(HANDLERS_DATA))
    assert guide.latent_dim == 3 and set(guide(HANDLERS_DATA)) == {"y"}
    pyro.clear_param_store()
    blocked = poutine.block(handlers_model, hide=["y"])
    guide = make_guide(name, blocked)
    assert set(guide(HANDLERS_DATA)) == {"x"} and guide.latent_dim == 2


@pytest.mark.parametrize("name", NAMES)
def test_scale(name):
    """
    Same seed, same guide draws. Scaling model and guide by 1/2 halves the
    loss; scaling the model alone halves only its term, so the loss rises by
    log p / 2 with log p the model's log joint at those draws. Tolerances:
    float32 rounding of sums of magnitude ~50.
    """
    guide = make_guide(name, handlers_model)
    guide(HANDLERS_DATA)
    elbo = Trace_ELBO()

    def seeded(fn, *args):
        pyro.set_rng_seed(1)
        return fn(*args)

    loss = seeded(elbo.loss, handlers_model, guide, HANDLERS_DATA)
    both = seeded(elbo.loss, poutine.scale(handlers_model, 0.5), poutine.scale(guide, 0.5), HANDLERS_DATA)
    model_only = seeded(elbo.loss, poutine.scale(handlers_model, 0.5), guide, HANDLERS_DATA)
    guide_trace = seeded(poutine.trace(guide).get_trace, HANDLERS_DATA)
    log_p = poutine.trace(poutine.replay(handlers_model, guide_trace)).get_trace(HANDLERS_DATA).log_prob_sum().item()
    log_q = guide_trace.log_prob_sum().item()
    assert loss == pytest.approx(log_q - log_p, rel=1e-5)
    assert both == pytest.approx(0.5 * loss, rel=1e-5)
    assert model_only == pytest.approx(loss + 0.5 * log_p, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_mask_on_the_likelihood(name):
    """A masked likelihood equals the likelihood of the unmasked data (same seed, same draws)."""
    mask = torch.tensor([True, False, True, True, False, True])
    guide = make_guide(name, masked_handlers_model)
    guide(HANDLERS_DATA, mask)
    elbo = Trace_ELBO()
    pyro.set_rng_seed(1)
    masked = elbo.loss(masked_handlers_model, guide, HANDLERS_DATA, mask)
    pyro.set_rng_seed(1)
    kept = elbo.loss(masked_handlers_model, guide, HANDLERS_DATA[mask], torch.ones(4, dtype=torch.bool))
    pyro.set_rng_seed(1)
    everything = elbo.loss(masked_handlers_model, guide, HANDLERS_DATA, torch.ones(6, dtype=torch.bool))
    assert masked == pytest.approx(kept, rel=1e-5, abs=1e-4)
    assert masked != pytest.approx(everything, rel=1e-3)


# ---------------------------------------------------------------- 14. discrete + continuous


@pytest.mark.parametrize("name", NAMES)
def test_discrete_parallel(name):
    K = 2
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])

    def model(data):
        weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
        locs = pyro.sample("locs", dist.Normal(0, 10).expand_by([K]).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(0, 1))
        with pyro.plate("data", len(data)):
            weights = weights.expand(torch.Size((len(data),)) + weights.shape)
            assignment = pyro.sample("assignment", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)

    guide = AutoGuideList(model)
    continuous = make_guide(name, poutine.block(model, hide=["assignment"]))
    guide.append(continuous)
    guide.append(AutoDiscreteParallel(poutine.block(model, expose=["assignment"])))
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss_and_grads(model, guide, data)
    assert math.isfinite(loss), loss
    assert continuous.latent_dim == 1 + K + 1  # the simplex of 2 weights is 1 unconstrained coordinate
    grads = [p.grad for p in continuous.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------- 15. empty model, LKJCholesky


@pytest.mark.parametrize("name", NAMES)
def test_empty_model_error(name):
    def model():
        pass

    guide = make_guide(name, model)
    with pytest.raises(RuntimeError, match="found no latent variables"):
        guide()


@pytest.mark.parametrize("name", NAMES)
def test_unpack_latent(name):
    dim = 3 if name == "iaf" else 2  # the 2 x 2 factor has one free coordinate, which iaf refuses

    def model():
        return pyro.sample("x", dist.LKJCholesky(dim, torch.tensor(1.0)))

    guide = make_guide(name, model)
    value = guide()["x"]
    assert value.shape == model().shape == (dim, dim)
    assert constraints.corr_cholesky.check(value).all()
    latent = guide.sample_latent()
    assert list(guide._unpack_latent(latent))[0][1].shape == (dim * (dim - 1) // 2,)
