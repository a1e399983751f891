#!/usr/bin/env python
"""
Throughput of training on several processes (DDP on gloo, as ``torchrun``
starts them) against one, on this machine's CPUs.

Each layout trains the same model on the same synthetic binary data by
:meth:`pyprobvae.infer.loop.Trainer.run`, the loop ``fit`` runs (the global
batch shared over the ranks, DDP's gradient averaging, the all-reduced
window of sums): one epoch to warm up, then one timed epoch between two
all-reduces, so that every rank has finished. Throughput is examples of the
global batch per second. Layouts:

- ``1 process x 1 thread``: the reference;
- ``2 processes x 1 thread``: torchrun's layout on two cores (the parallel
  efficiency is its throughput over twice the reference's);
- ``1 process x 2 threads``: what the same two cores give without DDP.

The layouts run in rotating order, ``--repeats`` times each, and the median
is reported. The models: the MNIST-size MLP VAE of ``bench_vae.py``
(784-400-50, Bernoulli) and the digits-size one (64-256-8).

Usage::

    python benchmarks/bench_distributed.py [--repeats R] [--steps S] [--batch-size B] [--json PATH]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import torch

MODELS = {
    "mnist-size": dict(data_shape=(1, 28, 28), latent_dim=50, hidden=(400,), likelihood="bernoulli"),
    "digits-size": dict(data_shape=(1, 8, 8), latent_dim=8, hidden=(256,), likelihood="bernoulli"),
}
LAYOUTS = {"1 process x 1 thread": (1, 1), "2 processes x 1 thread": (2, 1), "1 process x 2 threads": (1, 2)}


def _worker(steps: int, batch_size: int) -> None:
    """One rank: time an epoch of ``steps`` global batches of each model; rank 0 prints a JSON line of examples/s."""
    import pyro

    from pyprobvae import build_vae
    from pyprobvae.data import from_arrays
    from pyprobvae.distributed import init_from_environment
    from pyprobvae.infer import ELBOLoss, TrainConfig
    from pyprobvae.infer.loop import RandomState, Trainer
    from pyprobvae.infer.training import ELBOObjective

    world = init_from_environment("cpu")
    results = {}
    for name, settings in MODELS.items():
        data = torch.rand((steps * batch_size, *settings["data_shape"]), generator=torch.Generator().manual_seed(0)) > 0.5
        train = from_arrays(data)
        pyro.set_rng_seed(0)
        model = build_vae(**settings)
        config = TrainConfig(epochs=1, batch_size=batch_size, log_every=50)
        trainer = Trainer(ELBOObjective(ELBOLoss(model)), config, RandomState(0, torch.device("cpu"), world=world), world)
        trainer.run((train.x, None), progress=False)  # warm-up epoch
        world.all_reduce_sum(torch.zeros(1))
        started = time.perf_counter()
        trainer.run((train.x, None), progress=False)
        world.all_reduce_sum(torch.zeros(1))
        results[name] = len(train) / (time.perf_counter() - started)
    if world.is_main:
        print(json.dumps(results))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(processes: int, threads: int, steps: int, batch_size: int) -> dict:
    """Run the workers of one layout; rank 0's examples/s per model."""
    port, started = _free_port(), []
    for rank in range(processes):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if processes > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(processes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        command = [sys.executable, __file__, "--worker", "--steps", str(steps), "--batch-size", str(batch_size)]
        started.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=600)[0] for process in started]
    if any(process.returncode for process in started):
        raise SystemExit(f"a worker of {processes} x {threads} failed")
    return json.loads(outputs[0].strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each layout (the median is reported)")
    parser.add_argument("--steps", type=int, default=40, help="global batches in the timed epoch")
    parser.add_argument("--batch-size", type=int, default=256, help="the global batch")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.steps, args.batch_size)
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, global batch {args.batch_size}, {args.steps} timed steps, "
          f"median of {args.repeats}")
    runs = {layout: [] for layout in LAYOUTS}
    names = list(LAYOUTS)
    for repeat in range(args.repeats):
        for layout in names[repeat % len(names):] + names[: repeat % len(names)]:
            runs[layout].append(_launch(*LAYOUTS[layout], args.steps, args.batch_size))
    results = {}
    for model in MODELS:
        median = {layout: statistics.median(r[model] for r in runs[layout]) for layout in LAYOUTS}
        reference = median["1 process x 1 thread"]
        results[model] = {
            "examples_per_second": median,
            "speedup_2_processes": median["2 processes x 1 thread"] / reference,
            "parallel_efficiency": median["2 processes x 1 thread"] / (2 * reference),
            "speedup_2_threads": median["1 process x 2 threads"] / reference,
        }
        print(f"\n{model}")
        for layout, value in median.items():
            spread = min(r[model] for r in runs[layout]), max(r[model] for r in runs[layout])
            print(f"  {layout:24s} {value:9.0f} examples/s  (range {spread[0]:.0f}-{spread[1]:.0f})")
        print(f"  2 processes: speedup {results[model]['speedup_2_processes']:.2f}x, "
              f"parallel efficiency {results[model]['parallel_efficiency']:.0%}; "
              f"2 threads in one process: {results[model]['speedup_2_threads']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
