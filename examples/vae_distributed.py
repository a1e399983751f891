"""
Training with the Python API on several processes: the script joins the
process group that torchrun describes and calls ``fit`` as one process
would; DDP, the global batch and the all-reduced numbers come with it.

    torchrun --standalone --nproc_per_node 2 examples/vae_distributed.py --epochs 50
    python examples/vae_distributed.py --epochs 50        # the same run in one process

Every rank loads the whole data set and takes its share of each global
batch; rank 0 writes the checkpoint and prints.
"""

import argparse
import json
import os

import pyro

import pyprobvae as ppv
from pyprobvae.distributed import init_from_environment, shut_down


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch, shared over the processes")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (each process takes the GPU of its local rank)")
    parser.add_argument("--out", default="runs/example-distributed")
    args = parser.parse_args(argv)

    world = init_from_environment(args.device)
    try:
        train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
        pyro.set_rng_seed(0)  # the same initial weights on every rank (DDP copies rank 0's anyway)
        vae = ppv.build_vae(train.data_shape, latent_dim=8, hidden=[256], likelihood="categorical", num_levels=train.num_levels)
        os.makedirs(args.out, exist_ok=True)
        config = ppv.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=0, device=args.device)
        history = ppv.fit(vae, train, test, config, checkpoint=os.path.join(args.out, "checkpoint.pt"), progress=False)
        if world.is_main:
            last = history[-1]
            print(f"{world.size} process(es): after {last['epoch']} epochs, test ELBO {last['test_elbo']:.3f} nats per example")
            print(json.dumps({k: v for k, v in last.items() if k != "seconds"}))
    finally:
        shut_down()


if __name__ == "__main__":
    main()
