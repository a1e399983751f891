"""
What this machine can hold: the devices a run may use and the memory it may
ask for.

Sizes come from users (``--hidden``, ``--n``, a data file's header), and an
allocation larger than the machine is not a clean error: on Linux it may
succeed and then have the process killed by the kernel's out-of-memory killer
without a word. So the boundary checks sizes *before* allocating:
:func:`check_fits` compares a byte count with the memory available on the
device, and :func:`resolve_device` proves a device usable with a tiny
allocation and a round trip to the host.
"""

import contextlib
import math
import os
from typing import Iterator, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree


class ResourceError(ValueError):
    """What was asked for does not fit this machine, or names a device it cannot use."""


def resolve_device(name: str) -> torch.device:
    """
    The :class:`torch.device` named ``name``, after a tiny computation on it
    and a copy back to the host have worked (torch names devices, such as
    ``meta``, ``mps`` or ``xla``, that this build or machine cannot use).

    :param str name: a torch device name: ``cpu``, ``cuda``, ``cuda:1``, ...
    :raises ResourceError: naming the device and why it cannot be used.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ResourceError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from e
    if device.type == "cpu" and device.index not in (None, 0):
        raise ResourceError(f"device {name!r}: the CPU has no index {device.index}; use cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ResourceError(f"device {name!r} requested, but CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ResourceError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    try:
        (torch.ones(2, device=device) + 1).sum().cpu()
    except Exception as e:  # whatever the backend raises, the device is unusable
        reason = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__  # backends' messages run on
        raise ResourceError(f"device {name!r} cannot be used here ({reason})") from e
    return torch.device("cpu") if device.type == "cpu" else device


def available_memory(device: torch.device) -> Optional[int]:
    """
    Bytes that a new allocation on ``device`` can use: free GPU memory for
    CUDA (:func:`torch.cuda.mem_get_info`); for the CPU, ``MemAvailable`` of
    ``/proc/meminfo`` (Linux) or the free physical pages; None where unknown.
    """
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    available = _meminfo_available()
    return available if available is not None else _free_physical_memory()


def _meminfo_available() -> Optional[int]:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux: free memory plus what the kernel can reclaim), or None."""
    try:
        with open("/proc/meminfo") as f:
            lines = [line for line in f if line.startswith("MemAvailable:")]
        return int(lines[0].split()[1]) * 1024 if lines else None
    except (OSError, ValueError, IndexError):
        return None


def _free_physical_memory() -> Optional[int]:
    """The free physical pages times the page size (POSIX), or None."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(nbytes: float) -> str:
    """``1.5 GB`` and the like (powers of 1000)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    power = min(len(units) - 1, max(0, int(math.log10(max(nbytes, 1)) // 3)))
    return f"{nbytes / 1000 ** power:.3g} {units[power]}"


def check_fits(nbytes: float, what: str, device: torch.device = torch.device("cpu")) -> None:
    """
    Refuse an allocation of ``nbytes`` that cannot fit: more than the memory
    available on ``device`` (:func:`available_memory`), or more than any
    machine has (an overflowing count, for one).

    :param nbytes: the estimated size.
    :param str what: what needs it, naming the options that set it, e.g.
        ``"sample --n 1000000000"``.
    :raises ResourceError: naming ``what``, its size and what is available.
    """
    if not math.isfinite(nbytes) or nbytes > 2**62:
        raise ResourceError(f"{what} is too large for any machine (about {format_bytes(nbytes)})")
    free = available_memory(device)
    if free is not None and nbytes > free:
        raise ResourceError(f"{what} needs about {format_bytes(nbytes)}, more than the {format_bytes(free)} available on {device}")


class _AllocationLimit(TorchFunctionMode):
    """Counts the bytes of every new tensor storage and raises once they pass a limit (see :func:`limit_allocations`)."""

    def __init__(self, limit: float, what: str, device: torch.device):
        super().__init__()
        self.limit, self.what, self.device, self.total = limit, what, device, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in pytree.tree_leaves(result):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in inputs:
                self.total += tensor.untyped_storage().nbytes()
        if self.total > self.limit:
            raise ResourceError(f"{self.what} needs more than {format_bytes(self.limit)}, the share of the memory available on "
                                f"{self.device} that it may take")
        return result


@contextlib.contextmanager
def limit_allocations(share: float, what: str, device: torch.device = torch.device("cpu")) -> Iterator[None]:
    """
    Within the block, refuse (:class:`ResourceError`, naming ``what``) to
    allocate more than ``share`` of the memory available on ``device`` in
    all, counting the new tensors that torch's Python functions return.
    They are counted as they are created, before their pages are written: a
    large allocation succeeds lazily on Linux, and only writing it (a weight
    initialization) would bring the out-of-memory killer. For code that runs
    once, such as building a model: each torch call in the block pays a
    Python call.
    """
    free = available_memory(device)
    if free is None:
        yield
        return
    with _AllocationLimit(share * free, what, device):
        yield
