"""
Every autoguide pyprobvae ships against NUTS on three classic models
(tests/classic_models.py): eight schools, a Bayesian linear regression and a
two-component Gaussian mixture with its assignments enumerated out.

The reference is tests/nuts_references.json, written by
``python benchmarks/nuts_references.py`` (two chains of 5000 draws; the
Monte Carlo standard errors of its means are below 0.03 posterior standard
deviations, recorded in the file). Each guide is fitted by SVI and summarized
by NUM_DRAWS draws, whose own Monte Carlo error is 1/sqrt(NUM_DRAWS) = 0.016
posterior standard deviations for a mean and 1.1% for a standard deviation.
For every coordinate of every site the test asks

- |mean_q - mean_NUTS| < MEAN_TOLERANCE * sd_NUTS, and
- SD_RATIO_RANGE[0] < sd_q / sd_NUTS < SD_RATIO_RANGE[1].

The tolerances are not Monte Carlo errors but what variational inference
gives up: the guides minimize KL(q || p), which shrinks q inside p, and the
Gaussian-based ones cannot follow the funnel of eight schools or the skew of
its tau. They were set from the errors measured over seeds 0-2 (the largest
are in the comments beside the constants) with a margin for other machines.

On the Gaussian mixture every guide starts from ``init_to_mean`` (the prior
means, locations -1 and 1) rather than the default ``init_to_feasible``,
whose zero puts both locations at one point: the one-cluster saddle of a
mixture's posterior, where the likelihood does not separate the locations
while the shared scale grows to cover both clusters. Guides started there
can be caught in the one-cluster local optimum of the ELBO (locations near
0, scale 2.2; its ELBO 11 nats below the two-cluster one): Pyro's AutoNormal
at seeds 0-2 and the radial flow at seed 0 (mean errors 9-15 NUTS sds), and
at least one component of AutoMixtureNormal in each of 9 runs (seeds 0-2,
init_spread 0.1, 0.3 and 1), where a lone trapped component kept a weight of
0.08-0.12: the exact gradient of its logit was -0.99, the pathwise
estimate's standard deviation 23 per draw. The planar, IAF and spline flows
escaped it at seed 0. One starts a mixture model with distinct locations,
as Pyro's mixture tutorial does; see docs/autoguides.rst, "Mixture models".
"""

import json
import os

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import init_to_feasible, init_to_mean
from pyro.optim import ClippedAdam

from pyprobvae.autoguides import AutoFlowNormal, AutoMixtureNormal
from pyprobvae.families.layers import FLOWS
from tests.classic_models import CONTINUOUS_SITES, MODELS, identified

with open(os.path.join(os.path.dirname(__file__), "nuts_references.json")) as _file:
    REFERENCE = json.load(_file)

NUM_DRAWS = 4000
STEPS = 1500
MEAN_TOLERANCE = 0.5  # in NUTS posterior standard deviations
SD_RATIO_RANGE = (0.5, 1.5)
INIT_LOC_FN = {"eight_schools": init_to_feasible, "linear_regression": init_to_feasible, "gaussian_mixture": init_to_mean}

GUIDES = {
    "mixture": lambda model, init_loc_fn: AutoMixtureNormal(model, num_components=2, init_loc_fn=init_loc_fn),
    **{flow: (lambda model, init_loc_fn, flow=flow: AutoFlowNormal(model, flow=flow, init_loc_fn=init_loc_fn)) for flow in FLOWS},
}
# Measured over seeds 0-2 at STEPS = 1500 (largest mean error in NUTS sds; range of sd ratios):
# eight schools: mixture 0.26, 0.74-1.02; planar 0.09, 0.75-1.01; radial 0.08, 0.81-1.01; iaf 0.14, 0.88-1.10;
#   spline 0.18, 0.79-1.03;
# linear regression: mixture 0.10, 0.92-0.99; planar 0.08, 0.94-1.02; radial 0.09, 0.92-0.99; iaf 0.12, 0.94-1.03;
#   spline 0.12, 0.94-1.03;
# Gaussian mixture: mixture 0.06, 0.95-1.01; planar 0.10, 0.93-1.02; radial 0.08, 0.93-1.02; iaf 0.11, 0.88-1.01;
#   spline 0.13, 0.95-1.08.
# Between seeds a guide's worst mean error ranged over at most 0.11 (eight schools, mixture: 0.15-0.26) and its
# lowest sd ratio over 0.10 (eight schools, planar: 0.75-0.85); the tolerances sit 2.2 and 2.4 such ranges (a
# range of three draws is about 1.7 standard deviations, so about four standard deviations) beyond the worst case.

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def fit(model_name, make_guide, seed=0):
    """The guide fitted by SVI: ClippedAdam from lr 0.01 decaying to 0.001 over STEPS steps, 4 particles."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = MODELS[model_name]
    sites = CONTINUOUS_SITES[model_name]
    enumerated = model_name == "gaussian_mixture"
    guide = make_guide(poutine.block(model, expose=sites) if enumerated else model, INIT_LOC_FN[model_name])
    loss = (TraceEnum_ELBO if enumerated else Trace_ELBO)(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, ClippedAdam({"lr": 0.01, "lrd": 0.1 ** (1 / STEPS)}), loss)
    for _ in range(STEPS):
        svi.step()
    return guide


def summaries(model_name, guide):
    """Per-coordinate mean and standard deviation of each site under NUM_DRAWS draws of the guide."""
    with torch.no_grad(), pyro.plate("draws", NUM_DRAWS, dim=-2):
        values = identified(model_name, guide())
    flat = {name: values[name].reshape(NUM_DRAWS, -1) for name in CONTINUOUS_SITES[model_name]}
    return {name: (draws.mean(0), draws.std(0)) for name, draws in flat.items()}


def errors(model_name, guide):
    """(mean error in NUTS sds, sd ratio) of every coordinate, by site."""
    result = {}
    for name, (mean, std) in summaries(model_name, guide).items():
        reference = REFERENCE[model_name][name]
        nuts_mean, nuts_std = torch.tensor(reference["mean"]), torch.tensor(reference["std"])
        result[name] = ((mean - nuts_mean).abs() / nuts_std, std / nuts_std)
    return result


@pytest.mark.parametrize("guide_name", GUIDES)
@pytest.mark.parametrize("model_name", MODELS)
def test_autoguide_matches_nuts(model_name, guide_name):
    site_errors = errors(model_name, fit(model_name, GUIDES[guide_name]))
    for name, (mean_error, sd_ratio) in site_errors.items():
        assert (mean_error < MEAN_TOLERANCE).all(), (name, mean_error)
        low, high = SD_RATIO_RANGE
        assert ((sd_ratio > low) & (sd_ratio < high)).all(), (name, sd_ratio)

