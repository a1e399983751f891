"""
The one atomic file writer: every file pyprobvae writes (checkpoints,
``config.json``, ``metrics.json``, pictures, arrays, text) goes through
:func:`atomic_write`, so that a crash at any moment leaves either the previous
file or the new one, never a half-written file.
"""

import contextlib
import os
import shutil
import stat
import tempfile
from typing import IO, Any, Iterator

TEMPORARY_PREFIX = ".pyprobvae-"
TEMPORARY_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO[Any]]:
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
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class OutputPathError(ValueError):
    """An output path that cannot be written: its parent is a file, it is a directory or a device, no permission."""


def check_writable(path: str, directory: bool = False) -> None:
    """
    Check, before any work is done, that :func:`atomic_write` can write the
    file ``path`` (or, with ``directory``, that a folder can be made there):
    ``path`` is not an existing directory (a regular file, for a folder) nor
    a device such as ``/dev/null`` (which a rename would replace); its
    nearest existing ancestor is a directory in which a file can be created
    (tried with a temporary file, removed at once).

    :raises OutputPathError: naming the path and what is wrong.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path):
        mode = os.stat(path).st_mode if os.path.exists(path) else 0
        if directory and not stat.S_ISDIR(mode):
            raise OutputPathError(f"cannot make a folder at {path}: it exists and is not a directory")
        if not directory and stat.S_ISDIR(mode):
            raise OutputPathError(f"cannot write {path}: it is a directory")
        if not directory and not stat.S_ISREG(mode):
            raise OutputPathError(f"cannot write {path}: it is not a regular file (a device, a pipe or a broken link)")
    ancestor = path if directory and os.path.isdir(path) else os.path.dirname(path)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise OutputPathError(f"cannot write {path}: {ancestor} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX)
    except OSError as e:
        raise OutputPathError(f"cannot write {path}: no file can be created in {ancestor} ({e.strerror})") from None
    os.close(fd)
    os.remove(probe)


def is_temporary_file(name: str) -> bool:
    """Whether the file name ``name`` is one that :func:`atomic_write` gives its temporary files."""
    return name.startswith(TEMPORARY_PREFIX) and name.endswith(TEMPORARY_SUFFIX)


def remove_temporary_files(directory: str) -> list:
    """
    Remove the temporary files that writes interrupted by a crash left in
    ``directory`` (those :func:`atomic_write` names), and return their names.
    Call it where nothing else can be writing there: when a run starts.
    """
    if not os.path.isdir(directory):
        return []
    left = [name for name in os.listdir(directory) if is_temporary_file(name)]
    for name in left:
        os.remove(os.path.join(directory, name))
    return left


def staging_directory(directory: str) -> str:
    """Where a replacement of ``directory`` is built before :func:`replace_directory` swaps it in."""
    return directory.rstrip(os.sep) + ".pyprobvae-new"


def _aside(directory: str) -> str:
    return directory.rstrip(os.sep) + ".pyprobvae-old"


def replace_directory(new: str, old: str) -> None:
    """
    Put the directory ``new`` in the place of the directory ``old``: ``old`` is
    moved aside, ``new`` renamed to ``old``'s name, then the old contents
    deleted. Each rename is atomic; should the process die between them,
    :func:`finish_replacement` completes the swap.
    """
    aside = _aside(old)
    if os.path.exists(aside):
        shutil.rmtree(aside)
    os.replace(old, aside)
    os.replace(new, old)
    shutil.rmtree(aside)


def finish_replacement(directory: str) -> None:
    """
    Complete a :func:`replace_directory` of ``directory`` that a crash
    interrupted: with ``directory`` moved aside and its complete replacement
    (:func:`staging_directory`) not yet renamed, rename it; with both in
    place, delete the old contents left aside. Call it where nothing else can
    be replacing ``directory``: when a run starts or is opened.
    """
    aside, new = _aside(directory), staging_directory(directory)
    if not os.path.isdir(aside):
        return
    if not os.path.exists(directory) and os.path.isdir(new):
        os.replace(new, directory)
    if os.path.isdir(directory):
        shutil.rmtree(aside)
