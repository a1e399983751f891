"""
A character-level VQ-VAE on text with a transformer prior over its codes,
end to end through a run folder (the same steps as `pyprobvae train --model
vqvae --dataset text`, then `pyprobvae train-prior` and `pyprobvae sample`).

The default corpus is built offline from docstrings of Python's standard
library; pass --dataset text:PATH for your own UTF-8 file.

    python examples/vqvae_text.py --out runs/example-text

trains both stages at the text defaults (pyprobvae.runs.data_defaults):
about 13 minutes on two CPU cores; --epochs and --prior-epochs shorten it.
"""

import argparse
import json

import torch

from pyprobvae.data.text import decode_text
from pyprobvae.models import VQVAEConfig
from pyprobvae.runs import DataConfig, Run, verbs


def _epochs(epochs):
    """The training settings given: the epochs if set, else none (the defaults)."""
    return {} if epochs is None else {"epochs": epochs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="text")
    parser.add_argument("--epochs", type=int, help="stage 1 epochs (default: the text default)")
    parser.add_argument("--prior-epochs", type=int, help="stage 2 epochs (default: the text default)")
    parser.add_argument("--out", default="runs/example-text")
    args = parser.parse_args(argv)

    stage1 = verbs.train(args.out, DataConfig(args.dataset), VQVAEConfig(), _epochs(args.epochs), progress=False)
    run = Run(args.out)
    stage2 = verbs.train_prior(run, training=_epochs(args.prior_epochs), progress=False)
    keys = ("test_nll", "bits_per_dim", "recon_accuracy", "codebook_perplexity", "codes_used")
    print(json.dumps({"uniform prior": {k: stage1[k] for k in keys}, "transformer prior": {k: stage2[k] for k in keys}}, indent=2))

    test = run.model_data("test")[:3]
    for original, reconstruction in zip(decode_text(test, run.vocabulary), decode_text(run.model.reconstruct(test), run.vocabulary)):
        print(f"--- input ---\n{original}\n--- reconstruction ---\n{reconstruction}")
    torch.manual_seed(0)
    for text in decode_text(run.model.sample(4, temperature=0.8), run.vocabulary):
        print(f"--- sample, temperature 0.8 ---\n{text}")
    print(json.dumps({"real words in 50 prior samples": stage2["sample_scores"]["prior"]}))
    # continue a prompt: its codes are kept, the rest drawn from the prior (as `pyprobvae sample --prompt`)
    for text in decode_text(verbs.continue_prompt(run, "Return the ", verbs.sampling_plan(run, 2, top_p=0.9)), run.vocabulary):
        print(f"--- continuation of 'Return the ', top-p 0.9 ---\n{text}")
    print(f"test_nll: nats per {run.model.config.data_shape[0]}-character sequence; run folder {args.out}")


if __name__ == "__main__":
    main()
