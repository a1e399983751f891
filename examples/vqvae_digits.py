"""
A VQ-VAE on scikit-learn's 8x8 digits with the Python API, both stages:

1. train the encoder, the codebook and the decoder under the uniform prior
   over codes (the ELBO's KL is the constant P log K);
2. fit a causal transformer to the codes of the training set, and sample
   codes from it to generate digits (temperature, top-k, top-p), or to
   complete the bottom half of test digits from the codes of their top half.

    python examples/vqvae_digits.py --epochs 100 --prior-epochs 50 --out runs/example-vqvae
"""

import argparse
import json
import os

import pyro
import torch

import pyprobvae as ppv
from pyprobvae import plots
from pyprobvae.infer import PriorTrainConfig, train_prior
from pyprobvae.priors import TransformerPriorConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--prior-epochs", type=int, default=50)
    parser.add_argument("--out", default="runs/example-vqvae")
    args = parser.parse_args(argv)

    train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
    pyro.set_rng_seed(0)
    config = ppv.model_config("vqvae", codebook_size=64, code_dim=16).for_data(train)
    vq = ppv.build_model(config)
    ppv.fit(vq, train, test, ppv.TrainConfig(epochs=args.epochs, seed=0), progress=False)
    stage1 = vq.evaluate(test.x)

    # stage 2: the codes of the training images, in raster order, are the prior's data; a tenth of them
    # is held out to keep the epoch before the transformer overfits
    codes = vq.encode(train.x)[torch.randperm(len(train.x), generator=torch.Generator().manual_seed(0))]
    prior = vq.attach_code_prior(TransformerPriorConfig())  # now part of the model (and of its config)
    train_prior(prior, codes[144:], vq.encode(test.x), PriorTrainConfig(epochs=args.prior_epochs), progress=False,
                validation_codes=codes[:144])
    stage2 = vq.evaluate(test.x)

    keys = ("test_nll", "bits_per_dim", "recon_mse", "codebook_perplexity", "codes_used")
    print(json.dumps({"uniform prior": {k: stage1[k] for k in keys}, "transformer prior": {k: stage2[k] for k in keys}}, indent=2))
    torch.manual_seed(0)
    plots.save_reconstructions(test.x[:16], vq.reconstruct(test.x[:16]), os.path.join(args.out, "reconstructions.png"))
    plots.save_image_grid(vq.sample(64), os.path.join(args.out, "samples.png"), nrow=8, title="transformer prior")
    plots.save_image_grid(vq.sample(64, temperature=0.7, top_k=8), os.path.join(args.out, "samples-t0.7-top8.png"),
                          nrow=8, title="temperature 0.7, top 8")
    plots.save_image_grid(vq.sample(64, top_p=0.9), os.path.join(args.out, "samples-top-p0.9.png"), nrow=8,
                          title="nucleus, top-p 0.9")
    # image completion: keep the codes of the top half of each test digit, draw the rest from the prior
    completed = vq.complete(test.x[:16], vq.prefix_positions())
    plots.save_reconstructions(test.x[:16], completed, os.path.join(args.out, "completions.png"),
                               title="top half kept, bottom half drawn", labels=("test", "completed"))
    print(f"test_nll: -log p(x|z_q) - log p(codes), nats per image; pictures in {args.out}")


if __name__ == "__main__":
    main()
