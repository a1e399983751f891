"""
Checkpoint integrity: the payload's checksum catches any changed byte or an
edit made outside pyprobvae, the schema names a missing or mistyped entry,
weights must be finite, and a random state must fit the generators.
"""

import copy
import os

import pytest
import torch

from pyprobvae.infer import CheckpointError, RandomState, check_weights, load_checkpoint, save_checkpoint
from pyprobvae.infer.checkpoint import check_schema, payload_checksum


def _state():
    return {
        "model": {"layer.weight": torch.linspace(-2, 2, 12).reshape(3, 4), "layer.bias": torch.zeros(3), "steps": torch.tensor(7)},
        "history": [{"epoch": 1, "train_elbo": -80.5}],
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]},
        "epoch": 1,
        "note": None,
    }


def test_checksum_is_a_function_of_the_values_only():
    state = _state()
    assert payload_checksum(state) == payload_checksum(copy.deepcopy(state))
    for change in (
        lambda s: s["model"]["layer.weight"].view(-1)[5].copy_(torch.nextafter(s["model"]["layer.weight"].view(-1)[5], torch.tensor(9.0))),  # one ulp
        lambda s: s["model"].__setitem__("layer.bias", torch.zeros(3, dtype=torch.float64)),  # the dtype
        lambda s: s["model"].__setitem__("layer.bias", torch.zeros(1, 3)),  # the shape
        lambda s: s["history"][0].__setitem__("train_elbo", -80.25),
        lambda s: s.__setitem__("epoch", True),  # 1 and True differ
        lambda s: s["optimizer"]["param_groups"][0].__setitem__("betas", [0.9, 0.999]),  # a tuple is not a list
        lambda s: s.__setitem__("extra", 0),
    ):
        changed = copy.deepcopy(state)
        change(changed)
        assert payload_checksum(changed) != payload_checksum(state)


def test_a_flipped_byte_anywhere_is_refused(tmp_path):
    path = str(tmp_path / "c.pt")
    save_checkpoint(_state(), path)
    intact = payload_checksum(load_checkpoint(path))
    with open(path, "rb") as f:
        content = f.read()
    refused = 0
    for position in range(0, len(content), max(1, len(content) // 97)):
        damaged = bytearray(content)
        damaged[position] ^= 0x10
        other = str(tmp_path / f"d{position}.pt")
        with open(other, "wb") as f:
            f.write(damaged)
        try:
            loaded = load_checkpoint(other)
        except CheckpointError as e:
            assert other in str(e)
            refused += 1
        else:  # a byte the payload does not depend on (zip padding, a timestamp): the values must be intact
            assert payload_checksum(loaded) == intact
        os.remove(other)
    assert refused > 0
    # a byte of a tensor's data is always caught (torch stores tensors uncompressed, so the bytes are in the file)
    state = load_checkpoint(path)
    start = content.find(state["model"]["layer.weight"].numpy().tobytes())
    assert start > 0
    damaged = bytearray(content)
    damaged[start + 9] ^= 0x01
    with open(path, "wb") as f:
        f.write(damaged)
    with pytest.raises(CheckpointError, match="do not match their checksum"):
        load_checkpoint(path)


def test_a_payload_edited_outside_pyprobvae_is_refused(tmp_path):
    path = str(tmp_path / "c.pt")
    save_checkpoint(_state(), path)
    wrapper = torch.load(path, weights_only=True)
    wrapper["payload"]["model"]["layer.weight"][0, 0] = 123.0
    torch.save(wrapper, path)
    with pytest.raises(CheckpointError, match="do not match their checksum"):
        load_checkpoint(path)
    del wrapper["checksum"]
    torch.save(wrapper, path)
    with pytest.raises(CheckpointError, match="lacks its payload or its checksum"):
        load_checkpoint(path)


def test_other_formats_are_named(tmp_path):
    path = str(tmp_path / "c.pt")
    for tag, message in (
        ("pyprobvae-checkpoint-2", "development version of pyprobvae 0.2"),
        ("pyprobvae-checkpoint-9", "written by another version"),
        ("something", "not a pyprobvae checkpoint"),
    ):
        torch.save({"format": tag, "payload": {}}, path)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)
    os.remove(path)
    os.mkdir(path)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(path)


def test_schema_names_the_missing_or_mistyped_entry(tmp_path):
    path = str(tmp_path / "c.pt")
    schema = {"model": dict, "history": list, "epoch": int}
    save_checkpoint(_state(), path)
    assert load_checkpoint(path, schema=schema)["epoch"] == 1
    for key, value, message in (("history", None, "has no 'history'"), ("epoch", "1", "'epoch' is a str, not a int"),
                                ("epoch", True, "'epoch' is a bool")):
        state = _state()
        if value is None:
            del state[key]
        else:
            state[key] = value
        save_checkpoint(state, path)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path, schema=schema)
    with pytest.raises(CheckpointError, match="older or a damaged run"):
        check_schema({}, {"rng": dict}, path)


def test_weights_must_be_finite_tensors():
    check_weights(_state()["model"], "c.pt")
    weights = _state()["model"]
    weights["layer.bias"][1] = float("nan")
    with pytest.raises(CheckpointError, match="'layer.bias' holds NaN"):
        check_weights(weights, "c.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        check_weights({"layer.weight": [1.0]}, "c.pt")


def test_random_state_of_the_wrong_size_is_refused():
    random = RandomState(0, torch.device("cpu"), streams=("binarize",))
    state = random.state()
    random.restore(state)
    for name, damaged in (("torch", state["torch"][:-8]), ("binarize", state["binarize"].float()), ("shuffle", None)):
        bad = dict(state)
        if damaged is None:
            del bad[name]
        else:
            bad[name] = damaged
        with pytest.raises(CheckpointError, match=f"random state '{name}'"):
            random.restore(bad)
