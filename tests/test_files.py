"""
The file layer: atomic writes, the output-path check done before any work,
and the directory swap of an overwrite, which a crash at any point leaves
recoverable.
"""

import os

import pytest

from pyprobvae import files
from pyprobvae.files import (
    OutputPathError,
    atomic_write,
    check_writable,
    finish_replacement,
    is_temporary_file,
    remove_temporary_files,
    replace_directory,
    staging_directory,
)


def _tree(directory):
    return {name: open(os.path.join(directory, name)).read() for name in sorted(os.listdir(directory))}


def _folder(path, **contents):
    os.makedirs(path)
    for name, text in contents.items():
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    return str(path)


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path):
    path = str(tmp_path / "a.txt")
    with atomic_write(path, "w") as f:
        f.write("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write("half")
            raise RuntimeError("killed")
    assert _tree(tmp_path) == {"a.txt": "old"}


def test_leftovers_of_interrupted_writes_are_recognized_and_removed(tmp_path):
    _folder(tmp_path / "run", **{"config.json": "{}", ".pyprobvae-abc.tmp": "half", "notes.tmp": "mine"})
    assert is_temporary_file(".pyprobvae-abc.tmp") and not is_temporary_file("notes.tmp")
    assert remove_temporary_files(str(tmp_path / "run")) == [".pyprobvae-abc.tmp"]
    assert sorted(os.listdir(tmp_path / "run")) == ["config.json", "notes.tmp"]


@pytest.mark.parametrize(
    "make, target, directory, message",
    [
        (lambda d: None, "/dev/null", False, "not a regular file"),
        (lambda d: None, "/dev/null", True, "exists and is not a directory"),
        (lambda d: os.mkdir(d / "out.png"), "out.png", False, "is a directory"),
        (lambda d: open(d / "file", "w").close(), "file/out.png", False, "file is a file, not a directory"),
        (lambda d: open(d / "file", "w").close(), "file/deeper/run", True, "file is a file, not a directory"),
        (lambda d: open(d / "run", "w").close(), "run", True, "exists and is not a directory"),
        (lambda d: None, "/proc/pyprobvae/out.png", False, "no file can be created in /proc"),
    ],
)
def test_unusable_output_paths_are_refused_before_any_work(tmp_path, make, target, directory, message):
    if target.startswith("/proc") and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc on this system")
    make(tmp_path)
    path = target if os.path.isabs(target) else str(tmp_path / target)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputPathError, match=message):
        check_writable(path, directory=directory)
    assert sorted(os.listdir(tmp_path)) == before  # the check creates nothing


def test_usable_output_paths_pass_and_create_nothing(tmp_path):
    open(tmp_path / "old.png", "w").close()
    for path, directory in ((tmp_path / "old.png", False), (tmp_path / "new" / "deeper" / "x.npy", False),
                            (tmp_path / "run", True), (tmp_path, True)):
        check_writable(str(path), directory=directory)
    assert os.listdir(tmp_path) == ["old.png"]


def test_replace_directory_swaps_a_whole_folder(tmp_path):
    old = _folder(tmp_path / "run", **{"checkpoint.pt": "old"})
    new = _folder(staging_directory(old), **{"checkpoint.pt": "new", "metrics.json": "{}"})
    replace_directory(new, old)
    assert sorted(os.listdir(tmp_path)) == ["run"]
    assert _tree(old) == {"checkpoint.pt": "new", "metrics.json": "{}"}


@pytest.mark.parametrize("crash_at", [2, "rmtree"])
def test_a_swap_interrupted_anywhere_is_finished_by_the_next_start(tmp_path, monkeypatch, crash_at):
    old = _folder(tmp_path / "run", **{"checkpoint.pt": "old"})
    new = _folder(staging_directory(old), **{"checkpoint.pt": "new"})
    calls = []

    def replace(source, destination, real=os.replace):
        calls.append(source)
        if len(calls) == crash_at:
            raise KeyboardInterrupt("killed between the renames")
        real(source, destination)

    def rmtree(path, real=files.shutil.rmtree, **kwargs):
        if crash_at == "rmtree":
            raise KeyboardInterrupt("killed while deleting the old run")
        real(path, **kwargs)

    monkeypatch.setattr(files.os, "replace", replace)
    monkeypatch.setattr(files.shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        replace_directory(new, old)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) != ["run"]  # the crash left the swap half done
    finish_replacement(old)
    assert sorted(os.listdir(tmp_path)) == ["run"]
    assert _tree(old) == {"checkpoint.pt": "new"}


def test_finish_replacement_leaves_a_replacement_still_in_training(tmp_path):
    old = _folder(tmp_path / "run", **{"checkpoint.pt": "old"})
    _folder(staging_directory(old), **{"checkpoint.pt": "half trained"})
    finish_replacement(old)  # nothing was moved aside: no swap had begun
    assert _tree(old) == {"checkpoint.pt": "old"}
    assert sorted(os.listdir(tmp_path)) == ["run", "run.pyprobvae-new"]
