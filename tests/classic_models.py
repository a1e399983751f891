"""
Three classic Bayesian models with their data, shared by the NUTS reference
script (benchmarks/nuts_references.py) and the NUTS-vs-autoguide tests
(tests/test_autoguides_vs_nuts.py).

- ``eight_schools``: the non-centred eight schools model (Rubin 1981;
  Gelman et al. 2013, section 5.5), ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``,
  ``theta_j = mu + tau * eta_j``, ``eta_j ~ N(0, 1)``, ``y_j ~ N(theta_j, sigma_j)``.
- ``linear_regression``: 40 points ``y = 0.5 + x + 0.7 noise``, intercept and
  slope ``~ N(0, 10)``, noise scale ``~ Exponential(1)``.
- ``gaussian_mixture``: two components with weights ``~ Dirichlet(1, 1)``,
  locations ``~ N(0, 10)`` and a shared scale ``~ LogNormal(0, 1)``, 30
  points from clusters at -2 and 2; the assignments are enumerated out
  (``TraceEnum_ELBO``, NUTS's own enumeration), so every guide covers the
  continuous sites only. The posterior is symmetric under swapping the
  labels, so its draws are summarized with the components ordered by
  location (:func:`identified`), for NUTS and the guides alike.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.ops.indexing import Vindex

SCHOOL_EFFECTS = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOL_SIGMAS = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools():
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * eta, SCHOOL_SIGMAS), obs=SCHOOL_EFFECTS)


def _regression_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, generator=generator)
    return x, 0.5 + x + 0.7 * torch.randn(40, generator=generator)


REGRESSION_X, REGRESSION_Y = _regression_data()


def linear_regression():
    intercept = pyro.sample("intercept", dist.Normal(0.0, 10.0))
    slope = pyro.sample("slope", dist.Normal(0.0, 10.0))
    noise = pyro.sample("noise", dist.Exponential(1.0))
    with pyro.plate("data", len(REGRESSION_X)):
        pyro.sample("y", dist.Normal(intercept + slope * REGRESSION_X, noise), obs=REGRESSION_Y)


def _mixture_data():
    generator = torch.Generator().manual_seed(0)
    return torch.cat([-2.0 + 0.7 * torch.randn(15, generator=generator), 2.0 + 0.7 * torch.randn(15, generator=generator)])


MIXTURE_DATA = _mixture_data()


def identified(model_name, samples):
    """
    ``samples`` (site name -> draws, draws first) with the mixture's
    components sorted by location in every draw, the weights permuted along;
    other models' samples as they are.
    """
    if model_name != "gaussian_mixture":
        return samples
    order = samples["locs"].reshape(-1, 2).argsort(-1)
    result = dict(samples)
    result["locs"] = samples["locs"].reshape(-1, 2).gather(-1, order)
    result["weights"] = samples["weights"].reshape(-1, 2).gather(-1, order)
    return result


@poutine.infer_config(config_fn=lambda site: {"enumerate": "parallel"} if site["name"] == "assignment" else {})
def gaussian_mixture():
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(torch.tensor([-1.0, 1.0]), 10.0).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(MIXTURE_DATA)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., assignment], scale), obs=MIXTURE_DATA)


MODELS = {"eight_schools": eight_schools, "linear_regression": linear_regression, "gaussian_mixture": gaussian_mixture}
CONTINUOUS_SITES = {
    "eight_schools": ["mu", "tau", "eta"],
    "linear_regression": ["intercept", "slope", "noise"],
    "gaussian_mixture": ["weights", "locs", "scale"],
}
