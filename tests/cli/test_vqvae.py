"""The command line end to end: vqvae."""

import json
import os

import numpy as np
import pytest

from pyprobvae.cli import main
from pyprobvae.data import load_dataset
from pyprobvae.data.text import DEFAULT_SEQ_LEN
from pyprobvae.runs import Run, read_config
from pyprobvae.runs.data_defaults import TEXT_PRIOR, TEXT_PRIOR_TRAINING, TEXT_TRAINING, prior_defaults, training_defaults


@pytest.mark.slow
def test_digits_train_prior_sample_end_to_end(tmp_path, capsys):
    """Stage 1, stage 2, then sampling: the learned prior's samples look like digits, the uniform prior's do not."""
    out = str(tmp_path / "vq")
    assert main(["train", "--model", "vqvae", "--epochs", "30", "--quiet", "--out", out]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        stage1 = json.load(f)
    assert stage1["codes_used"] >= 48 and stage1["prior"] == "uniform"  # seeds 0-3: 64 of 64
    capsys.readouterr()
    assert main(["sample", out, "--n", "4", "--out", str(tmp_path / "uniform.npy")]) == 0
    assert "no prior trained yet" in capsys.readouterr().err
    assert main(["train-prior", out, "--epochs", "20", "--quiet"]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        stage2 = json.load(f)
    assert stage2["prior"] == "transformer" and len(stage2["prior_history"]) == 20
    # a learned prior can only tighten the bound: the uniform one is P log K = 66.5 nats on the codes
    # (seeds 0-3: tighter by 13.2-19.4 nats, mean 15.4, sd 2.7; margin 3.8 sd)
    assert stage2["test_nll"] < stage1["test_nll"] - 5
    uniform, learned = stage1["sample_scores"]["prior"], stage2["sample_scores"]["prior"]
    # seeds 0-3: FD ratio 0.07-0.17, mean 0.10, sd 0.05; margin 8.6 sd
    assert learned["frechet_distance"] < 0.5 * uniform["frechet_distance"]
    # seeds 0-3: confident share 0.48-0.60 against 0.24-0.29 for uniform codes; difference mean 0.27, sd 0.045,
    # margin 6 sd (before the prior embedded codes through the codebook: difference 0.02, sd 0.02)
    assert learned["confident_share"] > uniform["confident_share"]
    # and better than a Gaussian VAE trained as long: VAE seeds 1-2 at 30 epochs FD 22.9 / 24.2, confident share
    # 0.215 / 0.202, against the prior's FD 3.3-8.0 (sd 2.5) and share 0.48-0.60 above: FD difference mean 18,
    # sd 2.7, margin 6.7 sd; share difference mean 0.33, sd 0.05, margin 7 sd
    vae = str(tmp_path / "vae")
    assert main(["train", "--epochs", "30", "--quiet", "--out", vae]) == 0
    with open(os.path.join(vae, "metrics.json")) as f:
        gaussian = json.load(f)["sample_scores"]["prior"]
    assert learned["frechet_distance"] < gaussian["frechet_distance"]
    assert learned["confident_share"] > gaussian["confident_share"]
    capsys.readouterr()
    assert main(["sample", out, "--n", "8", "--temperature", "0.8", "--top-k", "10", "--out", str(tmp_path / "s.png")]) == 0
    assert "no prior" not in capsys.readouterr().err
    assert os.path.getsize(tmp_path / "s.png") > 0


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    return str(path)


def test_text_train_prior_sample_through_the_cli(tmp_path, text_file, capsys):
    out = str(tmp_path / "text")
    assert main(["train", "--model", "vqvae", "--dataset", f"text:{text_file}", "--seq-len", "64", "--tokens-per-code", "2",
                 "--epochs", "2", "--codebook-size", "16", "--quiet", "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 <= summary["recon_accuracy"] <= 1 and "recon_mse" not in summary
    assert os.path.exists(os.path.join(out, "samples.txt"))
    uniform = str(tmp_path / "u.npy")  # before train-prior: a note on stderr, which --quiet silences
    assert main(["sample", out, "--n", "2", "--out", uniform]) == 0
    assert capsys.readouterr() == (uniform + "\n", "pyprobvae: " + Run(out).model.sampling_note() + "\n")
    assert main(["sample", out, "--n", "2", "--out", uniform, "--quiet"]) == 0
    assert capsys.readouterr() == (uniform + "\n", "")
    assert main(["train-prior", out, "--epochs", "2", "--d-model", "16", "--heads", "2", "--layers", "1"]) == 0
    stdout, stderr = capsys.readouterr()
    assert json.loads(stdout)["run_folder"] == os.path.abspath(out) and "test_nll" in json.loads(stdout)
    assert f"pyprobvae: prior stored in {os.path.abspath(out)}" in stderr and "epoch   2/2" in stderr
    assert main(["sample", out, "--n", "3", "--out", str(tmp_path / "s.txt")]) == 0
    text = (tmp_path / "s.txt").read_text()
    assert text.count("--- sample") == 3
    assert capsys.readouterr() == (str(tmp_path / "s.txt") + "\n", text)  # saved, the path printed, the text shown on stderr
    assert main(["sample", out, "--n", "3", "--out", str(tmp_path / "s.npy")]) == 0
    ids = np.load(tmp_path / "s.npy")
    assert ids.shape == (3, 64) and ids.dtype == np.int64
    with open(os.path.join(out, "metrics.json")) as f:
        scores = json.load(f)["sample_scores"]["prior"]
    assert scores["samples"] == 50  # after 2 epochs, maybe no run of 3 letters at all: then no share
    assert (scores["real_word_share"] is None) == (scores["words"] == 0)
    assert main(["sample", out, "--n", "2", "--prompt", "the quick brown", "--top-p", "0.9", "--out", str(tmp_path / "p.txt")]) == 0
    continued = (tmp_path / "p.txt").read_text().split("\n")
    assert continued[0] == "--- sample 0 ---" and len(continued[1]) == 64 and continued[2] == "--- sample 1 ---"
    capsys.readouterr()
    for prompt, message in [("t", "a prompt takes 2 to 63"), ("x" * 64, "has 64 characters")]:
        assert main(["sample", out, "--prompt", prompt, "--out", str(tmp_path / "p.txt")]) == 2
        assert message in capsys.readouterr().err
    assert main(["reconstruct", out, "--n", "2", "--out", str(tmp_path / "r.txt")]) == 0
    assert (tmp_path / "r.txt").read_text().count("--- sample") == 4
    assert main(["encode", out, "--out", str(tmp_path / "codes.npy")]) == 0
    assert np.load(tmp_path / "codes.npy").shape[1] == 32
    capsys.readouterr()
    assert main(["sample", out, "--out", str(tmp_path / "s.png")]) == 2
    assert "token data goes to .txt or .npy" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys, digits):
    vq = str(tmp_path / "vq")
    assert main(["train", "--model", "vqvae", "--epochs", "1", "--codebook-size", "8", "--code-dim", "2",
                 "--iwae-samples", "5", "--quiet", "--out", vq]) == 0
    vae = str(tmp_path / "vae")
    assert main(["train", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--iwae-samples", "5",
                 "--quiet", "--out", vae]) == 0
    capsys.readouterr()
    cases = [
        (["train", "--codebook-size", "8", "--out", str(tmp_path / "x")], "--codebook-size does not apply to --model vae"),
        (["train", "--model", "vqvae", "--latent-dim", "3", "--out", str(tmp_path / "x")], "--latent-dim does not apply"),
        (["train", "--dataset", "text", "--out", str(tmp_path / "x")], "need the VQ-VAE"),
        (["train-prior", vae], "needs a VQ-VAE run"),
        (["sample", vae, "--top-k", "3", "--out", str(tmp_path / "x.png")], "top-k sampling applies"),
        (["sample", vae, "--top-p", "0.5", "--out", str(tmp_path / "x.png")], "top-p sampling applies"),
        (["sample", vq, "--top-p", "1.5", "--out", str(tmp_path / "x.png")], "--top-p"),
        (["sample", vae, "--complete", "2", "--out", str(tmp_path / "x.png")], "no sequence of discrete codes"),
        (["sample", vq, "--prompt", "abc", "--out", str(tmp_path / "x.png")], "a prompt applies to text runs"),
        (["sample", vq, "--complete", "2", "--prompt", "ab", "--out", str(tmp_path / "x.png")], "not allowed with"),
        (["interpolate", vq, "--out", str(tmp_path / "x.png")], "codes are discrete"),
        (["traverse", vq, "--out", str(tmp_path / "x.png")], "codes are discrete"),
        (["sample", vq, "--out", str(tmp_path / "x.txt")], ".txt is for token data"),
        (["train-prior", vq, "--dropout", "1.5"], "must be in [0, 1)"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_the_prior_lives_in_the_checkpoint_and_goes_with_retraining(tmp_path, capsys):
    out = str(tmp_path / "vq")
    train = ["train", "--model", "vqvae", "--epochs", "1", "--codebook-size", "8", "--code-dim", "2", "--quiet", "--out", out]
    assert main(train) == 0
    assert main(["train-prior", out, "--epochs", "1", "--d-model", "8", "--heads", "2", "--layers", "1", "--quiet"]) == 0
    assert sorted(f for f in os.listdir(out) if f.endswith(".pt")) == ["checkpoint.pt", "classifier.pt"]
    run = Run(out)  # rebuilt whole from the checkpoint alone
    assert run.model.code_prior is not None and run.model.config.code_prior.d_model == 8
    assert main(["sample", out, "--complete", "3", "--top-p", "0.8", "--out", str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape == (3, 1, 8, 8)
    assert main(["sample", out, "--complete", "3", "--out", str(tmp_path / "c.png")]) == 0
    assert os.path.getsize(tmp_path / "c.png") > 0
    assert len(run.prior_history) == 1
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model"]["code_prior"]["num_layers"] == 1
    capsys.readouterr()
    # resuming stage 1 would change the codes under the prior: refused, nothing lost
    assert main(train[:-2] + ["--resume", "--epochs", "2", "--out", out]) == 2
    assert "prior over its codes" in capsys.readouterr().err
    assert Run(out).model.code_prior is not None
    assert main(train) == 2  # an existing run is never replaced silently
    assert "--overwrite" in capsys.readouterr().err
    assert main(train + ["--overwrite"]) == 0  # a new model: the old prior modelled other codes
    assert Run(out).model.code_prior is None


def test_text_runs_take_the_text_defaults_unless_given(tmp_path, text_file, capsys):
    out = str(tmp_path / "text")
    assert main(["train", "--model", "vqvae", "--dataset", f"text:{text_file}", "--codebook-size", "16", "--quiet", "--out", out]) == 0
    config = read_config(out)
    assert config.data.seq_len == DEFAULT_SEQ_LEN == 128 and config.model.tokens_per_code == 1
    assert config.train.epochs == TEXT_TRAINING["epochs"] and len(json.loads(capsys.readouterr().out)) > 0
    assert main(["train-prior", out, "--epochs", "1", "--d-model", "16", "--heads", "2", "--layers", "1", "--quiet"]) == 0
    assert read_config(out).model.code_prior.dropout == TEXT_PRIOR["dropout"] == 0.0
    assert main(["train-prior", out, "--epochs", "1", "--d-model", "16", "--heads", "2", "--layers", "1", "--dropout", "0.2", "--quiet"]) == 0
    assert read_config(out).model.code_prior.dropout == 0.2
    assert prior_defaults("categorical") == ({}, {})
    assert prior_defaults("tokens") == (TEXT_PRIOR, TEXT_PRIOR_TRAINING)
    # an image run keeps the configs' own defaults
    assert training_defaults("categorical", load_dataset("digits", "train")) == {"binarize": None}
