"""
Training by stochastic variational inference.

:func:`fit` maximizes the per-example ELBO (:mod:`pyprobvae.infer.elbo`) of a
model with the one training loop (:class:`~pyprobvae.infer.loop.Trainer`).
Everything a run depends on is explicit: the model, the data, a
:class:`TrainConfig`, and random generators seeded from it; nothing is kept
in module-level state. Under ``torch.distributed`` (``torchrun``), :func:`fit`
trains on the process group: :class:`ELBOLoss` runs in
``DistributedDataParallel``, ``batch_size`` is the global batch, every rank
seeds its own generators, the reported numbers are all-reduced, and rank 0
writes the checkpoint (:mod:`pyprobvae.distributed`).
"""

import os
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..config import ConfigError, setting
from ..data import Dataset, binarize, iterate_minibatches
from .checkpoint import CheckpointError, check_weights, load_checkpoint, save_checkpoint
from .elbo import ELBOTerms, Estimate
from .estimators import ELBO, GRADIENTS, OBJECTIVES, Estimator, make_estimator
from ..distributed import current_world
from ..resources import resolve_device
from .loop import LoopConfig, Monitor, Objective, RandomState, Trainer, steps_per_epoch

BINARIZATIONS = ("threshold", "dynamic")

# Seed of the one binarization of held-out data under dynamic binarization, so
# that every run is evaluated on the same binary test set.
EVAL_BINARIZATION_SEED = 0


@dataclass
class TrainConfig(LoopConfig):
    """
    Settings of :func:`fit`: those of the loop
    (:class:`~pyprobvae.infer.loop.LoopConfig`), the bound trained and its
    gradient (:mod:`~pyprobvae.infer.estimators`), and the weight on its KL.
    """

    kl_warmup_epochs: int = setting(0, minimum=0, maximum=100_000)
    """Anneal the KL weight linearly from ~0 to beta over this many epochs (Bowman et al. 2016; Sonderby et al. 2016); 0 trains with the weight beta throughout. The reported ELBO is always the true one."""
    beta: float = setting(1.0, minimum=0, maximum=1000.0, since="0.3.0")
    """Weight on the KL of the training objective (beta-VAE, Higgins et al. 2017; inside the weights of iwae and stratified): 1 trains the bound itself. The reported ELBO is always the true one."""
    free_bits: float = setting(0.0, minimum=0, maximum=100.0, since="0.3.0")
    """Floor, in nats, on each latent dimension's KL in the training objective (free bits, Kingma et al. 2016), for each example; 0: none. Needs the elbo objective and a closed-form KL per dimension (the diagonal family with the standard prior)."""
    binarize: Optional[str] = setting(None, choices=BINARIZATIONS, what="binarization")
    """Binarize pixels for the bernoulli likelihood: threshold (at 0.5, once), dynamic (a fresh Bernoulli draw of each training batch; held-out data is binarized once with a fixed seed) or none. The train command picks dynamic for a bernoulli likelihood on non-binary images unless told."""
    analytic_kl: bool = True
    """Use the closed-form KL where torch has one (else the single-sample estimate log q(z) - log p(z))."""
    objective: str = setting("elbo", choices=tuple(OBJECTIVES), since="0.3.0")
    """The bound trained: elbo (one draw per example), iwae (the importance-weighted bound of --particles draws, Burda et al. 2016) or stratified (mixture guides: one draw per component, Morningstar et al. 2021; never looser than the ELBO)."""
    particles: int = setting(1, minimum=1, maximum=100_000, since="0.3.0")
    """Draws K per example of the iwae bound (1: the ELBO); the others take 1."""
    gradient: str = setting("auto", choices=GRADIENTS, since="0.3.0", before="pathwise")
    """Gradient estimator: pathwise (reparameterized), stl (sticking the landing, Roeder et al. 2017: the guide's density at stopped parameters), dreg (iwae: doubly reparameterized, Tucker et al. 2019) or auto: stl for the elbo of the mixture family, pathwise otherwise. stl and dreg need the diagonal or mixture family."""

    retired = {"estimator": lambda value: {"objective": "elbo" if value == "pathwise" else value}}

    def check(self) -> None:
        super().check()
        try:
            self.estimator()
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def estimator(self) -> Estimator:
        """The estimator of the bound and gradient these settings name (:func:`~pyprobvae.infer.estimators.make_estimator`)."""
        return make_estimator(
            self.objective, particles=self.particles, gradient=self.gradient, analytic_kl=self.analytic_kl, free_bits=self.free_bits,
        )


def default_binarization(likelihood: str, dataset: Dataset) -> Optional[str]:
    """
    How to binarize ``dataset`` for ``likelihood`` unless the user says:
    dynamically for a Bernoulli likelihood on non-binary images (MNIST),
    not at all otherwise.
    """
    if likelihood == "bernoulli" and dataset.num_levels != 2:
        return "dynamic"
    return None


class ELBOLoss(nn.Module):
    """
    ``forward(x, y, kl_weight)`` returns the
    :class:`~pyprobvae.infer.elbo.Estimate` of a batch under ``model.model``
    and ``model.guide`` by ``estimator``. Going through ``forward`` is what
    lets ``DistributedDataParallel(ELBOLoss(model))`` synchronize gradients.
    The parameters are optimized as the module's own, so ``model`` and
    ``guide`` are called with ``register=False`` and skip registering them in
    Pyro's param store.

    :param torch.nn.Module model: a module with Pyro ``model(x, y, register)``
        and ``guide(x, y, register)`` methods (``y`` None for unconditional models).
    :param Estimator estimator: the estimator; by default the single-sample
        ELBO, pathwise, with closed-form KL where available.
    """

    def __init__(self, model: nn.Module, estimator: Optional[Estimator] = None) -> None:
        super().__init__()
        self.model = model
        self.estimator = estimator if estimator is not None else ELBO()

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, kl_weight: float = 1.0) -> Estimate:
        """
        :param torch.Tensor x: a batch of data.
        :param y: its labels, for a conditional model.
        :param float kl_weight: the weight on the KL in the objective.
        """
        args = (x,) if y is None else (x, y)
        model: Any = self.model  # a LatentVariableModel: pyprobvae.models, above this layer, defines model and guide
        return self.estimator(model.model, model.guide, *args, kl_weight=kl_weight, register=False)


class ELBOObjective(Objective):
    r"""
    The training objective of :func:`fit`, in nats per example (the
    :class:`~pyprobvae.infer.loop.Trainer` takes the mean over the global batch):
    minus the estimator's objective (:class:`~pyprobvae.infer.elbo.Estimate`),
    for the ELBO

    .. math::

        \mathrm{loss} = -\operatorname{mean}_n \left[ \log p(x_n \mid z_n)
            - \beta_t \, \mathrm{KL}_n - \mathrm{penalty}_n \right],

    with the KL weight :math:`\beta_t = \beta \min(1, (t + 1) / T)` at global
    step :math:`t`: ``beta``, reached by a linear warm-up over :math:`T`
    steps, neither of which changes with the batch size. The epoch's record
    reports the true ELBO (:math:`\beta = 1`) whatever the weight, as
    ``train_elbo`` and ``train_kl``, and for an objective other than the
    ELBO the bound it trains (IWAE or stratified) as ``train_bound``.

    :param ELBOLoss loss: the per-example estimates.
    :param int warmup_steps: steps :math:`T` over which the weight rises to ``beta`` (0: none).
    :param float beta: the KL weight :math:`\beta` after the warm-up.
    """

    terms = ("log-likelihood", "KL", "penalty", "bound")

    def __init__(self, loss: ELBOLoss, warmup_steps: int = 0, beta: float = 1.0) -> None:
        self.network = loss
        self.warmup_steps = warmup_steps
        self.beta = beta

    def kl_weight(self, step: int) -> float:
        r""":math:`\beta_t` at global step ``step`` (counted from 0)."""
        return self.beta if self.warmup_steps == 0 else self.beta * min(1.0, (step + 1) / self.warmup_steps)

    def __call__(  # type: ignore[override]  # a batch of this objective is the data and its labels
        self, network: nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None, *, step: int
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        estimate = network(x, y, self.kl_weight(step))
        return -estimate.objective, (*estimate.terms, estimate.bound)

    def record(self, means: Dict[str, float]) -> dict:
        record = {"train_elbo": means["log-likelihood"] - means["KL"], "train_kl": means["KL"]}
        if not isinstance(self.network.estimator, ELBO):
            record["train_bound"] = means["bound"]
        if means["penalty"]:
            record["train_penalty"] = means["penalty"]
        return record


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
    conditional model), computed in batches by the pathwise estimator.

    :return: :class:`~pyprobvae.infer.elbo.ELBOTerms` of shape ``(len(x),)``.
    """
    loss = ELBOLoss(model, ELBO(analytic_kl=analytic_kl))
    batches = iterate_minibatches(len(x), batch_size, False, device=x.device)
    parts = [loss(x[idx], None if y is None else y[idx]).terms for idx in batches]
    return ELBOTerms(*(torch.cat(t) for t in zip(*parts)))


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


TRAINING_CHECKPOINT = {
    "model_config": dict, "model": dict, "optimizer": dict, "train_config": dict, "epoch": int, "history": list, "rng": dict,
}
"""The entries of the checkpoint that :func:`fit` writes after every epoch (and a run folder's ``checkpoint.pt`` holds)."""


def _resume(model, optimizer, random, config, checkpoint):
    state = load_checkpoint(checkpoint, map_location="cpu", schema=TRAINING_CHECKPOINT)
    saved_model = type(model.config).with_newer_defaults(state["model_config"])
    if saved_model != model.config.to_dict():
        raise CheckpointError(f"checkpoint {checkpoint} holds a different architecture: {saved_model} != {model.config.to_dict()}")
    try:
        saved = TrainConfig.from_record(state["train_config"])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {checkpoint} has damaged training settings ({e})") from e
    changed = [f.name for f in fields(TrainConfig) if f.name != "epochs" and getattr(saved, f.name) != getattr(config, f.name)]
    if changed:
        raise CheckpointError(f"cannot resume {checkpoint} with different settings: {', '.join(changed)} changed (only epochs may)")
    check_weights(state["model"], checkpoint)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {checkpoint} holds weights or an optimizer state that do not fit the model ({str(e).splitlines()[0]})") from e
    random.restore(state["rng"], state["epoch"])
    return state["epoch"], state["history"]


def fit(
    model: nn.Module,
    train: Dataset,
    test: Optional[Dataset] = None,
    config: Optional[TrainConfig] = None,
    checkpoint: Optional[str] = None,
    resume: bool = False,
    progress: bool = True,
    monitor: Optional[Monitor] = None,
) -> List[dict]:
    """
    Train ``model`` by maximizing the ELBO of ``train`` with minibatch SVI.

    Each step draws a batch by slicing the in-memory data, estimates the
    per-example ELBO terms, and descends on the :class:`ELBOObjective`
    (nats per example). After each epoch the held-out ELBO is computed, and
    the model, optimizer, random state and history are written atomically to
    ``checkpoint``. A NaN or infinite term stops training with
    :class:`~pyprobvae.infer.loop.NonFiniteLossError` naming the epoch, the
    step and the term; the model is rolled back to the start of that epoch
    and the last good checkpoint stays in place.

    Called in every process of an initialized process group (as ``torchrun``
    starts them), it trains them together: each rank needs the whole of
    ``train`` and ``test``, takes its share of every global batch and of
    the held-out set, and gets the same history; rank 0 alone writes
    ``checkpoint``, which every rank reads on ``resume``.

    :param model: a :class:`~pyprobvae.models.base.LatentVariableModel`.
    :param Dataset train: training split.
    :param test: held-out split for the per-epoch test ELBO, or None.
    :type test: Dataset or None
    :param TrainConfig config: settings (defaults if None).
    :param checkpoint: file to write after every epoch, or None.
    :type checkpoint: str or None
    :param bool resume: continue from ``checkpoint`` (to ``config.epochs``).
    :param bool progress: show a progress bar with the running ELBO.
    :param monitor: what follows the training (:class:`~pyprobvae.infer.loop.Monitor`,
        e.g. TensorBoard), on this process; None: nothing.
    :return: the history, one dict per epoch with ``epoch``, ``train_elbo``,
        ``train_kl``, ``test_elbo`` (nats per example) and ``seconds``, and
        ``train_penalty`` for models whose guide adds penalties (the VQ-VAE).
    """
    config = config or TrainConfig()
    world = current_world()
    device = resolve_device(config.device)
    model.to(device)
    interface: Any = model  # a LatentVariableModel: pyprobvae.models, above this layer, defines labels and likelihood
    train = train.to(device)
    train_x, train_y = _training_data(model, train.x, config), interface.labels(train)
    if test is not None:
        test = test.to(device)
        test_x, test_y = evaluation_data(test, config.binarize), interface.labels(test)
        interface.likelihood.check_data(test_x, "test data")
    random = RandomState(config.seed, device, streams=("binarize",), world=world)
    loss = ELBOLoss(model, config.estimator())
    warmup_steps = config.kl_warmup_epochs * steps_per_epoch(len(train_x), config.batch_size, world)
    trainer = Trainer(ELBOObjective(loss, warmup_steps, config.beta), config, random, world, monitor)
    start_epoch, history = 0, []
    if resume:
        if checkpoint is None or not os.path.exists(checkpoint):
            raise CheckpointError(f"nothing to resume: no checkpoint at {checkpoint}")
        start_epoch, history = _resume(model, trainer.optimizer, random, config, checkpoint)

    def prepare(x, y):
        return torch.bernoulli(x, generator=random.streams["binarize"]), y

    def test_elbo_sum(part):
        y = None if test_y is None else test_y[part]
        return dataset_elbo(model, test_x[part], y, analytic_kl=config.analytic_kl).elbo.double().sum()

    def evaluate(epoch):
        return {"test_elbo": world.sum_over_shards(len(test_x), device, test_elbo_sum) / len(test_x)}

    def save(epoch, history):
        state = {
            "model_config": model.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "train_config": config.to_dict(),
            "epoch": epoch,
            "history": history,
            "rng": random.state(),  # every rank takes part: it gathers their random states
        }
        if world.is_main:
            save_checkpoint(state, checkpoint)

    def kept(epoch):
        if checkpoint and epoch > 1:
            return f" and the last good checkpoint ({checkpoint}, epoch {epoch - 1}) is kept"
        return " and no checkpoint had been written yet"

    return trainer.run(
        (train_x, train_y),
        start_epoch=start_epoch,
        history=history,
        prepare=prepare if config.binarize == "dynamic" else None,
        evaluate=evaluate if test is not None else None,
        save=save if checkpoint is not None else None,
        progress=progress,
        describe_stop=kept,
    )
