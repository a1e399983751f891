#!/usr/bin/env python
"""
Variational families compared on digits, in nats, and their cost per step.

1. results: the default digits VAE (64-256-8, 17-level categorical
   likelihood) trained with every guide family for the same epochs, data and
   seed; test ELBO, IWAE NLL (K=1000), the spread of the single-sample ELBO
   estimator on the test set, and seconds per epoch;
2. scaling: milliseconds per training step (``Trainer.step``, the step of
   ``fit``) against the flow depth and the number of mixture components (it
   should grow linearly), every configuration timed in the same interleaved
   rounds (``_harness.interleaved``), with its ratio to the diagonal family.

Usage::

    python benchmarks/bench_families.py [--epochs 100] [--quick] [--skip results|scaling]
        [--threads 1] [--seed 0] [--device cpu] [--json PATH] [--markdown PATH]
"""

import argparse

import pyro
import torch

import pyprobvae as ppv
from pyprobvae.infer import ELBOLoss, dataset_elbo
from pyprobvae.infer.loop import RandomState, Trainer
from pyprobvae.infer.training import ELBOObjective

try:
    import _harness as harness
except ImportError:  # imported as benchmarks.bench_families
    from benchmarks import _harness as harness

PATHWISE, STRATIFIED = dict(gradient="pathwise"), dict(objective="stratified")
# (name, family options, training settings); the training default for a mixture is the elbo with gradient auto (stl)
GUIDES = [
    ("diagonal", dict(family="diagonal"), {}),
    ("mixture K=2, pathwise", dict(family="mixture", num_components=2), PATHWISE),
    ("mixture K=2, stl (default)", dict(family="mixture", num_components=2), {}),
    ("mixture K=2, stratified", dict(family="mixture", num_components=2), STRATIFIED),
    ("mixture K=5, pathwise", dict(family="mixture", num_components=5), PATHWISE),
    ("mixture K=5, stl (default)", dict(family="mixture", num_components=5), {}),
    ("mixture K=5, stratified", dict(family="mixture", num_components=5), STRATIFIED),
] + [
    (f"flow {flow}, depth {depth}", dict(family="flow", flow=flow, flow_depth=depth), {})
    for flow in ("planar", "radial", "iaf", "spline")
    for depth in (2, 8)
]
MODEL = dict(latent_dim=8, hidden=[256], likelihood="categorical")
ESTIMATOR_REPEATS = 50
BATCH_SIZE, LR = 128, 1e-3
# (warm-up steps, rounds, steps per round) of the scaling section
SCALING_TIMING = {"full": (10, 10, 5), "quick": (2, 3, 2)}


@torch.no_grad()
def elbo_estimator_std(model, x, analytic_kl):
    """Standard deviation over repeated draws of the single-sample ELBO of each test example, averaged over examples."""
    draws = torch.stack([dataset_elbo(model, x, analytic_kl=analytic_kl).elbo for _ in range(ESTIMATOR_REPEATS)])
    return float(draws.std(0).mean())


def build(options, dataset):
    """The default digits VAE with the family ``options``, for ``dataset``."""
    return ppv.build_model(ppv.model_config("vae", **MODEL, **options).for_data(dataset))


def train_and_evaluate(name, options, settings, train, test, epochs, iwae_samples, seed, device):
    pyro.set_rng_seed(seed)
    model = build(options, train)
    config = ppv.TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, seed=seed, device=str(device), **settings)
    history = ppv.fit(model, train, test, config, progress=False)
    torch.manual_seed(seed)
    metrics = ppv.evaluate(model, test.x.to(device), iwae_samples)
    return {
        "guide": name,
        "test_elbo": metrics["test_elbo"],
        "test_nll": metrics["test_nll"],
        "elbo_std": elbo_estimator_std(model, test.x.to(device), analytic_kl=True),
        "active_units": metrics["active_units"],
        "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
    }


def make_trainer(options, settings, train, seed, device):
    """The step of ``fit``: a ``Trainer`` on the ``ELBOObjective`` of the training ``settings``, for a fresh model."""
    pyro.set_rng_seed(seed)
    model = build(options, train).to(device)
    config = ppv.TrainConfig(batch_size=BATCH_SIZE, lr=LR, seed=seed, device=str(device), **settings)
    model.train()
    return Trainer(ELBOObjective(ELBOLoss(model, config.estimator())), config, RandomState(seed, device))


def scaling_configs():
    """(what, size, family options, training settings) of every timed configuration; the diagonal family first."""
    configs = [("diagonal", 0, dict(family="diagonal"), {})]
    for depth in (1, 2, 4, 8, 16):
        for flow in ("planar", "iaf"):
            configs.append((f"flow {flow}", depth, dict(family="flow", flow=flow, flow_depth=depth), {}))
    for components in (1, 2, 4, 8, 16):
        for label, settings in (("pathwise", PATHWISE), ("stratified", STRATIFIED)):
            configs.append((f"mixture {label}", components, dict(family="mixture", num_components=components), settings))
    return configs


def scaling(train, mode, seed, device):
    """
    ms per ``Trainer.step`` on one batch of 128 training images for every
    configuration of :func:`scaling_configs`, all timed in the same
    interleaved rounds; the window of step sums is read back after each
    block, outside the clock.
    """
    x = train.x[:BATCH_SIZE].to(device)
    warmup, rounds, steps = SCALING_TIMING[mode]
    configs = scaling_configs()
    trainers = {f"{what} {size}": make_trainer(options, settings, train, seed, device)
                for what, size, options, settings in configs}
    candidates = {name: (lambda i, trainer=trainer: trainer.step(x)) for name, trainer in trainers.items()}
    timing = harness.interleaved(candidates, rounds=rounds, steps=steps, warmup=warmup, reference="diagonal 0",
                                 after=lambda name: trainers[name].check(0), device=device)
    rows = []
    for (what, size, _, _), name in zip(configs, trainers):
        ratio = timing["ratios"][name]
        rows.append({"what": what, "size": size, "ms_per_step": timing["ms_per_step"][name]["median"],
                     "ms_per_step_q1": timing["ms_per_step"][name]["q1"], "ms_per_step_q3": timing["ms_per_step"][name]["q3"],
                     "ratio_to_diagonal": ratio["median"], "ratio_ci": [ratio["ci_low"], ratio["ci_high"]]})
    return rows, timing


def results_markdown(rows, epochs, iwae_samples):
    lines = [
        f"| guide | test ELBO | test NLL (IWAE, K={iwae_samples}) | ELBO estimator std | active units | s / epoch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['guide']} | {r['test_elbo']:.2f} | {r['test_nll']:.2f} | {r['elbo_std']:.2f} | "
            f"{r['active_units']} | {r['seconds_per_epoch']:.2f} |"
        )
    return "\n".join(lines)


def scaling_markdown(rows):
    lines = ["| guide | depth or K | ms / step | / diagonal |", "|---|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['size']} | {r['ms_per_step']:.2f} | {r['ratio_to_diagonal']:.2f}x |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_arguments(parser, quick="2 epochs, K=50, few steps: a smoke run")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--iwae-samples", type=int, default=1000)
    parser.add_argument("--markdown", help="write the tables as Markdown")
    parser.add_argument("--skip", choices=("results", "scaling"), action="append", default=[], help="leave out a section")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    epochs, iwae_samples = (2, 50) if args.quick else (args.epochs, args.iwae_samples)
    with harness.report_stream(args.json):
        env = harness.start(args)
        device = args.torch_device
        train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
        print(f"digits, {epochs} epochs, batch {BATCH_SIZE}, Adam {LR}, seed {args.seed}, {env['torch_threads']} thread(s), "
              f"{device}; model {MODEL}")
        harness.settle()
        results, rows, timing, tables = [], [], None, []
        if "results" not in args.skip:
            for name, options, settings in GUIDES:
                results.append(train_and_evaluate(name, options, settings, train, test, epochs, iwae_samples, args.seed, device))
                r = results[-1]
                print(f"{name:<26} ELBO {r['test_elbo']:8.2f}  NLL {r['test_nll']:7.2f}  "
                      f"ELBO std {r['elbo_std']:5.2f}  active {r['active_units']}  {r['seconds_per_epoch']:.2f} s/epoch", flush=True)
            tables.append(results_markdown(results, epochs, iwae_samples))
        if "scaling" not in args.skip:
            rows, timing = scaling(train, mode, args.seed, device)
            harness.print_timing(timing, title="Step time (Trainer.step, batch 128)")
            tables.append(scaling_markdown(rows))
        harness.print_tables("\n\n".join(tables), args.markdown)
        harness.finish(args, {"environment": env, "epochs": epochs, "iwae_samples": iwae_samples, "results": results,
                              "scaling": rows, "scaling_timing": timing})


if __name__ == "__main__":
    main()
