"""
The autoencoder, the VAE and the conditional VAE side by side on digits: the
same networks (64-256-8, 100 epochs, seed 0), the same classifier judging
1000 decoded random codes of each (pyprobvae.evaluation.scores).

* The autoencoder reconstructs but is not generative: codes z ~ N(0, I) decode
  to images far from the data (a Gaussian fitted to its codes after training
  repairs much of it).
* The VAE's prior makes random codes meaningful, but which digit comes out is
  up to chance.
* The conditional VAE generates the digit you ask for: its samples of class y
  are classified as y (conditional accuracy). Its ELBO bounds log p(x|y), not
  log p(x): knowing the label, it needs fewer nats per image.

    python examples/ae_vae_cvae.py --epochs 100 --out runs/ae-vae-cvae
"""

import argparse
import json
import os

import pyro
import torch

import pyprobvae as ppv
from pyprobvae import plots
from pyprobvae.infer import dataset_elbo
from pyprobvae.evaluation import sample_scores, train_classifier

MODELS = ("ae", "vae", "cvae")


def train(kind, train_set, test_set, epochs):
    pyro.set_rng_seed(0)
    # the config completed for the data: its shape, levels, classes and default likelihood (categorical for digits)
    model = ppv.build_model(ppv.model_config(kind, latent_dim=8, hidden=[256]).for_data(train_set))
    ppv.fit(model, train_set, test_set, ppv.TrainConfig(epochs=epochs, seed=0), progress=False)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--out", default="runs/ae-vae-cvae")
    args = parser.parse_args(argv)

    train_set, test_set = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
    classifier = train_classifier(train_set)
    rows = {}
    for kind in MODELS:
        model = train(kind, train_set, test_set, args.epochs)
        y_test = test_set.y if model.conditional else None
        elbo = float(dataset_elbo(model, test_set.x, y_test).elbo.mean()) if model.generative else None
        torch.manual_seed(0)
        draws = {"z ~ N(0, I)": (model.sample(args.samples), None)}
        if kind == "ae":
            draws["z ~ Gaussian fitted to its codes"] = (model.sample(args.samples, fitted_to=train_set.x), None)
        if kind == "cvae":
            labels = model.balanced_labels(args.samples)
            draws = {"z ~ N(0, I), y in turn": (model.sample(args.samples, y=labels), labels)}
        for source, (samples, labels) in draws.items():
            name = f"{kind}: {source}"
            rows[name] = {"test_elbo": elbo, **sample_scores(classifier, samples, real=test_set.x, labels=labels)}
            grid = model.sample(80, y=model.balanced_labels(80)) if kind == "cvae" else samples[:64]
            safe = name.replace(" ", "_").replace(":", "").replace("~", "").replace(",", "").replace("(", "").replace(")", "")
            plots.save_image_grid(grid, os.path.join(args.out, f"{safe}.png"), nrow=8, title=name)
    print(json.dumps(rows, indent=2))
    print(f"frechet_distance: between classifier features of the samples and of the test images (lower is better); "
          f"test_elbo bounds log p(x) (log p(x|y) for the cvae); pictures in {args.out}")


if __name__ == "__main__":
    main()
