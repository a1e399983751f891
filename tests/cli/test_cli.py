import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pyprobvae.cli import COMMANDS, main, make_parser

SMALL = ["--hidden", "32", "--latent-dim", "2", "--iwae-samples", "20", "--quiet"]
SUMMARY = {"test_elbo", "test_nll", "iwae_samples", "kl", "active_units", "run_folder"}
"""The keys of the JSON object ``train`` prints for a VAE (docs/cli.rst, Output)."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "run")
    assert main(["train", "--epochs", "2", "--out", out, *SMALL]) == 0
    return out


def test_train_writes_run_folder(run_dir, capsys):
    for name in ("checkpoint.pt", "config.json", "metrics.json", "reconstructions.png", "samples.png",
                 "interpolation.png", "latent.png", "curves.png"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert len(metrics["history"]) == 2
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["model"]["hidden"] == [32] and config["model"]["likelihood"] == "categorical"


def test_train_prints_one_json_object_and_its_progress_on_stderr(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "--epochs", "1", "--out", out, *(a for a in SMALL if a != "--quiet")]) == 0
    stdout, stderr = capsys.readouterr()
    summary = json.loads(stdout)  # the whole of stdout, as `pyprobvae train ... | jq .test_nll` reads it
    assert set(summary) == SUMMARY and summary["run_folder"] == os.path.abspath(out)
    assert "epoch   1/1  train ELBO" in stderr  # the per-epoch line (and the bar) go to stderr


def test_evaluate_prints_json(run_dir, capfd):
    assert main(["evaluate", run_dir, "--iwae-samples", "50", "--quiet"]) == 0
    stdout, stderr = capfd.readouterr()  # the file descriptors: nothing bypasses sys.stdout either
    result = json.loads(stdout)
    assert stderr == ""
    assert set(result) >= SUMMARY - {"run_folder"}
    assert result["iwae_samples"] == 50
    assert result["test_elbo"] < 0 < result["test_nll"]
    # the IWAE bound is tighter than the ELBO: -test_nll >= test_elbo up to MC noise
    assert -result["test_nll"] > result["test_elbo"] - 1.0
    assert 0 <= result["active_units"] <= 2 and result["kl"] >= 0


def test_sample_npy_and_png(run_dir, tmp_path):
    npy = str(tmp_path / "s.npy")
    assert main(["sample", run_dir, "--n", "5", "--out", npy]) == 0
    samples = np.load(npy)
    assert samples.shape == (5, 1, 8, 8)
    assert samples.min() >= 0 and samples.max() <= 1
    png = str(tmp_path / "s.png")
    assert main(["sample", run_dir, "--n", "5", "--out", png]) == 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_sample_same_seed_same_output(run_dir, tmp_path):
    a, b = str(tmp_path / "a.npy"), str(tmp_path / "b.npy")
    main(["sample", run_dir, "--n", "4", "--out", a, "--seed", "3"])
    main(["sample", run_dir, "--n", "4", "--out", b, "--seed", "3"])
    np.testing.assert_array_equal(np.load(a), np.load(b))


def test_reconstruct_interpolate_encode(run_dir, tmp_path):
    assert main(["reconstruct", run_dir, "--n", "6", "--out", str(tmp_path / "r.npy")]) == 0
    assert np.load(tmp_path / "r.npy").shape == (6, 1, 8, 8)
    assert main(["interpolate", run_dir, "--pairs", "3", "--steps", "5", "--method", "spherical",
                 "--out", str(tmp_path / "i.npy")]) == 0
    assert np.load(tmp_path / "i.npy").shape == (3, 5, 1, 8, 8)
    assert main(["interpolate", run_dir, "--out", str(tmp_path / "i.png")]) == 0
    assert main(["encode", run_dir, "--out", str(tmp_path / "z.npy")]) == 0
    assert np.load(tmp_path / "z.npy").shape == (360, 2)


@pytest.mark.parametrize("argv, name", [
    (["sample", "--n", "4"], "s.png"),
    (["reconstruct", "--n", "4"], "r.npy"),
    (["interpolate", "--pairs", "2", "--steps", "3"], "i.npy"),
    (["traverse", "--steps", "3"], "t.png"),
    (["encode"], "z.npy"),
])
def test_a_writing_verb_prints_exactly_the_path_it_wrote(argv, name, run_dir, tmp_path, capfd):
    path = str(tmp_path / name)
    assert main([argv[0], run_dir, *argv[1:], "--out", path, "--quiet"]) == 0
    assert capfd.readouterr() == (path + "\n", "")  # `out=$(pyprobvae sample ...)` holds the path; --quiet: no stderr
    assert os.path.isfile(path)


def test_every_verb_takes_quiet():
    verbs = next(a for a in make_parser()._actions if a.dest == "command").choices
    assert set(verbs) == set(COMMANDS)
    for name, parser in verbs.items():
        assert any("--quiet" in a.option_strings for a in parser._actions), name


@pytest.mark.parametrize("argv", [
    ["sample", "RUN", "--out", "x.jpg", "--quiet"],  # found by pyprobvae
    ["evaluate", "RUN", "--iwae-samples", "0", "--quiet"],  # found by the parser
])
def test_an_error_is_one_line_on_stderr_nothing_on_stdout_exit_2(argv, run_dir, capfd):
    assert main([run_dir if a == "RUN" else a for a in argv]) == 2
    stdout, stderr = capfd.readouterr()
    assert stdout == "" and stderr.count("\n") == 1 and stderr.startswith("pyprobvae: error: "), (stdout, stderr)


def test_resume_continues_to_more_epochs(tmp_path, capfd):
    out = str(tmp_path / "r")
    assert main(["train", "--epochs", "1", "--out", out, *SMALL]) == 0
    capfd.readouterr()
    assert main(["train", "--resume", "--epochs", "2", "--out", out, "--quiet"]) == 0
    stdout, stderr = capfd.readouterr()
    assert set(json.loads(stdout)) == SUMMARY and stderr == ""  # --quiet: nothing on stderr on success
    with open(os.path.join(out, "metrics.json")) as f:
        assert [h["epoch"] for h in json.load(f)["history"]] == [1, 2]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--epochs", "-3"], "--epochs: must be in [1, 100000], got -3"),
        (["train", "--latent-dim", "0"], "--latent-dim: must be in [1, 4096], got 0"),
        (["train", "--hidden", "4x"], "--hidden"),
        (["train", "--guide", "nope"], "unknown value 'nope'; choose one of diagonal"),
        (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["train", "--dataset", "mnist"], "data_dir"),
        (["train", "--device", "cuda:7", "--epochs", "1"], "cuda"),
        (["train", "--resume"], "--resume needs --out"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv, message, capsys, tmp_path):
    if "--device" in argv:
        pytest.importorskip("torch")
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    argv = [*argv, "--out", str(tmp_path / "r")] if argv[0] == "train" and "--out" not in argv and "--resume" not in argv else argv
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyprobvae: error:")
    assert message in err


def test_run_folder_errors(tmp_path, capsys, run_dir):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "missing"), "--out", "x.png"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sample", run_dir, "--out", str(tmp_path / "x.jpg")]) == 2
    assert "must end in .png, .txt or .npy" in capsys.readouterr().err


def test_corrupt_checkpoint_is_an_error(tmp_path, capsys, run_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "checkpoint.pt"):
        with open(os.path.join(run_dir, name), "rb") as f:
            data = f.read()
        (broken / name).write_bytes(data[: len(data) // 2] if name == "checkpoint.pt" else data)
    assert main(["evaluate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "checkpoint.pt" in err and err.count("\n") == 1


def test_console_script_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "pyprobvae.cli", "train", "--epochs", "0"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_train_on_local_mnist_files(tmp_path, capsys):
    from pyprobvae.data import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 32)):
        write_idx(str(tmp_path / f"{prefix}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(str(tmp_path / f"{prefix}-labels-idx1-ubyte"), rng.integers(0, 10, n, dtype=np.uint8))
    out = str(tmp_path / "run")
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1", "--out", out, *SMALL]) == 0
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["model"]["likelihood"] == "bernoulli" and config["train"]["binarize"] == "dynamic"
    assert config["model"]["data_shape"] == [1, 28, 28]
    capsys.readouterr()
    assert main(["sample", out, "--n", "3", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (3, 1, 28, 28)


def test_bernoulli_on_grey_digits_without_binarization_is_an_error(tmp_path, capsys):
    argv = ["train", "--likelihood", "bernoulli", "--binarize", "none", "--epochs", "1", "--out", str(tmp_path / "r"), *SMALL]
    assert main(argv) == 2
    assert "binarize" in capsys.readouterr().err


def _tree(directory):
    """Every file of a folder with its bytes."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = f.read()
    return found


def test_an_existing_run_is_never_replaced_silently(tmp_path, capsys, run_dir):
    out = str(tmp_path / "run")
    shutil.copytree(run_dir, out)
    before = _tree(out)
    argv = ["train", *SMALL, "--epochs", "1", "--out", out]
    assert main(argv) == 2
    assert "already holds a run: continue it with --resume, or replace it with --overwrite" in capsys.readouterr().err
    assert main(argv + ["--resume", "--overwrite"]) == 2
    assert _tree(out) == before
    # a replacement that fails (it diverges) leaves the old run whole, and nothing beside it
    assert main(argv + ["--overwrite", "--likelihood", "gaussian", "--gaussian-scale", "1e-30"]) == 1
    assert "training diverged" in capsys.readouterr().err
    assert _tree(out) == before and sorted(os.listdir(tmp_path)) == ["run"]
    # one that succeeds replaces it whole
    assert main(argv + ["--overwrite", "--seed", "5"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["train"]["seed"] == 5
    assert sorted(os.listdir(tmp_path)) == ["run"]
    (tmp_path / "file").write_text("x")
    assert main(["train", *SMALL, "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_resume_removes_the_leftovers_of_interrupted_writes(tmp_path, capsys, run_dir):
    out = str(tmp_path / "run")
    shutil.copytree(run_dir, out)
    leftover = os.path.join(out, ".pyprobvae-abc123.tmp")
    with open(leftover, "wb") as f:
        f.write(b"half a checkpoint")
    with open(os.path.join(out, "config.json")) as f:
        epochs = json.load(f)["train"]["epochs"]
    assert main(["train", "--resume", "--epochs", str(epochs + 1), "--quiet", "--out", out]) == 0
    assert not os.path.exists(leftover)


def test_a_run_with_a_non_finite_evaluation_is_not_finished():
    from pyprobvae.infer import NonFiniteLossError
    from pyprobvae.runs.verbs import _check_finite

    _check_finite({"test_nll": 90.5, "sample_scores": {"prior": {"frechet_distance": 3.0}}, "kl_per_dim": None})
    with pytest.raises(NonFiniteLossError, match="the evaluation's sample_scores.prior.frechet_distance is inf"):
        _check_finite({"test_nll": 90.5, "sample_scores": {"prior": {"frechet_distance": float("inf")}}})
