"""
Why a deterministic autoencoder is not generative, measured: train an
autoencoder and a VAE with the same networks on digits, decode random codes
z ~ N(0, I) through both (and, for the autoencoder, codes from a Gaussian
fitted to its training codes), and score the samples with a classifier
trained on the data (pyprobvae.scores).

    python examples/autoencoder_vs_vae.py --epochs 100 --out runs/ae-vs-vae
"""

import argparse
import json
import os

import pyro
import torch

import pyprobvae as ppv
from pyprobvae import plots
from pyprobvae.scores import sample_scores, train_classifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--out", default="runs/ae-vs-vae")
    args = parser.parse_args(argv)

    train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
    classifier = train_classifier(train)
    results, pictures = {}, {}
    for kind in ("ae", "vae"):
        pyro.set_rng_seed(0)
        model = ppv.build_vae(train.data_shape, model=kind, latent_dim=8, hidden=[256],
                              likelihood="categorical", num_levels=train.num_levels)
        ppv.fit(model, train, test, ppv.TrainConfig(epochs=args.epochs, seed=0), progress=False)
        torch.manual_seed(0)
        pictures[f"{kind}: z ~ N(0, I)"] = model.sample(args.samples)
        if kind == "ae":
            pictures["ae: z ~ Gaussian fitted to its codes"] = model.sample(args.samples, fitted_to=train.x)
    for name, samples in pictures.items():
        results[name] = sample_scores(classifier, samples, real=test.x)
        safe = name.replace(" ", "_").replace(":", "").replace("~", "").replace(",", "")
        plots.save_image_grid(samples[:64], os.path.join(args.out, f"{safe}.png"), nrow=8, title=name)
    print(json.dumps(results, indent=2))
    print(f"frechet_distance: between classifier features of the samples and of the test images (lower is better); "
          f"pictures in {args.out}")


if __name__ == "__main__":
    main()
