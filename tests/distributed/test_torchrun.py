"""``torchrun -m pyprobvae``: the launch users type, end to end (train, train-prior, then a one-process verb)."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pyprobvae.data import load_dataset

from .launch import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def _run(*argv, timeout=300):
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_python_m_pyprobvae_is_the_command():
    done = _run("-m", "pyprobvae", "--version")
    assert done.returncode == 0 and done.stdout.startswith("pyprobvae ")


@pytest.mark.slow
def test_torchrun_trains_a_vqvae_and_its_prior(tmp_path):
    # 400 unlabelled digits: no classifier to train for the sample scores, so the test times the launch, not the evaluation
    data = str(tmp_path / "digits.npz")
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    np.savez(data, x_train=(train.x[:300] * 16).round().numpy().astype(np.int64), x_test=(test.x[:100] * 16).round().numpy().astype(np.int64))
    folder = str(tmp_path / "vq")
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pyprobvae"]
    done = _run(*torchrun, "train", "--dataset", data, "--model", "vqvae", "--ema", "--hidden", "32", "--codebook-size", "16", "--epochs", "2", "--iwae-samples", "20",
                "--out", folder, "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["run_folder"] == os.path.abspath(folder)  # rank 0 reports, the other is quiet
    done = _run(*torchrun, "train-prior", folder, "--epochs", "2", "--layers", "1", "--d-model", "32", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(folder, "metrics.json")) as f:
        metrics = json.load(f)
    assert len(metrics["history"]) == 2 and len(metrics["prior_history"]) == 2
    if importlib.util.find_spec("tensorboard") is not None:  # rank 0 alone writes TensorBoard's events
        board = os.path.join(folder, "tensorboard")
        events = [name for name in os.listdir(board) if "tfevents" in name]
        assert len(events) == 1 and sorted(set(os.listdir(board)) - set(events)) == ["prior"]
        assert len(os.listdir(os.path.join(board, "prior"))) == 1
    done = _run("-m", "pyprobvae", "sample", folder, "--n", "4", "--out", str(tmp_path / "samples.png"))
    assert done.returncode == 0, done.stderr
