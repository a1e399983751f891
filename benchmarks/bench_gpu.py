#!/usr/bin/env python
"""
pyprobvae's training step against a hand-written PyTorch step on a CUDA GPU,
in float32 and with the two accelerations a GPU user reaches for: bfloat16
autocast of the networks and ``torch.compile``.

Models, both on synthetic binary data of MNIST size (1x28x28, pixels drawn
Bernoulli(0.3) on the device, 4 batches cycled; nothing is downloaded):

* ``mlp``: ``bench_vae.py``'s "mnist-size" MLP VAE (hidden 400, latent 50,
  Bernoulli likelihood) against its hand-written twin ``bench_vae.HandVAE``
  (same initial weights, stepped by ``bench_vae.hand_step``);
* ``conv``: the Gaussian VAE has no convolutional network, so the conv model
  is the VQ-VAE's (``model="vqvae"``: ``ConvEncoder2d`` to a 7x7 grid of 49
  codes, K = 64, D = 16, ``ConvDecoder2d``, Bernoulli likelihood), against
  ``bench_vq.py``'s plain PyTorch step (``bench_vq.Contender``: a copy of the
  same encoder, quantizer, decoder and likelihood, the same objective, no
  Pyro).

pyprobvae's step is ``Trainer.step`` over the ``ELBOObjective`` that ``fit``
descends on (``bench_vae.make_trainer``); both sides use Adam at lr 1e-3.
Each model runs at batch 128 and 1024 (8 and 32 with ``--quick``), in each variant:

* ``float32``: eager, as shipped (torch's default TF32 settings, printed);
* ``bf16``: each network (below) wrapped in :class:`Autocast`: its forward
  under ``torch.autocast(dtype=torch.bfloat16)``, its output cast back to
  float32, so that the likelihood, the posterior, the quantizer, every log
  density, the loss and Adam's state stay float32;
* ``compile``: ``module.compile()`` of each network, after
  ``torch.compiler.reset()`` so that every variant compiles afresh for its
  batch size (static shapes);
* ``bf16+compile``: both, the autocast wrapper compiled.

The networks, the same on both sides: for ``mlp`` the encoder's MLP, the
posterior's output layer and the decoder's MLP (pyprobvae's
``encoder[0]``, ``encoder[1].linear``, ``decoder[0]``; the hand-written
``enc``, ``head``, ``dec``), i.e. everything but the Normal and Bernoulli
distributions built from their outputs; for ``conv`` the encoder and the
decoder network (the quantizer and likelihood stay eager float32).

Timing: for each model, batch and variant, fresh copies of one initial model
are timed with ``_harness.interleaved`` (rotating blocks of steps, the device
synchronised when each block starts and ends, not per step; compilation
falls in the warm-up), and pyprobvae's window of step sums is read back
between blocks, as ``fit`` does. Printed: ms/step (median over rounds) of
each, the ratio pyprobvae / hand-written (median of the per-round ratios,
with its interval) and each variant's speedup over float32 eager (float32's
median ms over the variant's, across separate runs). A variant left when
``--budget`` seconds have passed is skipped, to keep a full run on an
H100/H200 under 5 minutes (not yet run on one); the total time is printed
at the end.

Without a CUDA device the default run prints one line and exits with status
0. ``--device cpu --quick`` checks the script on the CPU, leaving out the
compile variants unless ``--variants`` names them; a variant whose
compilation fails is skipped with a note.

Usage::

    python benchmarks/bench_gpu.py [--quick] [--models mlp conv] [--variants float32 bf16 compile bf16+compile]
        [--budget 210] [--threads 1] [--seed 0] [--device cuda|cpu] [--json PATH]
"""

import argparse
import copy
import time

import torch
from torch import nn

try:
    import _harness as harness
    import bench_vae
    import bench_vq
except ImportError:  # imported as benchmarks.bench_gpu
    from benchmarks import _harness as harness
    from benchmarks import bench_vae, bench_vq

from pyprobvae import build_vae

MODELS = {
    "mlp": bench_vae.CONFIGS["mnist-size"][0],
    "conv": {"model": "vqvae", "network": "conv", "data_shape": (1, 28, 28), "likelihood": "bernoulli",
             "codebook_size": 64, "code_dim": 16},
}
BATCH_SIZES = {"full": (128, 1024), "quick": (8, 32)}  # quick: small enough for the CPU
VARIANTS = {"float32": (False, False), "bf16": (True, False), "compile": (False, True), "bf16+compile": (True, True)}
CPU_VARIANTS = ("float32", "bf16")  # compiling on the CPU is slow: only on request there
# (warm-up steps per candidate, timed rounds, steps per block)
TIMING = {"full": (10, 11, 20), "quick": (2, 2, 1)}
NUM_BATCHES = 4
BUDGET_S = 210.0


class Autocast(nn.Module):
    """``net`` run under bfloat16 autocast on ``device_type``, its output cast back to float32."""

    def __init__(self, net: nn.Module, device_type: str):
        super().__init__()
        self.net = net
        self.device_type = device_type

    def forward(self, x):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.net(x).float()


def accelerate(networks, bf16: bool, compiled: bool, device_type: str) -> None:
    """Apply a variant in place to ``networks``, ``(parent, attribute)`` pairs naming each network."""
    for parent, name in networks:
        net = getattr(parent, name)
        if bf16:
            net = Autocast(net, device_type)
            setattr(parent, name, net)
        if compiled:
            net.compile()


def mlp_pair(base, device):
    """
    A copy of the MLP VAE ``base`` and its hand-written twin, with the
    networks of each and the hand-written step.
    """
    model = copy.deepcopy(base).to(device)
    hand = bench_vae.hand_from_pyprobvae(base, MODELS["mlp"]).to(device)
    optimizer = bench_vae.hand_optimizer(hand)
    networks = [(model.encoder, "0"), (model.encoder[1], "linear"), (model.decoder, "0")]
    hand_networks = [(hand, "enc"), (hand, "head"), (hand, "dec")]
    return model, networks, hand_networks, lambda x: bench_vae.hand_step(hand, optimizer, x)


def conv_pair(base, device):
    """
    A copy of the VQ-VAE ``base`` and ``bench_vq``'s plain PyTorch step over
    another copy of its modules, with the networks of each and that step.
    """
    model = copy.deepcopy(base).to(device)
    twin = copy.deepcopy(base).to(device)
    hand = bench_vq.Contender("hand-written", "plain PyTorch", "pyprobvae", twin.quantizer, twin.encoder,
                              twin.decoder[0], twin.likelihood, bench_vae.LR, None, "")
    networks = [(model, "encoder"), (model.decoder, "0")]
    return model, networks, [(hand, "encoder"), (hand, "decoder")], hand.step


PAIRS = {"mlp": mlp_pair, "conv": conv_pair}


def make_batches(shape, batch_size, seed, device):
    """:data:`NUM_BATCHES` batches of binary data of ``shape``, drawn on ``device``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    p = torch.full((NUM_BATCHES * batch_size, *shape), 0.3, device=device)
    return list(torch.bernoulli(p, generator=generator).split(batch_size))


def time_variant(model_name, base, batches, variant, mode, seed, device):
    """
    The :func:`_harness.interleaved` timing of one variant: fresh copies of
    ``base``, the variant applied to both sides.
    """
    bf16, compiled = VARIANTS[variant]
    if compiled:
        torch.compiler.reset()
    model, networks, hand_networks, hand_step = PAIRS[model_name](base, device)
    trainer = bench_vae.make_trainer(model, seed, device)
    for nets in (networks, hand_networks):
        accelerate(nets, bf16, compiled, device.type)
    steps = {"hand-written": hand_step, "pyprobvae": trainer.step}
    candidates = {name: (lambda i, step=step: step(batches[i % len(batches)])) for name, step in steps.items()}
    warmup, rounds, block = TIMING[mode]
    harness.settle()
    return harness.interleaved(candidates, rounds=rounds, steps=block, warmup=warmup, reference="hand-written",
                               after=lambda name: trainer.check(0) if name == "pyprobvae" else None, device=device)


def summary(timing):
    """The numbers of one variant's row: median ms/step of each and the ratio pyprobvae / hand-written."""
    ms = {name: s["median"] for name, s in timing["ms_per_step"].items()}
    ratio = timing["ratios"]["pyprobvae"]
    return {"pyprobvae_ms": ms["pyprobvae"], "hand_written_ms": ms["hand-written"], "ratio": ratio["median"],
            "ratio_ci": [ratio["ci_low"], ratio["ci_high"]], "ratio_coverage": ratio["coverage"]}


def speedups(row, float32):
    """
    Each side's speedup of ``row`` over ``float32``, the float32 row of the
    same model and batch (None: not timed, no speedups).
    """
    return {f"speedup_{side}": float32[f"{side}_ms"] / row[f"{side}_ms"] if float32 else None
            for side in ("pyprobvae", "hand_written")}


COLUMNS = (f"{'batch':>6}  {'variant':<13}{'pyprobvae ms':>13}{'hand ms':>9}{'ratio':>8}  {'interval':<13}"
           f"{'speedup pyprobvae':>18}{'hand':>7}")


def print_row(row):
    def speedup(value):
        return "-" if value is None else f"{value:.2f}x"

    print(f"{row['batch_size']:>6}  {row['variant']:<13}{row['pyprobvae_ms']:>13.3f}{row['hand_written_ms']:>9.3f}"
          f"{row['ratio']:>7.3f}x  "
          f"{row['ratio_ci'][0]:.3f}-{row['ratio_ci'][1]:<7.3f}{speedup(row['speedup_pyprobvae']):>18}"
          f"{speedup(row['speedup_hand_written']):>7}", flush=True)


def skip(row, reason) -> None:
    row["skipped"] = reason
    print(f"{row['batch_size']:>6}  {row['variant']:<13}skipped ({reason})")


def bench_variant(row, base, batches, args, started, float32) -> None:
    """
    Time the variant ``row`` names and fill in ``row`` (or its reason to be
    skipped); ``float32``: the float32 row of its model and batch, or None.
    """
    if time.perf_counter() - started > args.budget:
        skip(row, f"over the {args.budget:.0f} s budget")
        return
    try:
        timing = time_variant(row["model"], base, batches, row["variant"], args.mode, args.seed, args.torch_device)
    except Exception as error:  # a compiler that fails here must not end the run
        if not VARIANTS[row["variant"]][1]:
            raise
        skip(row, f"compilation failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
        return
    row.update(summary(timing))
    row.update(speedups(row, row if row["variant"] == "float32" else float32), timing=timing)
    print_row(row)


def bench_model(model_name, variants, args, started):
    """Every batch size and variant of one model: a list of JSON-ready rows (timed or skipped)."""
    spec = MODELS[model_name]
    torch.manual_seed(args.seed)
    base = build_vae(**spec)
    harness.header(f"{model_name}: {spec}")
    print(COLUMNS)
    print("-" * len(COLUMNS))
    rows = []
    for batch_size in BATCH_SIZES[args.mode]:
        batches = make_batches(spec["data_shape"], batch_size, args.seed, args.torch_device)
        float32 = None
        for variant in variants:
            row = {"model": model_name, "batch_size": batch_size, "variant": variant}
            bench_variant(row, base, batches, args, started, float32)
            if variant == "float32" and "skipped" not in row:
                float32 = row
            rows.append(row)
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_arguments(parser, device="cuda", quick="smoke run: a few steps per variant, small batches")
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS),
                        help="models to time (default: all)")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=None,
                        help=f"variants to time (default: all on CUDA, {' '.join(CPU_VARIANTS)} on the CPU)")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help=f"seconds after which the variants left are skipped (default {BUDGET_S:.0f})")
    args = parser.parse_args(argv)
    args.mode = "quick" if args.quick else "full"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device: skipped")
        return 0
    with harness.report_stream(args.json):
        env = harness.start(args)
        started = time.perf_counter()
        variants = args.variants or list(VARIANTS if args.torch_device.type == "cuda" else CPU_VARIANTS)
        if args.variants is None and args.torch_device.type != "cuda":
            print(f"on the CPU only {', '.join(CPU_VARIANTS)} by default (compiling is slow here; "
                  "--variants to add them)")
        tf32 = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
        print(f"TF32 allowed: matmul {tf32['matmul']}, cuDNN {tf32['cudnn']} (as torch set them); "
              "ratio = pyprobvae / hand-written with its interval; speedup = float32 ms / variant ms")
        rows = [row for name in args.models for row in bench_model(name, variants, args, started)]
        harness.finish(args, {"environment": env, "models": {name: MODELS[name] for name in args.models},
                              "timing_settings": dict(zip(("warmup", "rounds", "steps_per_block"), TIMING[args.mode])),
                              "tf32": tf32, "budget_s": args.budget, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
