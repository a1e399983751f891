"""
Several processes, one run: ``torch.distributed`` as ``torchrun`` sets it up.

``torchrun --nproc_per_node N -m pyprobvae train ...`` starts N copies of
the command, each with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in its environment (and across machines,
``--nnodes`` with a rendezvous). :func:`init_from_environment` joins the
process group those variables describe (gloo on the CPU, NCCL on CUDA) and
returns the :class:`World`; without them the world is :data:`LOCAL`, one
process, and every method below is the identity, so that single-process
code runs unchanged.

What the training loop synchronises, and why the numbers mean the same at
any world size (see ``docs/scaling.rst``):

- every rank draws the same permutation of the training set each epoch and
  takes its contiguous share of each global batch (:meth:`World.shard`,
  DistributedSampler's semantics with in-memory slicing);
- each rank's loss is its share of the global batch's sum divided by the
  global batch size and multiplied by the world size, so that the gradient
  ``DistributedDataParallel`` averages is the gradient of the global batch's
  mean, the same as one process at that batch size;
- reported numbers are sums all-reduced over ranks divided by global counts
  (nats per example);
- random streams are seeded by :meth:`World.seed`: rank 0 keeps the run's
  seed (so one process is rank 0 of a world of one), the others a value
  derived from the seed and the rank.

A rank that dies closes its connections, and the others' next collective
fails at once; a rank that hangs is caught by the process group's timeout,
:data:`TIMEOUT_SECONDS` (``PYPROBVAE_DISTRIBUTED_TIMEOUT`` overrides it).
"""

import contextlib
import datetime
import functools
import gc
import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

TIMEOUT_SECONDS = 600
"""How long a collective waits for the other ranks before the run stops (a rank that dies is noticed at once)."""

TIMEOUT_VARIABLE = "PYPROBVAE_DISTRIBUTED_TIMEOUT"
"""The environment variable that overrides :data:`TIMEOUT_SECONDS`."""


class PeerError(RuntimeError):
    """Another process of the distributed run failed or was lost; this one stops with it."""


@dataclass(frozen=True)
class World:
    """The processes of a run: this one's ``rank`` among ``size``."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        return f"process {self.rank} of {self.size}"

    def seed(self, seed: int, *more: int) -> int:
        """
        The seed of this rank's random streams: ``seed`` itself on rank 0
        (without ``more``), else a 32-bit value drawn from numpy's
        ``SeedSequence((seed, rank, *more))``, independent of every other
        rank's (``more``: e.g. the epoch a resumed run starts from).
        """
        if self.rank == 0 and not more:
            return seed
        return int(np.random.SeedSequence((seed, self.rank, *more)).generate_state(1)[0])

    def check_batch_size(self, batch_size: int) -> None:
        """:raises ValueError: when the world size does not divide the global ``batch_size``."""
        if batch_size % self.size:
            raise ValueError(
                f"--batch-size {batch_size} is the global batch, split evenly over {self.size} processes: "
                f"give a multiple of {self.size}"
            )

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch's ``indices`` (sizes differ by at most one)."""
        if self.size == 1:
            return indices
        return torch.tensor_split(indices, self.size)[self.rank]

    def sum_over_shards(self, count: int, device: Union[torch.device, str], function: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """
        A sum over ``range(count)`` computed in shares: each rank calls
        ``function`` on the indices of its contiguous share (if not empty),
        which returns the share's sum as a scalar tensor; the shares' sums
        are added over the ranks in float64.
        """
        part = self.shard(torch.arange(count, device=device))
        total = function(part).double().reshape(1) if len(part) else torch.zeros(1, dtype=torch.float64, device=device)
        return float(self.all_reduce_sum(total))

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place (and returned)."""
        if self.size > 1:
            _in_place(dist.all_reduce, tensor)
        return tensor

    def broadcast(self, tensor: torch.Tensor, source: int = 0) -> torch.Tensor:
        """``tensor`` as rank ``source`` holds it, in place on every rank (and returned)."""
        if self.size > 1:
            _in_place(dist.broadcast, tensor, source)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> List[torch.Tensor]:
        """Every rank's ``tensor`` (of one shape on every rank), in rank order."""
        if self.size == 1:
            return [tensor]
        sent = tensor.to(_collective_device()).contiguous()
        parts = [torch.empty_like(sent) for _ in range(self.size)]
        _collective(dist.all_gather, parts, sent)
        return [part.to(tensor.device) for part in parts]

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's ``rows`` (any number of them; the same trailing shape), concatenated in rank order."""
        if self.size == 1:
            return rows
        counts = torch.stack(self.all_gather(torch.tensor([len(rows)], device=rows.device))).reshape(-1).tolist()
        padded = rows.new_zeros((max(counts), *rows.shape[1:]))
        padded[: len(rows)] = rows
        return torch.cat([part[:count] for part, count in zip(self.all_gather(padded), counts)])

    def wrap(self, module: nn.Module) -> nn.Module:
        """
        ``module`` in ``DistributedDataParallel`` when there are several
        ranks (gradients averaged over them during the backward pass; rank
        0's parameters and buffers copied to every rank once, here), else
        ``module`` itself. Buffers are not broadcast at every forward: the
        modules that keep state (the vector quantizer) keep it identical on
        every rank by all-reducing what updates it.
        """
        if self.size == 1:
            return module
        device = next(module.parameters()).device
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, **_NO_BUFFER_BROADCAST
        )

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """
        Run the block on every rank and agree on how it ended: if it raised
        on any rank, it raises there and :class:`PeerError` on the others,
        so that no rank goes on to wait for one that stopped.
        """
        failed = None
        try:
            yield
        except BaseException as e:
            failed = e
        if self.size > 1:
            flag = torch.tensor([float(failed is not None)])
            self.all_reduce_sum(flag)
            if failed is None and flag.item() > 0:
                raise PeerError("another process of the run failed (its message says why)")
        if failed is not None:
            raise failed


_NO_BUFFER_BROADCAST: Dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)
"""DDP's option to copy buffers from rank 0 at construction only: ``forward_sync_buffers`` in new torch, ``broadcast_buffers`` before."""

LOCAL = World()
"""One process: no communication."""


def _collective_device() -> torch.device:
    """Where the process group's tensors live: this rank's GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _in_place(operation, tensor: torch.Tensor, *args) -> None:
    """An in-place collective on ``tensor``, through a copy where the backend needs another device (NCCL: the GPU)."""
    device = _collective_device()
    if tensor.device == device:
        _collective(operation, tensor, *args)
    else:
        sent = tensor.to(device)
        _collective(operation, sent, *args)
        tensor.copy_(sent)


def _collective(operation, *args):
    """Run a collective; a lost or failed peer becomes :class:`PeerError`."""
    try:
        operation(*args)
    except RuntimeError as e:
        reason = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
        raise PeerError(f"lost contact with the other processes ({reason})") from e


LOST_PEER_SIGNS = ("gloo", "nccl", "connection reset", "connection closed", "remote worker", "timed out")
"""Words of the errors a backend raises, mid-collective, when another rank is gone or hangs (DDP's backward raises them as plain RuntimeErrors)."""


def lost_peer(error: BaseException) -> bool:
    """Whether ``error``, raised in a process of a distributed run, says that another rank is gone or hangs."""
    if isinstance(error, (PeerError, dist.DistError)):
        return True
    text = str(error).lower()
    return current_world().distributed and isinstance(error, RuntimeError) and any(sign in text for sign in LOST_PEER_SIGNS)


def current_world() -> World:
    """The world of the initialized process group, or :data:`LOCAL` (asked at every training forward of a quantizer: cheap)."""
    if not dist.is_available() or not dist.is_initialized():
        return LOCAL
    return _world_of(dist.group.WORLD)


@functools.lru_cache(maxsize=1)
def _world_of(group) -> World:
    return World(dist.get_rank(group), dist.get_world_size(group))


def launched_size() -> int:
    """The number of processes ``torchrun`` (or an equivalent launcher) started: ``WORLD_SIZE``, 1 without one."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"the environment's WORLD_SIZE is {text!r}, not a number of processes") from None


def timeout() -> datetime.timedelta:
    """The collectives' timeout: :data:`TIMEOUT_SECONDS` or the environment's :data:`TIMEOUT_VARIABLE`."""
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return datetime.timedelta(seconds=TIMEOUT_SECONDS)
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 10**7:
        raise ValueError(f"{TIMEOUT_VARIABLE}={text!r}: give the timeout in seconds, a positive number")
    return datetime.timedelta(seconds=seconds)


def init_from_environment(device: str) -> World:
    """
    Join the process group that ``torchrun``'s environment describes (gloo
    for ``device`` cpu, NCCL for cuda, with :func:`timeout`), and make this
    rank's GPU the current one; :data:`LOCAL` when the environment names no
    group of more than one process.

    :param str device: the run's ``--device``: ``cpu`` or ``cuda`` (each rank
        takes the GPU of its local rank; ``cuda:N`` is refused).
    :raises ValueError: for a device that cannot be shared out this way.
    """
    size = launched_size()
    if size <= 1 or dist.is_initialized():
        return current_world()
    try:
        named = torch.device(device)
    except (RuntimeError, TypeError):
        named = None
    if named is None or named.type not in ("cpu", "cuda") or (named.type == "cuda" and named.index is not None):
        raise ValueError(
            f"--device {device} under torchrun: give cpu, or cuda (each process takes the GPU of its local rank)"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if named.type == "cuda":
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} on this machine needs GPU {local_rank}, but it has {torch.cuda.device_count()}")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if named.type == "cuda" else "gloo", timeout=timeout())
    return current_world()


def shut_down() -> None:
    """
    Leave the process group, if this process joined one, after collecting
    the finished verb's garbage: objects in reference cycles can still hold
    the group (a ``DistributedDataParallel`` module's reducer does), and left
    to the interpreter's exit they are torn down in C++ static teardown.
    Without the collection, a rank that had finished its work ended with
    "terminate called without an active exception" (SIGABRT, no Python
    frame: at exit) in about 1 of 10 ``torchrun`` launches on a loaded
    machine; in none of 28 launches with it.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()

