"""
Loading image (and text) data sets into memory for VAE training.

Every image loader returns a :class:`Dataset` whose ``x`` is a float32
tensor of pixel values in ``[0, 1]`` (images channel-first) and whose ``y``
holds int64 labels; text data sets hold int64 token ids of a character
vocabulary instead (:mod:`pyprobvae.text`). Data sets are small enough to
live in memory, so training loops slice ``x`` with the index batches of
:func:`iterate_minibatches` instead of going through a per-item
``DataLoader``.

Sources:

* ``"digits"``: scikit-learn's bundled 8x8 digits (no download).
* ``"mnist"`` / ``"fashion-mnist"``: MNIST-format IDX files in a local directory.
* a ``.npz`` archive, or in-memory arrays via :func:`from_arrays`.
* ``"text"`` / ``"text:PATH"``: character sequences from a built-in corpus or
  a UTF-8 text file (:func:`pyprobvae.text.load_text`).
"""

import gzip
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, replace
from typing import Iterator, Optional, Tuple

import numpy as np
import torch

DATASETS = ("digits", "mnist", "fashion-mnist")
SPLITS = ("train", "test")
_TEXT_PREFIX = "text:"

# Seed of the permutation that splits data sets without a predefined split.
SPLIT_SEED = 0

_IDX_CODE_TO_DTYPE = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_NUM_CLASSES = 10


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

    def __post_init__(self):
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

    def to(self, device) -> "Dataset":
        """
        Returns a copy with ``x`` and ``y`` moved to ``device``.

        :param device: a :class:`torch.device` or device string.
        :rtype: Dataset
        """
        y = None if self.y is None else self.y.to(device)
        return replace(self, x=self.x.to(device), y=y)


def load_dataset(
    name: str, split: str = "train", data_dir: Optional[str] = None
) -> Dataset:
    """
    Loads one split of a named data set or of an ``.npz`` file.

    :param str name: one of :data:`DATASETS`, a path ending in ``".npz"``,
        ``"text"`` (the built-in corpus of
        :func:`pyprobvae.text.default_corpus`) or ``"text:PATH"`` (a UTF-8
        text file); text is cut into sequences of 64 characters, see
        :func:`pyprobvae.text.load_text`.
    :param str split: ``"train"`` or ``"test"``.
    :param str data_dir: directory holding the IDX files; required for
        ``"mnist"`` and ``"fashion-mnist"``, ignored otherwise.
    :rtype: Dataset
    """
    name = os.fspath(name)
    _check_split(split)
    if name == "digits":
        return load_digits(split)
    if name in ("mnist", "fashion-mnist"):
        return load_mnist(data_dir, split, name=name)
    if name == "text" or name.startswith(_TEXT_PREFIX):
        from .text import load_text  # imported here: pyprobvae.text builds on this module

        return load_text(None if name == "text" else name[len(_TEXT_PREFIX):], split)
    if name.endswith(".npz"):
        return load_npz(name, split)
    choices = ", ".join(repr(d) for d in DATASETS)
    raise DataError(
        f"unknown dataset {name!r}: expected one of {choices}, "
        "a path ending in '.npz', 'text' (the built-in corpus) or "
        "'text:PATH' (a UTF-8 text file)"
    )


def load_digits(split: str) -> Dataset:
    """
    Loads scikit-learn's bundled 8x8 handwritten digits (1797 images, no
    download). Raw intensities ``0..16`` are divided by 16.

    The split is fixed: see :func:`fixed_split_indices` (1437 train images,
    360 test images, the same on every call and independent of global RNGs).

    :param str split: ``"train"`` or ``"test"``.
    :rtype: Dataset
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    _check_split(split)
    digits = sklearn_load_digits()
    idx = fixed_split_indices(len(digits.target), split)
    x = torch.from_numpy((digits.images[idx] / 16.0).astype(np.float32))
    y = torch.from_numpy(digits.target[idx].astype(np.int64))
    return Dataset(
        name="digits",
        x=x.unsqueeze(1),
        y=y,
        data_shape=(1, 8, 8),
        num_levels=17,
        num_classes=10,
    )


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
    _check_split(split)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    num_train = (train_percent * n) // 100
    part = perm[:num_train] if split == "train" else perm[num_train:]
    return np.sort(part)


def load_mnist(data_dir: Optional[str], split: str, name: str = "mnist") -> Dataset:
    """
    Loads MNIST-format IDX files (MNIST, Fashion-MNIST, ...) from a local
    directory. The train split reads ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte``, the test split ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``; each may instead be gzipped with a ``.gz``
    suffix. Raw ubyte intensities are divided by 255.

    :param str data_dir: directory holding the IDX files.
    :param str split: ``"train"`` or ``"test"``.
    :param str name: data set name, used for :attr:`Dataset.name` and in
        error messages.
    :rtype: Dataset
    """
    _check_split(split)
    if data_dir is None:
        raise DataError(
            f"{name} needs a data directory: --data-dir (data_dir) is required "
            "and must point to the directory holding its IDX files"
        )
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir!r} for {name} does not exist")
    images_name, labels_name = _MNIST_FILES[split]
    images, images_path = _read_idx(os.path.join(data_dir, images_name))
    labels, labels_path = _read_idx(os.path.join(data_dir, labels_name))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path!r} holds a {images.dtype} array of shape "
            f"{images.shape}; expected ubyte images of shape (count, rows, cols)"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{labels_path!r} holds a {labels.dtype} array of shape "
            f"{labels.shape}; expected integer labels of shape (count,)"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path!r} holds {len(images)} images but {labels_path!r} "
            f"holds {len(labels)} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= _MNIST_NUM_CLASSES):
        raise DataError(
            f"{labels_path!r} holds labels in [{labels.min()}, {labels.max()}]; "
            f"expected labels in [0, {_MNIST_NUM_CLASSES - 1}]"
        )
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0))
    return Dataset(
        name=name,
        x=x.unsqueeze(1),
        y=torch.from_numpy(labels.astype(np.int64)),
        data_shape=(1,) + images.shape[1:],
        num_levels=256,
        num_classes=_MNIST_NUM_CLASSES,
    )


def read_idx(path: str) -> np.ndarray:
    """
    Reads an IDX file (the MNIST file format). If ``path`` does not exist,
    ``path + ".gz"`` is tried. Files are decompressed when their name ends in
    ``.gz`` or their content starts with the gzip magic bytes.

    Format: two zero bytes, a type code byte (``0x08`` ubyte, ``0x09`` int8,
    ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), a byte
    giving the number of dimensions, one big-endian uint32 per dimension, then
    the big-endian data in C order.

    :param str path: path of the file.
    :returns: the array, in native byte order.
    :rtype: numpy.ndarray
    """
    return _read_idx(path)[0]


def _read_idx(path):
    path = _find_idx_file(os.fspath(path))
    with open(path, "rb") as f:
        content = f.read()
    if path.endswith(".gz") or content[:2] == _GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path!r} is not a valid gzip file: {e}") from e
    return _parse_idx(content, path), path


def _find_idx_file(path):
    candidates = [path] if path.endswith(".gz") else [path, path + ".gz"]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    looked_for = " and ".join(repr(c) for c in candidates)
    raise DataError(f"IDX file not found: looked for {looked_for}")


def _parse_idx(content, path):
    if len(content) < 4:
        raise DataError(
            f"{path!r} has {len(content)} bytes, shorter than the 4-byte IDX "
            "magic number"
        )
    zeros, code, ndim = struct.unpack(">HBB", content[:4])
    if zeros != 0:
        (magic,) = struct.unpack(">I", content[:4])
        raise DataError(
            f"{path!r} is not an IDX file: magic number is 0x{magic:08X}; "
            "expected 0x0000 followed by a type code byte and a dimension "
            "count byte (e.g. 0x00000803 for images, 0x00000801 for labels)"
        )
    if code not in _IDX_CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_CODE_TO_DTYPE)
        raise DataError(
            f"{path!r} has unknown IDX type code 0x{code:02X}; expected one of {known}"
        )
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(
            f"{path!r} has {len(content)} bytes, shorter than its "
            f"{header_size}-byte header ({ndim} dimensions)"
        )
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    dtype = _IDX_CODE_TO_DTYPE[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(content) - header_size
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{path!r} is {problem}: shape {shape} of {dtype.name} needs "
            f"{expected} data bytes but the file has {actual}"
        )
    data = np.frombuffer(content, dtype=dtype, offset=header_size)
    return data.astype(dtype.newbyteorder("=")).reshape(shape)


def write_idx(path: str, array) -> None:
    """
    Writes an array as an IDX file, the inverse of :func:`read_idx`. The file
    is gzipped when ``path`` ends in ``".gz"``.

    :param str path: destination path.
    :param array: array-like of dtype uint8, int8, int16, int32, float32 or
        float64.
    """
    path = os.fspath(path)
    array = np.asarray(array)
    code = _idx_code(array.dtype, path)
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    content = header + np.ascontiguousarray(array, dtype=_IDX_CODE_TO_DTYPE[code]).tobytes()
    if path.endswith(".gz"):
        content = gzip.compress(content, mtime=0)
    with open(path, "wb") as f:
        f.write(content)


def _idx_code(dtype, path):
    for code, idx_dtype in _IDX_CODE_TO_DTYPE.items():
        if dtype.kind == idx_dtype.kind and dtype.itemsize == idx_dtype.itemsize:
            return code
    supported = ", ".join(d.name for d in _IDX_CODE_TO_DTYPE.values())
    raise DataError(
        f"cannot write {dtype} array to {path!r}: IDX supports {supported}"
    )


def from_arrays(x, y=None, name: str = "arrays") -> Dataset:
    """
    Builds a :class:`Dataset` from in-memory arrays. The result lives on the
    CPU; use :meth:`Dataset.to` to move it.

    Shapes: ``x`` of shape ``(N, H, W)`` becomes ``(N, 1, H, W)``; ``(N, C, H,
    W)`` (or more dimensions) and ``(N, D)`` are kept.

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
    if x.ndim < 2 or len(x) == 0:
        raise DataError(
            f"{x_what} has shape {x.shape}; expected at least one example and "
            "shape (N, D), (N, H, W) or (N, C, H, W)"
        )
    values, num_levels = _scale(x, x_what)
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
    return torch.from_numpy(y.astype(np.int64)), int(y.max()) + 1


def load_npz(path: str, split: str) -> Dataset:
    """
    Loads one split from an ``.npz`` archive holding either

    * ``"x_train"`` and/or ``"x_test"``, with optional labels ``"y_train"`` /
      ``"y_test"`` (labels for every split present or for none), or
    * a single ``"x"``, with optional ``"y"``, split by
      :func:`fixed_split_indices` (the last 20% of a fixed permutation is the
      test split).

    Arrays are converted as in :func:`from_arrays`, with the scaling,
    ``num_levels`` and ``num_classes`` computed over all splits in the file,
    so the train and test splits always agree on them.

    :param str path: path of the ``.npz`` file.
    :param str split: ``"train"`` or ``"test"``.
    :rtype: Dataset
    """
    _check_split(split)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"npz file {path!r} does not exist")
    arrays = _read_npz(path)
    x_keys = [f"x_{s}" for s in SPLITS if f"x_{s}" in arrays]
    if x_keys:
        x_key = f"x_{split}"
        if x_key not in arrays:
            raise DataError(
                f"{path!r} has no key {x_key!r} for the {split} split: found "
                f"{sorted(arrays)}"
            )
        full = _npz_dataset(arrays, path, x_keys, ["y" + k[1:] for k in x_keys])
        sizes = [len(arrays[k]) for k in x_keys]
        start = sum(sizes[: x_keys.index(x_key)])
        return _subset(full, slice(start, start + len(arrays[x_key])))
    if "x" in arrays:
        full = _npz_dataset(arrays, path, ["x"], ["y"])
        return _subset(full, torch.from_numpy(fixed_split_indices(len(full), split)))
    raise DataError(
        f"{path!r} has no usable keys: found {sorted(arrays)}; expected "
        "'x_train'/'x_test' (with optional 'y_train'/'y_test') or 'x' "
        "(with optional 'y')"
    )


def _npz_dataset(arrays, path, x_keys, y_keys):
    labeled = [k for k in y_keys if k in arrays]
    if labeled and len(labeled) != len(y_keys):
        missing = [k for k in y_keys if k not in arrays]
        raise DataError(
            f"{path!r} has labels {labeled} but not {missing}; give labels for "
            "every split or for none"
        )
    for x_key, y_key in zip(x_keys, labeled):
        x_shape, y_shape = np.shape(arrays[x_key]), np.shape(arrays[y_key])
        if x_shape[:1] != y_shape[:1]:
            raise DataError(
                f"{path!r}: key {x_key!r} has shape {x_shape} but key {y_key!r} "
                f"has shape {y_shape}; expected one label per example"
            )
    x_what = f"{path!r} key(s) {x_keys}"
    dtypes = sorted({str(arrays[k].dtype) for k in x_keys})
    if len(dtypes) > 1:
        raise DataError(f"{x_what} have different dtypes {dtypes}; expected one dtype")
    try:
        x = np.concatenate([arrays[k] for k in x_keys])
    except ValueError as e:
        raise DataError(f"{x_what} cannot be combined: {e}") from e
    y = np.concatenate([arrays[k] for k in labeled]) if labeled else None
    return _from_arrays(x, y, path, x_what, f"{path!r} key(s) {labeled}")


def _subset(dataset, idx):
    y = None if dataset.y is None else dataset.y[idx]
    return replace(dataset, x=dataset.x[idx], y=y)


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read npz file {path!r}: {e}") from e


def binarize(
    x: torch.Tensor, method: str = "threshold", generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """
    Binarizes data in ``[0, 1]`` for a Bernoulli likelihood.

    * ``"threshold"``: ``1`` where ``x > 0.5``, else ``0``.
    * ``"dynamic"``: samples ``Bernoulli(x)`` afresh on every call, as in
      [1]; call it once per minibatch so each epoch sees new binarizations.

    **References**

    [1] `On the Quantitative Analysis of Deep Belief Networks`,
        Ruslan Salakhutdinov, Iain Murray (2008)

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
    device=None,
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


def _check_split(split):
    if split not in SPLITS:
        choices = " or ".join(repr(s) for s in SPLITS)
        raise DataError(f"unknown split {split!r}: expected {choices}")
