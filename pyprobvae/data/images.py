"""
Image data sets: scikit-learn's bundled 8x8 digits, MNIST-format IDX files in
a local folder, and ``.npz`` archives. Every loader returns a
:class:`~pyprobvae.data.dataset.Dataset` whose ``x`` is a float32 tensor of
pixel values in ``[0, 1]`` (channel-first) and whose ``y`` holds int64 labels.
"""

import gzip
import os
import struct
import zipfile
import zlib
from typing import Dict, Optional

import numpy as np
import numpy.typing as npt
import torch

from ..resources import ResourceError, check_fits
from .dataset import SPLITS, DataError, Dataset, _from_arrays, _subset, check_split, fixed_split_indices

_IDX_CODE_TO_DTYPE: Dict[int, np.dtype] = {
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

    check_split(split)
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
    check_split(split)
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


def write_idx(path: str, array: npt.ArrayLike) -> None:
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
    check_split(split)
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"npz file {path!r} is a directory")
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




def _read_npz(path):
    """
    The arrays of an ``.npz`` archive, each member's header read and checked
    before its data: a member that is not an ``.npy`` array, holds Python
    objects (never unpickled), declares more data than it holds, or would
    not fit in memory is refused by name before anything is allocated.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path!r} is not an npz archive (a zip file of .npy arrays): {e}") from e
    arrays = {}
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                raise DataError(f"{path!r}: member {info.filename!r} is not an array (.npy)")
            key = info.filename[: -len(".npy")]
            try:
                with archive.open(info) as f:
                    shape, dtype, header_size = _npy_header(f)
                    what = f"{path!r} array {key!r} of shape {shape} ({dtype})"
                    if dtype.hasobject:
                        raise DataError(f"{what} holds Python objects, which pyprobvae does not load: save numbers")
                    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if nbytes > info.file_size - header_size:
                        raise DataError(f"{what} is truncated or damaged: it declares {nbytes} bytes of data "
                                        f"but holds {info.file_size - header_size}")
                check_fits(nbytes, f"loading {what}")
                with archive.open(info) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
            except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, struct.error) as e:
                if isinstance(e, (DataError, ResourceError)):
                    raise
                raise DataError(f"cannot read array {key!r} of {path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return arrays


def _npy_header(f):
    """``(shape, dtype, header size in bytes)`` of the ``.npy`` file open in ``f``, which is left at its data."""
    version = np.lib.format.read_magic(f)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise DataError(f"unsupported .npy format version {version[0]}.{version[1]}")
    shape, _, dtype = readers[version](f)
    return shape, dtype, f.tell()
