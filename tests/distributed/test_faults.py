"""
Faults of a distributed run (2 processes on gloo, through the command line):
a rank that vanishes and a rank whose loss is NaN end the run cleanly on
every rank, with one line each, and the last good checkpoint stays.
"""

import time

from pyprobvae.infer import load_checkpoint

from .launch import run

TRAIN = ["train", "--hidden", "16", "--latent-dim", "2", "--epochs", "3", "--quiet"]
STEPS_PER_EPOCH = 12  # 1437 digits at --batch-size 128


def _errors(process):
    return [line for line in process.stderr.splitlines() if line.strip()]


def test_a_rank_that_dies_stops_the_others_at_once(tmp_path):
    folder = tmp_path / "run"
    started = time.perf_counter()
    main, lost = run({"scenario": "cli", "argv": [*TRAIN, "--out", str(folder)], "fault": {"rank": 1, "kind": "exit", "epoch": 2}}, str(tmp_path))
    elapsed = time.perf_counter() - started
    assert lost.returncode == 9
    assert main.returncode == 2, main.stderr
    (line,) = _errors(main)
    assert line.startswith("pyprobvae (process 0 of 2): error: ") and "other processes" in line, line
    assert elapsed < 60, "noticed by the collectives' timeout (60 s here), not by the lost connection"
    assert load_checkpoint(str(folder / "checkpoint.pt"))["epoch"] == 1


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    folder = tmp_path / "run"
    step = STEPS_PER_EPOCH + 3  # the fourth step of epoch 2, counted from 0
    processes = run({"scenario": "cli", "argv": [*TRAIN, "--out", str(folder)], "fault": {"rank": 1, "kind": "nan", "step": step}}, str(tmp_path))
    lines = []
    for rank, process in enumerate(processes):
        assert process.returncode == 1, process.stderr
        (line,) = _errors(process)
        assert line.startswith(f"pyprobvae (process {rank} of 2): training diverged: the loss is not finite at epoch 2, step 4: ")
        lines.append(line.split(": ", 1)[1])
    assert lines[0] == lines[1]
    assert load_checkpoint(str(folder / "checkpoint.pt"))["epoch"] == 1
