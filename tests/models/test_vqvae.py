"""The VQ-VAE as a Pyro model/guide pair, its transformer prior, and the runs and CLI around them."""

import json
import math
import os

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

import pyprobvae as ppv
from pyprobvae.cli import main
from pyprobvae.infer import dataset_elbo, elbo_terms
from pyprobvae.models import VQVAE, build_model
from pyprobvae.priors import TransformerPrior, TransformerPriorConfig
from pyprobvae.runs import Run

DIGITS = (1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")


def build_vqvae(data_shape, **settings):
    return ppv.build_vae(data_shape, model="vqvae", **settings)


def _vqvae(ema=False, codebook_size=16, seed=0, code_dim=4, **options):
    pyro.set_rng_seed(seed)
    return build_vqvae(DIGITS, codebook_size=codebook_size, code_dim=code_dim, likelihood="categorical", num_levels=17,
                       ema=ema, **options)


def test_elbo_terms_are_reconstruction_uniform_kl_and_penalties(digits):
    model = _vqvae(beta=0.5)
    x = digits[1].x[:6]
    model.train()
    terms = elbo_terms(model.model, model.guide, x, register=False)
    model.eval()
    quantized = model.quantizer(model.encoder(x))
    # KL(q || uniform) = P log K for a point-mass guide on the codes
    torch.testing.assert_close(terms.kl, torch.full((6,), 16 * math.log(16)))
    torch.testing.assert_close(terms.penalty, quantized.codebook_loss + 0.5 * quantized.commitment_loss)
    expected = model.decoder(model.quantizer.lookup(quantized.indices)).log_prob(x)
    torch.testing.assert_close(terms.log_likelihood, expected, rtol=1e-5, atol=1e-4)


def test_stock_trace_elbo_subtracts_the_guide_factors(digits):
    """Pyro's Trace_ELBO counts the guide's factors in log q: its loss is -sum(ll - kl - penalty)."""
    model = _vqvae()
    model.eval()
    x = digits[1].x[:5]
    terms = elbo_terms(model.model, model.guide, x, register=False)
    loss = Trace_ELBO().loss(model.model, model.guide, x)
    expected = float(-(terms.log_likelihood - terms.kl - terms.penalty).sum().detach())
    assert loss == pytest.approx(expected, rel=1e-5)


def test_penalty_per_example_does_not_depend_on_batch_size(digits):
    model = _vqvae()
    model.eval()
    x = digits[1].x[:8]
    small = elbo_terms(model.model, model.guide, x, register=False).penalty.mean()
    large = elbo_terms(model.model, model.guide, x.repeat(4, 1, 1, 1), register=False).penalty.mean()
    torch.testing.assert_close(small, large)


def test_straight_through_passes_the_decoder_gradient_to_the_encoder(digits):
    model = _vqvae()
    model.eval()
    x = digits[1].x[:4]
    seen = {}
    encoder_output = model.encoder(x)
    encoder_output.retain_grad()
    quantized = model.quantizer(encoder_output)
    quantized.z_q.retain_grad()
    model.decoder(quantized.z_q).log_prob(x).sum().backward()
    seen["z_q"], seen["z_e"] = quantized.z_q.grad, encoder_output.grad
    torch.testing.assert_close(seen["z_e"], seen["z_q"])
    assert seen["z_e"].abs().sum() > 0


def test_codebook_prior_log_prob_and_samples(digits):
    model = _vqvae()
    model.eval()
    x = digits[1].x[:5]
    codes = model.encode(x)
    z = model.quantizer.lookup(codes)
    prior = model.prior(5)
    torch.testing.assert_close(prior.log_prob(z), torch.full((5,), -16 * math.log(16)))
    model.code_prior = TransformerPrior(TransformerPriorConfig(16, 16, d_model=16, num_heads=2, num_layers=1)).eval()
    torch.testing.assert_close(model.prior(5).log_prob(z), model.code_prior.log_prob(codes))
    draws = model.prior(7).sample()
    assert draws.shape == (7, 16, 4)
    # every drawn vector is a codebook entry
    torch.testing.assert_close(model.quantizer.lookup(model.quantizer.nearest(draws)), draws)


def test_build_errors():
    with pytest.raises(ValueError, match="unknown network"):
        build_vqvae(DIGITS, network="rnn")
    with pytest.raises(ValueError, match="images of shape"):
        build_vqvae((64,), likelihood="gaussian")
    with pytest.raises(ValueError, match="network='conv' for token sequences"):
        build_vqvae((8,), network="mlp", likelihood="tokens", num_levels=5)
    assert isinstance(ppv.build_vae(DIGITS, model="vqvae"), VQVAE)  # one builder for every registered model
    with pytest.raises(ValueError, match="need the VQ-VAE"):
        ppv.build_vae((8,), likelihood="tokens", num_levels=5)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        build_vqvae(DIGITS, likelihood="categorical", num_levels=17, beta=-1.0)
    mlp = build_vqvae(DIGITS, network="mlp", num_positions=3, code_dim=2, hidden=[8], likelihood="bernoulli")
    assert isinstance(build_model(mlp.config.to_dict()), VQVAE) and mlp.num_positions == 3


@pytest.mark.parametrize("ema", [False, True])
def test_training_keeps_codes_in_use_and_beats_the_uniform_bound_with_a_prior(digits, ema, one_thread):
    train, test = digits
    model = _vqvae(ema=ema, codebook_size=32, code_dim=16)
    history = ppv.fit(model, train, test, ppv.TrainConfig(epochs=8), progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    assert history[-1]["train_penalty"] > 0
    metrics = model.evaluate(test.x)
    # most codes stay in use, thanks to k-means initialization and restarts of rare codes
    assert metrics["codes_used"] >= 26 and metrics["codebook_perplexity"] > 10
    assert metrics["prior"] == "uniform"
    assert metrics["code_nll"] == pytest.approx(16 * math.log(32), rel=1e-6)
    assert metrics["bits_per_dim"] == pytest.approx(metrics["test_nll"] / (64 * math.log(2)))
    assert metrics["recon_mse"] < 0.1


def test_evaluation_counts_codes_over_the_whole_set(digits):
    model = _vqvae()
    model.eval()
    x = digits[1].x
    codes = model.encode(x)
    counts = torch.bincount(codes.flatten(), minlength=16).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    metrics = model.evaluate(x, batch_size=7)
    assert metrics["codebook_perplexity"] == pytest.approx(float(entropy.exp()), rel=1e-9)
    assert metrics["codes_used"] == int((counts > 0).sum())


@pytest.mark.slow
def test_digits_train_prior_sample_end_to_end(tmp_path, capsys):
    """Stage 1, stage 2, then sampling: the learned prior's samples look like digits, the uniform prior's do not."""
    out = str(tmp_path / "vq")
    assert main(["train", "--model", "vqvae", "--epochs", "30", "--quiet", "--out", out]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        stage1 = json.load(f)
    assert stage1["codes_used"] >= 48 and stage1["prior"] == "uniform"
    capsys.readouterr()
    assert main(["sample", out, "--n", "4", "--out", str(tmp_path / "uniform.npy")]) == 0
    assert "no prior trained yet" in capsys.readouterr().err
    assert main(["train-prior", out, "--epochs", "20", "--quiet"]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        stage2 = json.load(f)
    assert stage2["prior"] == "transformer" and len(stage2["prior_history"]) == 20
    # a learned prior can only tighten the bound: the uniform one is P log K = 66.5 nats on the codes
    assert stage2["test_nll"] < stage1["test_nll"] - 5
    uniform, learned = stage1["sample_scores"]["prior"], stage2["sample_scores"]["prior"]
    assert learned["frechet_distance"] < 0.5 * uniform["frechet_distance"]
    assert learned["confident_share"] > uniform["confident_share"]
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
    assert main(["train", "--model", "vqvae", "--dataset", f"text:{text_file}", "--epochs", "2", "--codebook-size", "16",
                 "--quiet", "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-2])
    assert 0 <= summary["recon_accuracy"] <= 1 and "recon_mse" not in summary
    assert os.path.exists(os.path.join(out, "samples.txt"))
    assert main(["train-prior", out, "--epochs", "2", "--d-model", "16", "--heads", "2", "--layers", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sample", out, "--n", "3", "--out", str(tmp_path / "s.txt")]) == 0
    text = (tmp_path / "s.txt").read_text()
    assert text.count("--- sample") == 3
    assert capsys.readouterr().out == text + str(tmp_path / "s.txt") + "\n"  # printed and saved
    assert main(["sample", out, "--n", "3", "--out", str(tmp_path / "s.npy")]) == 0
    ids = np.load(tmp_path / "s.npy")
    assert ids.shape == (3, 64) and ids.dtype == np.int64
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
    assert len(run.prior_history) == 1
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model"]["code_prior"]["num_layers"] == 1
    capsys.readouterr()
    # resuming stage 1 would change the codes under the prior: refused, nothing lost
    assert main(train[:-2] + ["--resume", "--epochs", "2", "--out", out]) == 2
    assert "prior over its codes" in capsys.readouterr().err
    assert Run(out).model.code_prior is not None
    assert main(train) == 0  # a new model: the old prior modelled other codes
    assert Run(out).model.code_prior is None


def test_stock_svi_runs_the_vqvae(digits):
    pyro.clear_param_store()
    model = _vqvae()
    x = digits[0].x[:64]
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
    before = dataset_elbo(model, x).log_likelihood.mean()
    for _ in range(20):
        svi.step(x)
    model.eval()
    assert dataset_elbo(model, x).log_likelihood.mean() > before
    trace = poutine.trace(model.guide).get_trace(x)
    assert {"codebook", "commitment"} <= set(trace.nodes)
