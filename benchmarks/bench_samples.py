#!/usr/bin/env python
"""
Sample quality of the VAE against the VQ-VAE with a transformer prior, by the
project's own classifier scores (``evaluate``'s ``sample_scores``: Frechet
distance of classifier features and the share of confident predictions, 1000
samples against the test images; see ``pyprobvae.evaluation.scores``).

For every seed the script trains, through the same verbs as the command line
(``pyprobvae train``, ``train-prior``, ``evaluate``), into run folders under
``--out``:

* ``vae-S``: the VAE (``--vae-network``: mlp or conv), ``--vae-epochs`` epochs;
* ``vqvae-S``: the VQ-VAE (conv), ``--vq-epochs`` epochs; its stage-1 scores
  are those of *uniform codes* (every code drawn independently, decoded);
* then the transformer prior over its codes (``train-prior``, ``--prior-epochs``
  epochs) and its scores.

It prints one row per seed and the mean and standard deviation over seeds of
each score and of the test NLL, and writes every number as JSON with
``--json``. The pictures of each run are in its folder (``samples.png``).

Usage::

    python benchmarks/bench_samples.py [--dataset digits|PATH.npz] [--seeds 0,1,2] [--vae-network mlp|conv]
        [--vae-epochs E] [--vq-epochs E] [--prior-epochs E] [--out DIR] [--threads N] [--json PATH]
"""

import argparse
import os
import statistics

from pyprobvae.models import model_config
from pyprobvae.runs import DataConfig, Run, verbs

try:
    import _harness as harness
except ImportError:  # imported as benchmarks.bench_samples
    from benchmarks import _harness as harness

SCORES = ("frechet_distance", "confident_share", "class_entropy")


def _row(metrics: dict) -> dict:
    scores = metrics["sample_scores"]["prior"]
    return {"test_nll": metrics["test_nll"], **{name: scores[name] for name in SCORES}}


def run_seed(args, seed: int) -> dict:
    data = DataConfig(args.dataset)
    vae_dir, vq_dir = (os.path.join(args.out, f"{name}-{seed}") for name in ("vae", "vqvae"))
    vae = verbs.train(vae_dir, data, model_config("vae", network=args.vae_network),
                      {"epochs": args.vae_epochs, "seed": seed}, overwrite=True, progress=False)
    uniform = verbs.train(vq_dir, data, model_config("vqvae"), {"epochs": args.vq_epochs, "seed": seed}, overwrite=True, progress=False)
    prior = verbs.train_prior(Run(vq_dir), training={"epochs": args.prior_epochs, "seed": seed}, progress=False)
    return {"VAE": _row(vae), "uniform codes": _row(uniform), "VQ-VAE + transformer": _row(prior)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("--dataset", default="digits", help="digits (default) or a labelled .npz of images")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--vae-network", default="mlp", choices=("mlp", "conv"))
    parser.add_argument("--vae-epochs", type=int, default=100, help="default 100, the CLI's")
    parser.add_argument("--vq-epochs", type=int, default=100, help="default 100, the CLI's")
    parser.add_argument("--prior-epochs", type=int, default=50, help="default 50, the CLI's")
    parser.add_argument("--out", default="runs/bench-samples", help="folder of the run folders")
    args = parser.parse_args(argv)
    with harness.report_stream(args.json):
        env = harness.start(args)
        seeds = [int(s) for s in args.seeds.split(",")]
        results = {}
        harness.header(f"Sample scores on {args.dataset} (1000 samples, test images as reference)")
        print(f"{'seed':>4}  {'model':<22}{'test NLL':>10}{'FD':>9}{'confident':>11}{'class H':>9}")
        for seed in seeds:
            results[seed] = run_seed(args, seed)
            for model, row in results[seed].items():
                print(f"{seed:>4}  {model:<22}{row['test_nll']:>10.2f}{row['frechet_distance']:>9.2f}"
                      f"{row['confident_share']:>11.3f}{row['class_entropy']:>9.3f}")
        summary = {}
        for model in results[seeds[0]]:
            summary[model] = {}
            for key in ("test_nll", *SCORES):
                values = [results[seed][model][key] for seed in seeds]
                summary[model][key] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
        print()
        for model, numbers in summary.items():
            print(f"mean (sd)  {model:<22}" + "  ".join(f"{key} {v['mean']:.3f} ({v['sd']:.3f})" for key, v in numbers.items()))
        harness.finish(args, {"environment": env, "settings": vars(args) | {"torch_device": str(args.torch_device)},
                              "runs": results, "summary": summary})


if __name__ == "__main__":
    main()
