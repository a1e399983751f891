"""
Posterior means and standard deviations of the classic models of
tests/classic_models.py by NUTS (Hoffman & Gelman 2014), the reference of
tests/test_autoguides_vs_nuts.py, written to tests/nuts_references.json.

    python benchmarks/nuts_references.py

Two chains of 2000 warm-up and 5000 kept draws each (seeds 0 and 1, one
thread); the file records, per site coordinate, the mean, the standard
deviation, and the Monte Carlo standard error of the mean from the effective
sample size (Pyro's ``effective_sample_size``).
"""

import argparse
import json
import os
import sys

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.ops.stats import effective_sample_size

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from tests.classic_models import CONTINUOUS_SITES, MODELS, identified  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "nuts_references.json")


def name_of(model):
    return next(name for name, m in MODELS.items() if m is model)


def reference(model, sites, warmup, draws, chains):
    samples = {name: [] for name in sites}
    for chain in range(chains):
        pyro.set_rng_seed(chain)
        mcmc = MCMC(NUTS(model, max_plate_nesting=1), num_samples=draws, warmup_steps=warmup, disable_progbar=True)
        mcmc.run()
        chain_samples = identified(name_of(model), mcmc.get_samples())
        for name in sites:
            samples[name].append(chain_samples[name].reshape(draws, -1))
    summary = {}
    for name, parts in samples.items():
        chained = torch.stack(parts)  # (chains, draws, coordinates)
        flat = chained.reshape(-1, chained.shape[-1])
        ess = effective_sample_size(chained.double(), chain_dim=0, sample_dim=1)
        summary[name] = {
            "mean": flat.mean(0).tolist(),
            "std": flat.std(0).tolist(),
            "mean_standard_error": (flat.std(0) / ess.sqrt()).tolist(),
        }
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--draws", type=int, default=5000)
    parser.add_argument("--chains", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {
        name: reference(MODELS[name], CONTINUOUS_SITES[name], args.warmup, args.draws, args.chains) for name in MODELS
    }
    result["settings"] = vars(args)
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
