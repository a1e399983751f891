#!/usr/bin/env python
"""
Benchmarks of pyprobvae against a hand-written PyTorch VAE on the same network.

Sections (see benchmarks/README.md):

1. step time: pyprobvae's training step, a hand-written PyTorch step and stock
   Pyro ``SVI(..., Trace_ELBO()).step`` on the same network, initial weights
   and batches, interleaved in alternating blocks within one run;
2. quality: train pyprobvae (``pyprobvae.fit``) and the hand-written VAE on
   digits and compare their test NLL (IWAE, K=1000) and test ELBO;
3. profile (``--profile``): cProfile of pyprobvae steps at digits size.

Usage::

    python benchmarks/bench_vae.py [--quick] [--profile] [--json PATH] [--threads N]
"""

import argparse
import copy
import cProfile
import datetime
import gc
import json
import math
import os
import platform
import pstats
import statistics
import sys
import time

import pyro
import pyro.infer
import pyro.optim
import torch
import torch.nn.functional as F
from torch import nn

import pyprobvae
from pyprobvae import TrainConfig, build_vae, fit, load_dataset
from pyprobvae.data import iterate_minibatches
from pyprobvae.infer import ELBOLoss, dataset_elbo, train_step
from pyprobvae.metrics import iwae_log_likelihood

BATCH_SIZE = 128
LR = 1e-3
MIN_SCALE = 1e-4  # DiagonalNormal's lower bound on sigma

# name -> (build_vae kwargs, target ratio pyprobvae / hand-written)
CONFIGS = {
    "mnist-size": (
        dict(data_shape=(1, 28, 28), latent_dim=50, hidden=(400,), likelihood="bernoulli"),
        1.15,
    ),
    "digits-default": (
        dict(data_shape=(1, 8, 8), latent_dim=8, hidden=(256,), likelihood="categorical", num_levels=17),
        1.5,
    ),
}

# (warm-up steps per contender, timed rounds, steps per block)
TIMING = {"full": (30, 21, 20), "quick": (6, 5, 5)}
EPOCHS = {"full": 100, "quick": 10}  # 100: the CLI default (digits overfits beyond)
IWAE_SAMPLES = {"full": 1000, "quick": 100}
PROFILE_STEPS = 200


# --------------------------------------------------------------------------
# The hand-written VAE: plain PyTorch, written for speed.
# --------------------------------------------------------------------------


class HandVAE(nn.Module):
    """
    The MLP VAE of ``build_vae`` written directly in PyTorch: encoder
    ``x -> hidden -> (mu, softplus(raw) + 1e-4)``, decoder
    ``z -> reversed hidden -> logits``, Bernoulli (BCE with logits) or
    categorical (cross-entropy over ``num_levels`` levels per pixel)
    likelihood, closed-form KL to N(0, I).
    """

    def __init__(self, data_dim, latent_dim, hidden, likelihood, num_levels=None):
        super().__init__()
        if likelihood not in ("bernoulli", "categorical"):
            raise ValueError(likelihood)
        self.categorical = likelihood == "categorical"
        self.num_levels = num_levels if self.categorical else 1
        widths = [data_dim, *hidden]
        enc = []
        for a, b in zip(widths[:-1], widths[1:]):
            enc += [nn.Linear(a, b), nn.ReLU()]
        self.enc = nn.Sequential(*enc)
        self.head = nn.Linear(widths[-1], 2 * latent_dim)
        rwidths = [latent_dim, *hidden[::-1]]
        dec = []
        for a, b in zip(rwidths[:-1], rwidths[1:]):
            dec += [nn.Linear(a, b), nn.ReLU()]
        dec.append(nn.Linear(rwidths[-1], data_dim * self.num_levels))
        self.dec = nn.Sequential(*dec)

    def linears(self):
        """The linear layers in the order of :func:`pyprobvae_linears`."""
        return [m for m in self.enc if isinstance(m, nn.Linear)] + [self.head] + [
            m for m in self.dec if isinstance(m, nn.Linear)
        ]

    def _forward(self, x):
        x = x.flatten(1)
        mu, raw = self.head(self.enc(x)).chunk(2, dim=-1)
        sigma = F.softplus(raw) + MIN_SCALE
        z = mu + sigma * torch.randn_like(mu)
        return x, mu, sigma, self.dec(z)

    def loss(self, x):
        """Negative ELBO, mean over the batch (the training loss)."""
        x, mu, sigma, out = self._forward(x)
        if self.categorical:
            target = (x * (self.num_levels - 1)).round_().long()
            rec = F.cross_entropy(out.view(-1, self.num_levels), target.view(-1), reduction="sum")
        else:
            rec = F.binary_cross_entropy_with_logits(out, x, reduction="sum")
        kl = 0.5 * (mu.square() + sigma.square() - 2 * sigma.log() - 1).sum()
        return (rec + kl) / x.shape[0]

    def terms(self, x):
        """Per-example (log-likelihood, KL), shape ``(batch,)`` each."""
        x, mu, sigma, out = self._forward(x)
        if self.categorical:
            target = (x * (self.num_levels - 1)).round().long()
            ll = -F.cross_entropy(out.view(-1, self.num_levels), target.view(-1), reduction="none")
        else:
            ll = -F.binary_cross_entropy_with_logits(out, x, reduction="none")
        kl = 0.5 * (mu.square() + sigma.square() - 2 * sigma.log() - 1).sum(-1)
        return ll.view(x.shape[0], -1).sum(-1), kl


def pyprobvae_linears(model):
    """The linear layers of a ``build_vae`` MLP VAE: encoder, guide head, decoder."""
    enc = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    dec = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    return enc + dec


@torch.no_grad()
def copy_linears(src, dst):
    if len(src) != len(dst):
        raise RuntimeError("the two networks have different numbers of layers")
    for a, b in zip(src, dst):
        if a.weight.shape != b.weight.shape:
            raise RuntimeError(f"layer shapes differ: {tuple(a.weight.shape)} vs {tuple(b.weight.shape)}")
        b.weight.copy_(a.weight)
        b.bias.copy_(a.bias)


def hand_from_pyprobvae(model, spec):
    hand = HandVAE(
        math.prod(spec["data_shape"]), spec["latent_dim"], tuple(spec["hidden"]), spec["likelihood"], spec.get("num_levels")
    )
    copy_linears(pyprobvae_linears(model), hand.linears())
    return hand


def pyprobvae_from_hand(hand, spec):
    model = build_vae(**spec)
    copy_linears(hand.linears(), pyprobvae_linears(model))
    return model


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def header(title):
    print()
    print(title)
    print("=" * len(title))


def make_batches(name, spec, num_batches, seed=0):
    """A fixed list of full batches that every contender cycles through."""
    g = torch.Generator().manual_seed(seed)
    if name == "mnist-size":
        x = torch.bernoulli(torch.full((num_batches * BATCH_SIZE, *spec["data_shape"]), 0.3), generator=g)
    else:
        train = load_dataset("digits", "train").x
        perm = torch.randperm(len(train), generator=g)
        num_batches = min(num_batches, len(train) // BATCH_SIZE)
        x = train[perm[: num_batches * BATCH_SIZE]]
    return [b.contiguous() for b in x.split(BATCH_SIZE)]


def equivalence_check(model, hand, x, seed=123):
    """
    Same weights and the same noise: pyprobvae's per-example ELBO terms and
    gradients must equal the hand-written ones (pyro's Normal.rsample and
    torch.randn_like draw from the same stream).
    """
    model.zero_grad(set_to_none=True)
    hand.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    terms = ELBOLoss(model)(x)
    (-terms.elbo.mean()).backward()
    torch.manual_seed(seed)
    ll, kl = hand.terms(x)
    torch.manual_seed(seed)
    hand.loss(x).backward()
    d_elbo = float(((terms.log_likelihood - terms.kl) - (ll - kl)).detach().abs().max())
    d_grad = max(
        float((a.weight.grad - b.weight.grad).abs().max() / b.weight.grad.abs().max().clamp_min(1e-30))
        for a, b in zip(pyprobvae_linears(model), hand.linears())
    )
    model.zero_grad(set_to_none=True)
    hand.zero_grad(set_to_none=True)
    return {"max_abs_elbo_diff": d_elbo, "max_rel_grad_diff": d_grad, "elbo_mean": float(terms.elbo.detach().mean())}


# --------------------------------------------------------------------------
# 1. Step time
# --------------------------------------------------------------------------


def make_contenders(spec):
    """Three copies of one initial network, each with its own optimizer."""
    torch.manual_seed(0)
    base = build_vae(**spec)

    hand = hand_from_pyprobvae(base, spec)
    hand_opt = torch.optim.Adam(hand.parameters(), lr=LR)

    def hand_step(x):
        loss = hand.loss(x)
        hand_opt.zero_grad(set_to_none=True)
        loss.backward()
        hand_opt.step()

    ppv = copy.deepcopy(base)
    ppv_loss = ELBOLoss(ppv)
    ppv_opt = torch.optim.Adam(ppv.parameters(), lr=LR)

    def ppv_step(x):
        train_step(ppv_loss, ppv_opt, x)

    svi_model = copy.deepcopy(base)
    svi = pyro.infer.SVI(svi_model.model, svi_model.guide, pyro.optim.Adam({"lr": LR}), pyro.infer.Trace_ELBO())

    def svi_step(x):
        svi.step(x)

    contenders = {"hand-written": hand_step, "pyprobvae": ppv_step, "stock Pyro SVI": svi_step}
    return contenders, base, hand


def run_block(step, batches, start, steps):
    # Each block starts from an empty param store: pyprobvae's and SVI's
    # copies register their modules under the same names ("encoder",
    # "decoder"), and SVI must find its own parameters there.
    pyro.clear_param_store()
    gc.collect()
    n = len(batches)
    t0 = time.perf_counter()
    for i in range(start, start + steps):
        step(batches[i % n])
    return time.perf_counter() - t0


def interleave(contenders, batches, warmup, rounds, block):
    """
    Time the contenders in alternating blocks of ``block`` steps: a warm-up
    of ``warmup`` steps each (in two interleaved halves), then ``rounds``
    rounds in which every contender runs one block on the same batches, the
    one going first rotating from round to round.

    :return: dict name -> list of seconds per step, one entry per round.
    """
    names = list(contenders)
    for _ in range(2):
        for cname in names:
            run_block(contenders[cname], batches, 0, max(1, warmup // 2))
    times = {c: [] for c in names}
    position = 0
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for cname in order:
            times[cname].append(run_block(contenders[cname], batches, position, block) / block)
        position += block
    return times


def bench_step_time(name, spec, target, mode):
    warmup, rounds, block = TIMING[mode]
    batches = make_batches(name, spec, num_batches=8)
    contenders, base, hand = make_contenders(spec)
    check = equivalence_check(copy.deepcopy(base), copy.deepcopy(hand), batches[0])
    times = interleave(contenders, batches, warmup, rounds, block)
    hand_t = times["hand-written"]
    ratio_ppv = [a / b for a, b in zip(times["pyprobvae"], hand_t)]
    ratio_svi = [a / b for a, b in zip(times["stock Pyro SVI"], hand_t)]
    result = {
        "config": name,
        "spec": spec,
        "batch_size": BATCH_SIZE,
        "rounds": rounds,
        "steps_per_block": block,
        "warmup_steps": warmup,
        "ms_per_step_median": {c: 1e3 * statistics.median(v) for c, v in times.items()},
        "ms_per_step_min": {c: 1e3 * min(v) for c, v in times.items()},
        "ms_per_step_blocks": {c: [round(1e3 * t, 4) for t in v] for c, v in times.items()},
        "ratio_pyprobvae_over_hand_median": statistics.median(ratio_ppv),
        "ratio_pyprobvae_over_hand_range": [min(ratio_ppv), max(ratio_ppv)],
        "ratio_svi_over_hand_median": statistics.median(ratio_svi),
        "ratio_svi_over_hand_range": [min(ratio_svi), max(ratio_svi)],
        "target_pyprobvae_over_hand": target,
        "equivalence_check": check,
    }
    result["meets_target"] = result["ratio_pyprobvae_over_hand_median"] <= target
    result["overhead_ms_per_step"] = result["ms_per_step_median"]["pyprobvae"] - result["ms_per_step_median"]["hand-written"]
    return result


def print_step_time(results):
    header("1. Step time (ms/step, median over interleaved blocks; ratios = median of per-round ratios)")
    r0 = results[0]
    print(
        f"batch {BATCH_SIZE}, Adam lr {LR}; {r0['rounds']} rounds x {r0['steps_per_block']} steps per contender, "
        f"after {r0['warmup_steps']} warm-up steps each; contenders alternate block by block, "
        "the starting one rotating every round"
    )
    print()
    cols = f"{'config':<16}{'hand-written':>13}{'pyprobvae':>11}{'stock SVI':>11}{'pyprobvae/hand':>16}{'target':>8}{'ok':>5}{'SVI/hand':>10}"
    print(cols)
    print("-" * len(cols))
    for r in results:
        ms = r["ms_per_step_median"]
        print(
            f"{r['config']:<16}{ms['hand-written']:>13.3f}{ms['pyprobvae']:>11.3f}{ms['stock Pyro SVI']:>11.3f}"
            f"{r['ratio_pyprobvae_over_hand_median']:>15.3f}x{'<= ' + format(r['target_pyprobvae_over_hand'], '.2f'):>8}"
            f"{'yes' if r['meets_target'] else 'NO':>5}{r['ratio_svi_over_hand_median']:>9.3f}x"
        )
    print()
    for r in results:
        lo, hi = r["ratio_pyprobvae_over_hand_range"]
        slo, shi = r["ratio_svi_over_hand_range"]
        mn = r["ms_per_step_min"]
        eq = r["equivalence_check"]
        print(
            f"{r['config']}: pyprobvae overhead {r['overhead_ms_per_step']:.3f} ms/step; per-round ratio range "
            f"pyprobvae {lo:.3f}-{hi:.3f}, SVI {slo:.3f}-{shi:.3f}; best blocks (ms) "
            f"hand {mn['hand-written']:.3f}, pyprobvae {mn['pyprobvae']:.3f}, SVI {mn['stock Pyro SVI']:.3f}"
        )
        print(
            f"{'':<{len(r['config'])}}  same-network check (same weights, same noise): max |ELBO diff| "
            f"{eq['max_abs_elbo_diff']:.2e} nats, max relative gradient diff {eq['max_rel_grad_diff']:.2e}"
        )


# --------------------------------------------------------------------------
# 2. Quality
# --------------------------------------------------------------------------


def train_hand(hand, train_x, epochs, seed):
    """The loop of ``fit`` for the hand-written VAE: same shuffling, same seeds."""
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(hand.parameters(), lr=LR)
    hand.train()
    for _ in range(epochs):
        for idx in iterate_minibatches(len(train_x), BATCH_SIZE, True, shuffle):
            loss = hand.loss(train_x[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    hand.eval()


@torch.no_grad()
def hand_elbo(hand, x):
    ll, kl = hand.terms(x)
    return float((ll - kl).mean())


def evaluate_quality(model, test_x, iwae_k, seed=2024):
    torch.manual_seed(seed)
    elbo = float(dataset_elbo(model, test_x).elbo.mean())
    torch.manual_seed(seed + 1)
    nll = float(-iwae_log_likelihood(model, test_x, iwae_k).mean())
    return elbo, nll


def bench_quality(mode, epochs):
    spec, _ = CONFIGS["digits-default"]
    train = load_dataset("digits", "train")
    train_x = train.x
    test_x = load_dataset("digits", "test").x
    iwae_k = IWAE_SAMPLES[mode]
    seed = 0

    torch.manual_seed(seed)
    model = build_vae(**spec)
    hand = hand_from_pyprobvae(model, spec)
    hand_other = copy.deepcopy(hand)

    t0 = time.perf_counter()
    fit(model, train, config=TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, seed=seed), progress=False)
    t_ppv = time.perf_counter() - t0

    t0 = time.perf_counter()
    train_hand(hand, train_x, epochs, seed)
    t_hand = time.perf_counter() - t0

    # Run-to-run noise reference: the hand-written VAE with another seed for
    # the noise and the shuffling (same initial weights).
    train_hand(hand_other, train_x, epochs, seed + 1)

    ppv_elbo, ppv_nll = evaluate_quality(model, test_x, iwae_k)
    hand_as_ppv = pyprobvae_from_hand(hand, spec).eval()
    hand_elbo_ppv, hand_nll = evaluate_quality(hand_as_ppv, test_x, iwae_k)
    torch.manual_seed(2024)
    hand_elbo_own = hand_elbo(hand, test_x)
    other_elbo, other_nll = evaluate_quality(pyprobvae_from_hand(hand_other, spec).eval(), test_x, iwae_k)

    steps = epochs * math.ceil(len(train_x) / BATCH_SIZE)
    return {
        "epochs": epochs,
        "steps": steps,
        "iwae_samples": iwae_k,
        "seed": seed,
        "num_train": len(train_x),
        "num_test": len(test_x),
        "pyprobvae": {"test_nll": ppv_nll, "test_elbo": ppv_elbo, "train_seconds": t_ppv},
        "hand-written": {
            "test_nll": hand_nll,
            "test_elbo": hand_elbo_ppv,
            "test_elbo_own_code": hand_elbo_own,
            "train_seconds": t_hand,
        },
        "hand-written-seed1": {"test_nll": other_nll, "test_elbo": other_elbo},
        "nll_difference": ppv_nll - hand_nll,
        "elbo_difference": ppv_elbo - hand_elbo_ppv,
        "meets_target": abs(ppv_nll - hand_nll) <= 1.0,
    }


def print_quality(q):
    header(
        f"2. Quality on digits (default model, {q['epochs']} epochs = {q['steps']} steps, batch {BATCH_SIZE}, "
        f"Adam lr {LR}, seed {q['seed']})"
    )
    print(
        f"train {q['num_train']} / test {q['num_test']} images; test NLL = -IWAE bound with K={q['iwae_samples']} "
        "(pyprobvae.metrics.iwae_log_likelihood for both: the hand-written weights are loaded into a "
        "pyprobvae VAE of the same architecture); test ELBO = pyprobvae.infer.dataset_elbo, one sample"
    )
    print()
    cols = f"{'model':<40}{'test NLL':>10}{'test ELBO':>11}{'train s':>9}"
    print(cols)
    print("-" * len(cols))
    p, h, o = q["pyprobvae"], q["hand-written"], q["hand-written-seed1"]
    print(f"{'pyprobvae (fit, seed 0)':<40}{p['test_nll']:>10.3f}{p['test_elbo']:>11.3f}{p['train_seconds']:>9.1f}")
    print(f"{'hand-written (seed 0)':<40}{h['test_nll']:>10.3f}{h['test_elbo']:>11.3f}{h['train_seconds']:>9.1f}")
    print(f"{'difference pyprobvae - hand-written':<40}{q['nll_difference']:>+10.3f}{q['elbo_difference']:>+11.3f}")
    print(f"{'(noise reference) hand-written, seed 1':<40}{o['test_nll']:>10.3f}{o['test_elbo']:>11.3f}")
    print()
    print(
        f"|NLL difference| = {abs(q['nll_difference']):.3f} nats (requirement <= 1 nat: "
        f"{'met' if q['meets_target'] else 'NOT MET'}); hand-written test ELBO by its own code: "
        f"{h['test_elbo_own_code']:.3f}"
    )
    print(
        "With seed 0 both loops draw the same shuffles and the same noise, so they differ only by float "
        "rounding; the seed-1 row shows the size of ordinary run-to-run variation."
    )


# --------------------------------------------------------------------------
# 3. Profile
# --------------------------------------------------------------------------


def _group(filename):
    f = filename.replace("\\", "/")
    if f.startswith("~") or f == "~":
        return "torch/C built-ins (ops, C calls)"
    for key, label in (
        ("/pyprobvae/", "pyprobvae"),
        ("/pyro/", "pyro (poutine, distributions)"),
        ("/torch/distributions/", "torch.distributions"),
        ("/torch/optim/", "torch.optim"),
        ("/torch/nn/", "torch.nn"),
        ("/torch/autograd/", "torch.autograd (python)"),
        ("/torch/", "torch (other python)"),
    ):
        if key in f:
            return label
    return "other python (stdlib, ...)"


def bench_profile(steps=PROFILE_STEPS, top=15):
    spec, _ = CONFIGS["digits-default"]
    batches = make_batches("digits-default", spec, num_batches=8)
    torch.manual_seed(0)
    model = build_vae(**spec)
    loss_fn = ELBOLoss(model)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    pyro.clear_param_store()
    for i in range(20):
        train_step(loss_fn, opt, batches[i % len(batches)])
    gc.collect()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(steps):
        train_step(loss_fn, opt, batches[i % len(batches)])
    prof.disable()
    wall = time.perf_counter() - t0

    stats = pstats.Stats(prof)
    total = stats.total_tt
    rows = []
    for (fname, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():
        rows.append((tt, ct, nc, fname, line, func))
    rows.sort(key=lambda r: -r[0])
    groups = {}
    for tt, ct, nc, fname, line, func in rows:
        g = _group(fname)
        groups[g] = groups.get(g, 0.0) + tt

    header(f"3. Profile: cProfile of {steps} pyprobvae train_step calls, digits-default, batch {BATCH_SIZE}")
    print(
        f"wall {wall * 1e3 / steps:.3f} ms/step under the profiler; profiled total {total * 1e3 / steps:.3f} ms/step; "
        f"{sum(r[2] for r in rows) / steps:.0f} Python/C function calls per step"
    )
    print()
    print(f"top {top} by tottime (time inside the function itself):")
    cols = f"{'tottime ms/step':>16}{'cumtime ms/step':>16}{'calls/step':>11}  function"
    print(cols)
    print("-" * 100)
    top_rows = []
    for tt, ct, nc, fname, line, func in rows[:top]:
        where = func if fname == "~" else f"{_short(fname)}:{line}({func})"
        print(f"{tt * 1e3 / steps:>16.4f}{ct * 1e3 / steps:>16.4f}{nc / steps:>11.1f}  {where}")
        top_rows.append(
            {"function": where, "tottime_ms_per_step": tt * 1e3 / steps, "cumtime_ms_per_step": ct * 1e3 / steps,
             "calls_per_step": nc / steps}
        )
    print()
    print("tottime by origin (ms/step):")
    for g, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:<36}{tt * 1e3 / steps:>8.4f}  ({100 * tt / total:4.1f}%)")

    # Cumulative time of the main phases of a step, and of known overheads.
    def cum(file_end, func):
        return sum(
            v[3] for k, v in stats.stats.items() if k[0].replace("\\", "/").endswith(file_end) and k[2] == func
        )

    phases = [
        ("elbo_terms: guide + model under Pyro trace/replay, log_prob, KL", cum("pyprobvae/infer/elbo.py", "elbo_terms")),
        ("  poutine trace get_trace (guide and model runs)", cum("pyro/poutine/trace_messenger.py", "get_trace")),
        ("    DiagonalNormal.forward (guide head, softplus, Normal)", cum("pyprobvae/families/diagonal.py", "forward")),
        ("    CategoricalLikelihood.forward (builds QuantizedCategorical)", cum("pyprobvae/likelihoods.py", "forward")),
        ("    QuantizedCategorical.expand (called by the data plate)", cum("pyprobvae/likelihoods.py", "expand")),
        ("  log-likelihood: QuantizedCategorical.log_prob", cum("pyprobvae/likelihoods.py", "log_prob")),
        ("  closed-form KL: torch kl_divergence", cum("torch/distributions/kl.py", "kl_divergence")),
        ("loss.backward()", cum("torch/_tensor.py", "backward")),
        ("optimizer.step() (Adam)", cum("torch/optim/optimizer.py", "wrapper")),
        ("optimizer.zero_grad()", cum("torch/optim/optimizer.py", "zero_grad")),
        ("loss.item() (NaN check)", sum(v[3] for k, v in stats.stats.items() if k[0] == "~" and "'item'" in k[2])),
    ]
    print()
    print("cumulative time of the parts of a step (ms/step; nested rows are included in their parent):")
    phase_rows = []
    for label, ct in phases:
        print(f"  {label:<66}{ct * 1e3 / steps:>8.4f}")
        phase_rows.append({"part": label.strip(), "cumtime_ms_per_step": ct * 1e3 / steps})
    return {
        "steps": steps,
        "wall_ms_per_step_profiled": wall * 1e3 / steps,
        "top_by_tottime": top_rows,
        "tottime_by_origin_ms_per_step": {g: tt * 1e3 / steps for g, tt in groups.items()},
        "phases": phase_rows,
    }


def _short(fname):
    f = fname.replace("\\", "/")
    for key in ("site-packages/", "/work/main/"):
        if key in f:
            return f.split(key, 1)[1]
    return f


# --------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps and epochs (< 30 s)")
    parser.add_argument("--profile", action="store_true", help=f"also cProfile {PROFILE_STEPS} pyprobvae steps")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the quality benchmark")
    parser.add_argument("--skip", choices=["time", "quality"], action="append", default=[], help="skip a section")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    epochs = args.epochs or EPOCHS[mode]

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    now = datetime.datetime.now().astimezone()
    env = {
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "mode": mode,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyprobvae": pyprobvae.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    print(f"pyprobvae benchmark ({mode}) {env['date']}")
    print(
        f"torch {env['torch']} | pyro {env['pyro']} | pyprobvae {env['pyprobvae']} | python {env['python']} | "
        f"{env['platform']}"
    )
    la = env["load_average"]
    print(
        f"torch.set_num_threads({args.threads}) -> get_num_threads() = {env['torch_threads']}; "
        f"interop threads {env['torch_interop_threads']}; {env['cpu_count']} CPU cores"
        + (f"; load average at start {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}" if la else "")
    )

    # Move everything allocated so far (modules, data sets) out of the
    # collector's reach, so that the gc.collect() before each timed block is
    # cheap and the same for every contender.
    gc.collect()
    gc.freeze()

    results = {"environment": env}
    if "time" not in args.skip:
        results["step_time"] = [bench_step_time(n, s, t, mode) for n, (s, t) in CONFIGS.items()]
        print_step_time(results["step_time"])
    if "quality" not in args.skip:
        results["quality"] = bench_quality(mode, epochs)
        print_quality(results["quality"])
    if args.profile:
        results["profile"] = bench_profile()

    total = time.perf_counter() - started
    results["total_seconds"] = total
    print()
    print(f"total {total:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
