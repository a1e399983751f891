"""
The validation layer at the command line's boundary, one test per class of
bad input: each fails cleanly (one line, exit status 2) before any work, and
anything unforeseen is reported as a bug (exit status 3; ``--debug`` shows
the traceback).
"""

import dataclasses
import json
import os
import shutil

import pytest
import torch

from pyprobvae import cli
from pyprobvae.cli import main
from pyprobvae.infer.checkpoint import payload_checksum
from pyprobvae.runs.folder import read_config

SMALL = ["--hidden", "16", "--latent-dim", "2", "--iwae-samples", "5", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("boundary") / "run")
    assert main(["train", "--epochs", "1", "--out", out, *SMALL]) == 0
    return out


def _error(capsys, argv):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("pyprobvae: error: "), err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--latent-dim", str(10**12)], "--latent-dim: must be in [1, 4096], got 1000000000000"),
        (["train", "--hidden", "64,1000000000000"], "--hidden: must be in [1, 65536], got 1000000000000"),
        (["train", "--components", str(10**12)], "--components: must be in [1, 256]"),
        (["train", "--model", "vqvae", "--codebook-size", str(10**12)], "--codebook-size: must be in [1, 65536]"),
        (["train", "--epochs", str(10**12)], "--epochs: must be in [1, 100000]"),
        (["train", "--iwae-samples", str(10**12)], "--iwae-samples: must be in [1, 100000]"),
        (["train", "--seed", str(2**64)], "--seed: must be in [0, 4294967295], got 18446744073709551616"),
        (["train", "--lr", "1e300"], "--lr: must be in (0, 10], got 1e+300"),
        (["train", "--lr", "inf"], "--lr: must be a finite number, got inf"),
        (["train", "--gaussian-scale", "1e-300"], "--gaussian-scale: must be between 1.2e-38 and 3.4e+38 in size (float32)"),
        (["train", "--epochs", "abc"], "--epochs: expected an integer, got 'abc'"),
        (["train", "--flow", "nope"], "--flow: unknown value 'nope'; choose one of planar, radial, iaf, spline"),
        (["sample", "RUN", "--n", str(10**12), "--out", "x.png"], "--n: must be in [1, 100000]"),
        (["sample", "RUN", "--temperature", "inf", "--out", "x.png"], "--temperature: must be a finite number"),
        (["sample", "RUN", "--label", str(10**20), "--out", "x.png"], "--label: must be in [0, 100000]"),
        (["interpolate", "RUN", "--steps", str(10**8), "--out", "x.png"], "--steps: must be in [2, 10000]"),
        (["traverse", "RUN", "--span", "1e300", "--out", "x.png"], "--span: must be in (0, 100], got 1e+300"),
        (["traverse", "RUN", "--span", "inf", "--out", "x.png"], "--span: must be a finite number"),
        (["sample", "RUN", "--seed", "-1", "--out", "x.png"], "--seed: must be in [0, 4294967295]"),
    ],
)
def test_absurd_or_malformed_option_values(capsys, tmp_path, argv, message):
    argv = [a.replace("RUN", str(tmp_path)) for a in argv] + (["--out", str(tmp_path / "r")] if argv[0] == "train" else [])
    assert message in _error(capsys, argv)
    assert os.listdir(tmp_path) == []  # refused before anything was written


def test_a_model_too_large_for_the_memory_is_refused_while_being_built(capsys, tmp_path):
    err = _error(capsys, ["train", "--hidden", "65536,65536,65536", "--out", str(tmp_path / "r")])
    assert "the model (--hidden 65536,65536,65536" in err and "the share of the memory available on cpu" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("device, message", [
    ("meta", "device 'meta' cannot be used here"),
    ("cpu:1", "the CPU has no index 1"),
    ("gpu", "unknown device 'gpu'"),
    ("", "unknown device ''"),
])
def test_unusable_devices(capsys, tmp_path, run_dir, device, message):
    assert message in _error(capsys, ["train", "--device", device, "--out", str(tmp_path / "r")])
    assert message in _error(capsys, ["sample", run_dir, "--device", device, "--out", str(tmp_path / "s.png")])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("device", ["mps", "xla"])
def test_devices_this_build_cannot_use(capsys, tmp_path, device):
    try:
        torch.ones(1, device=device).cpu()
    except Exception:
        assert f"device '{device}' cannot be used here" in _error(capsys, ["train", "--device", device, "--out", str(tmp_path / "r")])
    else:
        pytest.skip(f"{device} works here")


def test_unusable_output_paths_fail_before_any_work(capsys, tmp_path, run_dir):
    (tmp_path / "file").write_text("mine")
    os.symlink("/dev/null", tmp_path / "null.png")  # a rename over it would replace the device
    os.mkdir(tmp_path / "folder.png")
    assert "null.png: it is not a regular file" in _error(capsys, ["sample", run_dir, "--out", str(tmp_path / "null.png")])
    assert "folder.png: it is a directory" in _error(capsys, ["sample", run_dir, "--out", str(tmp_path / "folder.png")])
    assert "is a file, not a directory" in _error(capsys, ["sample", run_dir, "--out", str(tmp_path / "file" / "x.png")])
    assert "exists and is not a directory" in _error(capsys, ["train", "--out", "/dev/null"])
    assert "exists and is not a directory" in _error(capsys, ["train", "--out", str(tmp_path / "file")])
    assert "is a file, not a directory" in _error(capsys, ["train", "--out", str(tmp_path / "file" / "run")])
    if os.path.isdir("/proc/self"):
        assert "no file can be created in /proc" in _error(capsys, ["train", "--out", "/proc/pyprobvae-run"])
    assert (tmp_path / "file").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["file", "folder.png", "null.png"]
    assert os.path.islink(tmp_path / "null.png") and os.listdir(tmp_path / "folder.png") == []


def _damaged_copy(run_dir, tmp_path, change):
    out = str(tmp_path / "damaged")
    shutil.copytree(run_dir, out)
    change(out)
    return out


def _edit_checkpoint(edit, resign):
    def change(out):
        path = os.path.join(out, "checkpoint.pt")
        wrapper = torch.load(path, weights_only=True)
        edit(wrapper["payload"])
        if resign:  # as a writer of pyprobvae's format would: only the schema and the consistency checks can tell
            wrapper["checksum"] = payload_checksum(wrapper["payload"])
        torch.save(wrapper, path)
    return change


def _edit_config(edit):
    def change(out):
        path = os.path.join(out, "config.json")
        with open(path) as f:
            config = json.load(f)
        with open(path, "w") as f:
            json.dump(edit(config), f)
    return change


def _set(mapping, key, value):
    mapping[key] = value
    return mapping


@pytest.mark.parametrize(
    "change, message",
    [
        (_edit_checkpoint(lambda s: s["model"][next(iter(s["model"]))].view(-1)[0].add_(1), resign=False), "do not match their checksum"),
        (_edit_checkpoint(lambda s: s.pop("history"), resign=True), "has no 'history' (written by an older or a damaged run)"),
        (_edit_checkpoint(lambda s: _set(s, "model_config", [1, 2]), resign=True), "'model_config' is a list, not a dict"),
        (_edit_checkpoint(lambda s: s["model"][next(iter(s["model"]))].view(-1)[0].fill_(float("nan")), resign=True), "holds NaN"),
        (_edit_checkpoint(lambda s: s["model_config"].update(latent_dim=3), resign=True), "disagree (model setting latent_dim: 2 != 3)"),
        (_edit_checkpoint(lambda s: s["model"].update({k: v[:1] for k, v in list(s["model"].items())[:1]}), resign=True), "does not hold a model this version can build"),
        (_edit_config(lambda c: [c]), "config.json is damaged (expected an object of settings, got list)"),
        (_edit_config(lambda c: None), "config.json is damaged (expected an object of settings, got NoneType)"),
        (_edit_config(lambda c: {k: v for k, v in c.items() if k != "train"}), "config.json is damaged (it has no 'train' part)"),
        (_edit_config(lambda c: _set(c, "train", _set(c["train"], "seed", 7))), "disagree (train setting seed: 7 != 0)"),
        (lambda out: os.remove(os.path.join(out, "config.json")), "has no config.json"),
        (lambda out: open(os.path.join(out, "config.json"), "w").write("{not json"), "config.json is damaged"),
    ],
)
def test_damaged_run_folders_never_yield_numbers(capsys, tmp_path, run_dir, change, message):
    out = _damaged_copy(run_dir, tmp_path, change)
    for argv in (["evaluate", out], ["sample", out, "--out", str(tmp_path / "s.npy")], ["encode", out, "--out", str(tmp_path / "z.npy")]):
        assert message in _error(capsys, argv)
        assert capsys.readouterr().out == ""
    assert not os.path.exists(tmp_path / "s.npy") and not os.path.exists(tmp_path / "z.npy")


def test_a_random_state_of_the_wrong_size_is_refused_on_resume(capsys, tmp_path, run_dir):
    out = _damaged_copy(run_dir, tmp_path, _edit_checkpoint(lambda s: s["rng"].update(torch=s["rng"]["torch"][:100]), resign=True))
    err = _error(capsys, ["train", "--resume", "--epochs", "2", "--quiet", "--out", out])
    assert "the checkpoint's random state 'torch' is missing or damaged" in err


def test_a_bug_is_one_line_asking_for_a_report_and_debug_shows_it(capsys, monkeypatch, run_dir, tmp_path):
    def broken(args):
        raise KeyError("the_internal_name")

    monkeypatch.setitem(cli.COMMANDS, "evaluate", broken)
    assert main(["evaluate", run_dir]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyprobvae: internal error: KeyError: 'the_internal_name'. This is a bug")
    assert "--debug shows the traceback" in err
    with pytest.raises(KeyError, match="the_internal_name"):
        main(["evaluate", run_dir, "--debug"])


def test_an_error_of_a_library_is_a_bug_but_one_of_pyprobvae_is_the_users(capsys, monkeypatch, run_dir):
    def torch_raises(args):
        torch.zeros(2, 3) @ torch.zeros(2, 3)  # a RuntimeError from inside torch

    monkeypatch.setitem(cli.COMMANDS, "evaluate", torch_raises)
    assert main(["evaluate", run_dir]) == 3
    assert "internal error: RuntimeError: mat1 and mat2" in capsys.readouterr().err

    def pyprobvae_checks(args):
        cli.verbs.traverse(cli.Run(run_dir), index=10**6)  # pyprobvae's own check raises ValueError

    monkeypatch.setitem(cli.COMMANDS, "evaluate", pyprobvae_checks)
    assert "test example 1000000 does not exist" in _error(capsys, ["evaluate", run_dir])


def test_os_errors_name_the_file(capsys, monkeypatch, run_dir):
    def unreadable(args):
        raise PermissionError(13, "Permission denied", "/some/file")

    monkeypatch.setitem(cli.COMMANDS, "evaluate", unreadable)
    assert "pyprobvae: error: /some/file: Permission denied" in _error(capsys, ["evaluate", run_dir])


def test_out_of_memory_is_one_line(capsys, monkeypatch, run_dir):
    def allocate(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 8000000000000 bytes.")

    monkeypatch.setitem(cli.COMMANDS, "evaluate", allocate)
    assert "out of memory" in _error(capsys, ["evaluate", run_dir])


def _settings_since(part_config):
    return {f.name for f in dataclasses.fields(part_config) if f.metadata.get("since")}


def test_a_run_written_before_newer_settings_existed_loads_evaluates_and_resumes(run_dir, tmp_path, capsys):
    out = str(tmp_path / "old")
    shutil.copytree(run_dir, out)
    config = read_config(out)
    newer = {part: _settings_since(getattr(config, part)) for part in ("data", "model", "train", "evaluation")}
    assert newer["data"] and newer["train"] and newer["evaluation"]  # seq_len, weight_decay, scored_texts at least

    def strip(record, part):  # and, as 0.2.0 wrote it, the retired estimator setting (now objective)
        kept = {key: value for key, value in record.items() if key not in newer[part]}
        return {**kept, "estimator": "pathwise"} if part == "train" else kept

    _edit_config(lambda c: {part: strip(c[part], part) for part in c})(out)
    _edit_checkpoint(lambda s: s.update(model_config=strip(s["model_config"], "model"), train_config=strip(s["train_config"], "train")),
                     resign=True)(out)
    assert main(["evaluate", out, "--iwae-samples", "5"]) == 0
    assert main(["train", "--resume", "--epochs", "2", "--out", out, *SMALL]) == 0
    assert len(json.loads(open(os.path.join(out, "metrics.json")).read())["history"]) == 2
