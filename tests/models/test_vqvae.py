"""The VQ-VAE as a Pyro model/guide pair, its transformer prior, and the runs and CLI around them."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

import pyprobvae as ppv
from pyprobvae.data import load_dataset
from pyprobvae.infer import dataset_elbo, elbo_terms
from pyprobvae.models import VQVAE, build_model
from pyprobvae.models.vqvae import CODEBOOK_SIZE, TEXT_CODEBOOK_SIZE, VQVAEConfig
from pyprobvae.priors import TransformerPrior, TransformerPriorConfig
from tests.common import tiny_model

DIGITS = (1, 8, 8)


def build_vqvae(data_shape, **settings):
    return ppv.build_vae(data_shape, model="vqvae", **settings)


def _vqvae(ema=False, codebook_size=16, seed=0, code_dim=4, **options):
    return tiny_model("vqvae", seed=seed, codebook_size=codebook_size, code_dim=code_dim, ema=ema, hidden=(256,), **options)


def test_elbo_terms_are_reconstruction_uniform_kl_and_penalties(digits):
    model = _vqvae(commitment_weight=0.5)
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
    with pytest.raises(ValueError, match="commitment_weight must be >= 0"):
        build_vqvae(DIGITS, likelihood="categorical", num_levels=17, commitment_weight=-1.0)
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


@pytest.mark.parametrize("with_prior", [False, True])
def test_completion_keeps_the_codes_of_the_top_half_and_draws_the_rest(digits, with_prior):
    model = _vqvae().eval()
    if with_prior:
        model.attach_code_prior(TransformerPriorConfig(d_model=8, num_heads=2, num_layers=1))
    x = digits[1].x[:5]
    kept = model.prefix_positions()
    assert kept == 8  # the upper 2 of the 4 rows of the 4x4 grid
    torch.manual_seed(0)
    completed = model.complete(x, kept, temperature=0.9, top_p=0.95)
    torch.manual_seed(0)
    codes = model.prior(5).sample_codes(5, 0.9, None, 0.95, prefix=model.encode(x)[:, :kept])
    assert torch.equal(codes[:, :kept], model.encode(x)[:, :kept])
    assert len(codes[:, kept:].unique()) > 1
    torch.testing.assert_close(completed, model.decode(codes), rtol=0, atol=0)


def test_completion_errors(digits):
    model = _vqvae().eval()
    with pytest.raises(ValueError, match="the kept codes must number 0 to 15 of 16"):
        model.complete(digits[1].x[:2], 16)
    with pytest.raises(ValueError, match="a prompt applies to text runs"):
        model.prefix_positions(tokens=4)
    with pytest.raises(ValueError, match="no sequence of discrete codes to complete"):
        tiny_model("vae").prefix_positions()


@pytest.mark.parametrize("tokens_per_code", [1, 2, 4, 8])
def test_text_codes_cover_tokens_per_code_characters(tokens_per_code):
    model = build_vqvae((32,), likelihood="tokens", num_levels=7, tokens_per_code=tokens_per_code, code_dim=4).eval()
    tokens = torch.randint(0, 7, (3, 32), generator=torch.Generator().manual_seed(0))
    assert model.num_positions == 32 // tokens_per_code
    assert model.encode(tokens).shape == (3, 32 // tokens_per_code)
    assert model.reconstruct(tokens).shape == (3, 32)
    # a prompt keeps the codes whose characters it holds in full
    assert model.prefix_positions(tokens=9) == 9 // tokens_per_code
    assert build_model(model.config.to_dict()).num_positions == model.num_positions


def test_tokens_per_code_errors():
    with pytest.raises(ValueError, match="unknown tokens_per_code 3; choose one of 1, 2, 4, 8"):
        build_vqvae((32,), likelihood="tokens", num_levels=7, tokens_per_code=3)
    with pytest.raises(ValueError, match="sequences of 30 characters do not split into codes of tokens_per_code=4"):
        build_vqvae((30,), likelihood="tokens", num_levels=7, tokens_per_code=4)
    with pytest.raises(ValueError, match="a prompt takes 4 to 31 \\(one code covers 4\\)"):
        build_vqvae((32,), likelihood="tokens", num_levels=7, tokens_per_code=4).prefix_positions(tokens=3)


def test_the_codebook_size_left_open_is_the_datas_default():
    text = build_vqvae((32,), likelihood="tokens", num_levels=7)
    assert text.codebook_size == text.config.codebook_size == TEXT_CODEBOOK_SIZE == 128  # stored resolved
    assert build_vqvae(DIGITS, likelihood="categorical", num_levels=17).codebook_size == CODEBOOK_SIZE == 64
    assert VQVAEConfig().for_data(load_dataset("digits", "test")).codebook_size == 64
    assert VQVAEConfig(codebook_size=16).for_data(load_dataset("digits", "test")).codebook_size == 16
    assert build_model(text.config.to_dict()).codebook_size == 128
