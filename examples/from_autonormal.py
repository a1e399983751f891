r"""
The same Pyro script with each automatic guide: from ``AutoNormal`` to
pyprobvae's ``AutoMixtureNormal`` and ``AutoFlowNormal``.

The model is the non-centred eight schools model (Rubin 1981; Gelman et al.,
Bayesian Data Analysis, 2013, section 5.5): ``mu ~ N(0, 5)``,
``tau ~ HalfCauchy(5)``, ``theta_j = mu + tau eta_j`` with
``eta_j ~ N(0, 1)``, and ``y_j ~ N(theta_j, sigma_j)``. Only the line that
builds the guide changes; SVI, ``median()``, ``quantiles()`` and
``Predictive`` are used the same way for every guide. The script prints, per
guide, the posterior median and 90% interval of ``tau`` and ``mu``, the
final ELBO estimate (mean of 1000 particles, in nats), and the posterior
means and standard deviations of NUTS (tests/nuts_references.json, from
benchmarks/nuts_references.py) to compare with.

    python examples/from_autonormal.py --steps 3000

See docs/from_autonormal.rst for what differs between the guides.
"""

import argparse
import json
import os

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import ClippedAdam

from pyprobvae.autoguides import AutoFlowNormal, AutoMixtureNormal

EFFECTS = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMAS = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
REFERENCE = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "nuts_references.json")


def model(sigmas, effects=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(sigmas)):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        return pyro.sample("y", dist.Normal(mu + tau * eta, sigmas), obs=effects)


GUIDES = {
    "AutoNormal": lambda: AutoNormal(model),
    "AutoMixtureNormal": lambda: AutoMixtureNormal(model, num_components=3),
    "AutoFlowNormal": lambda: AutoFlowNormal(model, flow="iaf", flow_depth=2),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, make_guide in GUIDES.items():
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        guide = make_guide()  # the only line that differs
        svi = SVI(model, guide, ClippedAdam({"lr": 0.01, "lrd": 0.1 ** (1 / args.steps)}), Trace_ELBO())
        for _ in range(args.steps):
            svi.step(SIGMAS, EFFECTS)
        elbo = -Trace_ELBO(num_particles=1000, vectorize_particles=True).loss(model, guide, SIGMAS, EFFECTS)
        median = guide.median(SIGMAS, EFFECTS)
        quantiles = guide.quantiles([0.05, 0.95], SIGMAS, EFFECTS)
        tau_interval, mu_interval = quantiles["tau"], quantiles["mu"]
        predictive = Predictive(model, guide=guide, num_samples=1000, return_sites=["y"])
        replicated = predictive(SIGMAS)["y"]
        print(
            f"{name:18s} ELBO {elbo:8.2f} nats   tau median {float(median['tau']):5.2f} "
            f"[{float(tau_interval[0]):5.2f}, {float(tau_interval[1]):5.2f}]   mu median {float(median['mu']):5.2f} "
            f"[{float(mu_interval[0]):5.2f}, {float(mu_interval[1]):5.2f}]   replicated y sd {float(replicated.std(0).mean()):5.2f}"
        )
    with open(REFERENCE) as f:
        nuts = json.load(f)["eight_schools"]
    print(f"{'NUTS':18s} tau mean {nuts['tau']['mean'][0]:5.2f} sd {nuts['tau']['std'][0]:5.2f}   "
          f"mu mean {nuts['mu']['mean'][0]:5.2f} sd {nuts['mu']['std'][0]:5.2f}")


if __name__ == "__main__":
    main()
