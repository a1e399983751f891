"""
A variational autoencoder on scikit-learn's 8x8 digits, end to end with the
Python API: train, evaluate in nats per example, and draw the pictures.

    python examples/vae_digits.py --epochs 100 --out runs/example-digits
"""

import argparse
import json
import os

import pyro

import pyprobvae as ppv
from pyprobvae import plots
from pyprobvae.infer import evaluation_data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--iwae-samples", type=int, default=1000)
    parser.add_argument("--out", default="runs/example-digits")
    args = parser.parse_args(argv)

    train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
    pyro.set_rng_seed(0)  # the initial weights; TrainConfig.seed covers the rest
    # 17 intensity levels: the categorical likelihood is exact for these pixels.
    vae = ppv.build_vae(train.data_shape, latent_dim=args.latent_dim, hidden=[256],
                        likelihood="categorical", num_levels=train.num_levels)
    history = ppv.fit(vae, train, test, ppv.TrainConfig(epochs=args.epochs, seed=0),
                      checkpoint=os.path.join(args.out, "checkpoint.pt"))

    x = evaluation_data(test, None)
    metrics = ppv.evaluate(vae, x, iwae_samples=args.iwae_samples)
    print(json.dumps({k: metrics[k] for k in ("test_elbo", "test_nll", "kl", "active_units")}, indent=2))

    plots.save_reconstructions(x[:16], vae.reconstruct(x[:16]), os.path.join(args.out, "reconstructions.png"))
    plots.save_image_grid(vae.sample(64), os.path.join(args.out, "samples.png"), nrow=8)
    for method in ("linear", "spherical"):
        path = vae.interpolate(x[:6], x[6:12], steps=10, method=method)
        plots.save_interpolation(path, os.path.join(args.out, f"interpolation-{method}.png"), title=method)
    plots.save_latent_scatter(vae.encode(x), test.y, os.path.join(args.out, "latent.png"))
    plots.save_training_curves(history, os.path.join(args.out, "curves.png"))
    print(f"pictures in {args.out}")


if __name__ == "__main__":
    main()
