#!/usr/bin/env python
"""
pyprobvae's training step against the hand-written PyTorch VAE of
``bench_vae.py`` on a GPU, in float32 and with the two accelerations a GPU
user reaches for: bfloat16 autocast of the networks and ``torch.compile``.

For each global batch (128 and 1024) of synthetic binary MNIST-size data
(generated on the device) and each variant, the two steps (pyprobvae's
``Trainer.step``, the step ``fit`` runs, and ``bench_vae.hand_step``) start
from the same weights and are timed in interleaved blocks
(``_harness.interleaved``, which synchronises the device at block
boundaries only). Variants, applied to the same networks of both (the
pyprobvae model's ``encoder`` and ``decoder``; the hand-written ``enc``,
``head`` and ``dec``):

- ``float32``: eager, as shipped;
- ``bf16``: each network's forward under ``torch.autocast(dtype=bfloat16)``,
  its outputs cast back to float32, so that every log density, the ELBO and
  Adam's state stay float32;
- ``compile``: ``module.compile()`` of each network;
- ``bf16+compile``: both.

Printed per batch and variant: ms per step of each, the ratio pyprobvae /
hand-written, and each variant's speedup over float32 for pyprobvae: the
numbers that decide whether ``--precision bf16`` and ``--compile`` become
options (docs/scaling.rst). Only the MLP VAE is compared: the Gaussian VAE
has no convolutional network yet.

Where no CUDA device exists it prints one line and exits with status 0.
``--device cpu --quick`` runs the float32 and bf16 variants briefly on the
CPU, to check the script (compilation is left out there). A full run on a
GPU is bounded to about 5 minutes (compilation included): variants left
when ``--budget`` seconds have passed are skipped, with a note.

Usage::

    python benchmarks/bench_gpu.py [--device cuda|cpu] [--quick] [--budget SECONDS] [--json PATH]
"""

import argparse
import copy
import json
import sys
import time

import torch
from torch.utils import _pytree as pytree

try:
    import _harness as harness
    import bench_vae
except ImportError:  # imported as benchmarks.bench_gpu
    from benchmarks import _harness as harness
    from benchmarks import bench_vae

from pyprobvae import build_vae

SPEC = bench_vae.CONFIGS["mnist-size"][0]
BATCH_SIZES = (128, 1024)
VARIANTS = {"float32": (False, False), "bf16": (True, False), "compile": (False, True), "bf16+compile": (True, True)}
# (warm-up steps, timed rounds, steps per block)
TIMING = {"full": (20, 11, 20), "quick": (3, 3, 3)}


def _autocast_forward(module: torch.nn.Module, device_type: str) -> None:
    """Make ``module``'s forward run under bfloat16 autocast and return float32 tensors."""
    forward = module.forward

    def forward_in_bf16(*args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return pytree.tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, out)

    module.forward = forward_in_bf16


def _accelerate(networks, bf16: bool, compiled: bool, device: torch.device) -> None:
    for network in networks:
        if bf16:
            _autocast_forward(network, device.type)
        if compiled:
            network.compile()


def _steps(base, bf16: bool, compiled: bool, device: torch.device):
    """The two steps on copies of ``base`` (and its hand-written twin), with the variant applied, and pyprobvae's trainer."""
    model = copy.deepcopy(base).to(device)
    hand = bench_vae.hand_from_pyprobvae(base, SPEC).to(device)
    _accelerate([model.encoder, model.decoder], bf16, compiled, device)
    _accelerate([hand.enc, hand.head, hand.dec], bf16, compiled, device)
    trainer = bench_vae.make_trainer(model, 0, device)
    optimizer = bench_vae.hand_optimizer(hand)
    return {"hand-written": lambda x: bench_vae.hand_step(hand, optimizer, x), "pyprobvae": trainer.step}, trainer


def _batches(batch_size: int, device: torch.device, count: int = 4):
    generator = torch.Generator(device=device).manual_seed(0)
    full = torch.full((count * batch_size, *SPEC["data_shape"]), 0.3, device=device)
    return list(torch.bernoulli(full, generator=generator).split(batch_size))


def bench(device: torch.device, mode: str, budget: float) -> dict:
    warmup, rounds, block = TIMING[mode]
    variants = {name: v for name, v in VARIANTS.items() if device.type == "cuda" or not v[1]}
    torch.manual_seed(0)
    base = build_vae(**SPEC)
    started, results = time.perf_counter(), {}
    for batch_size in BATCH_SIZES:
        batches = _batches(batch_size, device)
        for name, (bf16, compiled) in variants.items():
            if time.perf_counter() - started > budget:
                print(f"  batch {batch_size}, {name}: skipped (over the {budget:.0f} s budget)")
                continue
            steps, trainer = _steps(base, bf16, compiled, device)
            candidates = {c: (lambda i, step=step: step(batches[i % len(batches)])) for c, step in steps.items()}
            timing = harness.interleaved(candidates, rounds=rounds, steps=block, warmup=warmup, reference="hand-written",
                                         after=lambda c: trainer.check(0) if c == "pyprobvae" else None, device=device)
            results[f"{batch_size}/{name}"] = timing
            ms = timing["ms_per_step"]
            float32 = results.get(f"{batch_size}/float32")
            speedup = float32["ms_per_step"]["pyprobvae"]["median"] / ms["pyprobvae"]["median"] if float32 else float("nan")
            print(f"  batch {batch_size:5d}  {name:13s} pyprobvae {ms['pyprobvae']['median']:7.3f} ms  "
                  f"hand-written {ms['hand-written']['median']:7.3f} ms  ratio {timing['ratios']['pyprobvae']['median']:5.2f}  "
                  f"speedup over float32 {speedup:5.2f}x")
    print(f"total {time.perf_counter() - started:.0f} s")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="a few steps per variant (a check of the script)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds after which the remaining variants are skipped")
    parser.add_argument("--json", help="also write the timings to this file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device: skipped")
        return 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}: MNIST-size MLP VAE {SPEC['hidden']} -> {SPEC['latent_dim']}")
    results = bench(device, "quick" if args.quick else "full", args.budget)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "spec": SPEC, "timing": results}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
