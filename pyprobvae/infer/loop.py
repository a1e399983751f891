"""
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

The loop is written for ``torch.distributed``: the objective is an
``nn.Module`` call, every random stream is derived from the seed, and the
only host reads are at the log interval.
"""

import abc
import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pyro
import torch
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from tqdm.auto import tqdm

from ..config import SEED, Config, setting
from ..data import iterate_minibatches
from ..resources import resolve_device
from .checkpoint import CheckpointError

OPTIMIZERS = ("adam", "clipped-adam")


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
    log_every: int = setting(50, minimum=1, maximum=10**6)
    """Steps between reads of the running loss from the device (the progress bar and the check that every term is finite)."""
    seed: int = setting(0, **SEED)
    """Seeds the initialization, the shuffling and every random draw of training."""
    device: str = "cpu"
    """cpu, cuda, cuda:1, ..."""

    def check(self):
        resolve_device(self.device)


class RandomState:
    """
    The random state of a training run: torch's global generator (which Pyro
    and dropout draw from), seeded by :func:`pyro.set_rng_seed`, plus a CPU
    generator for the shuffling and one generator on the device for each name
    in ``streams`` (e.g. the binarization), seeded ``seed + 1, seed + 2, ...``.

    :param int seed: the run's seed.
    :param torch.device device: where the streams draw.
    :param streams: names of the extra device generators.
    """

    def __init__(self, seed: int, device: torch.device, streams: Sequence[str] = ()):
        pyro.set_rng_seed(seed)
        self.shuffle = torch.Generator().manual_seed(seed)
        self.streams = {name: torch.Generator(device=device).manual_seed(seed + 1 + i) for i, name in enumerate(streams)}

    def state(self) -> dict:
        """Everything needed to continue the random draws exactly (for checkpoints)."""
        state = {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state()}
        state.update({name: generator.get_state() for name, generator in self.streams.items()})
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, state: dict) -> None:
        """
        Continue the draws saved by :meth:`state`.

        :raises CheckpointError: when ``state`` lacks a stream or holds one
            of another size or type (a damaged checkpoint).
        """
        for name, current in self.state().items():
            saved = state.get(name) if isinstance(state, dict) else None
            if name == "cuda":
                continue
            if not isinstance(saved, torch.Tensor) or saved.dtype != current.dtype or saved.shape != current.shape:
                raise CheckpointError(f"the checkpoint's random state {name!r} is missing or damaged")
        torch.set_rng_state(state["torch"])
        self.shuffle.set_state(state["shuffle"])
        for name, generator in self.streams.items():
            generator.set_state(state[name])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(config: LoopConfig, parameters) -> torch.optim.Optimizer:
    """The optimizer that ``config.optimizer`` names, over ``parameters``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr)
    return ClippedAdam(parameters, lr=config.lr, clip_norm=config.clip_norm)


class Objective(abc.ABC):
    """
    What a :class:`Trainer` minimizes. A call on a batch returns the scalar
    loss to descend on and a tuple of per-example terms, one per name in
    :attr:`terms`, whose sums over the epoch :meth:`record` turns into the
    epoch's reported numbers.
    """

    terms: Tuple[str, ...] = ()
    """How to name each term in messages, e.g. ``("log-likelihood", "KL")``."""

    @abc.abstractmethod
    def __call__(self, *batch, step: int) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """``(loss, terms)`` of a batch at global step ``step``."""

    @abc.abstractmethod
    def record(self, means: Dict[str, float]) -> dict:
        """The epoch's record from the mean of each term per example."""


class Trainer:
    """
    Minibatch descent on ``objective`` over the parameters of ``module``.

    :param torch.nn.Module module: holds the parameters (and the state that
        a roll-back restores).
    :param Objective objective: the loss and its per-example terms.
    :param LoopConfig config: the loop's settings.
    :param RandomState random: the run's random state.
    """

    def __init__(self, module: nn.Module, objective: Objective, config: LoopConfig, random: RandomState):
        self.module = module
        self.objective = objective
        self.config = config
        self.random = random
        self.device = resolve_device(config.device)
        self.optimizer = make_optimizer(config, module.parameters())
        self.global_step = 0
        self._dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self._window: List[torch.Tensor] = []
        self._window_start = 0

    def step(self, *batch) -> None:
        """
        One descent step on a batch: queued on the device, nothing read back.
        The step's term sums join the window that :meth:`check` reads.
        """
        loss, terms = self.objective(*batch, step=self.global_step)
        # one (terms + 1,) vector per step: each term summed over the batch, then the loss (as a batch of its value)
        sums = torch.stack([*terms, loss.expand_as(terms[0])]).detach().sum(-1, dtype=self._dtype)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._window.append(sums)
        self.global_step += 1

    def check(self, epoch: int) -> torch.Tensor:
        """
        Read the window of step sums back from the device (a host
        synchronisation) and raise :class:`NonFiniteLossError` naming the first
        step with a non-finite term.

        :return: the sums of the terms over the window, on the host, float64.
        """
        if not self._window:
            return torch.zeros(len(self.objective.terms), dtype=torch.float64)
        window = torch.stack(self._window).cpu().double()
        start, self._window = self._window_start, []
        self._window_start += len(window)
        finite = torch.isfinite(window)
        if not bool(finite.all()):
            row = int((~finite.all(1)).nonzero()[0])
            raise NonFiniteLossError(f"epoch {epoch}, step {start + row + 1}: {self._describe(window[row])}")
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
        return f"{' and '.join(bad) or 'the loss is not finite'} (loss = {loss})"

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
            examples, sliced together into batches (e.g. ``(x, y)``).
        :param List[dict] history: the records of earlier epochs (on resume).
        :param prepare: maps a batch's slices to the objective's arguments
            (e.g. a fresh binarization), or None to pass them as they are.
        :param evaluate: ``epoch -> dict`` of held-out numbers, merged into
            the epoch's record (in eval mode).
        :param save: ``(epoch, history)`` after each epoch, e.g. a checkpoint.
        :param bool progress: show a progress bar and a line per epoch.
        :param describe_stop: ``epoch -> text`` appended to the message of a
            non-finite loss (what was kept).
        :raises NonFiniteLossError: on a NaN or infinite term, or a
            non-finite reported number, after rolling the module and the
            optimizer back to the start of the epoch.
        :return: the history, one record per epoch: the objective's numbers
            and ``epoch`` and ``seconds``.
        """
        history = list(history or [])
        count = len(data[0])
        steps_per_epoch = math.ceil(count / self.config.batch_size)
        self.global_step = start_epoch * steps_per_epoch
        for epoch in range(start_epoch + 1, self.config.epochs + 1):
            snapshot = self._snapshot()
            try:
                record = self._epoch(epoch, data, count, steps_per_epoch, prepare, progress)
                if evaluate is not None:
                    self.module.eval()
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
            if save is not None:
                save(epoch, history)
        self.module.eval()
        return history

    def _epoch(self, epoch, data, count, steps_per_epoch, prepare, progress) -> dict:
        self.module.train()
        started = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{self.config.epochs}", disable=not progress, leave=False)
        totals = torch.zeros(len(self.objective.terms), dtype=torch.float64)
        self._window, self._window_start = [], 0
        batches = iterate_minibatches(count, self.config.batch_size, True, self.random.shuffle, data[0].device)
        for step, idx in enumerate(batches, start=1):
            batch = tuple(None if t is None else t[idx] for t in data)
            self.step(*(batch if prepare is None else prepare(*batch)))
            bar.update()
            if step % self.config.log_every == 0:
                totals += self.check(epoch)
                bar.set_postfix(self._headline(totals, min(step * self.config.batch_size, count)), refresh=False)
        totals += self.check(epoch)
        bar.close()
        record = {"epoch": epoch}
        record.update(self._means(totals, count))
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
