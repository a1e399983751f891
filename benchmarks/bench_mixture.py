#!/usr/bin/env python
"""
The mixture guide against the diagonal guide, by test NLL (IWAE, K=1000),
and what the gradient of the sampled KL costs them.

A diagonal guide's KL to N(0, I) is in closed form; a mixture's is sampled,
log q(z|x) - log p(z), whose gradient carries the score term
-d log q/d phi (expectation zero, much noise). The configurations separate
the family from that noise: the diagonal guide with its closed-form KL, with
the sampled KL (pathwise) and with STL; the mixture with the pathwise
gradient (the default before 0.3.0), with STL (the default, ``gradient
auto``) and with the stratified bound.

``--dataset digits`` (default): the default digits VAE (64-256-8,
categorical), 100 epochs; ``--dataset PATH.npz`` of 28x28 images: the
784-400-50 MLP with a Bernoulli likelihood and dynamic binarization, 20
epochs. Batch 128, Adam 1e-3, ``--components`` 5. It prints one row per
configuration and seed, then the mean and standard deviation over seeds.

Usage::

    python benchmarks/bench_mixture.py [--dataset digits|PATH.npz] [--seeds 0,1,2] [--configs NAME,...]
        [--test-examples N] [--threads 2] [--device cpu] [--json PATH]
"""

import argparse
import statistics

import pyro
import torch

import pyprobvae as ppv
from pyprobvae.infer import TrainConfig
from pyprobvae.infer.training import default_binarization, evaluation_data

try:
    import _harness as harness
except ImportError:  # imported as benchmarks.bench_mixture
    from benchmarks import _harness as harness

# data set -> (model settings, epochs)
SETUPS = {
    "digits": (dict(latent_dim=8, hidden=[256], likelihood="categorical"), 100),
    "images": (dict(latent_dim=50, hidden=[400], likelihood="bernoulli"), 20),
}
BATCH_SIZE, LR, IWAE_SAMPLES = 128, 1e-3, 1000

# name -> (is a mixture, training settings)
CONFIGS = {
    "diagonal": (False, {}),
    "diagonal sampled-kl": (False, dict(analytic_kl=False, gradient="pathwise")),
    "diagonal stl": (False, dict(gradient="stl")),
    "mixture pathwise": (True, dict(gradient="pathwise")),
    "mixture stl": (True, {}),  # the default gradient (auto) for a mixture
    "mixture stratified": (True, dict(objective="stratified")),
}


def train_and_evaluate(model_settings, settings, train, test, epochs, seed, device, test_examples):
    pyro.set_rng_seed(seed)
    model = ppv.build_model(ppv.model_config("vae", **model_settings).for_data(train))
    binarization = default_binarization(model_settings["likelihood"], train)
    config = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, seed=seed, device=str(device), binarize=binarization, **settings)
    history = ppv.fit(model, train, None, config, progress=False)
    x = evaluation_data(test, binarization)[:test_examples].to(device)
    torch.manual_seed(seed)
    metrics = ppv.evaluate(model, x, IWAE_SAMPLES)
    return {"test_elbo": metrics["test_elbo"], "test_nll": metrics["test_nll"],
            "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_arguments(parser, threads=2)
    parser.add_argument("--dataset", default="digits", help="digits (default) or a .npz of 28x28 images")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--components", type=int, default=5, help="mixture components (default 5)")
    parser.add_argument("--test-examples", type=int, default=2000, help="first N test examples (default 2000)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.configs.split(",")]
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    with harness.report_stream(args.json):
        env = harness.start(args)
        train, test = ppv.load_dataset(args.dataset, "train"), ppv.load_dataset(args.dataset, "test")
        base, epochs = SETUPS["digits" if args.dataset == "digits" else "images"]
        seeds = [int(s) for s in args.seeds.split(",")]
        harness.header(f"{args.dataset}: {base}, {epochs} epochs, batch {BATCH_SIZE}, Adam {LR}, "
                       f"IWAE K={IWAE_SAMPLES} on {min(args.test_examples, len(test.x))} test examples")
        rows = []
        for name in names:
            mixture, settings = CONFIGS[name]
            model_settings = {**base, **(dict(family="mixture", num_components=args.components) if mixture else {})}
            for seed in seeds:
                row = {"configuration": name, "seed": seed,
                       **train_and_evaluate(model_settings, settings, train, test, epochs, seed, args.torch_device, args.test_examples)}
                rows.append(row)
                print(f"{name:<24} seed {seed}  ELBO {row['test_elbo']:8.2f}  NLL {row['test_nll']:8.3f}  "
                      f"{row['seconds_per_epoch']:.2f} s/epoch", flush=True)
        print()
        summary = {}
        for name in names:
            nll = [r["test_nll"] for r in rows if r["configuration"] == name]
            spread = statistics.stdev(nll) if len(nll) > 1 else float("nan")
            summary[name] = {"mean_nll": statistics.mean(nll), "std_nll": spread}
            print(f"{name:<24} test NLL {statistics.mean(nll):8.3f} +- {spread:.3f} over {len(nll)} seed(s)")
        harness.finish(args, {"environment": env, "dataset": args.dataset, "epochs": epochs, "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
