"""
The one atomic file writer: every file pyprobvae writes (checkpoints,
``config.json``, ``metrics.json``, pictures, arrays, text) goes through
:func:`atomic_write`, so that a crash at any moment leaves either the previous
file or the new one, never a half-written file.
"""

import contextlib
import os
import shutil
import tempfile

TEMPORARY_PREFIX = ".pyprobvae-"
TEMPORARY_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """
    Open a temporary file in the directory of ``path`` (created if needed)
    for writing; when the ``with`` block ends normally, flush it to disk and
    rename it over ``path`` in one atomic step; when it raises, remove it.

    :param str path: the destination.
    :param str mode: ``"wb"`` for bytes, ``"w"`` for text (UTF-8).
    :return: the open file object.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_temporary_files(directory: str) -> list:
    """
    Remove the temporary files that writes interrupted by a crash left in
    ``directory`` (those :func:`atomic_write` names), and return their names.
    Call it where nothing else can be writing there: when a run starts.
    """
    if not os.path.isdir(directory):
        return []
    left = [name for name in os.listdir(directory) if name.startswith(TEMPORARY_PREFIX) and name.endswith(TEMPORARY_SUFFIX)]
    for name in left:
        os.remove(os.path.join(directory, name))
    return left


def replace_directory(new: str, old: str) -> None:
    """
    Put the directory ``new`` in the place of the directory ``old``: ``old`` is
    moved aside, ``new`` renamed to ``old``'s name, then the old contents
    deleted. Each rename is atomic; should the process die between the two,
    the old contents are still whole, beside ``old`` under the suffix
    ``.pyprobvae-old``.
    """
    aside = old.rstrip(os.sep) + ".pyprobvae-old"
    if os.path.exists(aside):
        shutil.rmtree(aside)
    os.replace(old, aside)
    os.replace(new, old)
    shutil.rmtree(aside)
