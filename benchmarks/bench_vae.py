#!/usr/bin/env python
"""
Benchmarks of pyprobvae against a hand-written PyTorch VAE on the same network.

Sections (see benchmarks/README.md):

1. step time: pyprobvae's training step (``Trainer.step`` with the
   ``ELBOObjective`` that ``fit`` descends on), a hand-written PyTorch step
   and stock Pyro ``SVI(..., Trace_ELBO()).step`` on the same network,
   initial weights and batches, interleaved in rotating blocks within one
   run (``_harness.interleaved``); before timing, a same-network check that
   pyprobvae's per-example ELBO, gradients and one optimizer step equal the
   hand-written ones;
2. quality: train pyprobvae (``pyprobvae.fit``) and the hand-written VAE on
   digits and compare their test NLL (IWAE, K=1000) and test ELBO;
3. profile (``--profile``): cProfile of ``Trainer.step`` at digits size.

Usage::

    python benchmarks/bench_vae.py [--quick] [--profile] [--skip time|quality] [--epochs E]
        [--threads N] [--seed S] [--device cpu|cuda] [--json PATH]
"""

import argparse
import copy
import cProfile
import gc
import math
import pstats
import time

import pyro
import pyro.infer
import pyro.optim
import torch
import torch.nn.functional as F
from torch import nn

from pyprobvae import TrainConfig, build_vae, fit, load_dataset
from pyprobvae.data import iterate_minibatches
from pyprobvae.evaluation.metrics import iwae_log_likelihood
from pyprobvae.infer import ELBOLoss, dataset_elbo
from pyprobvae.infer.loop import RandomState, Trainer
from pyprobvae.infer.training import ELBOObjective

try:
    import _harness as harness
except ImportError:  # imported as benchmarks.bench_vae
    from benchmarks import _harness as harness

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
PROFILE_STEPS = {"full": 200, "quick": 20}
CONTENDERS = ("hand-written", "pyprobvae", "stock Pyro SVI")


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


def make_batches(name, spec, num_batches, seed, device):
    """A fixed list of full batches that every contender cycles through."""
    g = torch.Generator().manual_seed(seed)
    if name == "mnist-size":
        x = torch.bernoulli(torch.full((num_batches * BATCH_SIZE, *spec["data_shape"]), 0.3), generator=g)
    else:
        train = load_dataset("digits", "train").x
        perm = torch.randperm(len(train), generator=g)
        num_batches = min(num_batches, len(train) // BATCH_SIZE)
        x = train[perm[: num_batches * BATCH_SIZE]]
    return [b.contiguous().to(device) for b in x.split(BATCH_SIZE)]


def make_trainer(model, seed, device):
    """
    The training step of ``fit``: a :class:`Trainer` over ``model`` descending
    on the :class:`ELBOObjective` of the pathwise estimator with closed-form
    KL and no warm-up (``fit``'s defaults), with torch's Adam at ``LR``.
    """
    config = TrainConfig(batch_size=BATCH_SIZE, lr=LR, seed=seed, device=str(device))
    loss = ELBOLoss(model, config.estimator())
    trainer = Trainer(ELBOObjective(loss, warmup_steps=0), config, RandomState(seed, device))
    model.train()
    return trainer


def hand_optimizer(hand):
    return torch.optim.Adam(hand.parameters(), lr=LR)


def hand_step(hand, optimizer, x):
    """
    One step of the hand-written loop. Like ``Trainer.step`` it reads
    nothing back from the device (no ``loss.item()``): both steps only queue
    work, so on the CPU neither pays for a host read per step.
    """
    loss = hand.loss(x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _max_relative(pairs):
    return max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in pairs)


def equivalence_check(model, hand, x, seed=123):
    """
    Same weights and the same noise: pyprobvae's per-example ELBO terms and
    gradients must equal the hand-written ones (Pyro's Normal.rsample and
    torch.randn_like draw from the same stream); so must the gradients that
    one ``Trainer.step`` and one hand-written step descend on, and the
    updates they make. ``model`` and ``hand`` are modified (pass copies).

    The updates are compared by the norm of their difference relative to
    the norm of the hand-written update: Adam's first step moves a weight by
    about ``lr * sign(gradient)``, so a gradient within rounding of zero may
    move the other way and an elementwise comparison would flag it.
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
    ppv_layers, hand_layers = pyprobvae_linears(model), hand.linears()
    d_elbo = float(((terms.log_likelihood - terms.kl) - (ll - kl)).detach().abs().max())
    d_grad = _max_relative((a.weight.grad, b.weight.grad) for a, b in zip(ppv_layers, hand_layers))
    elbo_sum = float(terms.elbo.detach().double().sum())

    # one step of each loop from the same weights, with the same noise
    before = [(a.weight.detach().clone(), b.weight.detach().clone()) for a, b in zip(ppv_layers, hand_layers)]
    trainer = make_trainer(model, seed, x.device)
    optimizer = hand_optimizer(hand)
    torch.manual_seed(seed)
    trainer.step(x)
    torch.manual_seed(seed)
    hand_step(hand, optimizer, x)
    # the gradients of the step stay in .grad until the next zero_grad
    d_step_grad = _max_relative((a.weight.grad, b.weight.grad) for a, b in zip(ppv_layers, hand_layers))
    d_update = max(
        float(((a.weight.detach() - a0) - (b.weight.detach() - b0)).norm() / (b.weight.detach() - b0).norm().clamp_min(1e-30))
        for (a, b), (a0, b0) in zip(zip(ppv_layers, hand_layers), before)
    )
    step_sums = trainer.check(0)  # the sums Trainer.step kept: log-likelihood, KL, penalty (float64)
    d_window = abs(float(step_sums[0] - step_sums[1]) - elbo_sum)
    return {
        "max_abs_elbo_diff": d_elbo,
        "max_rel_grad_diff": d_grad,
        "max_rel_grad_diff_in_step": d_step_grad,
        "max_rel_update_diff": d_update,
        "trainer_window_elbo_sum_diff": d_window,
        "elbo_mean": elbo_sum / len(x),
    }


# --------------------------------------------------------------------------
# 1. Step time
# --------------------------------------------------------------------------


def make_contenders(spec, seed, device):
    """
    Three copies of one initial network, each with its own optimizer, as
    ``step(x)`` callables, plus the pyprobvae trainer (whose window of step
    sums is read between blocks) and the initial networks.
    """
    torch.manual_seed(seed)
    base = build_vae(**spec)
    hand = hand_from_pyprobvae(base, spec).to(device)
    base.to(device)
    hand_opt = hand_optimizer(hand)

    ppv = copy.deepcopy(base)
    trainer = make_trainer(ppv, seed, device)

    svi_model = copy.deepcopy(base)
    svi = pyro.infer.SVI(svi_model.model, svi_model.guide, pyro.optim.Adam({"lr": LR}), pyro.infer.Trace_ELBO())

    steps = {
        "hand-written": lambda x: hand_step(hand, hand_opt, x),
        # the real hot path of fit: queued on the device, no host read
        "pyprobvae": trainer.step,
        # SVI.step returns the loss as a Python float: one host read per step
        "stock Pyro SVI": svi.step,
    }
    return steps, trainer, base, hand


def bench_step_time(name, spec, target, mode, seed, device):
    warmup, rounds, block = TIMING[mode]
    batches = make_batches(name, spec, num_batches=8, seed=seed, device=device)
    steps, trainer, base, hand = make_contenders(spec, seed, device)
    check = equivalence_check(copy.deepcopy(base), copy.deepcopy(hand), batches[0])

    def before(contender):
        # An empty param store before every block (the same cost for every
        # contender): SVI registers its copy's modules as "encoder" and
        # "decoder" and must find its own parameters there.
        pyro.clear_param_store()

    def after(contender):
        # Read back Trainer.step's window of step sums, outside the clock, as
        # fit does every log_every steps (it also checks that they are finite).
        if contender == "pyprobvae":
            trainer.check(0)

    candidates = {c: (lambda i, step=steps[c]: step(batches[i % len(batches)])) for c in CONTENDERS}
    timing = harness.interleaved(candidates, rounds=rounds, steps=block, warmup=warmup, reference="hand-written",
                                 before=before, after=after, device=device)
    ms = timing["ms_per_step"]
    ratio = timing["ratios"]["pyprobvae"]
    return {
        "config": name,
        "spec": spec,
        "batch_size": BATCH_SIZE,
        "timing": timing,
        "ratio_pyprobvae_over_hand": ratio,
        "ratio_svi_over_hand": timing["ratios"]["stock Pyro SVI"],
        "target_pyprobvae_over_hand": target,
        "meets_target": ratio["median"] <= target,
        "overhead_ms_per_step": ms["pyprobvae"]["median"] - ms["hand-written"]["median"],
        "equivalence_check": check,
    }


def print_step_time(results, device):
    harness.header(f"1. Step time on {device} (batch {BATCH_SIZE}, Adam lr {LR}; pyprobvae = Trainer.step)")
    for r in results:
        print()
        print(f"{r['config']}: {r['spec']}")
        harness.print_timing(r["timing"], width=16)
        ratio = r["ratio_pyprobvae_over_hand"]
        eq = r["equivalence_check"]
        print(
            f"pyprobvae / hand-written {ratio['median']:.3f}x (interval {ratio['ci_low']:.3f}-{ratio['ci_high']:.3f}, "
            f"target <= {r['target_pyprobvae_over_hand']:.2f}: {'met' if r['meets_target'] else 'NOT MET'}); "
            f"overhead {r['overhead_ms_per_step']:.3f} ms/step"
        )
        print(
            f"same-network check (same weights, same noise): max |ELBO diff| {eq['max_abs_elbo_diff']:.2e} nats, "
            f"max relative gradient diff {eq['max_rel_grad_diff']:.2e}; in one Trainer.step vs one hand-written step: "
            f"gradients {eq['max_rel_grad_diff_in_step']:.2e}, updates (norm) {eq['max_rel_update_diff']:.2e}, "
            f"|sum of the step's ELBO in Trainer's window - ELBO sum| {eq['trainer_window_elbo_sum_diff']:.2e} nats"
        )


# --------------------------------------------------------------------------
# 2. Quality
# --------------------------------------------------------------------------


def train_hand(hand, train_x, epochs, seed):
    """
    The loop of ``fit`` for the hand-written VAE: the same shuffling (a CPU
    generator seeded with ``seed``, ``iterate_minibatches``), the same noise
    (torch's global generator seeded with ``seed``, as ``RandomState`` does).
    """
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    opt = hand_optimizer(hand)
    hand.train()
    for _ in range(epochs):
        for idx in iterate_minibatches(len(train_x), BATCH_SIZE, True, shuffle, train_x.device):
            hand_step(hand, opt, train_x[idx])
    harness.synchronize(train_x.device)
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


def bench_quality(mode, epochs, seed, device):
    spec, _ = CONFIGS["digits-default"]
    train = load_dataset("digits", "train")
    train_x = train.x.to(device)
    test_x = load_dataset("digits", "test").x.to(device)
    iwae_k = IWAE_SAMPLES[mode]

    torch.manual_seed(seed)
    model = build_vae(**spec)
    hand = hand_from_pyprobvae(model, spec).to(device)
    hand_other = copy.deepcopy(hand)

    t0 = time.perf_counter()
    config = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, seed=seed, device=str(device))
    fit(model, train, config=config, progress=False)
    t_ppv = time.perf_counter() - t0

    t0 = time.perf_counter()
    train_hand(hand, train_x, epochs, seed)
    t_hand = time.perf_counter() - t0

    # Run-to-run noise reference: the hand-written VAE with another seed for
    # the noise and the shuffling (same initial weights).
    train_hand(hand_other, train_x, epochs, seed + 1)

    ppv_elbo, ppv_nll = evaluate_quality(model, test_x, iwae_k)
    hand_as_ppv = pyprobvae_from_hand(hand, spec).to(device).eval()
    hand_elbo_ppv, hand_nll = evaluate_quality(hand_as_ppv, test_x, iwae_k)
    torch.manual_seed(2024)
    hand_elbo_own = hand_elbo(hand, test_x)
    other_elbo, other_nll = evaluate_quality(pyprobvae_from_hand(hand_other, spec).to(device).eval(), test_x, iwae_k)

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
    harness.header(
        f"2. Quality on digits (default model, {q['epochs']} epochs = {q['steps']} steps, batch {BATCH_SIZE}, "
        f"Adam lr {LR}, seed {q['seed']})"
    )
    print(
        f"train {q['num_train']} / test {q['num_test']} images; test NLL = -IWAE bound with K={q['iwae_samples']} "
        "(pyprobvae.evaluation.metrics.iwae_log_likelihood for both: the hand-written weights are loaded into a "
        "pyprobvae VAE of the same architecture); test ELBO = pyprobvae.infer.dataset_elbo, one sample"
    )
    print()
    cols = f"{'model':<40}{'test NLL':>10}{'test ELBO':>11}{'train s':>9}"
    print(cols)
    print("-" * len(cols))
    p, h, o = q["pyprobvae"], q["hand-written"], q["hand-written-seed1"]
    seed = q["seed"]
    print(f"{f'pyprobvae (fit, seed {seed})':<40}{p['test_nll']:>10.3f}{p['test_elbo']:>11.3f}{p['train_seconds']:>9.1f}")
    print(f"{f'hand-written (seed {seed})':<40}{h['test_nll']:>10.3f}{h['test_elbo']:>11.3f}{h['train_seconds']:>9.1f}")
    print(f"{'difference pyprobvae - hand-written':<40}{q['nll_difference']:>+10.3f}{q['elbo_difference']:>+11.3f}")
    print(f"{f'(noise reference) hand-written, seed {seed + 1}':<40}{o['test_nll']:>10.3f}{o['test_elbo']:>11.3f}")
    print()
    print(
        f"|NLL difference| = {abs(q['nll_difference']):.3f} nats (requirement <= 1 nat: "
        f"{'met' if q['meets_target'] else 'NOT MET'}); hand-written test ELBO by its own code: "
        f"{h['test_elbo_own_code']:.3f}"
    )
    print(
        f"With seed {seed} both loops draw the same shuffles and the same noise, so they differ only by float "
        f"rounding; the seed-{seed + 1} row shows the size of ordinary run-to-run variation."
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


def _is(key, file_end, func):
    return key[0].replace("\\", "/").endswith(file_end) and key[2] == func


def bench_profile(steps, seed, device, top=15):
    """
    cProfile of ``steps`` calls of ``Trainer.step`` on digits-default after
    20 warm-up steps, with ``Trainer.check`` every ``log_every`` steps as in
    ``fit``'s epoch loop.
    """
    spec, _ = CONFIGS["digits-default"]
    batches = make_batches("digits-default", spec, num_batches=8, seed=seed, device=device)
    torch.manual_seed(seed)
    model = build_vae(**spec).to(device)
    trainer = make_trainer(model, seed, device)
    log_every = trainer.config.log_every
    pyro.clear_param_store()
    for i in range(20):
        trainer.step(batches[i % len(batches)])
    trainer.check(0)
    harness.synchronize(device)
    gc.collect()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(steps):
        trainer.step(batches[i % len(batches)])
        if (i + 1) % log_every == 0:
            trainer.check(0)
    trainer.check(0)
    harness.synchronize(device)
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

    harness.header(
        f"3. Profile: cProfile of {steps} Trainer.step calls (Trainer.check every {log_every}), digits-default, "
        f"batch {BATCH_SIZE}, {device}"
    )
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
        return sum(v[3] for k, v in stats.stats.items() if _is(k, file_end, func))

    def builtins_called_by(file_end, *funcs):
        # the C calls (detach, sum, stack, to, append) made directly by these functions
        return sum(
            timing[3]
            for k, v in stats.stats.items() if k[0] == "~"
            for caller, timing in v[4].items() if any(_is(caller, file_end, f) for f in funcs)
        )

    phases = [
        ("Trainer.step (the whole step)", cum("pyprobvae/infer/loop.py", "step")),
        ("  ELBOObjective.__call__ (loss and per-example terms)", cum("pyprobvae/infer/training.py", "__call__")),
        ("    elbo_terms: guide + model under Pyro trace/replay, log_prob, KL", cum("pyprobvae/infer/elbo.py", "elbo_terms")),
        ("      poutine trace get_trace (guide and model runs)", cum("pyro/poutine/trace_messenger.py", "get_trace")),
        ("        DiagonalNormal.forward (guide head, softplus, Normal)", cum("pyprobvae/families/diagonal.py", "forward")),
        ("        CategoricalLikelihood.forward (builds QuantizedCategorical)", cum("pyprobvae/likelihoods.py", "forward")),
        ("        QuantizedCategorical.expand (called by the data plate)", cum("pyprobvae/likelihoods.py", "expand")),
        ("      log-likelihood: QuantizedCategorical.log_prob", cum("pyprobvae/likelihoods.py", "log_prob")),
        ("      closed-form KL: torch kl_divergence", cum("torch/distributions/kl.py", "kl_divergence")),
        ("  step sums kept on the device (C calls of Trainer.step: detach, sum, stack)",
         builtins_called_by("pyprobvae/infer/loop.py", "step", "<listcomp>")),
        ("  loss.backward()", cum("torch/_tensor.py", "backward")),
        ("  optimizer.step() (Adam)", cum("torch/optim/optimizer.py", "wrapper")),
        ("  optimizer.zero_grad()", cum("torch/optim/optimizer.py", "zero_grad")),
        (f"Trainer.check (host read of the step sums, every {log_every} steps)", cum("pyprobvae/infer/loop.py", "check")),
    ]
    print()
    print("cumulative time of the parts of a step (ms/step; nested rows are included in their parent):")
    phase_rows = []
    for label, ct in phases:
        print(f"  {label:<78}{ct * 1e3 / steps:>8.4f}")
        phase_rows.append({"part": label.strip(), "cumtime_ms_per_step": ct * 1e3 / steps})
    return {
        "steps": steps,
        "log_every": log_every,
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
    harness.add_common_arguments(parser, quick="smoke run: few steps and epochs (< 30 s)")
    parser.add_argument("--profile", action="store_true",
                        help=f"also cProfile {PROFILE_STEPS['full']} Trainer.step calls ({PROFILE_STEPS['quick']} with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the quality benchmark")
    parser.add_argument("--skip", choices=["time", "quality"], action="append", default=[], help="skip a section")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    epochs = args.epochs or EPOCHS[mode]

    with harness.report_stream(args.json):
        env = harness.start(args)
        device = args.torch_device
        harness.settle()
        results = {"environment": env}
        if "time" not in args.skip:
            results["step_time"] = [
                bench_step_time(n, s, t, mode, args.seed, device) for n, (s, t) in CONFIGS.items()
            ]
            print_step_time(results["step_time"], device)
        if "quality" not in args.skip:
            results["quality"] = bench_quality(mode, epochs, args.seed, device)
            print_quality(results["quality"])
        if args.profile:
            results["profile"] = bench_profile(PROFILE_STEPS[mode], args.seed, device)
        harness.finish(args, results)


if __name__ == "__main__":
    main()
