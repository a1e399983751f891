"""
The ``pyprobvae`` command: ``train``, ``train-prior``, ``evaluate``,
``sample``, ``reconstruct``, ``interpolate``, ``traverse`` and ``encode``, the
same verbs as the Python API. Errors in what the user asked for are one line on stderr and exit
status 2.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import fields

import numpy as np
import torch

from . import __version__, plots
from .data import DataError
from .families import FAMILIES, FLOWS
from .infer import CheckpointError, NonFiniteLossError, TrainConfig
from .infer.training import BINARIZATIONS, ESTIMATORS, OPTIMIZERS
from .interpolation import INTERPOLATIONS
from .likelihoods import LIKELIHOODS
from .models import MODELS, NETWORKS, PRIORS, VQVAE
from .models.ae import CODE_SOURCES
from .runs import Run, read_config, train_run, write_examples

TRAIN_DEFAULTS = dict(
    dataset="digits",
    data_dir=None,
    model="vae",
    prior="standard",
    guide="diagonal",
    components=2,
    flow="iaf",
    flow_depth=2,
    estimator="pathwise",
    likelihood=None,
    latent_dim=8,
    hidden="256",
    gaussian_scale=0.1,
    learn_scale=False,
    network="conv",
    codebook_size=64,
    code_dim=16,
    beta=0.25,
    ema=False,
    epochs=100,
    batch_size=128,
    lr=1e-3,
    optimizer="adam",
    kl_warmup_epochs=0,
    binarize=None,
    seed=0,
    device="cpu",
    iwae_samples=1000,
)


# Options that only apply to the VQ-VAE, and options that do not apply to it.
VQVAE_OPTIONS = ("network", "codebook_size", "code_dim", "beta", "ema")
GAUSSIAN_LATENT_OPTIONS = ("prior", "latent_dim", "guide", "components", "flow", "flow_depth")


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _probability(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _class_pair(text):
    try:
        a, b = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two classes A,B, got {text!r}") from None
    return a, b


def _widths(text):
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths such as 400 or 512,256, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return text


def _add_train(commands):
    p = commands.add_parser("train", help="train a model into a run folder")
    p.add_argument("--dataset", help="digits (bundled, default), mnist, fashion-mnist, PATH.npz, "
                                     "text (docstrings of Python's standard library) or text:PATH (a UTF-8 file)")
    p.add_argument("--data-dir", help="directory holding the MNIST-format IDX files")
    p.add_argument("--model", choices=MODELS,
                   help="vae (default); ae, the deterministic autoencoder baseline; cvae, the label-conditional VAE; "
                        "or vqvae, the VQ-VAE with discrete codes")
    p.add_argument("--network", choices=NETWORKS,
                   help="vqvae only: conv (default; 2-D for images, 1-D for text) or mlp encoder and decoder")
    p.add_argument("--codebook-size", type=_positive_int, help="vqvae only: number of codes K (default 64)")
    p.add_argument("--code-dim", type=_positive_int, help="vqvae only: dimension of the codes (default 16)")
    p.add_argument("--beta", type=_non_negative_float, help="vqvae only: weight of the commitment term (default 0.25)")
    p.add_argument("--ema", action="store_true", default=None,
                   help="vqvae only: learn the codebook by moving averages instead of the codebook term")
    p.add_argument("--prior", choices=PRIORS,
                   help="cvae only: p(z|y) = N(0, I) for every class (standard, default) or a learned Gaussian per class")
    p.add_argument("--guide", choices=FAMILIES, help="variational family q(z|x) (default diagonal)")
    p.add_argument("--components", type=_positive_int, help="mixture components K of --guide mixture (default 2)")
    p.add_argument("--flow", choices=FLOWS, help="flow of --guide flow (default iaf)")
    p.add_argument("--flow-depth", type=_positive_int, help="flow layers of --guide flow (default 2)")
    p.add_argument("--estimator", choices=ESTIMATORS,
                   help="gradient estimator: pathwise (default) or stratified (mixture guide: one sample per component)")
    p.add_argument("--likelihood", choices=LIKELIHOODS, help="p(x|z); default: categorical for digits, bernoulli for MNIST")
    p.add_argument("--gaussian-scale", type=_positive_float, help="scale of the gaussian likelihood (default 0.1)")
    p.add_argument("--learn-scale", action="store_true", default=None, help="learn the gaussian likelihood's scale")
    p.add_argument("--latent-dim", type=_positive_int, help="dimension of z (default 8)")
    p.add_argument("--hidden", type=_widths, help="hidden widths, e.g. 400 or 512,256 (default 256)")
    p.add_argument("--epochs", type=_positive_int, help="default 100")
    p.add_argument("--batch-size", type=_positive_int, help="default 128")
    p.add_argument("--lr", type=_positive_float, help="learning rate (default 1e-3)")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--kl-warmup-epochs", type=_non_negative_int, help="anneal the KL weight from 0 to 1 over this many epochs")
    p.add_argument("--binarize", choices=BINARIZATIONS + ("none",), help="binarize pixels for the bernoulli likelihood")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--iwae-samples", type=_positive_int, help="K of the final test NLL estimate (default 1000)")
    p.add_argument("--out", help="run folder (default runs/DATASET-MODEL-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out (to --epochs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_run_commands(commands):
    p = commands.add_parser("evaluate", help="print held-out metrics of a run as JSON")
    p.add_argument("run")
    p.add_argument("--iwae-samples", type=_positive_int, default=1000, help="K of the IWAE estimate (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo estimates")
    p.add_argument("--device", default="cpu")

    p = commands.add_parser("train-prior", help="VQ-VAE runs: fit a transformer prior to the run's codes (stage 2)")
    p.add_argument("run")
    p.add_argument("--epochs", type=_positive_int, default=50, help="default 50")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--d-model", type=_positive_int, default=128, help="width of the transformer (default 128)")
    p.add_argument("--layers", type=_positive_int, default=2, help="transformer layers (default 2)")
    p.add_argument("--heads", type=_positive_int, default=4, help="attention heads (default 4)")
    p.add_argument("--dropout", type=_probability, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = commands.add_parser("sample", help="decode draws from the prior")
    p.add_argument("run")
    p.add_argument("--n", type=_positive_int, default=64)
    p.add_argument("--temperature", type=_non_negative_float, default=1.0,
                   help="scale of the codes' deviation from the prior mean (default 1; 0 decodes the mean)")
    p.add_argument("--label", type=int,
                   help="cvae runs only: the class to sample (default: every class, one row each, --n rounded up "
                        "to a multiple of the number of classes)")
    p.add_argument("--codes", choices=CODE_SOURCES,
                   help="autoencoder runs only: draw codes from N(0, I) (standard, default) or from a Gaussian "
                        "fitted to the training codes (fitted)")
    p.add_argument("--top-k", type=_positive_int,
                   help="vqvae runs with a trained prior: draw each code from the K most likely only")
    p.add_argument("--out", required=True,
                   help="FILE.png (grid), FILE.txt (text runs) or FILE.npy (array: values in [0, 1], or token ids)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")

    p = commands.add_parser("reconstruct", help="reconstruct the first N test examples")
    p.add_argument("run")
    p.add_argument("--n", type=_positive_int, default=32)
    p.add_argument("--out", required=True,
                   help="FILE.png (inputs above reconstructions), FILE.txt (text runs: each input, then its "
                        "reconstruction) or FILE.npy")
    p.add_argument("--device", default="cpu")

    p = commands.add_parser("interpolate", help="decode paths between the codes of test examples")
    p.add_argument("run")
    p.add_argument("--pairs", type=_positive_int, default=8, help="number of paths")
    p.add_argument("--steps", type=int, default=10, help="points per path, endpoints included")
    p.add_argument("--method", choices=INTERPOLATIONS, default="linear")
    p.add_argument("--classes", type=_class_pair,
                   help="cvae runs only: A,B moves the label from class A to class B with the style held, one row "
                        "per --pairs style, instead of interpolating between test examples")
    p.add_argument("--seed", type=int, default=0, help="which test examples are paired")
    p.add_argument("--out", required=True, help="FILE.png (one row per path) or FILE.npy (pairs, steps, *data_shape)")
    p.add_argument("--device", default="cpu")

    p = commands.add_parser("traverse", help="sweep each latent dimension of one test example's code")
    p.add_argument("run")
    p.add_argument("--index", type=int, default=0, help="which test example (default 0)")
    p.add_argument("--dims", type=_positive_int, help="how many dimensions, most informative first (default all)")
    p.add_argument("--steps", type=_positive_int, default=9, help="values per dimension (default 9)")
    p.add_argument("--span", type=_positive_float, default=3.0, help="sweep z_d over [-span, span] (default 3)")
    p.add_argument("--out", required=True, help="FILE.png (one row per dimension) or FILE.npy (dims, steps, *data_shape)")
    p.add_argument("--device", default="cpu")

    p = commands.add_parser("encode", help="write the posterior means of a split")
    p.add_argument("run")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--out", required=True, help="FILE.npy, shape (N, latent_dim); for a vqvae the code indices (N, positions)")
    p.add_argument("--device", default="cpu")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyprobvae", description="Variational autoencoders as Pyro model/guide pairs.")
    parser.add_argument("--version", action="version", version=f"pyprobvae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(commands)
    _add_run_commands(commands)
    return parser


def _train(args):
    given = {k: v for k, v in vars(args).items() if v is not None and k in TRAIN_DEFAULTS}
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out RUN_DIR, the run to continue")
        settings = _saved_settings(args.out)
    else:
        settings = dict(TRAIN_DEFAULTS)
    settings.update(given)
    out = args.out or os.path.join("runs", f"{os.path.basename(settings['dataset']).replace('.npz', '')}-{settings['model']}-{time.strftime('%Y%m%d-%H%M%S')}")
    if settings["binarize"] == "none":
        settings["binarize"] = None
    train_config = TrainConfig(**{f.name: settings[f.name] for f in fields(TrainConfig) if f.name in settings})
    vqvae = settings["model"] == "vqvae"
    not_applicable = GAUSSIAN_LATENT_OPTIONS + ("kl_warmup_epochs", "estimator") if vqvae else VQVAE_OPTIONS
    misplaced = [name for name in not_applicable if name in given]
    if misplaced:
        option = "--" + misplaced[0].replace("_", "-")
        raise UsageError(f"{option} does not apply to --model {settings['model']}" + ("" if vqvae else "; it is a vqvae option"))
    specific = VQVAE_OPTIONS if vqvae else GAUSSIAN_LATENT_OPTIONS
    model_options = dict(
        model=settings["model"],
        hidden=[int(w) for w in str(settings["hidden"]).split(",")],
        gaussian_scale=settings["gaussian_scale"],
        learn_scale=settings["learn_scale"],
        **{name: settings[name] for name in specific},
    )
    if settings["likelihood"] is not None:
        model_options["likelihood"] = settings["likelihood"]
    metrics = train_run(
        out, settings["dataset"], settings["data_dir"], model_options, train_config,
        settings["iwae_samples"], args.resume, progress=not args.quiet, auto_binarize=args.binarize is None and not args.resume,
    )
    print(json.dumps(_summary(metrics)))
    print(f"run folder: {os.path.abspath(out)}")


def _summary(metrics):
    if "codebook_perplexity" in metrics:
        keys = ("test_nll", "bits_per_dim", "prior", "recon_mse", "recon_accuracy", "codebook_perplexity", "codes_used")
    else:
        keys = ("test_elbo", "test_nll", "iwae_samples", "kl", "active_units")
    return {k: metrics[k] for k in keys if k in metrics}


def _saved_settings(directory):
    if not os.path.isdir(directory):
        raise CheckpointError(f"nothing to resume: run folder {directory} does not exist")
    config = read_config(directory)
    saved = {**config["spec"], **config["train"]}
    settings = dict(TRAIN_DEFAULTS)
    settings.update({name: value for name, value in saved.items() if name in TRAIN_DEFAULTS})
    settings.update(
        dataset=config["dataset"],
        data_dir=config["data_dir"],
        model=config["model"],
        hidden=",".join(map(str, saved["hidden"])),
        binarize=saved["binarize"] or "none",
        iwae_samples=config["iwae_samples"],
    )
    return settings


def _evaluate(args):
    print(json.dumps(Run(args.run, args.device).evaluate(args.iwae_samples, args.seed)))


def _train_prior(args):
    run = Run(args.run, args.device)
    metrics = run.train_code_prior(
        args.epochs, args.seed, args.batch_size, args.lr, progress=not args.quiet,
        d_model=args.d_model, num_heads=args.heads, num_layers=args.layers, dropout=args.dropout,
    )
    print(json.dumps(_summary(metrics)))
    print(f"prior: {os.path.abspath(os.path.join(args.run, 'prior.pt'))}")


def _sample(args):
    run = Run(args.run, args.device)
    if args.codes is not None and run.model.generative:
        raise UsageError("--codes applies to autoencoder runs; a VAE samples its codes from its prior")
    if isinstance(run.model, VQVAE) and run.model.code_prior is None:
        print(f"pyprobvae: no prior trained yet (pyprobvae train-prior {args.run}): sampling codes from the uniform prior, "
              "which ignores --temperature and --top-k", file=sys.stderr)
    fitted_to = run.dataset("train").x if args.codes == "fitted" else None
    n, nrow = args.n, None
    if run.model.conditional and args.label is None:
        nrow = -(-args.n // run.model.num_classes)
        n = nrow * run.model.num_classes
    y = run.labels(args.label, n)
    torch.manual_seed(args.seed)
    path = write_examples(run.sample(n, fitted_to, args.temperature, y, args.top_k), args.out, nrow, run.vocabulary)
    if path.lower().endswith(".txt"):  # generated text is shown as well as saved
        with open(path) as f:
            print(f.read(), end="")
    print(path)


def _reconstruct(args):
    run = Run(args.run, args.device)
    x, y = run.model_data("test")[: args.n], run.model_labels("test")
    recon = run.model.reconstruct(x, None if y is None else y[: args.n])
    if args.out.lower().endswith(".png") and run.vocabulary is None:
        print(plots.save_reconstructions(x, recon, args.out))
    elif args.out.lower().endswith(".txt"):
        print(write_examples(torch.stack([x, recon], 1).flatten(0, 1), args.out, vocabulary=run.vocabulary))
    else:
        print(write_examples(recon, args.out, vocabulary=run.vocabulary))


def _interpolate(args):
    run = Run(args.run, args.device)
    if isinstance(run.model, VQVAE):
        raise UsageError("a VQ-VAE's codes are discrete: there is no path between them to interpolate")
    if args.classes is not None:
        strips, title = _class_interpolation(run, args), "label interpolation {} -> {}".format(*args.classes)
    else:
        x, y = run.model_data("test"), run.model_labels("test")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[: 2 * args.pairs].to(x.device)
        if len(order) < 2 * args.pairs:
            raise UsageError(f"--pairs {args.pairs} needs {2 * args.pairs} test examples; the test set has {len(x)}")
        start, end = order[: args.pairs], order[args.pairs :]
        labels = (None, None) if y is None else (y[start], y[end])
        strips, title = run.model.interpolate(x[start], x[end], args.steps, args.method, *labels), f"{args.method} interpolation"
    if args.out.lower().endswith(".png"):
        print(plots.save_interpolation(strips, args.out, title=title))
    else:
        print(write_examples(strips, args.out))


def _class_interpolation(run, args):
    if not run.model.conditional:
        raise UsageError(f"--classes needs a conditional run (--model cvae); this run is {run.config['model']}")
    for label in args.classes:
        run.labels(label, 1)
    torch.manual_seed(args.seed)
    return run.model.interpolate_classes(*args.classes, args.pairs, args.steps)


def _traverse(args):
    strips = Run(args.run, args.device).traverse(args.index, args.dims, args.steps, args.span)
    if args.out.lower().endswith(".png"):
        print(plots.save_interpolation(strips, args.out, title="latent traversals, most informative dimension first"))
    else:
        print(write_examples(strips, args.out))


def _encode(args):
    run = Run(args.run, args.device)
    if not args.out.lower().endswith(".npy"):
        raise UsageError(f"encode writes an array: --out must end in .npy, got {args.out!r}")
    x = run.model_data(args.split)
    z = run.model.codes(x) if isinstance(run.model, VQVAE) else run.model.encode(x, run.model_labels(args.split))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, z.cpu().numpy())
    print(args.out)


COMMANDS = {
    "train": _train,
    "train-prior": _train_prior,
    "evaluate": _evaluate,
    "sample": _sample,
    "reconstruct": _reconstruct,
    "interpolate": _interpolate,
    "traverse": _traverse,
    "encode": _encode,
}


def main(argv=None) -> int:
    """Entry point of the ``pyprobvae`` command; returns the exit status."""
    try:
        args = make_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except (UsageError, ValueError, DataError, CheckpointError) as e:
        print(f"pyprobvae: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"pyprobvae: training diverged: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
