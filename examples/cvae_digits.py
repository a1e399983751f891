"""
A conditional VAE on scikit-learn's 8x8 digits with the Python API: train
with the labels, then ask for digits of a chosen class, move between two
classes with the style held, and check with a classifier that the samples
are the digits asked for.

    python examples/cvae_digits.py --epochs 100 --prior learned --out runs/example-cvae
"""

import argparse
import json
import os

import pyro
import torch

import pyprobvae as ppv
from pyprobvae import plots
from pyprobvae.evaluation import sample_scores, train_classifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--prior", choices=("standard", "learned"), default="standard")
    parser.add_argument("--out", default="runs/example-cvae")
    args = parser.parse_args(argv)

    train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
    pyro.set_rng_seed(0)
    cvae = ppv.build_vae(train.data_shape, model="cvae", num_classes=train.num_classes, prior=args.prior,
                         latent_dim=8, hidden=[256], likelihood="categorical", num_levels=train.num_levels)
    # fit passes each batch's labels to cvae.model(x, y) and cvae.guide(x, y)
    ppv.fit(cvae, train, test, ppv.TrainConfig(epochs=args.epochs, seed=0), progress=False)
    metrics = ppv.evaluate(cvae, test.x, iwae_samples=100, y=test.y)  # bounds on log p(x|y)

    torch.manual_seed(0)
    sevens = cvae.sample(16, y=torch.full((16,), 7))
    labels = cvae.balanced_labels(1000)
    scores = sample_scores(train_classifier(train), cvae.sample(1000, y=labels), real=test.x, labels=labels)
    print(json.dumps({"test_elbo": metrics["test_elbo"], "test_nll": metrics["test_nll"], **scores}, indent=2))

    plots.save_image_grid(sevens, os.path.join(args.out, "sevens.png"), nrow=8, title="y = 7")
    plots.save_image_grid(cvae.sample(80, y=cvae.balanced_labels(80)), os.path.join(args.out, "classes.png"), nrow=8,
                          title="one row per class")
    strips = torch.cat([cvae.interpolate_classes(a, b, num_paths=3, steps=10) for a, b in ((1, 7), (3, 8), (4, 9))])
    plots.save_interpolation(strips, os.path.join(args.out, "class-interpolation.png"), title="1 -> 7, 3 -> 8, 4 -> 9")
    print(f"conditional_accuracy: share of samples of class y classified as y (chance 0.1); pictures in {args.out}")


if __name__ == "__main__":
    main()
