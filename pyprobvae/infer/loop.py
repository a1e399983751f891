r"""
The one training loop: minibatch descent on a per-example objective.

Every trained thing in the package (the models by their ELBO, the prior over
a VQ-VAE's codes by its likelihood, the classifier that scores samples by
its cross-entropy) goes through :class:`Trainer`: the same random state, the
same optimizers, the same progress bar, the same guard against non-finite
losses, the same per-epoch record.

**No host synchronisation per step.** A step queues its work on the device
and returns: the per-example terms are summed on the device (in float64, so
that an epoch's totals cannot overflow where each step's did not) and a
vector of the step's sums is kept. Every :attr:`LoopConfig.log_every` steps
and at the end of each epoch the loop reads those vectors back, the one point
where it waits for the device (as nanoGPT's ``train.py`` reads its loss only
at the log interval). A NaN or infinite term is found there, and the loop
stops naming the exact epoch, step and term. Steps after the bad one may
have run by then, so the loop rolls the parameters and the optimizer state
back to their values at the start of the epoch (the last good checkpoint),
leaving no non-finite parameter behind.

**Several processes** (:mod:`pyprobvae.distributed`, under ``torchrun``).
``batch_size`` is the global batch :math:`B`: every rank draws the same
permutation and takes its contiguous share of each batch of :math:`B`
indices. The objective's network runs in ``DistributedDataParallel``, which
averages the ranks' gradients, and rank :math:`r` descends on

.. math::

    \mathrm{loss}_r = \frac{W}{|b|} \sum_{n \in b_r} \ell_n,

with :math:`W` ranks, :math:`b` the global batch and :math:`b_r` the
rank's share: the average over ranks is :math:`\frac{1}{|b|} \sum_{n \in b}
\ell_n`, the mean over the global batch, as in one process. (A last batch of
an epoch with fewer examples than ranks is skipped; with one process none
is.) The window of step sums is all-reduced before it is read, so that every
rank reports the same nats per example and stops at the same step when a
term is not finite.
"""

import abc
import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import pyro
import torch
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from tqdm.auto import tqdm

from ..config import SEED, Config, setting
from ..data import iterate_minibatches
from ..distributed import LOCAL, World
from ..resources import resolve_device
from .checkpoint import CheckpointError

OPTIMIZERS = ("adam", "clipped-adam")
LR_SCHEDULES = ("constant", "cosine")
# The cosine schedule's last learning rate, as a share of lr (nanoGPT's min_lr = lr / 10).
COSINE_FINAL_SHARE = 0.1


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass
class LoopConfig(Config):
    """Settings of the training loop, shared by everything it trains."""

    epochs: int = setting(100, minimum=1, maximum=100_000)
    """Passes over the training data."""
    batch_size: int = setting(128, minimum=1, maximum=2**24)
    """Examples per step."""
    lr: float = setting(1e-3, above=0, maximum=10.0)
    """Learning rate (Adam moves each parameter by about this much per step, so more than 10 cannot train)."""
    optimizer: str = setting("adam", choices=OPTIMIZERS)
    """adam (torch.optim.Adam) or clipped-adam (Pyro's ClippedAdam, which clips each gradient element to [-clip_norm, clip_norm])."""
    clip_norm: float = setting(10.0, above=0)
    """The clipping bound of clipped-adam."""
    weight_decay: float = setting(0.0, minimum=0, maximum=10.0, since="0.3.0")
    """Decoupled weight decay (Loshchilov & Hutter 2019): adam becomes torch.optim.AdamW, each step shrinking every weight by lr * weight_decay of itself; 0: none."""
    lr_schedule: str = setting("constant", choices=LR_SCHEDULES, since="0.3.0")
    """constant: lr at every step; cosine: from lr down to lr / 10 along half a cosine over the run's steps (Loshchilov & Hutter 2017, without restarts)."""
    log_every: int = setting(50, minimum=1, maximum=10**6)
    """Steps between reads of the running loss from the device (the progress bar and the check that every term is finite)."""
    seed: int = setting(0, **SEED)
    """Seeds the initialization, the shuffling and every random draw of training."""
    device: str = "cpu"
    """cpu, cuda, cuda:1, ..."""

    def check(self) -> None:
        resolve_device(self.device)


class RandomState:
    """
    The random state of a training run: torch's global generator (which Pyro
    and dropout draw from), seeded by :func:`pyro.set_rng_seed`, plus a CPU
    generator for the shuffling and one generator on the device for each name
    in ``streams`` (e.g. the binarization), seeded ``seed + 1, seed + 2, ...``.

    Under ``torch.distributed`` the shuffling generator has the run's seed on
    every rank (they share the permutation) and the others are seeded from
    this rank's :meth:`~pyprobvae.distributed.World.seed`; rank 0's are
    those of one process.

    :param int seed: the run's seed.
    :param torch.device device: where the streams draw.
    :param streams: names of the extra device generators.
    :param World world: the processes of the run.
    """

    def __init__(self, seed: int, device: torch.device, streams: Sequence[str] = (), world: World = LOCAL) -> None:
        self.seed, self.device, self.names, self.world = seed, device, tuple(streams), world
        self.shuffle = torch.Generator().manual_seed(seed)
        self._seed_rank(world.seed(seed))

    def _seed_rank(self, seed: int) -> None:
        pyro.set_rng_seed(seed)
        self.streams = {name: torch.Generator(device=self.device).manual_seed(seed + 1 + i) for i, name in enumerate(self.names)}

    def _own_state(self) -> dict:
        state: Dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state()}
        state.update({name: generator.get_state() for name, generator in self.streams.items()})
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def state(self) -> dict:
        """
        Everything needed to continue the random draws exactly (for
        checkpoints): this rank's state, and under ``torch.distributed`` the
        other ranks' as ``"ranks"`` (a collective: every rank calls it).
        """
        state = self._own_state()
        if self.world.distributed:
            mine = self._rank_state()
            gathered = {name: self.world.all_gather(value) for name, value in mine.items()}
            state["ranks"] = [{name: parts[rank].cpu() for name, parts in gathered.items()} for rank in range(1, self.world.size)]
        return state

    def _rank_state(self) -> Dict[str, torch.Tensor]:
        """The generators a rank other than 0 keeps across a resume (its GPU's, when the run is on one)."""
        state = {"torch": torch.get_rng_state()}
        state.update({name: generator.get_state() for name, generator in self.streams.items()})
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def restore(self, state: dict, epoch: int = 0) -> None:
        """
        Continue the draws saved by :meth:`state`. A rank that the saved run
        did not have (resuming on more processes) seeds its streams from the
        seed, its rank and ``epoch`` instead.

        :raises CheckpointError: when ``state`` lacks a stream or holds one
            of another size or type (a damaged checkpoint).
        """
        for name, current in self._own_state().items():
            saved = state.get(name) if isinstance(state, dict) else None
            if name == "cuda":
                continue
            if not isinstance(saved, torch.Tensor) or saved.dtype != current.dtype or saved.shape != current.shape:
                raise CheckpointError(f"the checkpoint's random state {name!r} is missing or damaged")
        self.shuffle.set_state(state["shuffle"])
        ranks = state.get("ranks", [])
        if self.world.rank == 0:
            own = state
        elif isinstance(ranks, list) and self.world.rank <= len(ranks):
            own = ranks[self.world.rank - 1]
        else:
            self._seed_rank(self.world.seed(self.seed, epoch))
            return
        if not isinstance(own, dict) or any(not isinstance(own.get(name), torch.Tensor) for name in ("torch", *self.names)):
            raise CheckpointError(f"the checkpoint's random state of rank {self.world.rank} is missing or damaged")
        torch.set_rng_state(own["torch"])
        for name, generator in self.streams.items():
            generator.set_state(own[name])
        if "cuda" in own and torch.cuda.is_available():
            (torch.cuda.set_rng_state_all if self.world.rank == 0 else torch.cuda.set_rng_state)(own["cuda"])


def make_optimizer(config: LoopConfig, parameters: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """
    The optimizer that ``config.optimizer`` names, over ``parameters``: with
    ``weight_decay``, Adam with decoupled weight decay (``AdamW``), and Pyro's
    ClippedAdam with its own (an L2 term added to the gradient before clipping).
    """
    if config.optimizer == "adam":
        if config.weight_decay:
            return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        return torch.optim.Adam(parameters, lr=config.lr)
    return ClippedAdam(parameters, lr=config.lr, clip_norm=config.clip_norm, weight_decay=config.weight_decay)


def scheduled_lr(config: LoopConfig, step: int, total_steps: int) -> float:
    r"""
    The learning rate of step ``step`` (from 0) of ``total_steps``: ``config.lr``
    for the constant schedule, and for the cosine one

    .. math::

        \eta_t = \eta \left(s + (1 - s) \tfrac{1}{2} \left(1 + \cos \tfrac{\pi t}{T}\right)\right),
        \quad s = 0.1,

    :math:`\eta` at the first step, falling to :math:`s \eta` at the end
    (SGDR, Loshchilov & Hutter 2017, with one cycle and no restart; the final
    share as nanoGPT's ``min_lr``).
    """
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(step / max(total_steps, 1), 1.0)
    return config.lr * (COSINE_FINAL_SHARE + (1 - COSINE_FINAL_SHARE) * 0.5 * (1 + math.cos(math.pi * progress)))


class Objective(abc.ABC):
    """
    What a :class:`Trainer` minimizes: :attr:`network`, the module whose
    parameters are trained (and which ``DistributedDataParallel`` wraps
    under ``torch.distributed``), and a call on a batch that returns the
    loss of each example and a tuple of per-example terms, one per name in
    :attr:`terms`, whose sums over the epoch :meth:`record` turns into the
    epoch's reported numbers. The trainer descends on the mean loss.
    """

    terms: Tuple[str, ...] = ()
    """How to name each term in messages, e.g. ``("log-likelihood", "KL")``."""

    network: nn.Module
    """The module trained; called through the argument ``network`` of :meth:`__call__`."""

    @abc.abstractmethod
    def __call__(self, network: nn.Module, *batch: Any, step: int) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """``(loss per example, terms)`` of a batch at global step ``step``, computed by calling ``network``."""

    @abc.abstractmethod
    def record(self, means: Dict[str, float]) -> dict:
        """The epoch's record from the mean of each term per example."""


class Monitor(abc.ABC):
    """
    What follows a training run as it goes (e.g. TensorBoard): the
    :class:`Trainer` hands it numbers already on the host, at the points
    where it reads them anyway. Steps are counted over the whole run, from 1.
    """

    @abc.abstractmethod
    def start(self, step: int) -> None:
        """Training begins after global step ``step`` (0 for a new run; on resume, the last step of the checkpoint)."""

    @abc.abstractmethod
    def window(self, step: int, numbers: Dict[str, float]) -> None:
        """
        A log window that ended at global step ``step`` was read: ``numbers``
        holds each of the objective's :attr:`~Objective.terms` and ``loss`` as
        means per example over the window, ``lr``, the learning rate of its
        last step, and ``grad_norm``, the global L2 norm of the gradient of its
        last step (before the optimizer, so before any clipping), which
        :meth:`Trainer.run` always measures (a caller of :meth:`Trainer.step`
        asks for it with ``ends_window``).
        """

    @abc.abstractmethod
    def epoch(self, step: int, record: dict) -> None:
        """The epoch that ended at global step ``step`` has its ``record`` (the model is in eval mode)."""


class Trainer:
    """
    Minibatch descent on ``objective`` over the parameters of its network.

    :param Objective objective: the network, the loss and its per-example terms.
    :param LoopConfig config: the loop's settings; ``batch_size`` is the
        global batch, which the world size must divide.
    :param RandomState random: the run's random state.
    :param World world: the processes that train together (one by default).
    :param monitor: what follows the run (:class:`Monitor`), or None; give
        it on one process only.
    """

    def __init__(
        self, objective: Objective, config: LoopConfig, random: RandomState, world: World = LOCAL, monitor: Optional[Monitor] = None,
    ) -> None:
        self.objective = objective
        self.module = objective.network
        self.config = config
        self.random = random
        self.world = world
        world.check_batch_size(config.batch_size)
        self.device = resolve_device(config.device)
        self.network = world.wrap(self.module)
        self.optimizer = make_optimizer(config, self.module.parameters())
        self.global_step = 0
        self.total_steps = 0
        self._scheduled = config.lr_schedule != "constant"
        self._dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.monitor = monitor
        self._window: List[torch.Tensor] = []
        self._window_start = 0
        self._window_examples = 0
        self._grad_norm: Optional[torch.Tensor] = None

    def steps_per_epoch(self, count: int) -> int:
        """Steps in an epoch of ``count`` examples (:func:`steps_per_epoch`)."""
        return steps_per_epoch(count, self.config.batch_size, self.world)

    def step(self, *batch: Optional[torch.Tensor], global_count: Optional[int] = None, ends_window: bool = False) -> None:
        """
        One descent step on this rank's share of a global batch of
        ``global_count`` examples (None: ``batch`` is the whole batch, in one
        process): queued on the device, nothing read back. The step's term
        sums join the window that :meth:`check` reads; with a monitor, the
        step that ``ends_window`` also measures the gradient norm (on the device).
        """
        losses, terms = self.objective(self.network, *batch, step=self.global_step)
        count = len(losses) if global_count is None else global_count
        loss = losses.sum() * (self.world.size / count)
        # one (terms + 1,) vector per step: each term and the loss summed over the rank's examples
        sums = torch.stack([*terms, losses]).detach().sum(-1, dtype=self._dtype)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ends_window and self.monitor is not None:
            self._grad_norm = _grad_norm(self.module.parameters())
        if self._scheduled:
            lr = scheduled_lr(self.config, self.global_step, self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.step()
        self._window.append(sums)
        self._window_examples += count
        self.global_step += 1

    def check(self, epoch: int) -> torch.Tensor:
        """
        Read the window of step sums back from the device (a host
        synchronisation; under ``torch.distributed`` after summing it over
        the ranks) and raise :class:`NonFiniteLossError` naming the first
        step with a non-finite term; then hand the window's numbers to the
        monitor, if any (the gradient norm read back in the same transfer).

        :return: the sums of the terms over the window and the ranks, on the host, float64.
        """
        if not self._window:
            return torch.zeros(len(self.objective.terms), dtype=torch.float64)
        window = self.world.all_reduce_sum(torch.stack(self._window))
        norm, self._grad_norm = self._grad_norm, None
        if norm is not None:  # one transfer: the window's rows, then the norm
            window = torch.cat([window, norm.to(window.dtype).expand(1, window.shape[1])])
        window = window.cpu().double()
        grad_norm: Optional[float] = None
        if norm is not None:
            window, grad_norm = window[:-1], float(window[-1, 0])
        start, self._window = self._window_start, []
        examples, self._window_examples = self._window_examples, 0
        self._window_start += len(window)
        finite = torch.isfinite(window)
        if not bool(finite.all()):
            row = int((~finite.all(1)).nonzero()[0])
            raise NonFiniteLossError(f"epoch {epoch}, step {start + row + 1}: {self._describe(window[row])}")
        if self.monitor is not None:
            numbers = dict(zip((*self.objective.terms, "loss"), (float(total) / examples for total in window.sum(0))))
            numbers["lr"] = float(self.optimizer.param_groups[0]["lr"])
            if grad_norm is not None:
                numbers["grad_norm"] = grad_norm
            self.monitor.window(self.global_step, numbers)
        return window[:, :-1].sum(0)

    def _describe(self, sums: torch.Tensor) -> str:
        bad = [
            f"the {name} term is {'NaN' if math.isnan(value) else 'infinite'}"
            for name, value in zip(self.objective.terms, sums.tolist())
            if not math.isfinite(value)
        ]
        loss = float(sums[-1])
        if math.isfinite(loss):
            return " and ".join(bad)
        return f"{' and '.join(bad) or 'the loss is not finite'} (summed loss = {loss})"

    def run(
        self,
        data: Sequence[torch.Tensor],
        *,
        start_epoch: int = 0,
        history: Optional[List[dict]] = None,
        prepare: Optional[Callable[..., tuple]] = None,
        evaluate: Optional[Callable[[int], dict]] = None,
        save: Optional[Callable[[int, List[dict]], None]] = None,
        progress: bool = True,
        describe_stop: Callable[[int], str] = lambda epoch: "",
    ) -> List[dict]:
        """
        Train from ``start_epoch + 1`` to ``config.epochs``.

        :param data: tensors (or None) of equal length whose rows are
            examples, sliced together into batches (e.g. ``(x, y)``); under
            ``torch.distributed``, the whole data set on every rank.
        :param List[dict] history: the records of earlier epochs (on resume).
        :param prepare: maps a batch's slices to the objective's arguments
            (e.g. a fresh binarization), or None to pass them as they are.
        :param evaluate: ``epoch -> dict`` of held-out numbers, merged into
            the epoch's record (in eval mode; called on every rank).
        :param save: ``(epoch, history)`` after each epoch, e.g. a
            checkpoint (called on every rank).
        :param bool progress: show a progress bar and a line per epoch (rank 0 only).
        :param describe_stop: ``epoch -> text`` appended to the message of a
            non-finite loss (what was kept).
        :raises NonFiniteLossError: on a NaN or infinite term, or a
            non-finite reported number, after rolling the module and the
            optimizer back to the start of the epoch.
        :return: the history, one record per epoch: the objective's numbers
            and ``epoch`` and ``seconds``.
        """
        history = list(history or [])
        progress = progress and self.world.is_main
        self.global_step = start_epoch * self.steps_per_epoch(len(data[0]))
        self.total_steps = self.config.epochs * self.steps_per_epoch(len(data[0]))
        if self.monitor is not None:
            self.monitor.start(self.global_step)
        for epoch in range(start_epoch + 1, self.config.epochs + 1):
            snapshot = self._snapshot()
            try:
                record = self._epoch(epoch, data, prepare, progress)
                self.module.eval()
                if evaluate is not None:
                    record.update(evaluate(epoch))
                _check_record(record, epoch)
            except NonFiniteLossError as e:
                self._restore(snapshot)
                raise NonFiniteLossError(
                    f"the loss is not finite at {e}; training stopped{describe_stop(epoch)}. "
                    "Try a lower learning rate, clipped-adam, or KL warm-up."
                ) from None
            history.append(record)
            if progress:
                tqdm.write(_format_record(record, self.config.epochs))
            if self.monitor is not None:  # before the checkpoint: a resume from it drops what follows it
                self.monitor.epoch(self.global_step, record)
            if save is not None:
                save(epoch, history)
        self.module.eval()
        return history

    def _epoch(self, epoch, data, prepare, progress) -> dict:
        self.module.train()
        started = time.perf_counter()
        count = len(data[0])
        steps = self.steps_per_epoch(count)
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.config.epochs}", disable=not progress, leave=False)
        totals = torch.zeros(len(self.objective.terms), dtype=torch.float64)
        self._window, self._window_start, self._window_examples, self._grad_norm = [], 0, 0, None
        seen = 0
        batches = iterate_minibatches(count, self.config.batch_size, True, self.random.shuffle, data[0].device)
        for step, idx in enumerate(batches, start=1):
            if len(idx) < self.world.size:  # a last batch too small to share out
                break
            part = self.world.shard(idx)
            batch = tuple(None if t is None else t[part] for t in data)
            ends_window = step % self.config.log_every == 0 or step == steps
            self.step(*(batch if prepare is None else prepare(*batch)), global_count=len(idx), ends_window=ends_window)
            seen += len(idx)
            bar.update()
            if step % self.config.log_every == 0:
                totals += self.check(epoch)
                bar.set_postfix(self._headline(totals, seen), refresh=False)
        totals += self.check(epoch)
        bar.close()
        record = {"epoch": epoch}
        record.update(self._means(totals, seen))
        record["seconds"] = time.perf_counter() - started
        return record

    def _means(self, totals, count) -> dict:
        return self.objective.record({name: float(t) / count for name, t in zip(self.objective.terms, totals)})

    def _headline(self, totals, count) -> dict:
        name, value = next(iter(self._means(totals, count).items()))
        return {name: f"{value:.3f}"}

    def _snapshot(self):
        return (
            {name: value.detach().clone() for name, value in self.module.state_dict().items()},
            copy.deepcopy(self.optimizer.state_dict()),
        )

    def _restore(self, snapshot):
        module_state, optimizer_state = snapshot
        self.module.load_state_dict(module_state)
        self.optimizer.load_state_dict(optimizer_state)


def _grad_norm(parameters) -> torch.Tensor:
    """The L2 norm of the gradients of ``parameters`` together, on the device (nothing read back)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in parameters if p.grad is not None]))


def steps_per_epoch(count: int, batch_size: int, world: World = LOCAL) -> int:
    """Steps in an epoch of ``count`` examples: one per global batch of ``batch_size``, but for a last batch smaller than the world."""
    full, rest = divmod(count, batch_size)
    return full + int(rest >= world.size and rest > 0)


def _check_record(record: dict, epoch: int) -> None:
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NonFiniteLossError(f"epoch {epoch} (its reported {key} is {value})")


_ACRONYMS = {"elbo": "ELBO", "nll": "NLL", "kl": "KL"}


def _format_record(record: dict, epochs: int) -> str:
    numbers = "  ".join(
        f"{' '.join(_ACRONYMS.get(word, word) for word in key.split('_'))} {value:9.3f}"
        for key, value in record.items()
        if key not in ("epoch", "seconds") and isinstance(value, float)
    )
    return f"epoch {record['epoch']:>3}/{epochs}  {numbers}  ({record['seconds']:.1f} s)"
