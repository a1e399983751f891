"""
Checkpoints: written atomically, read without executing pickled code, and
verified before use.

A checkpoint file holds ``{"format": FORMAT, "checksum": SHA-256, "payload":
state}``. The checksum is taken over a canonical walk of the payload (every
key, number and string, and every tensor's dtype, shape and bytes), so that
a changed byte anywhere in what is loaded, or a payload edited without the
writer, is refused instead of silently used. The payload's structure is then
checked against the reader's schema (:func:`check_schema`), and a model's
weights for finiteness (:func:`check_weights`).
"""

import hashlib
import os
import pickle
from typing import Any, Mapping, Optional, Union

import torch

from ..files import atomic_write

FORMAT = "pyprobvae-checkpoint-3"
"""The format tag: version 3 adds the payload's checksum to version 2, which stored the model's config and a VQ-VAE's prior in one file."""

OLD_FORMATS = {
    "pyprobvae-checkpoint-1": "pyprobvae 0.1",
    "pyprobvae-checkpoint-2": "a development version of pyprobvae 0.2 (before checksums)",
}
"""Format tags of earlier versions, which are refused with a message naming the version."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, damaged, or not a pyprobvae checkpoint."""


def payload_checksum(payload: Any) -> str:
    """
    The SHA-256 of a canonical walk of ``payload``: dict keys in sorted
    order with their values, list and tuple items in order, numbers, strings
    and None by type and ``repr``, tensors by dtype, shape and bytes. Equal
    payloads give equal checksums whatever device their tensors are on.

    :raises CheckpointError: for a value of another type (a payload holds
        only what ``torch.load(weights_only=True)`` reads back).
    """
    digest = hashlib.sha256()
    _feed(digest, payload)
    return digest.hexdigest()


def _feed(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}:".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{type(value).__name__} {value!r};".encode())
    else:
        raise CheckpointError(f"a checkpoint cannot hold a {type(value).__name__}")


def save_checkpoint(state: dict, path: str) -> None:
    """
    Write ``state`` with its checksum to ``path`` so that a crash at any
    moment leaves either the previous file or the new one, never a
    half-written file (:func:`~pyprobvae.files.atomic_write`).

    :param dict state: tensors, numbers, strings, None, lists, tuples and
        dicts only (what ``torch.load(weights_only=True)`` accepts back).
    :param str path: destination file.
    """
    checksum = payload_checksum(state)
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, "checksum": checksum, "payload": state}, f)


def load_checkpoint(
    path: str, map_location: Optional[Union[torch.device, str]] = None, schema: Optional[Mapping[str, type]] = None
) -> dict:
    """
    Read a checkpoint written by :func:`save_checkpoint` with
    ``torch.load(weights_only=True)``, which refuses to run pickled code,
    verify its checksum and, with ``schema``, its structure.

    :param str path: the checkpoint file.
    :param map_location: device to load tensors onto.
    :param schema: ``{key: type}`` the payload must have (:func:`check_schema`).
    :return: the payload, the ``state`` that was saved.
    :raises CheckpointError: when the file is missing, unreadable, damaged,
        written by another version, or not a pyprobvae checkpoint.
    """
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        wrapper = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load raises many types for damaged files; each means the same here
        reason = str(e).splitlines()[0] if str(e) else ""
        if isinstance(e, pickle.UnpicklingError):  # torch's message advises an unsafe load: never repeat that
            reason = "it holds data that a weights-only load refuses"
        raise CheckpointError(f"checkpoint {path} is damaged or not a pyprobvae checkpoint ({type(e).__name__}: {reason})") from e
    version = wrapper.get("format") if isinstance(wrapper, dict) else None
    version = version if isinstance(version, str) else None
    if version in OLD_FORMATS:
        raise CheckpointError(f"{path} was written by {OLD_FORMATS[version]}, whose checkpoints this version does not load; train the run again")
    if isinstance(version, str) and version.startswith("pyprobvae-checkpoint-") and version != FORMAT:
        raise CheckpointError(f"{path} has format {version!r}, not {FORMAT!r}: written by another version of pyprobvae")
    if version != FORMAT:
        raise CheckpointError(f"{path} is not a pyprobvae checkpoint (expected format {FORMAT!r})")
    if not isinstance(wrapper.get("payload"), dict) or not isinstance(wrapper.get("checksum"), str):
        raise CheckpointError(f"{path} is damaged: it lacks its payload or its checksum")
    payload = wrapper["payload"]
    if payload_checksum(payload) != wrapper["checksum"]:
        raise CheckpointError(f"{path} is damaged: its contents do not match their checksum (a changed byte, or edited outside pyprobvae)")
    if schema is not None:
        check_schema(payload, schema, path)
    return payload


def check_schema(state: dict, schema: Mapping[str, type], path: str) -> None:
    """
    :raises CheckpointError: naming ``path`` and the first key of ``schema``
        that ``state`` lacks or holds with another type.
    """
    for key, kind in schema.items():
        if key not in state:
            raise CheckpointError(f"{path} has no {key!r} (written by an older or a damaged run)")
        if not isinstance(state[key], kind) or (kind is int and isinstance(state[key], bool)):
            raise CheckpointError(f"{path}: {key!r} is a {type(state[key]).__name__}, not a {kind.__name__}")


def check_weights(weights: dict, path: str) -> None:
    """
    :raises CheckpointError: unless ``weights`` is a state dict (names to
        tensors) whose floating-point tensors are all finite.
    """
    for name, tensor in weights.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: the weights are not a state dict (entry {name!r} is a {type(tensor).__name__})")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: weight {name!r} holds NaN or infinite values")
