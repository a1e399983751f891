"""
Two processes (DDP on gloo, spawned as torchrun would) against one: the same
seed and weights and k steps at global batch B give the parameters and the
reported numbers of one process at batch B, and a run resumes at another
world size.

The data are 100 digits at B = 32: per epoch three batches of 32 (16 per
rank) and one of 4 (2 per rank), so the uneven last batch is covered. The
Gaussian guides' noise is a function of each example (``tests/distributed/worker.py``),
so that what is compared is the sharding, the loss scaling, DDP's gradient
averaging and the all-reduced sums, not two random streams.
"""

import pytest
import torch

from .launch import run

# name: (model, model settings, training settings)
SETTINGS = {
    "vae": ("vae", {}, {}),
    "cvae": ("cvae", {}, {}),
    # the IWAE bound's particles, DReG's gradient hooks and the VampPrior's second encoder pass under DDP
    "vae-vamp-iwae-dreg": ("vae", {"prior": "vamp", "prior_components": 3}, {"objective": "iwae", "particles": 3, "gradient": "dreg"}),
    # min_usage 0.9 makes codes restart in the first epochs (26 restarts in these 8 steps)
    "vqvae-ema-restarts": ("vqvae", {"ema": True, "min_usage": 0.9, "codebook_size": 16, "code_dim": 4, "hidden": (64,)}, {}),
}
EPOCHS, BATCH = 2, 32

# Parameters after 8 Adam steps (lr 1e-3) differ between one and two processes
# only by the rounding of sums taken in another order, amplified by Adam where a
# gradient is near zero: measured max |difference| 1.5e-5 (VAE), 1.6e-7 (CVAE),
# 1.0e-6 (VQ-VAE), against steps of ~1e-3 per parameter that any error in the
# scaling or the averaging would change by as much.
PARAMETER_TOLERANCE = 1e-4
# Reported numbers agree to ~1e-8 relative (float64 sums of float32 terms).
NUMBER_TOLERANCE = 1e-6


def _launch(runs, out, world_size):
    for process in run({"scenario": "fit", "runs": runs}, str(out), world_size):
        assert process.returncode == 0, process.stderr[-4000:]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    fresh = [{"model": model, "settings": settings, "training": training, "epochs": EPOCHS, "batch_size": BATCH, "folder": name}
             for name, (model, settings, training) in SETTINGS.items()]
    vq = fresh[-1]
    _launch([{**r, "folder": f"one/{r['folder']}"} for r in fresh] + [{**vq, "epochs": 1, "folder": "one-then-two"}], out, 1)
    _launch([{**r, "folder": f"two/{r['folder']}"} for r in fresh]
            + [{**vq, "resume": True, "folder": "one-then-two"}, {**vq, "epochs": 1, "folder": "two-then-one"}], out, 2)
    _launch([{**vq, "resume": True, "folder": "two-then-one"}], out, 1)
    drawn = {**fresh[0], "example_noise": False}
    _launch([{**drawn, "folder": "two-straight"}, {**drawn, "epochs": 1, "folder": "two-interrupted"}], out, 2)
    _launch([{**drawn, "resume": True, "folder": "two-interrupted"}], out, 2)
    return lambda folder: torch.load(out / folder / "result.pt")


def _assert_same_parameters(expected, actual):
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=PARAMETER_TOLERANCE, rtol=0, msg=name)


@pytest.mark.parametrize("name", SETTINGS)
def test_two_processes_train_the_parameters_of_one(results, name):
    one, two = results(f"one/{name}"), results(f"two/{name}")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    _assert_same_parameters(one["state"], two["state"])
    assert one["restarted"] == two["restarted"]
    if "restarts" in name:
        assert one["restarted"] > 0


@pytest.mark.parametrize("name", SETTINGS)
def test_two_processes_report_the_numbers_of_one(results, name):
    one, two = results(f"one/{name}")["history"], results(f"two/{name}")["history"]
    assert len(one) == len(two) == EPOCHS
    for expected, actual in zip(one, two):
        assert expected.keys() == actual.keys()
        for key in expected:
            if key != "seconds":
                assert actual[key] == pytest.approx(expected[key], rel=NUMBER_TOLERANCE, abs=NUMBER_TOLERANCE), key


@pytest.mark.parametrize("folder", ["one-then-two", "two-then-one"])
def test_a_run_resumes_at_another_world_size(results, folder):
    """One epoch at one world size, the second at the other: the run of one process throughout."""
    resumed, straight = results(folder), results("one/vqvae-ema-restarts")
    assert resumed["world_size"] == (2 if folder == "one-then-two" else 1)
    _assert_same_parameters(straight["state"], resumed["state"])
    assert [r["test_elbo"] for r in resumed["history"]] == pytest.approx([r["test_elbo"] for r in straight["history"]], rel=NUMBER_TOLERANCE)


def test_a_run_resumed_at_the_same_world_size_is_the_uninterrupted_run(results):
    """Every rank's random stream (here the guides' noise) continues from the checkpoint: the result is exact."""
    resumed, straight = results("two-interrupted"), results("two-straight")
    for name, value in straight["state"].items():
        assert torch.equal(resumed["state"][name], value), name
    assert resumed["history"][-1]["test_elbo"] == straight["history"][-1]["test_elbo"]
