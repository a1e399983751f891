"""
Writing what the verbs compute, dispatching on the file's suffix: images as
PNG pictures, token sequences as text, anything as a ``.npy`` array, numbers
as JSON. Every file goes through the one atomic writer
(:func:`~pyprobvae.files.atomic_write`).
"""

import json
import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from .. import plots
from ..data.text import decode_text
from ..files import atomic_write, check_writable
from ..models import Exhibit

SUFFIXES = (".png", ".txt", ".npy")


def write_json(data: Any, path: str) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")


def write_array(array: torch.Tensor, path: str) -> str:
    """Write a tensor as a ``.npy`` array atomically."""
    with atomic_write(path) as f:
        np.save(f, array.detach().cpu().numpy())
    return path


def write_text(sequences: torch.Tensor, path: str, vocabulary: str) -> str:
    """Write token sequences as text, each under a ``--- sample i ---`` line."""
    texts = decode_text(sequences, vocabulary)
    with atomic_write(path, "w") as f:
        f.write("".join(f"--- sample {i} ---\n{text}\n" for i, text in enumerate(texts)))
    return path


def _suffix(path: str, allowed: Sequence[str] = SUFFIXES) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in allowed:
        endings = " or ".join(filter(None, (", ".join(allowed[:-1]), allowed[-1])))
        raise ValueError(f"cannot write {path!r}: the output must end in {endings}")
    return suffix


def _check_kind(suffix: str, path: str, vocabulary: Optional[str]) -> None:
    if suffix == ".png" and vocabulary is not None:
        raise ValueError(f"cannot write text as {path!r}: token data goes to .txt or .npy")
    if suffix == ".txt" and vocabulary is None:
        raise ValueError(f"cannot write {path!r}: .txt is for token data (text runs); images go to .png or .npy")


def check_output(path: str, allowed: Sequence[str] = SUFFIXES, vocabulary: Optional[str] = None) -> None:
    """
    Check, before computing what goes there, that ``path`` is an output the
    writers can write: an allowed suffix, the right kind for the data (text
    or images), a place where a file can be created
    (:func:`~pyprobvae.files.check_writable`).
    """
    suffix = _suffix(path, allowed)
    if suffix != ".npy":
        _check_kind(suffix, path, vocabulary)
    check_writable(path)


def write_examples(
    examples: torch.Tensor, path: str, nrow: Optional[int] = None, vocabulary: Optional[str] = None, title: Optional[str] = None,
) -> str:
    """
    Write a batch of examples in data space: images as a PNG grid
    (``.png``), token sequences as text (``.txt``, each sequence under a
    ``--- sample i ---`` line), or the array itself (``.npy``, shape
    ``(N, *data_shape)``; pixel values in ``[0, 1]``, token ids).

    :param torch.Tensor examples: shape ``(N, *data_shape)``.
    :param str path: destination ending in ``.png``, ``.txt`` or ``.npy``.
    :param nrow: images per row of a PNG grid.
    :param vocabulary: the characters of token data, needed for ``.txt``.
    :param title: the caption of a PNG grid.
    """
    suffix = _suffix(path)
    _check_kind(suffix, path, vocabulary)
    if suffix == ".png":
        return plots.save_image_grid(examples, path, nrow=nrow, title=title)
    if suffix == ".txt":
        assert vocabulary is not None, "_check_kind refuses .txt without a vocabulary"
        return write_text(examples, path, vocabulary)
    return write_array(examples, path)


def write_reconstructions(
    inputs: torch.Tensor, reconstructions: torch.Tensor, path: str, vocabulary: Optional[str] = None, title: Optional[str] = None,
    labels: Sequence[str] = ("input", "recon."),
) -> str:
    """
    Inputs and their reconstructions (or completions): a PNG with inputs
    above reconstructions (rows labelled ``labels``), text with each input
    followed by its reconstruction, or the reconstructions as an array.
    """
    suffix = _suffix(path)
    _check_kind(suffix, path, vocabulary)
    if suffix == ".png":
        return plots.save_reconstructions(inputs, reconstructions, path, title=title, labels=labels)
    if suffix == ".txt":
        assert vocabulary is not None, "_check_kind refuses .txt without a vocabulary"
        return write_text(torch.stack([inputs, reconstructions], 1).flatten(0, 1), path, vocabulary)
    return write_array(reconstructions, path)


def write_paths(strips: torch.Tensor, path: str, title: Optional[str] = None) -> str:
    """Rows of images (interpolations, traversals) as a PNG, or the array ``(rows, steps, *data_shape)``."""
    suffix = _suffix(path, (".png", ".npy"))
    if suffix == ".png":
        return plots.save_interpolation(strips, path, title=title)
    return write_array(strips, path)


def write_exhibits(exhibits: Iterable[Exhibit], directory: str, vocabulary: Optional[str] = None) -> None:
    """
    Write a model's :class:`~pyprobvae.models.Exhibit` s into a run folder:
    pictures for image data, ``.txt`` for token data.
    """
    suffix = ".txt" if vocabulary is not None else ".png"
    for exhibit in exhibits:
        path = os.path.join(directory, exhibit.name + (".png" if exhibit.kind == "latent" else suffix))
        if exhibit.kind == "latent":
            codes, labels = exhibit.data
            plots.save_latent_scatter(codes, labels, path, title=exhibit.title)
        elif exhibit.kind == "reconstructions":
            inputs, reconstructions = exhibit.data
            write_reconstructions(inputs, reconstructions, path, vocabulary, title=exhibit.title)
        elif exhibit.kind == "paths":
            (strips,) = exhibit.data
            write_paths(strips, path, title=exhibit.title)
        else:
            (examples,) = exhibit.data
            write_examples(examples, path, nrow=exhibit.nrow, vocabulary=vocabulary, title=exhibit.title)
