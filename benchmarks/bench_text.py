#!/usr/bin/env python
"""
Text from the two-stage model (a VQ-VAE over characters with a transformer
prior over its codes) against its direct baseline, a plain character-level
transformer of the same size trained for the same time.

* **two-stage**: ``pyprobvae train --model vqvae --dataset text`` and
  ``pyprobvae train-prior`` at the command line's defaults (or the settings
  given here), through the same verbs;
* **char-level**: a :class:`~pyprobvae.priors.TransformerPrior` with the
  prior's architecture (width, heads, layers, dropout) over the characters
  themselves (free embeddings, one position per character), trained by the
  same loop (``train_prior`` with the same text defaults: batch size,
  learning rate and its schedule, held-out share and early stopping) for as many epochs as fit in the two-stage
  model's training time (both stages together), measured here.

Reported for each, on the text's fixed test split: bits per character (the
two-stage model's is its bound ``-log p(x | z_q) - log p(k)``, the baseline's
its exact likelihood, so the baseline is the honest yardstick), and the
share of real words in ``--samples`` samples at temperature 1 (words: runs
of 3+ letters that occur in the training split,
:mod:`pyprobvae.evaluation.text`), with 5 samples of each.

Usage::

    python benchmarks/bench_text.py [--dataset text|text:PATH] [--out DIR] [--samples N] [--threads N] [--json PATH]
"""

import argparse
import math
import os
import time

import torch

from pyprobvae.data import load_dataset
from pyprobvae.data.text import decode_text
from pyprobvae.evaluation import real_word_scores, vocabulary_of
from pyprobvae.infer import PriorTrainConfig, train_prior
from pyprobvae.models import model_config
from pyprobvae.priors import TransformerPrior
from pyprobvae.runs import DataConfig, Run, verbs
from pyprobvae.runs.data_defaults import prior_defaults

try:
    import _harness as harness
except ImportError:  # imported as benchmarks.bench_text
    from benchmarks import _harness as harness

SHOWN = 5


def two_stage(args, data):
    started = time.perf_counter()
    folder = os.path.join(args.out, "two-stage")
    verbs.train(folder, data, model_config("vqvae"), {"seed": args.seed}, overwrite=True, progress=False)
    run = Run(folder)
    metrics = verbs.train_prior(run, training={"seed": args.seed}, progress=False)
    seconds = time.perf_counter() - started
    torch.manual_seed(args.seed)
    samples = decode_text(run.model.sample(args.samples), run.vocabulary)
    return run, {"bits_per_char": metrics["bits_per_dim"], "recon_accuracy": metrics["recon_accuracy"], "seconds": seconds}, samples


def char_level(args, run, train, test, seconds):
    prior_config = run.model.config.code_prior.replace(
        codebook_size=len(train.vocabulary), num_positions=train.data_shape[0], code_dim=None
    )
    loop = PriorTrainConfig(**{**prior_defaults(run.config.model.likelihood)[1], "seed": args.seed})
    held_out = max(1, int(loop.validation_share * len(train.x)))
    order = torch.randperm(len(train.x), generator=torch.Generator().manual_seed(args.seed))

    def fit(epochs):
        torch.manual_seed(args.seed)
        prior = TransformerPrior(prior_config)
        started = time.perf_counter()
        history = train_prior(prior, train.x[order[held_out:]], test.x, loop.replace(epochs=epochs), progress=False,
                              validation_codes=train.x[order[:held_out]])
        return prior, history, time.perf_counter() - started

    _, _, one_epoch = fit(1)
    epochs = max(1, round(seconds / one_epoch))
    prior, history, spent = fit(epochs)
    kept = next(record for record in history if record.get("kept"))
    torch.manual_seed(args.seed)
    samples = decode_text(prior.sample(args.samples), train.vocabulary)
    bits = kept["test_nll"] / (train.data_shape[0] * math.log(2))
    return {"bits_per_char": bits, "epochs": epochs, "kept_epoch": kept["epoch"], "seconds": spent}, samples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("--dataset", default="text", help="text (default) or text:PATH")
    parser.add_argument("--out", default="runs/bench-text", help="folder of the two-stage run folder")
    parser.add_argument("--samples", type=int, default=50, help="samples whose words are checked (default 50)")
    args = parser.parse_args(argv)
    with harness.report_stream(args.json):
        env = harness.start(args)
        data = DataConfig(args.dataset)
        train, test = (load_dataset(data.dataset, split, seq_len=data.seq_len) for split in ("train", "test"))
        known = vocabulary_of(decode_text(train.x, train.vocabulary))
        run, stage, stage_samples = two_stage(args, data)
        char, char_samples = char_level(args, run, train, test, stage["seconds"])
        results = {}
        for name, numbers, samples in (("VQ-VAE + transformer", stage, stage_samples), ("char-level transformer", char, char_samples)):
            numbers.update(real_word_scores(samples, known))
            results[name] = dict(numbers, shown=samples[:SHOWN])
        harness.header(f"Text on {args.dataset}: {train.data_shape[0]}-character sequences, {args.samples} samples at temperature 1")
        for name, numbers in results.items():
            print(f"{name:<24} bits/char {numbers['bits_per_char']:.3f}  real words {numbers['real_word_share']:.3f} "
                  f"of {numbers['words']}  trained {numbers['seconds']:.0f} s")
            for text in numbers["shown"]:
                print("    " + text.replace("\n", "\n    "))
                print("    ---")
        harness.finish(args, {"environment": env, "results": results})


if __name__ == "__main__":
    main()
