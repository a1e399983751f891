"""The pieces of :mod:`pyprobvae.distributed` that need no second process, and what the command refuses under torchrun."""

import pytest
import torch

from pyprobvae import cli
from pyprobvae.distributed import LOCAL, World, init_from_environment, timeout
from pyprobvae.infer import TrainConfig
from pyprobvae.infer.loop import RandomState, Trainer, steps_per_epoch
from pyprobvae.infer.training import ELBOLoss, ELBOObjective
from tests.common import tiny_model


def test_rank_0_keeps_the_seed_and_the_others_get_their_own():
    seeds = [World(rank, 4).seed(7) for rank in range(4)]
    assert seeds[0] == 7 == LOCAL.seed(7)
    assert len(set(seeds)) == 4 and all(0 <= s < 2**32 for s in seeds)
    assert World(1, 4).seed(7) == World(1, 2).seed(7)  # a rank's streams do not depend on the world size
    assert World(0, 2).seed(7, 3) != 7  # a resumed rank's streams differ from the fresh ones


def test_the_ranks_split_each_global_batch_into_contiguous_shares():
    indices = torch.arange(10, 20)
    parts = [World(rank, 3).shard(indices) for rank in range(3)]
    assert torch.equal(torch.cat(parts), indices)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert LOCAL.shard(indices) is indices


def test_a_last_batch_smaller_than_the_world_is_skipped():
    assert steps_per_epoch(100, 32) == steps_per_epoch(100, 32, World(0, 4)) == 4
    assert steps_per_epoch(97, 32, World(0, 2)) == 3  # the last batch has 1 example for 2 ranks
    assert steps_per_epoch(97, 32) == 4


def test_the_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="--batch-size 33 is the global batch, split evenly over 2 processes: give a multiple of 2"):
        World(0, 2).check_batch_size(33)
    model = tiny_model("vae")
    config = TrainConfig(batch_size=33)
    with pytest.raises(ValueError, match="multiple of 2"):
        Trainer(ELBOObjective(ELBOLoss(model)), config, RandomState(0, torch.device("cpu")), World(0, 2))


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_environment("cpu") == LOCAL


@pytest.mark.parametrize("text", ["0", "-1", "soon", "inf"])
def test_an_unusable_timeout_is_refused(monkeypatch, text):
    monkeypatch.setenv("PYPROBVAE_DISTRIBUTED_TIMEOUT", text)
    with pytest.raises(ValueError, match="PYPROBVAE_DISTRIBUTED_TIMEOUT"):
        timeout()


def test_the_timeout_can_be_set(monkeypatch):
    monkeypatch.setenv("PYPROBVAE_DISTRIBUTED_TIMEOUT", "90")
    assert timeout().total_seconds() == 90


@pytest.mark.parametrize("argv, message", [
    (["sample", "runs/x", "--out", "x.png"], "sample runs in one process; under torchrun only train and train-prior do"),
    (["train", "--device", "cuda:1"], "--device cuda:1 under torchrun: give cpu, or cuda (each process takes the GPU of its local rank)"),
])
def test_under_torchrun_the_command_refuses_what_it_cannot_share_out(monkeypatch, capsys, argv, message):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == f"pyprobvae: error: {message}\n"


def test_an_unreadable_world_size_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert cli.main(["train"]) == 2
    assert "WORLD_SIZE is 'two'" in capsys.readouterr().err
