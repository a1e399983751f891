"""
Training by stochastic variational inference.

:func:`fit` maximizes the per-example ELBO (:mod:`pyprobvae.infer.elbo`) with
a torch optimizer over the model's parameters. Everything a run depends on is
explicit: the model, the data, a :class:`TrainConfig`, and random generators
seeded from it; nothing is kept in module-level state. That is the shape
``torch.distributed`` needs: :class:`ELBOLoss` is the module to wrap in
``DistributedDataParallel``, and each process seeds its own generators.
"""

import math
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import List, Optional

import pyro
import torch
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from tqdm.auto import tqdm

from ..data import Dataset, binarize, iterate_minibatches
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .elbo import ELBOTerms, elbo_terms, stratified_elbo_terms

OPTIMIZERS = ("adam", "clipped-adam")
ESTIMATORS = ("pathwise", "stratified")
BINARIZATIONS = ("threshold", "dynamic")

# Seed of the one binarization of held-out data under dynamic binarization, so
# that every run is evaluated on the same binary test set.
EVAL_BINARIZATION_SEED = 0


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainConfig:
    """
    Hyperparameters of :func:`fit`.

    :param int epochs: passes over the training data (>= 1).
    :param int batch_size: examples per step (>= 1).
    :param float lr: learning rate (> 0).
    :param str optimizer: ``"adam"`` (:class:`torch.optim.Adam`) or
        ``"clipped-adam"`` (Pyro's :class:`~pyro.optim.clipped_adam.ClippedAdam`,
        which clips each gradient element to ``[-clip_norm, clip_norm]``).
    :param float clip_norm: the clipping bound of ``"clipped-adam"``.
    :param int kl_warmup_epochs: anneal the KL weight beta linearly from
        ~0 to 1 over this many epochs (Bowman et al. 2016; Sonderby et al.
        2016); 0 trains the plain ELBO (beta = 1) throughout. The reported
        ELBO is always the true one (beta = 1).
    :param binarize: ``None``, ``"threshold"`` or ``"dynamic"`` (a fresh
        Bernoulli draw of each training batch; held-out data is binarized once
        with a fixed seed).
    :type binarize: str or None
    :param bool analytic_kl: closed-form KL where available.
    :param str estimator: ``"pathwise"``, the single-sample ELBO with
        reparameterized gradients (:func:`~pyprobvae.infer.elbo.elbo_terms`),
        or ``"stratified"``, the stratified bound for mixture guides
        (:func:`~pyprobvae.infer.elbo.stratified_elbo_terms`).
    :param int seed: seeds Pyro's sampling, the shuffling and the
        binarization; with the model initialized the same way (e.g. after
        ``pyro.set_rng_seed(seed)``, as :func:`~pyprobvae.runs.train_run`
        does) the same seed gives the same numbers.
    :param str device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    clip_norm: float = 10.0
    kl_warmup_epochs: int = 0
    binarize: Optional[str] = None
    analytic_kl: bool = True
    estimator: str = "pathwise"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"),
            (self.clip_norm > 0, f"clip_norm must be > 0, got {self.clip_norm}"),
            (self.kl_warmup_epochs >= 0, f"kl_warmup_epochs must be >= 0, got {self.kl_warmup_epochs}"),
            (self.estimator in ESTIMATORS, f"unknown estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}"),
            (self.binarize in (None,) + BINARIZATIONS, f"unknown binarization {self.binarize!r}; choose one of {', '.join(BINARIZATIONS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        resolve_device(self.device)


def resolve_device(name: str) -> torch.device:
    """
    :param str name: a torch device name.
    :raises ValueError: for an unknown device or CUDA without a GPU.
    """
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested, but CUDA is not available on this machine")
    return device


class ELBOLoss(nn.Module):
    """
    ``forward(x)`` returns the :class:`~pyprobvae.infer.elbo.ELBOTerms` of a
    batch under ``model.model`` and ``model.guide``. Going through
    ``forward`` is what lets ``DistributedDataParallel(ELBOLoss(model))``
    synchronize gradients. The parameters are optimized as the module's own,
    so ``model`` and ``guide`` are called with ``register=False`` and skip
    registering them in Pyro's param store.

    :param torch.nn.Module model: a module with Pyro ``model(x, register)``
        and ``guide(x, register)`` methods, or ``model(x, y, register)`` and
        ``guide(x, y, register)`` for a conditional model.
    :param bool analytic_kl: closed-form KL where available.
    :param str estimator: ``"pathwise"`` or ``"stratified"`` (see
        :class:`TrainConfig`).
    """

    def __init__(self, model: nn.Module, analytic_kl: bool = True, estimator: str = "pathwise"):
        super().__init__()
        self.model = model
        self.analytic_kl = analytic_kl
        self.estimator = estimator

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> ELBOTerms:
        """
        :param torch.Tensor x: a batch of data.
        :param y: its labels, for a conditional model.
        """
        args = (x,) if y is None else (x, y)
        if self.estimator == "stratified":
            return stratified_elbo_terms(self.model.model, self.model.guide, *args, register=False)
        return elbo_terms(self.model.model, self.model.guide, *args, analytic_kl=self.analytic_kl, register=False)


def evaluation_data(dataset: Dataset, binarization: Optional[str]) -> torch.Tensor:
    """
    The held-out data as the model sees it: as is, thresholded, or binarized
    once with the fixed seed :data:`EVAL_BINARIZATION_SEED`.

    :param Dataset dataset: held-out split.
    :param binarization: ``None``, ``"threshold"`` or ``"dynamic"``.
    """
    if binarization is None:
        return dataset.x
    generator = torch.Generator(device=dataset.x.device).manual_seed(EVAL_BINARIZATION_SEED)
    return binarize(dataset.x, binarization, generator)


@torch.no_grad()
def dataset_elbo(
    model: nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None, batch_size: int = 1000, analytic_kl: bool = True
) -> ELBOTerms:
    """
    The ELBO terms of every example of ``x`` (with labels ``y`` for a
    conditional model), computed in batches.

    :return: :class:`~pyprobvae.infer.elbo.ELBOTerms` of shape ``(len(x),)``.
    """
    loss = ELBOLoss(model, analytic_kl)
    batches = iterate_minibatches(len(x), batch_size, False, device=x.device)
    parts = [loss(x[idx], None if y is None else y[idx]) for idx in batches]
    return ELBOTerms(*(torch.cat(t) for t in zip(*parts)))


def model_labels(model: nn.Module, dataset: Dataset) -> Optional[torch.Tensor]:
    """
    The labels ``model`` takes with ``dataset``: its ``y`` for a conditional
    model (checked against the model's classes), None for any other.

    :raises ValueError: when a conditional model meets data without labels or
        with labels outside its classes.
    """
    if not getattr(model, "conditional", False):
        return None
    if dataset.y is None:
        raise ValueError(f"the conditional model needs labelled data, but {dataset.name} has no labels")
    model.condition(dataset.y, len(dataset))
    return dataset.y


def _make_optimizer(config: TrainConfig, params):
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    return ClippedAdam(params, lr=config.lr, clip_norm=config.clip_norm)


def _training_data(model, train_x, config):
    """The training data as the model sees it: thresholded once, or checked to be binarizable."""
    if config.binarize == "threshold":
        train_x = binarize(train_x, "threshold")
    if config.binarize == "dynamic":
        outside = ((train_x < 0) | (train_x > 1) | ~torch.isfinite(train_x)).sum()
        if outside:
            raise ValueError(f"dynamic binarization needs training data in [0, 1], but {int(outside)} values are outside")
        model.likelihood.check_data(binarize(train_x, "threshold"), "training data")
    else:
        model.likelihood.check_data(train_x, "training data")
    return train_x


def _kl_weight(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    if config.kl_warmup_epochs == 0:
        return 1.0
    return min(1.0, (step + 1) / (config.kl_warmup_epochs * steps_per_epoch))


def _describe_non_finite(terms: ELBOTerms) -> str:
    bad = [
        f"the {label} term is {'NaN' if torch.isnan(value).any() else 'infinite'}"
        for label, value in (("log-likelihood", terms.log_likelihood), ("KL", terms.kl), ("penalty", terms.penalty))
        if not torch.isfinite(value).all()
    ]
    return " and ".join(bad) or "the loss is NaN"


def train_step(
    loss_fn: ELBOLoss, optimizer: torch.optim.Optimizer, x: torch.Tensor, kl_weight: float = 1.0, y: Optional[torch.Tensor] = None
) -> ELBOTerms:
    """
    One SVI step on the batch ``x`` (labelled ``y`` for a conditional model):
    estimate the ELBO terms, then descend on
    ``-mean_n [log p(x_n|z_n) - kl_weight * KL_n - penalty_n]``.

    :raises NonFiniteLossError: naming the non-finite term, before any
        parameter changes.
    :return: the batch's :class:`~pyprobvae.infer.elbo.ELBOTerms`.
    """
    terms = loss_fn(x, y)
    loss = -(terms.log_likelihood - kl_weight * terms.kl - terms.penalty).mean()
    if not math.isfinite(loss.item()):
        raise NonFiniteLossError(_describe_non_finite(terms))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return terms


class _Random:
    """The random state of a run: Pyro's (torch's global) and two generators."""

    def __init__(self, seed: int, device: torch.device):
        pyro.set_rng_seed(seed)
        self.shuffle = torch.Generator().manual_seed(seed)
        self.binarize = torch.Generator(device=device).manual_seed(seed + 1)

    def state(self):
        state = {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state(), "binarize": self.binarize.get_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, state):
        torch.set_rng_state(state["torch"])
        self.shuffle.set_state(state["shuffle"])
        self.binarize.set_state(state["binarize"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _resume(model, optimizer, random, config, checkpoint):
    state = load_checkpoint(checkpoint, map_location="cpu")
    if state.get("spec") != model.spec:
        raise CheckpointError(f"checkpoint {checkpoint} holds a different architecture: {state.get('spec')} != {model.spec}")
    saved = TrainConfig(**state["config"])
    changed = [f.name for f in fields(TrainConfig) if f.name != "epochs" and getattr(saved, f.name) != getattr(config, f.name)]
    if changed:
        raise CheckpointError(f"cannot resume {checkpoint} with different settings: {', '.join(changed)} changed (only epochs may)")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    random.restore(state["rng"])
    return state["epoch"], state["history"]


def fit(
    model: nn.Module,
    train: Dataset,
    test: Optional[Dataset] = None,
    config: Optional[TrainConfig] = None,
    checkpoint: Optional[str] = None,
    resume: bool = False,
    progress: bool = True,
) -> List[dict]:
    """
    Train ``model`` by maximizing the ELBO of ``train`` with minibatch SVI.

    Each step draws a batch by slicing the in-memory data, estimates the
    per-example ELBO terms, and descends on the loss

        loss = -mean_n [ log p(x_n|z_n) - beta * KL_n - penalty_n ]   (nats per example),

    which does not change with the batch size. After each epoch the held-out
    ELBO is computed, and the model, optimizer, random state and history are
    written atomically to ``checkpoint``. A NaN or infinite loss stops
    training with :class:`NonFiniteLossError` before the parameters are
    touched, leaving the last good checkpoint in place.

    :param torch.nn.Module model: e.g. a :class:`~pyprobvae.models.VAE`.
    :param Dataset train: training split.
    :param test: held-out split for the per-epoch test ELBO, or None.
    :type test: Dataset or None
    :param TrainConfig config: hyperparameters (defaults if None).
    :param checkpoint: file to write after every epoch, or None.
    :type checkpoint: str or None
    :param bool resume: continue from ``checkpoint`` (to ``config.epochs``).
    :param bool progress: show a tqdm progress bar with the running ELBO.
    :return: the history, one dict per epoch with ``epoch``, ``train_elbo``,
        ``train_kl``, ``test_elbo`` (nats per example) and ``seconds``, and
        ``train_penalty`` for models whose guide adds penalties (the VQ-VAE).
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    model.to(device)
    train = train.to(device)
    train_x, train_y = _training_data(model, train.x, config), model_labels(model, train)
    test_x = test_y = None
    if test is not None:
        test = test.to(device)
        test_x, test_y = evaluation_data(test, config.binarize), model_labels(model, test)
        model.likelihood.check_data(test_x, "test data")
    loss_fn = ELBOLoss(model, config.analytic_kl, config.estimator)
    optimizer = _make_optimizer(config, model.parameters())
    random = _Random(config.seed, device)
    start_epoch, history = 0, []
    if resume:
        if checkpoint is None or not os.path.exists(checkpoint):
            raise CheckpointError(f"nothing to resume: no checkpoint at {checkpoint}")
        start_epoch, history = _resume(model, optimizer, random, config, checkpoint)

    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    for epoch in range(start_epoch + 1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=False)
        elbo_sum = kl_sum = penalty_sum = 0.0
        batches = iterate_minibatches(len(train_x), config.batch_size, True, random.shuffle, device)
        for step, idx in enumerate(batches):
            x, y = train_x[idx], None if train_y is None else train_y[idx]
            if config.binarize == "dynamic":
                x = torch.bernoulli(x, generator=random.binarize)
            beta = _kl_weight(config, (epoch - 1) * steps_per_epoch + step, steps_per_epoch)
            try:
                terms = train_step(loss_fn, optimizer, x, beta, y)
            except NonFiniteLossError as e:
                kept = (
                    f"the last good checkpoint ({checkpoint}, epoch {epoch - 1}) is kept"
                    if checkpoint and epoch > 1
                    else "no checkpoint had been written yet"
                )
                raise NonFiniteLossError(
                    f"the loss is not finite at epoch {epoch}, step {step + 1}: {e}; training stopped and "
                    f"{kept}. Try a lower learning rate, clipped-adam, or KL warm-up."
                ) from None
            elbo_sum += terms.elbo.detach().sum()
            kl_sum += terms.kl.detach().sum()
            penalty_sum += terms.penalty.detach().sum()
            bar.update()
            if step % 10 == 0:
                bar.set_postfix(elbo=f"{float(elbo_sum) / ((step + 1) * config.batch_size):.2f}", refresh=False)
        bar.close()
        record = {"epoch": epoch, "train_elbo": float(elbo_sum) / len(train_x), "train_kl": float(kl_sum) / len(train_x)}
        if float(penalty_sum):
            record["train_penalty"] = float(penalty_sum) / len(train_x)
        if test_x is not None:
            model.eval()
            record["test_elbo"] = float(dataset_elbo(model, test_x, test_y, analytic_kl=config.analytic_kl).elbo.mean())
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if progress:
            tqdm.write(_format_record(record, config.epochs))
        if checkpoint is not None:
            save_checkpoint(
                {
                    "spec": model.spec,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "config": asdict(config),
                    "epoch": epoch,
                    "history": history,
                    "rng": random.state(),
                },
                checkpoint,
            )
    model.eval()
    return history


def _format_record(record, epochs):
    text = f"epoch {record['epoch']:>3}/{epochs}  train ELBO {record['train_elbo']:9.3f}"
    if "test_elbo" in record:
        text += f"  test ELBO {record['test_elbo']:9.3f}"
    return text + f"  nats/example  ({record['seconds']:.1f} s)"
