"""
The in-memory :class:`Dataset`, its splits, binarization and minibatches.

Data sets are small enough to live in memory, so training loops slice ``x``
with the index batches of :func:`iterate_minibatches` instead of going
through a per-item ``DataLoader``.
"""

from dataclasses import dataclass, replace
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch

SPLITS = ("train", "test")

# Seed of the permutation that splits data sets without a predefined split.
SPLIT_SEED = 0

MAX_LEVELS = 2**16
"""Integer pixel data holds intensities below this (a categorical likelihood has one output per level)."""

MAX_CLASSES = 100_000
"""Labels are class numbers below this (a model holds one row of weights per class)."""

IMAGE_CHANNELS = (1, 3)
"""The channels of an image: grey or colour (RGB)."""


class DataError(ValueError):
    """
    Raised when a data set is missing, malformed or requested with invalid
    arguments. The message names the offending file or array.
    """


@dataclass(frozen=True, eq=False)
class Dataset:
    """
    One split held in memory.

    :param str name: ``"digits"``, ``"mnist"``, ``"fashion-mnist"``, the path
        of an ``.npz`` file, the name given to :func:`from_arrays`, or
        ``"text"`` or the path of a text file.
    :param torch.Tensor x: float32 data of shape ``(N,) + data_shape``; pixel
        data is scaled to ``[0, 1]``. With a ``vocabulary``, int64 token ids
        of shape ``(N, seq_len)`` instead.
    :param y: int64 labels of shape ``(N,)``, or None.
    :type y: torch.Tensor or None
    :param tuple data_shape: shape of one example; images are channel-first,
        e.g. ``(1, 28, 28)`` for MNIST.
    :param num_levels: number of intensity levels in the raw data (17 for
        digits, 256 for MNIST), or None for real-valued data; with a
        ``vocabulary``, its size.
    :type num_levels: int or None
    :param num_classes: number of label classes, or None without labels.
    :type num_classes: int or None
    :param vocabulary: for token data, the characters: token id ``i`` is
        ``vocabulary[i]``; None for pixel data.
    :type vocabulary: str or None
    """

    name: str
    x: torch.Tensor
    y: Optional[torch.Tensor]
    data_shape: Tuple[int, ...]
    num_levels: Optional[int]
    num_classes: Optional[int]
    vocabulary: Optional[str] = None

    def __post_init__(self) -> None:
        if tuple(self.x.shape[1:]) != tuple(self.data_shape):
            raise DataError(
                f"{self.name}: x has shape {tuple(self.x.shape)}, which does not "
                f"match data_shape {tuple(self.data_shape)}"
            )
        if self.y is not None and tuple(self.y.shape) != (len(self),):
            raise DataError(
                f"{self.name}: y has shape {tuple(self.y.shape)}; expected "
                f"({len(self)},) to match x"
            )
        if self.vocabulary is not None:
            self._check_tokens()

    def _check_tokens(self):
        size = len(self.vocabulary)
        if self.x.dtype != torch.int64 or self.num_levels != size:
            raise DataError(
                f"{self.name}: token data needs int64 ids and num_levels equal to the "
                f"vocabulary size {size}; got dtype {self.x.dtype} and num_levels {self.num_levels}"
            )
        outside = int(((self.x < 0) | (self.x >= size)).sum())
        if outside:
            raise DataError(f"{self.name}: {outside} token ids lie outside [0, {size - 1}]")

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: Union[torch.device, str]) -> "Dataset":
        """
        Returns a copy with ``x`` and ``y`` moved to ``device``.

        :param device: a :class:`torch.device` or device string.
        :rtype: Dataset
        """
        y = None if self.y is None else self.y.to(device)
        return replace(self, x=self.x.to(device), y=y)



def fixed_split_indices(n: int, split: str, train_percent: int = 80) -> np.ndarray:
    """
    Indices of one split of ``n`` examples that come without a predefined
    split: a ``numpy.random.default_rng(SPLIT_SEED)`` permutation of
    ``range(n)`` whose first ``floor(train_percent / 100 * n)`` entries
    (``floor(0.8 * n)`` by default) form the train split and whose remaining
    entries (the last 20% by default) form the test split. Each split's indices are
    returned sorted, so examples keep their stored order.

    :param int n: number of examples.
    :param str split: ``"train"`` or ``"test"``.
    :param int train_percent: share of the train split, in percent (text
        data sets use 90).
    :rtype: numpy.ndarray
    """
    check_split(split)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    num_train = (train_percent * n) // 100
    part = perm[:num_train] if split == "train" else perm[num_train:]
    return np.sort(part)



def from_arrays(
    x: Union[np.ndarray, torch.Tensor], y: Optional[Union[np.ndarray, torch.Tensor]] = None, name: str = "arrays"
) -> Dataset:
    """
    Builds a :class:`Dataset` from in-memory arrays. The result lives on the
    CPU; use :meth:`Dataset.to` to move it.

    Shapes: ``x`` of shape ``(N, H, W)`` (grey images) becomes ``(N, 1, H,
    W)``; four dimensions are images with :data:`IMAGE_CHANNELS` channels
    (1 or 3), channel-first ``(N, C, H, W)``, kept, or channel-last ``(N, H,
    W, C)``, transposed to ``(N, C, H, W)`` (axis 1 is taken as the channels
    when both it and the last axis could be); ``(N, D)`` and arrays of five
    or more dimensions are kept.

    Scaling of ``x`` by dtype:

    * uint8: divided by 255, ``num_levels = 256``;
    * other integers: must be non-negative; divided by the maximum value
      (kept as is when all values are 0), ``num_levels = max + 1``;
    * bool: mapped to ``{0., 1.}``, ``num_levels = 2``;
    * floating point: kept as is, ``num_levels = None``.

    :param x: numpy array or tensor of shape ``(N, ...)``; must not contain
        NaN or Inf.
    :param y: optional non-negative integer labels of shape ``(N,)``;
        ``num_classes`` is ``max(y) + 1``.
    :param str name: name of the data set, used in error messages.
    :rtype: Dataset
    """
    return _from_arrays(x, y, name, x_what=f"{name}: x", y_what=f"{name}: y")


def _from_arrays(x, y, name, x_what, y_what):
    x = _as_numpy(x)
    if x.ndim < 2 or len(x) == 0 or 0 in x.shape[1:]:
        raise DataError(
            f"{x_what} has shape {x.shape}; expected at least one example with at least one "
            "feature, of shape (N, D), (N, H, W) or (N, C, H, W)"
        )
    values, num_levels = _scale(_channels_first(x, x_what), x_what)
    if x.ndim == 3:
        values = values[:, None]
    labels, num_classes = (None, None) if y is None else _labels(y, len(x), y_what)
    return Dataset(
        name=name,
        x=torch.from_numpy(np.ascontiguousarray(values)),
        y=labels,
        data_shape=values.shape[1:],
        num_levels=num_levels,
        num_classes=num_classes,
    )


def _channels_first(x, what):
    """Images of four dimensions as ``(N, C, H, W)`` (see :func:`from_arrays`); other arrays as they are."""
    if x.ndim != 4 or x.shape[1] in IMAGE_CHANNELS:
        return x
    if x.shape[-1] in IMAGE_CHANNELS:
        return x.transpose(0, 3, 1, 2)
    raise DataError(
        f"{what} has shape {x.shape}, whose channel axis is neither axis 1 nor the last: four dimensions are images "
        f"(N, C, H, W) or (N, H, W, C) with C = 1 (grey) or 3 (colour); also accepted are (N, H, W) grey images "
        "and (N, D) vectors"
    )


def _as_numpy(a):
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        if a.dtype == torch.bfloat16:
            a = a.float()
        return a.numpy()
    return np.asarray(a)


def _scale(x, what):
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0), 256
    if x.dtype == np.bool_:
        return x.astype(np.float32), 2
    if x.dtype.kind in "iu":
        if x.min() < 0:
            raise DataError(
                f"{what} has negative values (min {x.min()}); integer data "
                "must be non-negative intensities"
            )
        max_value = int(x.max())
        if max_value >= MAX_LEVELS:
            raise DataError(f"{what} has integer values up to {max_value}; integer intensities must be below {MAX_LEVELS} "
                            "(store other data as floating point)")
        return x.astype(np.float32) / np.float32(max(max_value, 1)), max_value + 1
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
        num_bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if num_bad:
            raise DataError(
                f"{what} contains {num_bad} NaN or infinite value(s) "
                "(after conversion to float32)"
            )
        return x, None
    raise DataError(
        f"{what} has unsupported dtype {x.dtype}; expected unsigned/signed "
        "integers, bool or floating point"
    )


def _labels(y, n, what):
    y = _as_numpy(y)
    if y.dtype.kind not in "iu":
        raise DataError(f"{what} has dtype {y.dtype}; labels must be integers")
    if y.shape != (n,):
        raise DataError(
            f"{what} has shape {y.shape}; expected ({n},), one label per example of x"
        )
    if y.min() < 0:
        raise DataError(f"{what} has negative labels (min {y.min()}); labels must be >= 0")
    if y.max() >= MAX_CLASSES:
        raise DataError(f"{what} has labels up to {y.max()}; labels must be class numbers below {MAX_CLASSES}")
    return torch.from_numpy(y.astype(np.int64)), int(y.max()) + 1




def _subset(dataset, idx):
    y = None if dataset.y is None else dataset.y[idx]
    return replace(dataset, x=dataset.x[idx], y=y)



def binarize(
    x: torch.Tensor, method: str = "threshold", generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    r"""
    Binarizes data in ``[0, 1]`` for a Bernoulli likelihood.

    * ``"threshold"``: ``1`` where ``x > 0.5``, else ``0``.
    * ``"dynamic"``: samples :math:`\mathrm{Bernoulli}(x)` afresh on every
      call, as in Salakhutdinov & Murray 2008; call it once per minibatch so
      each epoch sees new binarizations.

    **References**

    - Salakhutdinov & Murray 2008, "On the Quantitative Analysis of Deep
      Belief Networks".

    :param torch.Tensor x: values in ``[0, 1]``, on any device.
    :param str method: ``"threshold"`` or ``"dynamic"``.
    :param torch.Generator generator: optional random generator for
        ``"dynamic"``; must be on the same device as ``x``.
    :returns: a tensor of zeros and ones with the dtype and device of ``x``.
    :rtype: torch.Tensor
    """
    if method == "threshold":
        return (x > 0.5).to(x.dtype)
    if method == "dynamic":
        return torch.bernoulli(x, generator=generator)
    raise DataError(
        f"unknown binarization method {method!r}: expected 'threshold' or 'dynamic'"
    )


def iterate_minibatches(
    n: int,
    batch_size: int,
    shuffle: bool,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
) -> Iterator[torch.Tensor]:
    """
    Yields int64 index tensors that cover ``range(n)`` exactly once, in batches
    of ``batch_size`` (the last batch may be smaller). Use them to slice
    in-memory tensors, e.g. ``x[idx]``. Arguments are checked immediately, not
    on the first iteration.

    :param int n: number of examples.
    :param int batch_size: number of indices per batch, at least 1.
    :param bool shuffle: whether to visit the indices in the order of
        ``torch.randperm(n, generator=generator)`` instead of ``0..n-1``.
    :param torch.Generator generator: optional CPU random generator for the
        permutation, for reproducible shuffling.
    :param device: device of the yielded index tensors; defaults to the CPU.
    :rtype: iterator of torch.LongTensor
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    if n < 0:
        raise DataError(f"number of examples n must be non-negative, got {n}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device)
    return (order[start : start + batch_size] for start in range(0, n, batch_size))




def check_split(split: str) -> None:
    """:raises DataError: unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        choices = " or ".join(repr(s) for s in SPLITS)
        raise DataError(f"unknown split {split!r}: expected {choices}")
