"""
Checkpoints: written atomically, read without executing pickled code.
"""

import os

import torch

from ..files import atomic_write


OLD_FORMATS = {"pyprobvae-checkpoint-1": "pyprobvae 0.1"}
"""Format tags of earlier versions, which are refused with a message naming the version."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not a pyprobvae checkpoint."""


FORMAT = "pyprobvae-checkpoint-2"
"""The format tag: version 2 stores the model's config (``model_config``) and, for a VQ-VAE, its prior over codes in one file."""


def save_checkpoint(state: dict, path: str) -> None:
    """
    Write ``state`` to ``path`` so that a crash at any moment leaves either the
    previous file or the new one, never a half-written file
    (:func:`~pyprobvae.files.atomic_write`).

    :param dict state: tensors, numbers, strings, lists and dicts only (what
        ``torch.load(weights_only=True)`` accepts back).
    :param str path: destination file.
    """
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, **state}, f)


def load_checkpoint(path: str, map_location=None) -> dict:
    """
    Read a checkpoint written by :func:`save_checkpoint` with
    ``torch.load(weights_only=True)``, which refuses to run pickled code.

    :param str path: the checkpoint file.
    :param map_location: device to load tensors onto.
    :raises CheckpointError: when the file is missing, corrupt, or not a
        pyprobvae checkpoint.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a pyprobvae checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if isinstance(state, dict) and state.get("format") in OLD_FORMATS:
        raise CheckpointError(f"{path} was written by {OLD_FORMATS[state['format']]}, whose checkpoints this version does not load; train the run again")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyprobvae checkpoint (expected format {FORMAT!r})")
    return state
