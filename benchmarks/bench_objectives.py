#!/usr/bin/env python
"""
Training objectives, gradient estimators, KL schedules and priors compared
on digits, in nats.

1. results: the default digits VAE (64-256-8, 17-level categorical
   likelihood, diagonal guide) trained for the same epochs, data and seed
   with each configuration of :data:`CONFIGS` (the ELBO and the IWAE bound of
   5 and 20 draws with each gradient estimator, beta, free bits, the mixture
   prior and the VampPrior); test ELBO and IWAE NLL (K=1000), active units,
   seconds per epoch. Every row reports the same two numbers, whatever it
   trained;
2. gradient variance: at the parameters of the ELBO-trained model (row 1),
   the variance over ``--repeats`` draws of each estimator's gradient of the
   mean objective over the first 100 test examples, summed over the
   encoder's parameters and over the decoder's, with the squared norm of the
   mean gradient beside it (signal against noise).

Usage::

    python benchmarks/bench_objectives.py [--epochs 100] [--repeats 200] [--quick]
        [--threads 1] [--seed 0] [--device cpu] [--json PATH] [--markdown PATH]
"""

import argparse

import pyro
import torch

import pyprobvae as ppv
from pyprobvae.infer import ELBOLoss, TrainConfig

try:
    import _harness as harness
except ImportError:  # imported as benchmarks.bench_objectives
    from benchmarks import _harness as harness

MODEL = dict(latent_dim=8, hidden=[256], likelihood="categorical")
BATCH_SIZE, LR = 128, 1e-3
GRADIENT_EXAMPLES = 100

# (name, training settings, model settings)
CONFIGS = [
    ("ELBO, pathwise", {}, {}),
    ("ELBO, stl", dict(gradient="stl"), {}),
    *[(f"IWAE-{k}, {g}", dict(objective="iwae", particles=k, gradient=g), {})
      for k in (5, 20) for g in ("pathwise", "stl", "dreg")],
    ("ELBO, beta 0.5", dict(beta=0.5), {}),
    ("ELBO, beta 2", dict(beta=2.0), {}),
    ("ELBO, free bits 0.25", dict(free_bits=0.25), {}),
    # these priors' KL is sampled, but the default gradient (auto) stays pathwise for a diagonal guide: these rows are why
    ("ELBO, mixture prior K=10, pathwise", {}, dict(prior="mixture", prior_components=10)),
    ("ELBO, mixture prior K=10, stl", dict(gradient="stl"), dict(prior="mixture", prior_components=10)),
    ("ELBO, VampPrior K=10, pathwise", {}, dict(prior="vamp", prior_components=10)),
    ("ELBO, VampPrior K=10, stl", dict(gradient="stl"), dict(prior="vamp", prior_components=10)),
    ("IWAE-5 dreg, VampPrior K=10", dict(objective="iwae", particles=5, gradient="dreg"), dict(prior="vamp", prior_components=10)),
]

# (name, training settings) of the gradient-variance section
ESTIMATORS = [
    ("ELBO, pathwise (closed-form KL)", {}),
    ("ELBO, pathwise (sampled KL)", dict(analytic_kl=False, gradient="pathwise")),
    ("ELBO, stl", dict(gradient="stl")),
    *[(f"IWAE-{k}, {g}", dict(objective="iwae", particles=k, gradient=g)) for k in (5, 20) for g in ("pathwise", "stl", "dreg")],
]


def build(model_settings, dataset):
    return ppv.build_model(ppv.model_config("vae", **MODEL, **model_settings).for_data(dataset))


def train_and_evaluate(name, settings, model_settings, train, test, epochs, iwae_samples, seed, device):
    pyro.set_rng_seed(seed)
    model = build(model_settings, train)
    config = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, seed=seed, device=str(device), **settings)
    history = ppv.fit(model, train, test, config, progress=False)
    torch.manual_seed(seed)
    metrics = ppv.evaluate(model, test.x.to(device), iwae_samples)
    row = {
        "configuration": name,
        "test_elbo": metrics["test_elbo"],
        "test_nll": metrics["test_nll"],
        "active_units": metrics["active_units"],
        "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
    }
    return row, model


def gradient_variance(model, x, settings, repeats, seed):
    """Per part (encoder, decoder): the summed per-coordinate variance of the gradient over ``repeats`` draws, and the squared norm of its mean."""
    loss = ELBOLoss(model, TrainConfig(**settings).estimator())
    parts = {"encoder": list(model.encoder.parameters()), "decoder": list(model.decoder.parameters())}
    draws = {part: [] for part in parts}
    torch.manual_seed(seed)
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        (-loss(x).objective.mean()).backward()
        for part, params in parts.items():
            draws[part].append(torch.cat([p.grad.flatten() for p in params]).double())
    result = {}
    for part, gradients in draws.items():
        stacked = torch.stack(gradients)
        result[part] = {"variance": float(stacked.var(0).sum()), "mean_sq": float(stacked.mean(0).pow(2).sum())}
    return result


def results_markdown(rows, epochs, iwae_samples):
    lines = [
        f"| trained with ({epochs} epochs) | test ELBO | test NLL (IWAE, K={iwae_samples}) | active units | s / epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['configuration']} | {r['test_elbo']:.2f} | {r['test_nll']:.2f} | {r['active_units']} | "
              f"{r['seconds_per_epoch']:.2f} |" for r in rows]
    return "\n".join(lines)


def variance_markdown(rows, repeats):
    lines = [
        f"| estimator ({repeats} draws, {GRADIENT_EXAMPLES} test examples) | encoder variance | encoder mean^2 | "
        "decoder variance | decoder mean^2 |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['estimator']} | {r['encoder']['variance']:.4g} | {r['encoder']['mean_sq']:.4g} | "
              f"{r['decoder']['variance']:.4g} | {r['decoder']['mean_sq']:.4g} |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_arguments(parser, quick="2 epochs, K=50, 10 gradient draws: a smoke run")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--iwae-samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=200, help="gradient draws per estimator (default 200)")
    parser.add_argument("--markdown", help="write the tables as Markdown")
    args = parser.parse_args(argv)
    epochs, iwae_samples, repeats = (2, 50, 10) if args.quick else (args.epochs, args.iwae_samples, args.repeats)
    with harness.report_stream(args.json):
        env = harness.start(args)
        device = args.torch_device
        train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
        print(f"digits, {epochs} epochs, batch {BATCH_SIZE}, Adam {LR}, seed {args.seed}, {env['torch_threads']} thread(s), "
              f"{device}; model {MODEL}")
        results, reference = [], None
        for name, settings, model_settings in CONFIGS:
            row, model = train_and_evaluate(name, settings, model_settings, train, test, epochs, iwae_samples, args.seed, device)
            reference = reference or model
            results.append(row)
            print(f"{name:<30} ELBO {row['test_elbo']:8.2f}  NLL {row['test_nll']:7.2f}  active {row['active_units']}  "
                  f"{row['seconds_per_epoch']:.2f} s/epoch", flush=True)
        x = test.x[:GRADIENT_EXAMPLES].to(device)
        variances = []
        for name, settings in ESTIMATORS:
            variances.append({"estimator": name, **gradient_variance(reference, x, settings, repeats, args.seed)})
            v = variances[-1]
            print(f"{name:<32} encoder var {v['encoder']['variance']:.4g} (mean^2 {v['encoder']['mean_sq']:.4g})  "
                  f"decoder var {v['decoder']['variance']:.4g} (mean^2 {v['decoder']['mean_sq']:.4g})", flush=True)
        harness.print_tables(results_markdown(results, epochs, iwae_samples) + "\n\n" + variance_markdown(variances, repeats),
                             args.markdown)
        harness.finish(args, {"environment": env, "epochs": epochs, "iwae_samples": iwae_samples, "results": results,
                              "gradient_variance": variances, "repeats": repeats})


if __name__ == "__main__":
    main()
