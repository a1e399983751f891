#!/usr/bin/env python
"""
Variational families compared on digits, in nats, and their cost per step.

1. results: the default digits VAE (64-256-8, 17-level categorical
   likelihood) trained with every guide family for the same epochs, data and
   seed; test ELBO, IWAE NLL (K=1000), the spread of the single-sample ELBO
   estimator on the test set, and seconds per epoch;
2. scaling: milliseconds per training step against the flow depth and the
   number of mixture components (it should grow linearly).

Usage::

    python benchmarks/bench_families.py [--epochs 100] [--quick] [--skip results|scaling] [--json PATH] [--markdown PATH]
"""

import argparse
import json
import time

import pyro
import torch

import pyprobvae as ppv
from pyprobvae.infer import ELBOLoss, dataset_elbo, train_step

GUIDES = [
    ("diagonal", dict(guide="diagonal"), "pathwise"),
    ("mixture K=2, pathwise", dict(guide="mixture", components=2), "pathwise"),
    ("mixture K=2, stratified", dict(guide="mixture", components=2), "stratified"),
    ("mixture K=5, pathwise", dict(guide="mixture", components=5), "pathwise"),
    ("mixture K=5, stratified", dict(guide="mixture", components=5), "stratified"),
] + [
    (f"flow {flow}, depth {depth}", dict(guide="flow", flow=flow, flow_depth=depth), "pathwise")
    for flow in ("planar", "radial", "iaf", "spline")
    for depth in (2, 8)
]
MODEL = dict(latent_dim=8, hidden=[256], likelihood="categorical")
ESTIMATOR_REPEATS = 50


@torch.no_grad()
def elbo_estimator_std(model, x, analytic_kl):
    """Standard deviation over repeated draws of the single-sample ELBO of each test example, averaged over examples."""
    draws = torch.stack([dataset_elbo(model, x, analytic_kl=analytic_kl).elbo for _ in range(ESTIMATOR_REPEATS)])
    return float(draws.std(0).mean())


def train_and_evaluate(name, options, estimator, train, test, epochs, iwae_samples):
    pyro.set_rng_seed(0)
    model = ppv.build_vae(train.data_shape, num_levels=train.num_levels, **MODEL, **options)
    history = ppv.fit(model, train, test, ppv.TrainConfig(epochs=epochs, estimator=estimator, seed=0), progress=False)
    torch.manual_seed(0)
    metrics = ppv.evaluate(model, test.x, iwae_samples)
    return {
        "guide": name,
        "test_elbo": metrics["test_elbo"],
        "test_nll": metrics["test_nll"],
        "elbo_std": elbo_estimator_std(model, test.x, analytic_kl=True),
        "active_units": metrics["active_units"],
        "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
    }


def step_time(options, estimator, x, steps):
    pyro.set_rng_seed(0)
    model = ppv.build_vae(x.shape[1:], num_levels=17, **MODEL, **options)
    loss_fn = ELBOLoss(model, estimator=estimator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(10):
        train_step(loss_fn, optimizer, x)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(loss_fn, optimizer, x)
    return (time.perf_counter() - started) / steps * 1e3


def scaling(train, steps):
    x = train.x[:128]
    rows = []
    for depth in (1, 2, 4, 8, 16):
        for flow in ("planar", "iaf"):
            rows.append({"what": f"flow {flow}", "size": depth,
                         "ms_per_step": step_time(dict(guide="flow", flow=flow, flow_depth=depth), "pathwise", x, steps)})
    for components in (1, 2, 4, 8, 16):
        for estimator in ("pathwise", "stratified"):
            rows.append({"what": f"mixture {estimator}", "size": components,
                         "ms_per_step": step_time(dict(guide="mixture", components=components), estimator, x, steps)})
    rows.append({"what": "diagonal", "size": 0, "ms_per_step": step_time(dict(guide="diagonal"), "pathwise", x, steps)})
    return rows


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
    lines = ["| guide | depth or K | ms / step |", "|---|---:|---:|"]
    lines += [f"| {r['what']} | {r['size']} | {r['ms_per_step']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--iwae-samples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="2 epochs, K=50, few steps: a smoke run")
    parser.add_argument("--json", help="write the numbers as JSON")
    parser.add_argument("--markdown", help="write the tables as Markdown")
    parser.add_argument("--skip", choices=("results", "scaling"), action="append", default=[], help="leave out a section")
    args = parser.parse_args(argv)
    epochs, iwae_samples, steps = (2, 50, 5) if args.quick else (args.epochs, args.iwae_samples, 50)
    torch.set_num_threads(1)
    train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
    print(f"digits, {epochs} epochs, batch 128, Adam 1e-3, seed 0, 1 thread; model {MODEL}")
    results, rows, tables = [], [], []
    if "results" not in args.skip:
        for name, options, estimator in GUIDES:
            results.append(train_and_evaluate(name, options, estimator, train, test, epochs, iwae_samples))
            r = results[-1]
            print(f"{name:<26} ELBO {r['test_elbo']:8.2f}  NLL {r['test_nll']:7.2f}  "
                  f"ELBO std {r['elbo_std']:5.2f}  active {r['active_units']}  {r['seconds_per_epoch']:.2f} s/epoch", flush=True)
        tables.append(results_markdown(results, epochs, iwae_samples))
    if "scaling" not in args.skip:
        rows = scaling(train, steps)
        tables.append(scaling_markdown(rows))
    tables = "\n\n".join(tables)
    print()
    print(tables)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"epochs": epochs, "iwae_samples": iwae_samples, "results": results, "scaling": rows}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(tables + "\n")


if __name__ == "__main__":
    main()
