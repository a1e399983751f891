"""
A training process killed with SIGKILL at any moment, in the middle of
writing its checkpoint included, and then continued with
``pyprobvae train --out RUN --resume`` (same options) reproduces the run
that was never interrupted: the final checkpoint's model, optimizer state,
history (every number but the wall-clock ``seconds``), random state and
epoch, and the numbers of ``metrics.json``, are those of the uninterrupted
run, and the folder holds the same files, no leftover temporary file among
them.

Every run is a real ``pyprobvae train`` process. The deterministic kills go
through :data:`DRIVER`, which runs the command with
:func:`pyprobvae.files.atomic_write` wrapped so that the process sends
itself SIGKILL at the k-th write of a named file: half-way through the
write, after the temporary file is complete but before the rename, or just
after the rename. Between its writes a run changes nothing on disk, so these
kills leave every state a kill during training can leave. The random kills
stop an ordinary process after a delay drawn by a seeded generator over the
duration of the uninterrupted run, wherever that lands (start-up, training,
the final evaluation and pictures, the exit). When a kill lands before the
first checkpoint exists, ``--resume`` must say that there is nothing to
resume (exit status 2), and a fresh ``train`` (with ``--overwrite`` if the
folder holds anything) must then give the same run; those ``--resume``
commands, which must fail at once, run in this process.
"""

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import pyprobvae
from pyprobvae.cli import main
from pyprobvae.files import TEMPORARY_PREFIX, TEMPORARY_SUFFIX
from pyprobvae.infer import load_checkpoint

EPOCHS = 4
TINY = ["--likelihood", "bernoulli", "--epochs", str(EPOCHS), "--hidden", "32", "--latent-dim", "2",
        "--batch-size", "256", "--iwae-samples", "10", "--quiet"]  # fmt: skip
"""Tiny settings; the bernoulli likelihood binarizes each batch afresh: every random stream of training is used."""
CHECKPOINT, CONFIG, METRICS = "checkpoint.pt", "config.json", "metrics.json"
COMPARED = ("epoch", "model", "optimizer", "history", "rng")
"""The checkpoint's entries that must equal the uninterrupted run's (``history`` without ``seconds``)."""
KILLED = -signal.SIGKILL
RANDOM_SEED, RANDOM_KILLS = 20240611, 3
TIMEOUT = 300

pytestmark = pytest.mark.usefixtures("one_thread")  # for the commands run in this process

# Runs `pyprobvae train` (argv[2:]) with atomic_write wrapped so that the process sends itself SIGKILL at the
# argv[1] = "NAME:K:POINT" kill point: the K-th write of a file named NAME, at POINT: "partial" (half-way
# through the writes into the temporary file: half the size of the file it replaces, or 256 characters),
# "before-rename" (the temporary file complete and on disk, not renamed) or "after-rename".
DRIVER = r"""
import contextlib, os, signal, sys

name, k, point = sys.argv[1].split(":")
k, count = int(k), 0

import pyprobvae.cli
import pyprobvae.files

original = pyprobvae.files.atomic_write


def die(f=None):
    if f is not None:
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


class Partial:
    def __init__(self, f, goal):
        self._f, self._goal, self._written = f, goal, 0

    def write(self, data):
        if self._written + len(data) >= self._goal:
            self._f.write(data[: max(1, self._goal - self._written)])
            die(self._f)
        self._written += len(data)
        return self._f.write(data)

    def __getattr__(self, attribute):
        return getattr(self._f, attribute)


@contextlib.contextmanager
def atomic_write(path, *args, **kwargs):
    global count
    hit = False
    if os.path.basename(os.fspath(path)) == name:
        count += 1
        hit = count == k
    with original(path, *args, **kwargs) as f:
        if hit and point == "partial":
            yield Partial(f, os.path.getsize(path) // 2 if os.path.isfile(path) else 256)
            die(f)  # all was written before the goal: die before the rename all the same
        else:
            yield f
        if hit and point == "before-rename":
            die(f)
    if hit and point == "after-rename":
        die()


pyprobvae.files.atomic_write = atomic_write
for module in list(sys.modules.values()):
    if getattr(module, "__name__", "").startswith("pyprobvae") and getattr(module, "atomic_write", None) is original:
        module.atomic_write = atomic_write
status = pyprobvae.cli.main(sys.argv[2:])
print(f"kill point {sys.argv[1]} never reached: {count} writes of {name}", file=sys.stderr)
sys.exit(status)
"""


def _environment():
    """The subprocesses' environment: one thread, and the package the tests import (not another copy)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyprobvae.__file__)))
    path = os.environ.get("PYTHONPATH")
    path = root + (os.pathsep + path if path else "")
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": path}


def _train(settings, out, *options):
    return ["train", "--out", out, *settings, *options]


def _launch(argv, kill_at=None, kill_after=None):
    """
    Run ``pyprobvae ARGV`` in a process of its own: through :data:`DRIVER` when
    ``kill_at`` names a kill point, else as ``python -m pyprobvae.cli``, sent
    SIGKILL after ``kill_after`` seconds if it is still running then.

    :return: ``(returncode, stderr, seconds)``.
    """
    if kill_at is None:
        command = [sys.executable, "-m", "pyprobvae.cli", *argv]
    else:
        command = [sys.executable, "-c", DRIVER, kill_at, *argv]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment())
    try:
        _, err = process.communicate(timeout=TIMEOUT if kill_after is None else kill_after)
    except subprocess.TimeoutExpired:
        if kill_after is None:
            process.kill()
            process.communicate()
            raise
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate()
    return process.returncode, err, time.perf_counter() - started


def _killed_at(kill_at, argv):
    status, err, _ = _launch(argv, kill_at=kill_at)
    assert status == KILLED, f"{kill_at}: expected SIGKILL, got exit status {status}: {err}"


def _main(argv):
    """``pyprobvae ARGV`` in this process (for commands that must fail at once): ``(exit status, stderr)``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(argv)
    return status, err.getvalue()


def _temporary_files(directory):
    names = os.listdir(directory)
    return sorted(name for name in names if name.startswith(TEMPORARY_PREFIX) and name.endswith(TEMPORARY_SUFFIX))


def _saved_epoch(out):
    return load_checkpoint(os.path.join(out, CHECKPOINT))["epoch"]


def _without_timings(value):
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items() if key != "seconds"}
    if isinstance(value, (list, tuple)):
        return [_without_timings(item) for item in value]
    return value


def _assert_equal(got, want, where):
    """Exact equality of nested dicts, lists, tensors and numbers (bit for bit for tensors)."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{where}: {type(got).__name__} instead of a tensor"
        kinds = (got.dtype, got.shape), (want.dtype, want.shape)
        assert kinds[0] == kinds[1], f"{where}: {kinds[0]} != {kinds[1]}"
        assert torch.equal(got, want), f"{where}: the tensors differ"
    elif isinstance(want, dict):
        keys = sorted(map(str, got)) if isinstance(got, dict) else type(got).__name__
        assert keys == sorted(map(str, want)), f"{where}: keys {keys} != {sorted(map(str, want))}"
        for key in want:
            _assert_equal(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_equal(a, b, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def settings(tmp_path_factory, digits):
    """
    The options of every run: :data:`TINY` on the bundled digits, handed to the
    processes as an ``.npz`` file of the same images (levels 0..16, the same
    17 levels), labels and split, so that no process spends a second
    importing scikit-learn to read them.
    """
    path = str(tmp_path_factory.mktemp("data") / "digits.npz")
    arrays = {}
    for split, data in zip(("train", "test"), digits):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = (data.x.numpy() * 16).round().astype(np.int64), data.y.numpy()
    np.savez(path, **arrays)
    return ["--dataset", path, *TINY]


@dataclass
class Reference:
    """The uninterrupted run."""

    out: str
    seconds: float
    checkpoint: dict
    metrics: dict


@pytest.fixture(scope="module")
def reference(tmp_path_factory, settings):
    out = str(tmp_path_factory.mktemp("reference") / "run")
    status, err, seconds = _launch(_train(settings, out))
    assert status == 0, err
    with open(os.path.join(out, METRICS)) as f:
        metrics = json.load(f)
    return Reference(out, seconds, load_checkpoint(os.path.join(out, CHECKPOINT)), metrics)


def assert_same_run(out, reference):
    """The run in ``out`` is the uninterrupted one: same checkpoint entries, metrics and files, no leftovers."""
    assert _temporary_files(out) == []
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference.out))
    checkpoint = load_checkpoint(os.path.join(out, CHECKPOINT))
    for key in COMPARED:
        got, want = _without_timings(checkpoint[key]), _without_timings(reference.checkpoint[key])
        _assert_equal(got, want, f"checkpoint[{key!r}]")
    with open(os.path.join(out, METRICS)) as f:
        _assert_equal(_without_timings(json.load(f)), _without_timings(reference.metrics), "metrics.json")
    assert os.listdir(os.path.dirname(out)) == [os.path.basename(out)], "something was left beside the run folder"


def _nothing_to_resume(settings, out):
    """
    Check that ``--resume`` of ``out``, which holds no checkpoint, says there is
    nothing to resume (exit status 2), and return the command that trains the
    run afresh: ``--overwrite`` if the folder holds anything.
    """
    status, err = _main(_train(settings, out, "--resume"))
    assert status == 2 and err.count("\n") == 1 and err.startswith("pyprobvae: error: "), err
    if os.path.isdir(out) and not os.path.isfile(os.path.join(out, CONFIG)):
        # killed during the run's first write: see test_a_kill_during_the_first_write_leaves_nothing_to_resume
        assert "nothing to resume" in err or f"no readable {CONFIG}" in err, err
    else:
        assert "nothing to resume" in err, err
    return _train(settings, out, *(["--overwrite"] if os.path.isdir(out) and os.listdir(out) else []))


@pytest.mark.slow
def test_kills_inside_checkpoint_writes_and_the_evaluation_resume_to_the_same_run(tmp_path, settings, reference):
    out = str(tmp_path / "run")
    resume = _train(settings, out, "--resume")

    _killed_at(f"{CHECKPOINT}:2:partial", _train(settings, out))  # half of epoch 2's checkpoint written
    assert _saved_epoch(out) == 1 and _temporary_files(out)

    _killed_at(f"{CHECKPOINT}:{EPOCHS - 1}:after-rename", resume)  # epochs 2 to 4 written, killed after the last rename
    assert _saved_epoch(out) == EPOCHS and _temporary_files(out) == []
    assert not os.path.exists(os.path.join(out, METRICS))

    _killed_at(f"{METRICS}:1:partial", resume)  # training complete: killed half-way through writing the evaluation
    assert _saved_epoch(out) == EPOCHS and _temporary_files(out)
    assert not os.path.exists(os.path.join(out, METRICS))

    status, err, _ = _launch(resume)
    assert status == 0, err
    assert_same_run(out, reference)


@pytest.mark.slow
def test_a_kill_before_the_first_checkpoint_leaves_nothing_to_resume(tmp_path, settings, reference):
    out = str(tmp_path / "run")
    _killed_at(f"{CHECKPOINT}:1:before-rename", _train(settings, out))  # epoch 1's checkpoint complete, not renamed
    assert not os.path.exists(os.path.join(out, CHECKPOINT)) and _temporary_files(out)

    status, err = _main(_train(settings, out, "--resume"))
    assert status == 2
    assert err == f"pyprobvae: error: nothing to resume: no checkpoint at {os.path.join(out, CHECKPOINT)}\n"
    status, err = _main(_train(settings, out))
    assert status == 2 and "already holds a run" in err and "--overwrite" in err, err

    status, err, _ = _launch(_train(settings, out, "--overwrite"))
    assert status == 0, err
    assert_same_run(out, reference)


@pytest.mark.slow
def test_a_kill_during_the_first_write_leaves_nothing_to_resume(tmp_path, settings):
    out = str(tmp_path / "run")
    _killed_at(f"{CONFIG}:1:partial", _train(settings, out))
    assert os.listdir(out) == _temporary_files(out) != []
    status, err = _main(_train(settings, out, "--resume"))
    assert status == 2 and "nothing to resume" in err, err
    status, err = _main(_train(settings, out))  # a folder holding only leftovers of a first write holds no run
    assert status == 0, err
    assert _temporary_files(out) == []


@pytest.mark.slow
def test_kills_at_random_moments_resume_to_the_uninterrupted_run(tmp_path, settings, reference):
    out = str(tmp_path / "run")
    generator = random.Random(RANDOM_SEED)
    delays = [generator.uniform(0, reference.seconds) for _ in range(RANDOM_KILLS)]
    log = []
    for delay in [*delays, None]:
        if os.path.isfile(os.path.join(out, CHECKPOINT)):
            argv = _train(settings, out, "--resume")
        else:
            argv = _nothing_to_resume(settings, out)
        status, err, seconds = _launch(argv, kill_after=delay)
        how = " ".join(argv[3 + len(settings):]) or "fresh"
        when = "uninterrupted" if delay is None else f"SIGKILL after {delay:.2f} s"
        log.append(f"{how}, {when}: exit status {status} ({seconds:.2f} s)")
        assert status in ((0, KILLED) if delay is not None else (0,)), f"{log}: {err}"
    assert_same_run(out, reference)
