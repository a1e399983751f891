"""
Run folders: everything one training run produces, in one directory.

A run folder holds

* ``checkpoint.pt``: the model (for a VQ-VAE with a trained prior over its
  codes, that prior too), the optimizer and the random state, written
  atomically after every epoch (:mod:`pyprobvae.infer.checkpoint`); the
  model's config inside it rebuilds the model;
* ``config.json``: every setting of the run (:class:`RunConfig`);
* ``metrics.json``: the held-out evaluation and the per-epoch history;
* pictures: ``reconstructions.png``, ``samples.png``, ``interpolation.png``,
  ``latent.png`` and ``curves.png`` (and ``class_interpolation.png`` for a
  conditional VAE); text runs get ``samples.txt`` and ``reconstructions.txt``;
* ``classifier.pt``: for labelled data, the classifier that scores samples
  (:mod:`pyprobvae.evaluation.scores`);
* ``tensorboard/``: TensorBoard event files, when TensorBoard is installed
  (:mod:`pyprobvae.runs.tensorboard`).

:class:`Run` loads and saves a folder; the verbs that compute with it are in
:mod:`pyprobvae.runs.verbs`.

Run folders written by pyprobvae 0.1 (checkpoint format 1, with a separate
``prior.pt``) do not load in 0.2: retrain them.
"""

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional

import torch

from ..config import Config, ConfigError, setting
from ..data import Dataset, load_dataset
from ..data.text import DEFAULT_SEQ_LEN
from ..evaluation import EvaluationConfig
from ..files import finish_replacement
from ..infer import (
    CheckpointError,
    TrainConfig,
    evaluation_data,
    check_weights,
    load_checkpoint,
    save_checkpoint,
)
from ..models import ModelConfig, build_model, config_from_dict
from ..resources import resolve_device
from .writers import write_json

CHECKPOINT = "checkpoint.pt"
CLASSIFIER = "classifier.pt"
CONFIG = "config.json"
METRICS = "metrics.json"
CURVES = "curves.png"


@dataclass
class DataConfig(Config):
    """The data a run trains on."""

    dataset: str = "digits"
    """digits (bundled), mnist, fashion-mnist, PATH.npz, text (docstrings of Python's standard library) or text:PATH (a UTF-8 file)."""
    data_dir: Optional[str] = None
    """Directory holding the MNIST-format IDX files."""
    seq_len: int = setting(DEFAULT_SEQ_LEN, minimum=2, maximum=1_000_000, since="0.3.0", before=64)
    """Characters per sequence of text data (text, text:PATH); images have their own shape (64 before 0.3.0)."""

    def absolute(self) -> "DataConfig":
        """This config with file paths made absolute, so that the run folder works from anywhere."""
        dataset, data_dir = self.dataset, self.data_dir
        if dataset.startswith("text:"):
            dataset = "text:" + os.path.abspath(dataset[len("text:"):])
        elif dataset.endswith(".npz"):
            dataset = os.path.abspath(dataset)
        return self.replace(dataset=dataset, data_dir=None if data_dir is None else os.path.abspath(data_dir))


@dataclass
class RunConfig:
    """Every setting of a run, as ``config.json`` stores it."""

    data: DataConfig = field(default_factory=DataConfig)
    model: Optional[ModelConfig] = None
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict:
        assert self.model is not None, "a run's config has its model before it is stored"
        return {
            "data": self.data.to_dict(), "model": self.model.to_dict(), "train": self.train.to_dict(),
            "evaluation": self.evaluation.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """:raises ConfigError: for anything but a dict of the four parts, each valid."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected an object of settings, got {type(data).__name__}")
        missing = [part for part in ("data", "model", "train", "evaluation") if part not in data]
        if missing:
            raise ConfigError(f"it has no {missing[0]!r} part")
        config = cls(
            DataConfig.from_record(data["data"]), config_from_dict(data["model"]), TrainConfig.from_record(data["train"]),
            EvaluationConfig.from_record(data["evaluation"]),
        )
        for part in ("data", "model", "train", "evaluation"):  # a stored record is complete: a missing setting is damage
            settings = getattr(config, part)
            missing = sorted({f.name for f in fields(settings)} - set(type(settings).with_newer_defaults(data[part])))
            if missing:
                raise ConfigError(f"its {part} part has no {missing[0]!r}")
        return config


def read_config(directory: str) -> RunConfig:
    """
    The :class:`RunConfig` of a run folder (its ``config.json``).

    :raises CheckpointError: when it is missing, unreadable or not a
        pyprobvae run's config.
    """
    path = os.path.join(directory, CONFIG)
    if not os.path.isfile(path):
        raise CheckpointError(f"run folder {directory} has no {CONFIG}" + (" (a directory is in its place)" if os.path.isdir(path) else ""))
    try:
        with open(path, encoding="utf-8") as f:
            return RunConfig.from_dict(json.load(f))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, ConfigError; absurd nesting
        raise CheckpointError(f"run folder {directory}: {CONFIG} is damaged ({str(e).splitlines()[0]})") from e


def write_config(directory: str, config: RunConfig) -> None:
    """Write the run's ``config.json`` (atomically)."""
    write_json(config.to_dict(), os.path.join(directory, CONFIG))


RUN_CHECKPOINT = {"model_config": dict, "model": dict, "train_config": dict, "history": list}
"""The entries of ``checkpoint.pt`` that a trained run is read from."""


def _check_agreement(config: RunConfig, state: dict, directory: str) -> None:
    """Refuse a run folder whose ``config.json`` and checkpoint were not written by the same run."""
    for part, saved in (("model", state["model_config"]), ("train", state["train_config"])):
        written = getattr(config, part).to_dict()
        saved = type(getattr(config, part)).with_newer_defaults(saved)
        differing = sorted(key for key in set(written) | set(saved) if written.get(key) != saved.get(key))
        if differing:
            key = differing[0]
            raise CheckpointError(
                f"run folder {directory}: {CONFIG} and {CHECKPOINT} disagree ({part} setting {key}: "
                f"{written.get(key)!r} != {saved.get(key)!r}); they were not written by the same run"
            )


def _check_weight_types(saved: Mapping[str, Any], built: Mapping[str, Any], path: str) -> None:
    """Refuse weights whose dtype differs from the model's (``load_state_dict`` would cast them silently)."""
    for name, tensor in saved.items():
        if name in built and tensor.dtype != built[name].dtype:
            raise CheckpointError(f"{path}: weight {name!r} is {tensor.dtype}, but the model holds {built[name].dtype}")


class Run:
    """
    A trained run loaded from its folder: its config, its model (rebuilt from
    the checkpoint alone, prior over codes included) and its data.

    :param str directory: the run folder.
    :param str device: where to put the model.
    :raises CheckpointError: when the folder has no readable checkpoint.
    """

    def __init__(self, directory: str, device: str = "cpu") -> None:
        finish_replacement(directory)
        if not os.path.isdir(directory):
            raise CheckpointError(f"run folder {directory} does not exist" if not os.path.exists(directory)
                                  else f"{directory} is not a run folder (not a directory)")
        checkpoint = os.path.join(directory, CHECKPOINT)
        if not os.path.lexists(checkpoint):
            raise CheckpointError(f"run folder {directory} has no checkpoint ({CHECKPOINT}); train it first")
        self.directory = directory
        self.device = resolve_device(device)
        self.state = load_checkpoint(checkpoint, map_location=self.device, schema=RUN_CHECKPOINT)
        self.config = read_config(directory)
        _check_agreement(self.config, self.state, directory)
        check_weights(self.state["model"], checkpoint)
        try:
            self.model = build_model(self.state["model_config"]).to(self.device)
            _check_weight_types(self.state["model"], self.model.state_dict(), checkpoint)
            self.model.load_state_dict(self.state["model"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {checkpoint} does not hold a model this version can build ({str(e).splitlines()[0]})") from e
        self.model.eval()
        self.history: List[dict] = self.state["history"]
        self.prior_history: Optional[List[dict]] = self.state.get("prior_history")
        self._datasets: Dict[str, Dataset] = {}

    def path(self, name: str) -> str:
        """The path of file ``name`` in the run folder."""
        return os.path.join(self.directory, name)

    def dataset(self, split: str = "test") -> Dataset:
        """The run's data set, split ``split``, on the run's device (loaded once)."""
        if split not in self._datasets:
            data = self.config.data
            dataset = load_dataset(data.dataset, split, data.data_dir, data.seq_len)
            trained_on = tuple(self.model.config.data_shape)
            if tuple(dataset.data_shape) != trained_on:
                raise CheckpointError(f"run folder {self.directory}: its data set {data.dataset} has examples of shape "
                                      f"{tuple(dataset.data_shape)}, but the model was trained on {trained_on}")
            self._datasets[split] = dataset.to(self.device)
        return self._datasets[split]

    def model_data(self, split: str = "test") -> torch.Tensor:
        """The split as the model sees it (binarized like the held-out data)."""
        return evaluation_data(self.dataset(split), self.config.train.binarize)

    def model_labels(self, split: str = "test") -> Optional[torch.Tensor]:
        """The split's labels as the model takes them (None for an unconditional model)."""
        return self.model.labels(self.dataset(split))

    @property
    def vocabulary(self) -> Optional[str]:
        """The characters of a text run's tokens, None for other data."""
        return self.dataset("test").vocabulary

    def save_model(self, **extra: Any) -> None:
        """
        Rewrite the checkpoint with the model as it is now (its config and
        parameters), keeping the rest of the checkpoint, plus ``extra``
        entries (e.g. ``prior_history``).
        """
        self.state.update(model_config=self.model.config.to_dict(), model=self.model.state_dict(), **extra)
        save_checkpoint(self.state, self.path(CHECKPOINT))
        self.config.model = self.model.config
        write_config(self.directory, self.config)
