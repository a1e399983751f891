"""
Loading image (and text) data sets into memory for VAE training.

Every image loader returns a :class:`Dataset` whose ``x`` is a float32
tensor of pixel values in ``[0, 1]`` (images channel-first) and whose ``y``
holds int64 labels; text data sets hold int64 token ids of a character
vocabulary instead (:mod:`pyprobvae.data.text`). Data sets are small enough to
live in memory, so training loops slice ``x`` with the index batches of
:func:`iterate_minibatches` instead of going through a per-item
``DataLoader``.

Sources:

* ``"digits"``: scikit-learn's bundled 8x8 digits (no download).
* ``"mnist"`` / ``"fashion-mnist"``: MNIST-format IDX files in a local directory.
* a ``.npz`` archive, or in-memory arrays via :func:`from_arrays`.
* ``"text"`` / ``"text:PATH"``: character sequences from a built-in corpus or
  a UTF-8 text file (:func:`pyprobvae.data.text.load_text`).
"""

import os
from typing import Optional

from .dataset import SPLITS, DataError, Dataset, binarize, check_split, fixed_split_indices, from_arrays, iterate_minibatches
from .images import load_digits, load_mnist, load_npz, read_idx, write_idx
from .text import DEFAULT_SEQ_LEN, load_text

DATASETS = ("digits", "mnist", "fashion-mnist")
_TEXT_PREFIX = "text:"


MIN_SPLIT_SIZE = 2
"""The fewest examples a split may have: statistics over a split (a covariance, a PCA) need two."""


def load_dataset(
    name: str, split: str = "train", data_dir: Optional[str] = None, seq_len: int = DEFAULT_SEQ_LEN
) -> Dataset:
    """
    Loads one split of a named data set or of an ``.npz`` file.

    :param str name: one of :data:`DATASETS`, a path ending in ``".npz"``,
        ``"text"`` (the built-in corpus of
        :func:`pyprobvae.data.text.default_corpus`) or ``"text:PATH"`` (a UTF-8
        text file); text is cut into sequences of ``seq_len`` characters, see
        :func:`pyprobvae.data.text.load_text`.
    :param str split: ``"train"`` or ``"test"``.
    :param str data_dir: directory holding the IDX files; required for
        ``"mnist"`` and ``"fashion-mnist"``, ignored otherwise.
    :param int seq_len: characters per sequence of text data, ignored otherwise.
    :rtype: Dataset
    """
    name = os.fspath(name)
    check_split(split)
    dataset = _load(name, split, data_dir, seq_len)
    if len(dataset) < MIN_SPLIT_SIZE:
        raise DataError(f"{name}: the {split} split has {len(dataset)} example(s); each split needs at least "
                        f"{MIN_SPLIT_SIZE} (a single array is split 80/20: give it at least 6 examples)")
    return dataset


def _load(name, split, data_dir, seq_len):
    if name == "digits":
        return load_digits(split)
    if name in ("mnist", "fashion-mnist"):
        return load_mnist(data_dir, split, name=name)
    if name == "text" or name.startswith(_TEXT_PREFIX):
        return load_text(None if name == "text" else name[len(_TEXT_PREFIX):], split, seq_len)
    if name.endswith(".npz"):
        return load_npz(name, split)
    choices = ", ".join(repr(d) for d in DATASETS)
    raise DataError(
        f"unknown dataset {name!r}: expected one of {choices}, "
        "a path ending in '.npz', 'text' (the built-in corpus) or "
        "'text:PATH' (a UTF-8 text file)"
    )


__all__ = [
    "DATASETS", "SPLITS", "DataError", "Dataset", "binarize", "check_split", "fixed_split_indices", "from_arrays",
    "iterate_minibatches", "load_dataset", "load_digits", "load_mnist", "load_npz", "load_text", "read_idx", "write_idx",
]
