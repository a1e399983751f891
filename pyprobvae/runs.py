"""
Run folders: everything one training run produces, in one directory.

A run folder holds

* ``checkpoint.pt``: model, optimizer and random state, written atomically
  after every epoch (:mod:`pyprobvae.infer.checkpoint`);
* ``config.json``: the data set, the architecture and the training settings;
* ``metrics.json``: the held-out evaluation and the per-epoch history;
* pictures: ``reconstructions.png``, ``samples.png``, ``interpolation.png``,
  ``latent.png`` and ``curves.png`` (and ``class_interpolation.png`` for a
  conditional VAE);
* ``classifier.pt``: for labelled data, the classifier that scores samples
  (:mod:`pyprobvae.scores`);
* ``prior.pt``: for a VQ-VAE, the transformer prior over its codes once
  ``train-prior`` has fitted it (stage 2), with its history. Text runs get
  ``samples.txt`` and ``reconstructions.txt`` instead of pictures.
"""

import io
import json
import os
import tempfile
from dataclasses import asdict, replace
from typing import Optional

import numpy as np
import pyro
import torch

from . import plots
from .code_prior import TransformerPrior, train_prior
from .data import Dataset, iterate_minibatches, load_dataset
from .infer import TrainConfig, fit, load_checkpoint
from .infer.checkpoint import CheckpointError, save_checkpoint
from .infer.training import evaluation_data, model_labels, resolve_device
from .metrics import evaluate, kl_per_dimension
from .models import VQVAE, build_model
from .scores import load_or_train_classifier, sample_scores
from .text import decode_text

CHECKPOINT = "checkpoint.pt"
CLASSIFIER = "classifier.pt"
PRIOR = "prior.pt"
# Share of the training codes held out to choose the prior's epoch.
PRIOR_VALIDATION_SHARE = 0.1
PRIOR_KIND = "code-prior"
SCORED_SAMPLES = 1000
CONFIG = "config.json"
METRICS = "metrics.json"


def default_likelihood(dataset: Dataset) -> dict:
    """
    The likelihood (and binarization) a data set is modelled with unless the
    user says otherwise: the exact categorical over pixel levels for
    ``digits`` (17 levels), Bernoulli with dynamic binarization for other
    quantized images (MNIST), Gaussian for real-valued data.

    :return: ``{"likelihood": ..., "binarize": ...}``.
    """
    if dataset.vocabulary is not None:
        return {"likelihood": "tokens", "binarize": None}
    if dataset.name == "digits":
        return {"likelihood": "categorical", "binarize": None}
    if dataset.num_levels is None:
        return {"likelihood": "gaussian", "binarize": None}
    return {"likelihood": "bernoulli", "binarize": None if dataset.num_levels == 2 else "dynamic"}


def write_json(data, path: str) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    _write_atomically(path, (json.dumps(data, indent=2) + "\n").encode())


def _write_atomically(path: str, content: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".write-", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.replace(tmp, path)


def write_examples(examples: torch.Tensor, path: str, nrow: Optional[int] = None, vocabulary: Optional[str] = None) -> str:
    """
    Write a batch of examples in data space: images as a PNG grid
    (``.png``), token sequences as text (``.txt``, each sequence under a
    ``--- sample i ---`` line), or the array itself (``.npy``, shape
    ``(N, *data_shape)``; pixel values in ``[0, 1]``, token ids).

    :param torch.Tensor examples: shape ``(N, *data_shape)``.
    :param str path: destination ending in ``.png``, ``.txt`` or ``.npy``.
    :param nrow: images per row of a PNG grid.
    :param vocabulary: the characters of token data, needed for ``.txt``.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".png":
        if vocabulary is not None:
            raise ValueError(f"cannot write text as {path!r}: token data goes to .txt or .npy")
        return plots.save_image_grid(examples, path, nrow=nrow)
    if suffix == ".txt":
        if vocabulary is None:
            raise ValueError(f"cannot write {path!r}: .txt is for token data (text runs); images go to .png or .npy")
        texts = decode_text(examples, vocabulary)
        _write_atomically(path, "".join(f"--- sample {i} ---\n{text}\n" for i, text in enumerate(texts)).encode())
        return path
    if suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, examples.detach().cpu().numpy())
        _write_atomically(path, buffer.getvalue())
        return path
    raise ValueError(f"cannot write {path!r}: the output must end in .png, .txt (text runs) or .npy")


def read_config(directory: str) -> dict:
    """
    The ``config.json`` of a run folder.

    :raises CheckpointError: when it is missing or unreadable.
    """
    path = os.path.join(directory, CONFIG)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"run folder {directory} has no readable {CONFIG} ({e})") from e


class Run:
    """
    A trained run loaded from its folder.

    :param str directory: the run folder.
    :param str device: where to put the model.
    :raises CheckpointError: when the folder has no readable checkpoint.
    """

    def __init__(self, directory: str, device: str = "cpu"):
        if not os.path.isdir(directory):
            raise CheckpointError(f"run folder {directory} does not exist")
        checkpoint = os.path.join(directory, CHECKPOINT)
        if not os.path.isfile(checkpoint):
            raise CheckpointError(f"run folder {directory} has no checkpoint ({CHECKPOINT}); train it first")
        self.directory = directory
        self.device = resolve_device(device)
        state = load_checkpoint(checkpoint, map_location=self.device)
        self.config = read_config(directory)
        self.model = build_model(**state["spec"]).to(self.device)
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.history = state["history"]
        self.prior_history = None
        self._datasets = {}
        if isinstance(self.model, VQVAE) and os.path.isfile(os.path.join(directory, PRIOR)):
            self._load_code_prior(os.path.join(directory, PRIOR))

    def _load_code_prior(self, path):
        state = load_checkpoint(path, map_location=self.device)
        if state.get("kind") != PRIOR_KIND:
            raise CheckpointError(f"{path} is not a prior over codes")
        prior = TransformerPrior(**state["spec"])
        if (prior.num_codes, prior.seq_len) != (self.model.codebook_size, self.model.num_positions):
            raise CheckpointError(
                f"{path} models {prior.seq_len} codes out of {prior.num_codes}, but the run's VQ-VAE has "
                f"{self.model.num_positions} out of {self.model.codebook_size}"
            )
        prior.load_state_dict(state["state_dict"])
        self.model.code_prior = prior.to(self.device).eval()
        self.prior_history = state["history"]

    def dataset(self, split: str = "test") -> Dataset:
        """The run's data set, split ``split``, on the run's device (loaded once)."""
        if split not in self._datasets:
            self._datasets[split] = load_dataset(self.config["dataset"], split, self.config.get("data_dir")).to(self.device)
        return self._datasets[split]

    def model_data(self, split: str = "test") -> torch.Tensor:
        """The split as the model sees it (binarized like the held-out data)."""
        return evaluation_data(self.dataset(split), self.config["train"]["binarize"])

    def model_labels(self, split: str = "test") -> Optional[torch.Tensor]:
        """The split's labels for a conditional model, None for any other."""
        return model_labels(self.model, self.dataset(split))

    def labels(self, label: Optional[int], num_samples: int) -> Optional[torch.Tensor]:
        """
        The labels to sample with: ``label`` repeated, or when it is None the
        :meth:`~pyprobvae.models.ConditionalVAE.balanced_labels` of a
        conditional model and None for any other.

        :raises ValueError: for a label given to an unconditional model or
            outside the model's classes.
        """
        if label is None:
            return self.model.balanced_labels(num_samples) if self.model.conditional else None
        if not self.model.conditional:
            raise ValueError(
                f"this {self.config['model']} run is unconditional and takes no label; "
                "train with --model cvae to sample a chosen class"
            )
        y = torch.full((num_samples,), int(label), device=self.device)
        self.model.condition(y, num_samples)
        return y

    def evaluate(self, iwae_samples: int = 1000, seed: int = 0) -> dict:
        """
        :func:`pyprobvae.metrics.evaluate` on the held-out split, with
        torch's random state seeded so the Monte Carlo estimates repeat, and,
        for labelled data, ``sample_scores``: the
        :func:`~pyprobvae.scores.sample_scores` of :data:`SCORED_SAMPLES`
        decoded random codes against the test images, judged by a classifier
        trained on the training split and cached in the run folder
        (``classifier.pt``). A VAE's codes come from its prior; an
        autoencoder's from N(0, I) and from a Gaussian fitted to its training
        codes; a conditional VAE samples each class in turn and is also
        scored on ``conditional_accuracy``.
        """
        torch.manual_seed(seed)
        metrics = evaluate(
            self.model, self.model_data("test"), iwae_samples, self.config["train"]["analytic_kl"], y=self.model_labels("test")
        )
        train = self.dataset("train")
        if train.y is not None:
            classifier = load_or_train_classifier(os.path.join(self.directory, CLASSIFIER), train)
            real = self.dataset("test").x
            sources = {"prior": None} if self.model.generative else {"standard_normal": None, "fitted_gaussian": train.x}
            labels = self.labels(None, SCORED_SAMPLES)
            metrics["sample_scores"] = {
                name: sample_scores(classifier, self.sample(SCORED_SAMPLES, fitted_to, y=labels), real, labels)
                for name, fitted_to in sources.items()
            }
        return metrics

    def sample(
        self,
        num_samples: int,
        fitted_to: Optional[torch.Tensor] = None,
        temperature: float = 1.0,
        y: Optional[torch.Tensor] = None,
        top_k: Optional[int] = None,
    ) -> torch.Tensor:
        """
        Decoded random codes at a temperature: from the prior (given the
        labels ``y`` for a conditional model), or for an autoencoder from
        N(0, I) or a Gaussian fitted to the codes of ``fitted_to``. A
        VQ-VAE's learned prior also samples from its ``top_k`` most likely
        codes only, if given.
        """
        if isinstance(self.model, VQVAE):
            return self.model.sample(num_samples, temperature, top_k)
        if top_k is not None:
            raise ValueError("top-k sampling applies to the discrete codes of VQ-VAE runs")
        if fitted_to is not None:
            return self.model.sample(num_samples, temperature, fitted_to=fitted_to)
        if y is not None:
            return self.model.sample(num_samples, temperature, y)
        return self.model.sample(num_samples, temperature)

    def traverse(self, index: int = 0, num_dims: Optional[int] = None, steps: int = 9, span: float = 3.0) -> torch.Tensor:
        """
        Latent traversals of test example ``index``: each dimension swept over
        ``linspace(-span, span, steps)`` with the others held at its code.
        The dimensions come in order of decreasing KL per dimension on the
        test set (closed form) or, where there is none, of decreasing variance
        of the codes (active units first), ``num_dims`` of them (all by default).

        :return: images of shape ``(num_dims, steps, *data_shape)``.
        """
        if isinstance(self.model, VQVAE):
            raise ValueError("a VQ-VAE's codes are discrete: there are no latent dimensions to traverse")
        x, y = self.model_data("test"), self.model_labels("test")
        if not 0 <= index < len(x):
            raise ValueError(f"test example {index} does not exist; the test set has {len(x)}")
        kl = kl_per_dimension(self.model, x, y) if self.model.generative else None
        activity = kl if kl is not None else self.model.encode(x, y).var(0)
        dims = activity.argsort(descending=True)[:num_dims].tolist()
        values = torch.linspace(-span, span, steps, device=x.device)
        return self.model.traverse(x[index : index + 1], dims, values, None if y is None else y[index : index + 1])

    def write_pictures(self) -> None:
        """
        The latent space and the training curves; for image data also
        reconstructions, prior samples and an interpolation strip, and for a
        conditional model samples with one row per class and an
        interpolation between classes (``class_interpolation.png``).
        """
        model, test = self.model, self.dataset("test")
        x, y = self.model_data("test"), self.model_labels("test")
        path = lambda name: os.path.join(self.directory, name)  # noqa: E731
        if isinstance(model, VQVAE):
            self._write_vqvae_examples(x, path)
            return
        plots.save_latent_scatter(model.encode(x, y), test.y, path("latent.png"), title="posterior means of the test set")
        plots.save_training_curves(self.history, path("curves.png"))
        if len(model.data_shape) != 3:
            return
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        first = slice(0, 32)
        recon = model.reconstruct(x[first], None if y is None else y[first])
        plots.save_reconstructions(x[first], recon, path("reconstructions.png"), title="test inputs and reconstructions")
        pairs = torch.randperm(len(x), generator=generator)[:16].to(x.device)
        ends = (None, None) if y is None else (y[pairs[:8]], y[pairs[8:]])
        strips = model.interpolate(x[pairs[:8]], x[pairs[8:]], 10, "linear", *ends)
        plots.save_interpolation(strips, path("interpolation.png"), title="linear interpolation between test codes")
        if not model.conditional:
            plots.save_image_grid(model.sample(64), path("samples.png"), nrow=8, title="decoded prior samples  z ~ N(0, I)")
            return
        per_class = 8
        plots.save_image_grid(
            model.sample(per_class * model.num_classes), path("samples.png"), nrow=per_class,
            title="decoded samples  z ~ p(z|y), one row per class y",
        )
        classes = torch.stack([
            model.interpolate_classes(c, (c + 1) % model.num_classes, 1, 10)[0] for c in range(model.num_classes)
        ])
        plots.save_interpolation(classes, path("class_interpolation.png"), title="label moved from class c to c + 1, style held")


    def _write_vqvae_examples(self, x, path):
        plots.save_training_curves(self.history, path("curves.png"))
        torch.manual_seed(0)
        prior = "the uniform prior" if self.model.code_prior is None else "the transformer prior"
        vocabulary = self.dataset("test").vocabulary
        if vocabulary is not None:
            write_examples(self.model.sample(16), path("samples.txt"), vocabulary=vocabulary)
            pairs = torch.stack([x[:8], self.model.reconstruct(x[:8])], 1).flatten(0, 1)
            write_examples(pairs, path("reconstructions.txt"), vocabulary=vocabulary)
            return
        if len(self.model.data_shape) != 3:
            return
        plots.save_reconstructions(x[:32], self.model.reconstruct(x[:32]), path("reconstructions.png"), title="test inputs and reconstructions")
        plots.save_image_grid(self.model.sample(64), path("samples.png"), nrow=8, title=f"decoded codes drawn from {prior}")

    @property
    def vocabulary(self) -> Optional[str]:
        """The characters of a text run's tokens, None for other data."""
        return self.dataset("test").vocabulary

    def train_code_prior(
        self, epochs: int = 50, seed: int = 0, batch_size: int = 128, lr: float = 1e-3, progress: bool = True, **architecture
    ) -> dict:
        """
        Stage 2 of a VQ-VAE: fit a :class:`~pyprobvae.code_prior.TransformerPrior`
        to the codes of the training split (raster order), keeping the
        parameters of the epoch with the lowest NLL on a validation share of
        the training codes (:data:`PRIOR_VALIDATION_SHARE`, fixed by
        ``seed``), store it as ``prior.pt`` in the run folder (atomically),
        then evaluate again and redraw the samples with it.

        :param int epochs: passes over the training codes.
        :param int seed: seeds the prior's initialization and training.
        :param int batch_size: code sequences per step.
        :param float lr: Adam's learning rate.
        :param bool progress: show progress.
        :param architecture: ``d_model``, ``num_heads``, ``num_layers``,
            ``dropout`` of the transformer.
        :return: the new metrics (also written to ``metrics.json``), with
            ``prior_history``.
        """
        if not isinstance(self.model, VQVAE):
            raise ValueError(f"train-prior fits a prior over discrete codes: it needs a VQ-VAE run, not {self.config['model']}")
        codes, test_codes = (self._codes(self.model_data(split)) for split in ("train", "test"))
        order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed)).to(codes.device)
        held_out = max(1, int(PRIOR_VALIDATION_SHARE * len(codes)))
        if held_out >= len(codes):
            raise ValueError(f"the training split has {len(codes)} examples: too few to hold some out for the prior")
        train_codes, validation_codes = codes[order[held_out:]], codes[order[:held_out]]
        pyro.set_rng_seed(seed)
        prior = TransformerPrior(self.model.codebook_size, self.model.num_positions, **architecture).to(self.device)
        history = train_prior(prior, train_codes, test_codes, epochs, batch_size, lr, seed, progress, validation_codes)
        save_checkpoint(
            {"kind": PRIOR_KIND, "spec": prior.spec, "state_dict": prior.state_dict(), "history": history},
            os.path.join(self.directory, PRIOR),
        )
        self.model.code_prior, self.prior_history = prior.eval(), history
        metrics = self.evaluate(self.config["iwae_samples"])
        metrics.update(history=self.history, prior_history=history)
        write_json(metrics, os.path.join(self.directory, METRICS))
        self.write_pictures()
        return metrics

    def _codes(self, x, batch_size=1000):
        return torch.cat([self.model.codes(x[idx]) for idx in iterate_minibatches(len(x), batch_size, False, device=x.device)])


def _absolute_dataset_path(dataset: str) -> str:
    """A data set name with its file path made absolute, so the run folder can be used from anywhere."""
    if dataset.startswith("text:"):
        return "text:" + os.path.abspath(dataset[len("text:"):])
    if dataset.endswith(".npz"):
        return os.path.abspath(dataset)
    return dataset


def train_run(
    directory: str,
    dataset: str = "digits",
    data_dir: Optional[str] = None,
    model_options: Optional[dict] = None,
    train_config: Optional[TrainConfig] = None,
    iwae_samples: int = 1000,
    resume: bool = False,
    progress: bool = True,
    auto_binarize: bool = True,
) -> dict:
    """
    Train a model into the run folder ``directory``, evaluate it on the test
    split, and write the metrics and pictures.

    :param str directory: the run folder (created if needed).
    :param str dataset: ``"digits"``, ``"mnist"``, ``"fashion-mnist"``, an
        ``.npz`` path, ``"text"`` or ``"text:PATH"``.
    :param data_dir: directory of the MNIST-format files.
    :param dict model_options: keyword arguments of
        :func:`~pyprobvae.models.build_vae` (or, with ``model="vqvae"``,
        :func:`~pyprobvae.models.build_vqvae`) other than ``data_shape`` and
        ``num_levels``; the likelihood defaults to :func:`default_likelihood`.
    :param TrainConfig train_config: training settings; its ``binarize``
        defaults to the likelihood's need.
    :param int iwae_samples: K of the final IWAE evaluation.
    :param bool resume: continue the run's checkpoint.
    :param bool progress: show progress.
    :param bool auto_binarize: with a Bernoulli likelihood, non-binary data
        and ``train_config.binarize=None``, binarize as
        :func:`default_likelihood` says (dynamically) instead of failing.
    :return: the metrics written to ``metrics.json``.
    """
    dataset = _absolute_dataset_path(dataset)
    train = load_dataset(dataset, "train", data_dir)
    test = load_dataset(dataset, "test", data_dir)
    options = dict(model_options or {})
    if options.get("model") == "cvae":
        if train.y is None:
            raise ValueError(f"the conditional VAE needs labelled data, but {train.name} has no labels")
        options["num_classes"] = train.num_classes
    defaults = default_likelihood(train)
    options.setdefault("likelihood", defaults["likelihood"])
    train_config = train_config or TrainConfig()
    if auto_binarize and train_config.binarize is None and options["likelihood"] == "bernoulli" and train.num_levels != 2:
        train_config = replace(train_config, binarize=defaults["binarize"] or "dynamic")
    pyro.set_rng_seed(train_config.seed)
    model = build_model(data_shape=train.data_shape, num_levels=train.num_levels, **options)
    config = {
        "dataset": dataset,
        "data_dir": None if data_dir is None else os.path.abspath(data_dir),
        "model": model.spec["model"],
        "spec": model.spec,
        "train": asdict(train_config),
        "iwae_samples": iwae_samples,
    }
    if not resume:
        write_json(config, os.path.join(directory, CONFIG))
        stale_prior = os.path.join(directory, PRIOR)
        if os.path.exists(stale_prior):  # it modelled the codes of the model this run replaces
            os.remove(stale_prior)
    history = fit(model, train, test, train_config, os.path.join(directory, CHECKPOINT), resume, progress)
    write_json(config, os.path.join(directory, CONFIG))
    run = Run(directory, train_config.device)
    metrics = run.evaluate(iwae_samples)
    metrics["history"] = history
    write_json(metrics, os.path.join(directory, METRICS))
    run.write_pictures()
    return metrics
