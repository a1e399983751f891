#!/usr/bin/env python
"""
pyprobvae's vector quantizer against vector-quantize-pytorch on a VQ-VAE.

The same VQ-VAE is trained on the bundled digits (8x8, 17 pixel levels) with
two quantizers, ``pyprobvae.families.quantizer.VectorQuantizer`` and
``vector_quantize_pytorch.VectorQuantize`` (the "peer"). Everything else is
shared:

* networks: ``ConvEncoder2d((1, 8, 8), D)`` -> a 4x4 grid of P = 16 codes of
  size D, and ``ConvDecoder2d((1, 8, 8), D, 17)`` -> the logits of the
  17-level categorical likelihood ``make_likelihood("categorical", ...)``;
  every contender starts from a copy of the same initial weights;
* data order: one shuffle per epoch from a seeded generator, the same batch
  for every contender at every step;
* optimizer: Adam on the encoder, the decoder and the quantizer's parameters
  (if any);
* random numbers: each contender draws its quantizer's random numbers
  (codebook init, k-means seeds, the peer's restarts) from its own copy of
  torch's global generator, seeded with ``--seed``, so the contenders do not
  disturb one another.

Objective, averaged over the batch: ``-log p(x|z_q)`` (nats per image) plus
the quantizer's losses. pyprobvae's quantizer returns per-example losses
summed over positions and dimensions, and the caller adds ``codebook_loss +
beta * commitment_loss`` (beta = 0.25). The peer returns one scalar, its
``commitment_weight`` times the commitment loss ``F.mse_loss(sg[e_k], z_e)``,
a MEAN over all batch * P * D elements, which is added as it is. With the
same per-example weight as pyprobvae the peer needs ``commitment_weight =
beta * P * D`` (64 at the defaults); that is what the matched settings use.

Settings, trained in one interleaved run:

* ``matched``: both with EMA codebooks (decay 0.99, epsilon 1e-5), k-means
  initialization on the first batch (10 Lloyd iterations), restarts of rare
  codes with the same threshold and averaging (peer:
  ``threshold_ema_dead_code=2``, its README's example: a code whose EMA
  cluster size, a moving average with decay 0.99 of its count per batch,
  falls below 2; pyprobvae: ``min_usage = 2 K / (batch * P)``, 0.0625 at
  the defaults, i.e. 2 of the 2048 / 64 = 32 positions an even share gives
  a code per full batch, with ``usage_decay=0.99``), the straight-through
  gradient (peer ``rotation_trick=False``) and commitment weight beta per
  example. The peer's default EMA decay is 0.8; it is set to 0.99 here.
* ``matched, pyprobvae default restarts``: pyprobvae as in ``matched`` but
  with its default restart rule (``min_usage=0.5, usage_decay=0.9``).
* ``matched, peer rotation trick``: the peer as above but with its default
  gradient estimator, the rotation trick (Fifty et al. 2024); pyprobvae has
  no such option.
* ``defaults``: each library as its documentation shows it.
  pyprobvae: ``VectorQuantizer(K, D)`` (codebook learned by the codebook loss,
  k-means init, restart of codes below half an even share of the
  assignments, averaged with decay 0.9) with beta = 0.25;
  peer: ``VectorQuantize(dim=D, codebook_size=K)`` (EMA decay 0.8, uniform
  init, no dead-code restart, rotation trick, ``commitment_weight=1`` on the
  element mean, i.e. beta = 1 / (P * D) per example) with its loss added as
  returned.

Reported on the whole test set (360 images), in evaluation mode: the MSE per
pixel of the decoder's mean, the categorical NLL in nats per image, the
quantization error ``sum_p ||z_e - e_k||^2`` per image, the number of codes
used and the perplexity exp(H) of the code usage (both from
``pyprobvae.families.quantizer.code_counts``, ``codes_used`` and ``perplexity`` for
every contender). Step time: every training step of every contender is timed
(zero_grad, forward, backward, Adam), the contenders take turns on each batch
with the first one rotating, and the median over full batches after
``--warmup`` steps is reported, with the median of the per-batch ratios to
pyprobvae in the same setting and a distribution-free interval for it
(``_harness.paired_ratio``). The quantizer alone is timed in interleaved
rounds (``_harness.interleaved``).

Usage::

    pip install vector-quantize-pytorch   # optional benchmark dependency
    python benchmarks/bench_vq.py [--quick] [--epochs 30] [--codebook-size 64] [--code-dim 16]
        [--batch-size 128] [--lr 1e-3] [--warmup 20] [--seed 0] [--threads 1] [--device cpu] [--json PATH]
"""

import argparse
import copy
import sys
import time

import torch

from pyprobvae.data import iterate_minibatches, load_dataset
from pyprobvae.families.quantizer import VectorQuantizer, code_counts, codes_used, perplexity
from pyprobvae.likelihoods import make_likelihood
from pyprobvae.networks import ConvDecoder2d, ConvEncoder2d

try:
    import _harness as harness
except ImportError:  # imported as benchmarks.bench_vq
    from benchmarks import _harness as harness

BETA = 0.25
DECAY = 0.99
PEER_DEAD_CODE_THRESHOLD = 2  # the value in vector-quantize-pytorch's README
# the quantizer-alone timing: (rounds, calls per round), after two rounds' worth of warm-up calls
QUANTIZER_TIMING = {"full": (30, 10), "quick": (3, 2)}
QUICK = dict(epochs=2, warmup=2)  # what --quick changes


def import_peer():
    try:
        import vector_quantize_pytorch
    except ImportError as error:
        print(
            f"bench_vq.py needs vector-quantize-pytorch, which is not installed ({error}).\n"
            "It is an optional benchmark dependency; install it with\n"
            "    pip install vector-quantize-pytorch -c constraints.txt",
            file=sys.stderr,
        )
        sys.exit(1)
    return vector_quantize_pytorch


# --------------------------------------------------------------------------
# contenders


class Contender:
    """One quantizer with its own copy of the networks, optimizer and RNG state."""

    def __init__(self, name, setting, library, quantizer, encoder, decoder, likelihood, lr, rng_state, note):
        self.name = name
        self.setting = setting
        self.library = library
        self.quantizer = quantizer
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.modules = [encoder, quantizer, decoder]
        params = [p for m in self.modules for p in m.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.rng_state = rng_state
        self.note = note
        self.step_seconds = []
        self.epoch_losses = []

    def objective(self, x):
        """The batch-mean training objective."""
        z_e = self.encoder(x)
        if self.library == "pyprobvae":
            q = self.quantizer(z_e)
            nll = -self.likelihood(self.decoder(q.z_q)).log_prob(x)
            return (nll + q.codebook_loss + BETA * q.commitment_loss).mean()
        z_q, _, vq_loss = self.quantizer(z_e)
        nll = -self.likelihood(self.decoder(z_q)).log_prob(x)
        # the peer's loss: commitment_weight * mean over batch, positions and dims
        return nll.mean() + vq_loss.sum()

    def step(self, x):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(x)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def train(self, mode=True):
        for m in self.modules:
            m.train(mode)

    @torch.no_grad()
    def evaluate(self, x, codebook_size):
        self.train(False)
        try:
            z_e = self.encoder(x)
            if self.library == "pyprobvae":
                q = self.quantizer(z_e)
                z_q, indices = q.z_q, q.indices
            else:
                z_q, indices, _ = self.quantizer(z_e)
            dist = self.likelihood(self.decoder(z_q))
            nll = -dist.log_prob(x)
            mean = self.likelihood.decoded(dist)
            counts = code_counts(indices, codebook_size)
            return {
                "mse_per_pixel": float((mean - x).pow(2).mean()),
                "nll_nats_per_image": float(nll.mean()),
                "quantization_error_per_image": float((z_e - z_q).pow(2).sum((1, 2)).mean()),
                "codes_used": codes_used(counts),
                "perplexity": perplexity(counts),
            }
        finally:
            self.train(True)


def quantizer_settings(vqp, codebook_size, code_dim, positions, batch_size):
    """(setting, library, constructor, description) of every contender."""
    matched_weight = BETA * positions * code_dim
    # the peer's threshold in positions per full batch, as a fraction of an even share of them
    matched_min_usage = PEER_DEAD_CODE_THRESHOLD * codebook_size / (batch_size * positions)
    pyprobvae_matched = dict(
        ema=True, decay=DECAY, kmeans_init=True, min_usage=matched_min_usage, usage_decay=DECAY
    )
    pyprobvae_default_rule = dict(ema=True, decay=DECAY, kmeans_init=True)
    peer_matched = dict(
        decay=DECAY,
        kmeans_init=True,
        kmeans_iters=10,
        threshold_ema_dead_code=PEER_DEAD_CODE_THRESHOLD,
        commitment_weight=matched_weight,
    )

    def pyprobvae_quantizer(**kwargs):
        return lambda: VectorQuantizer(codebook_size, code_dim, **kwargs)

    def peer_quantizer(**kwargs):
        return lambda: vqp.VectorQuantize(dim=code_dim, codebook_size=codebook_size, **kwargs)

    def show(kwargs):
        return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())

    return [
        (
            "matched",
            "pyprobvae",
            pyprobvae_quantizer(**pyprobvae_matched),
            f"VectorQuantizer(K, D, {show(pyprobvae_matched)}); + codebook_loss + {BETA} * commitment_loss",
        ),
        (
            "matched",
            "peer",
            peer_quantizer(rotation_trick=False, **peer_matched),
            f"VectorQuantize(dim=D, codebook_size=K, rotation_trick=False, {show(peer_matched)}); "
            f"commitment_weight = beta * P * D = {BETA} * {positions} * {code_dim}",
        ),
        (
            "matched, peer rotation trick",
            "peer",
            peer_quantizer(rotation_trick=True, **peer_matched),
            f"VectorQuantize(dim=D, codebook_size=K, rotation_trick=True, {show(peer_matched)})",
        ),
        (
            "matched, pyprobvae default restarts",
            "pyprobvae",
            pyprobvae_quantizer(**pyprobvae_default_rule),
            f"VectorQuantizer(K, D, {show(pyprobvae_default_rule)}) (min_usage=0.5, usage_decay=0.9); "
            f"+ codebook_loss + {BETA} * commitment_loss",
        ),
        (
            "defaults",
            "pyprobvae",
            pyprobvae_quantizer(),
            f"VectorQuantizer(K, D) (ema=False: codebook loss); + codebook_loss + {BETA} * commitment_loss",
        ),
        (
            "defaults",
            "peer",
            peer_quantizer(),
            "VectorQuantize(dim=D, codebook_size=K) (decay 0.8, no k-means, no restart, rotation trick, "
            f"commitment_weight 1 on the element mean = beta 1/{positions * code_dim} per example)",
        ),
    ]


# --------------------------------------------------------------------------
# training


def get_rng_state(device):
    """torch's global generator state (and the device's, on a GPU): what a contender keeps of its own."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_interleaved(contenders, train_x, epochs, batch_size, seed, warmup, device):
    """
    Train every contender on the same batches. On each batch the contenders
    take turns, the first one rotating from step to step; each runs with its
    own RNG state, swapped in and out outside the timed region. The loss is
    read back (a host synchronisation) after the clock stops.
    """
    generator = torch.Generator().manual_seed(seed)
    step = 0
    names = [c.name for c in contenders]
    by_name = {c.name: c for c in contenders}
    for _ in range(epochs):
        sums = {name: 0.0 for name in names}
        batches = 0
        for idx in iterate_minibatches(train_x.size(0), batch_size, shuffle=True, generator=generator, device=train_x.device):
            x = train_x[idx]
            full = idx.numel() == batch_size
            for name in harness.rotated(names, step):
                c = by_name[name]
                set_rng_state(c.rng_state, device)
                harness.synchronize(device)
                start = time.perf_counter()
                loss = c.step(x)
                harness.synchronize(device)
                seconds = time.perf_counter() - start
                c.rng_state = get_rng_state(device)
                if step >= warmup and full:
                    c.step_seconds.append(seconds)
                sums[name] += float(loss) * idx.numel()
            batches += idx.numel()
            step += 1
        for name, s in sums.items():
            by_name[name].epoch_losses.append(s / batches)
            if not torch.isfinite(torch.tensor(s)):
                raise RuntimeError(f"{name}: the training objective is not finite")
    return step


def time_quantizers(contenders, train_x, batch_size, rounds, calls, device):
    """
    The quantizer alone: forward and backward of ``sum(z_q^2) + its losses``
    in training mode (with its codebook updates) on the trained encoder's
    outputs for one batch, on a copy of each trained quantizer (and of its
    contender's RNG state). ``rounds`` interleaved rounds of ``calls`` calls
    per contender after ``2 * calls`` warm-up calls (``harness.interleaved``).

    :return: the :func:`harness.interleaved` result, ratios to pyprobvae (matched).
    """
    with torch.no_grad():
        inputs = {c.name: c.encoder(train_x[:batch_size]) for c in contenders}
    quantizers = {c.name: copy.deepcopy(c.quantizer).train() for c in contenders}
    states = {c.name: c.rng_state for c in contenders}
    by_name = {c.name: c for c in contenders}

    def call(name):
        q, z_e = quantizers[name], inputs[name].detach().requires_grad_()
        if by_name[name].library == "pyprobvae":
            out = q(z_e)
            loss = out.z_q.pow(2).sum() + (out.codebook_loss + BETA * out.commitment_loss).sum()
        else:
            z_q, _, vq_loss = q(z_e)
            loss = z_q.pow(2).sum() + vq_loss.sum()
        loss.backward()

    def before(name):
        set_rng_state(states[name], device)

    def after(name):
        states[name] = get_rng_state(device)

    candidates = {name: (lambda i, name=name: call(name)) for name in by_name}
    reference = next(c.name for c in contenders if c.library == "pyprobvae" and c.setting == "matched")
    return harness.interleaved(candidates, rounds=rounds, steps=calls, warmup=2 * calls, reference=reference,
                               before=before, after=after, device=device)


# --------------------------------------------------------------------------
# output


COLUMNS = [
    ("setting", "setting", "{}"),
    ("library", "quantizer", "{}"),
    ("mse_per_pixel", "test MSE/pixel", "{:.5f}"),
    ("nll_nats_per_image", "test NLL (nats/image)", "{:.2f}"),
    ("quantization_error_per_image", "quantization error/image", "{:.3f}"),
    ("codes_used", "codes used", "{}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("final_train_objective", "last-epoch train objective", "{:.2f}"),
    ("ms_per_step", "ms/step (median)", "{:.2f}"),
    ("step_time_ratio", "time / pyprobvae", "{:.2f}x"),
    ("quantizer_ms_per_call", "quantizer alone, ms/call", "{:.3f}"),
]


def markdown_table(rows):
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|",
    ]
    for row in rows:
        cells = [fmt.format(row[key]) if row.get(key) is not None else "" for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_arguments(parser, quick=f"smoke run: {QUICK['epochs']} epochs, {QUICK['warmup']} warm-up steps, "
                                 f"{QUANTIZER_TIMING['quick'][0]} rounds of the quantizer timing")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--codebook-size", type=int, default=64, help="codebook size K (default 64)")
    parser.add_argument("--code-dim", type=int, default=16, help="code dimension D (default 16)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the step time (default 20)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    if args.quick:
        args.epochs, args.warmup = QUICK["epochs"], QUICK["warmup"]
    quantizer_rounds, quantizer_calls = QUANTIZER_TIMING[mode]

    with harness.report_stream(args.json):
        vqp = import_peer()
        env = harness.start(args, extra_versions=("vector-quantize-pytorch",))
        device = args.torch_device

        train = load_dataset("digits", "train")
        test = load_dataset("digits", "test")
        train_x, test_x = train.x.to(device), test.x.to(device)
        data_shape = tuple(train.x.shape[1:])
        likelihood = make_likelihood("categorical", data_shape, num_levels=train.num_levels).to(device)
        K, D = args.codebook_size, args.code_dim

        torch.manual_seed(args.seed)
        encoder = ConvEncoder2d(data_shape, D).to(device)
        decoder = ConvDecoder2d(data_shape, D, likelihood.outputs_per_dim).to(device)
        positions = encoder.num_positions

        contenders = []
        for setting, library, build, note in quantizer_settings(vqp, K, D, positions, args.batch_size):
            torch.manual_seed(args.seed)  # every quantizer starts from the same RNG state
            if device.type == "cuda":
                torch.cuda.manual_seed(args.seed)
            quantizer = build().to(device)
            name = f"{library} ({setting})"
            contenders.append(
                Contender(
                    name, setting, library, quantizer, copy.deepcopy(encoder), copy.deepcopy(decoder), likelihood,
                    args.lr, get_rng_state(device), note,
                )
            )
        print(
            f"digits: {train.x.shape[0]} train / {test.x.shape[0]} test images {data_shape}, {train.num_levels} levels; "
            f"K={K} codes of D={D} at P={positions} positions; {args.epochs} epochs, batch {args.batch_size}, "
            f"Adam lr {args.lr}, seed {args.seed}, {device}"
        )
        for c in contenders:
            print(f"  {c.name}: {c.note}")

        harness.settle()
        steps = train_interleaved(contenders, train_x, args.epochs, args.batch_size, args.seed, args.warmup, device)
        if not contenders[0].step_seconds:
            raise SystemExit(f"no full batch after {args.warmup} warm-up steps to time: lower --warmup or train longer")
        quantizer_timing = time_quantizers(contenders, train_x, args.batch_size, quantizer_rounds, quantizer_calls, device)

        rows = []
        reference = {}
        for c in contenders:
            if c.library == "pyprobvae":
                reference[c.setting] = c
        for c in contenders:
            row = {"setting": c.setting, "library": "pyprobvae" if c.library == "pyprobvae" else "vector-quantize-pytorch"}
            row.update(c.evaluate(test_x, K))
            row["final_train_objective"] = c.epoch_losses[-1]
            step_ms = harness.summarize(c.step_seconds)
            row["ms_per_step"] = step_ms["median"]
            row["ms_per_step_q1_q3"] = [step_ms["q1"], step_ms["q3"]]
            row["timed_steps"] = len(c.step_seconds)
            # the per-batch ratio to pyprobvae in the same setting (to pyprobvae matched for the rotation-trick row)
            ref = reference.get(c.setting, reference["matched"])
            ratio = harness.paired_ratio(c.step_seconds, ref.step_seconds)
            row["step_time_ratio"] = ratio["median"]
            row["step_time_ratio_ci"] = [ratio["ci_low"], ratio["ci_high"], ratio["coverage"]]
            row["quantizer_ms_per_call"] = quantizer_timing["ms_per_step"][c.name]["median"]
            row["quantizer_ratio"] = quantizer_timing["ratios"][c.name]["median"]
            row["description"] = c.note
            rows.append(row)

        print()
        print(markdown_table(rows))
        print()
        print(
            f"{steps} training steps per contender; ms/step is the median over the {rows[0]['timed_steps']} full "
            f"batches after {args.warmup} warm-up steps, the contenders taking turns on every batch; "
            "'time / pyprobvae' is the median of the per-batch ratios to pyprobvae in the same setting (to "
            "pyprobvae matched for the rotation-trick row). 'quantizer alone' times forward + backward of the "
            f"quantizer by itself on one batch of trained encoder outputs (median over {quantizer_rounds} interleaved "
            f"rounds of {quantizer_calls} calls)."
        )
        for row in rows:
            lo, hi, cover = row["step_time_ratio_ci"]
            print(f"  {row['library']} ({row['setting']}): time / pyprobvae {row['step_time_ratio']:.3f}x, "
                  f"interval {lo:.3f}-{hi:.3f} ({100 * cover:.0f}%)")
        harness.print_timing(quantizer_timing, title="Quantizer alone (forward + backward, ms per call)", width=48)
        print()
        print(
            "Loss scale: pyprobvae's commitment loss is a SUM over positions and dimensions per example "
            f"(weighted by beta={BETA}); the peer's is a MEAN over all batch*P*D elements, weighted by its "
            f"commitment_weight: {BETA * positions * D:g} = beta*P*D in the matched settings (the same objective), "
            f"1 in 'defaults' (= beta 1/{positions * D} per example). The train objective column includes these terms."
        )
        config = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "torch_device"}
        harness.finish(args, {
            "environment": env,
            "config": config | {"positions": positions, "beta": BETA, "steps": steps},
            "results": rows,
            "quantizer_timing": quantizer_timing,
        })


if __name__ == "__main__":
    main()
