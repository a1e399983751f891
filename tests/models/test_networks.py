"""The ``network`` setting of every model: conv networks in the Gaussian-latent models, the one setting's defaults."""

import math

import numpy as np
import pytest
import torch

import pyprobvae as ppv
from pyprobvae.config import ConfigError
from pyprobvae.infer import stratified_estimate
from pyprobvae.models import AEConfig, CVAEConfig, ModelConfig, VAEConfig, VQVAEConfig
from pyprobvae.networks import ConvFeatureMap, ConvVectorDecoder, ConvVectorEncoder
from tests.common import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = [
    dict(model="vae", family="diagonal"),
    dict(model="vae", family="mixture", num_components=2),
    dict(model="vae", family="flow", flow="iaf", flow_depth=1),
    dict(model="cvae"),
    dict(model="cvae", prior="learned", family="mixture", num_components=2),
    dict(model="ae"),
]


@pytest.fixture(scope="module")
def tiny_digits():
    """40 random 8x8 images on the 17 levels of the digits, with labels 0 to 9: (train, test)."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 17, size=(40, 8, 8)), np.arange(40) % 10
    return ppv.from_arrays(x[:32], y[:32], "tiny"), ppv.from_arrays(x[32:], y[32:], "tiny")


@pytest.mark.parametrize("options", MODELS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_every_model_trains_with_conv_networks(options, tiny_digits):
    train, test = tiny_digits
    model = tiny_model(network="conv", **options)
    assert isinstance(model.decoder[0] if options["model"] != "cvae" else model.decoder.net[0], ConvVectorDecoder)
    before = [p.detach().clone() for p in model.parameters()]
    history = ppv.fit(model, train, test, ppv.TrainConfig(epochs=1, batch_size=16), progress=False)
    assert all(math.isfinite(history[0][k]) for k in ("train_elbo", "test_elbo"))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    y = test.y if model.conditional else None
    metrics = model.evaluate(test.x, y, iwae_samples=3)
    assert math.isfinite(metrics["recon_nll"])
    assert model.generative == (metrics["test_nll"] is not None)
    if model.generative:
        assert math.isfinite(metrics["test_elbo"]) and math.isfinite(metrics["test_nll"])
    assert model.reconstruct(test.x, y).shape == test.x.shape


@pytest.mark.parametrize("kind", ["vae", "cvae"])
def test_stratified_bound_through_conv_networks(kind, tiny_digits):
    """The stratified estimator decodes (components, batch, latent_dim) codes; the label is broadcast over them."""
    x, y = tiny_digits[1].x, tiny_digits[1].y
    model = tiny_model(kind, network="conv", family="mixture", num_components=3)
    bound = stratified_estimate(model.model, model.guide, x, *([y] if kind == "cvae" else [])).bound
    assert bound.shape == (len(x),) and torch.isfinite(bound).all()


def test_conv_encoders_of_each_model():
    assert isinstance(tiny_model("vae", network="conv").encoder[0], ConvVectorEncoder)
    assert isinstance(tiny_model("ae", network="conv").encoder[0], ConvVectorEncoder)
    cvae = tiny_model("cvae", network="conv")
    assert isinstance(cvae.encoder.body, ConvFeatureMap)
    assert cvae.encoder.net[0].in_features == cvae.encoder.body.out_features + 10  # the one-hot label joins the map
    assert cvae.decoder.net[0].in_features == 3 + 10  # and z


def test_one_network_setting_with_the_vqvae_default():
    assert ModelConfig.__dataclass_fields__["network"].default == "mlp"
    assert VAEConfig().network == AEConfig().network == CVAEConfig().network == "mlp"
    assert VQVAEConfig().network == "conv"
    with pytest.raises(ConfigError, match="unknown network 'rnn'; choose one of mlp, conv"):
        VAEConfig(network="rnn")


def test_conv_networks_refuse_data_that_is_not_an_image():
    with pytest.raises(ConfigError, match=r"got data_shape \(16,\): use network='mlp'"):
        tiny_model("vae", network="conv", data_shape=(16,), likelihood="gaussian")
    with pytest.raises(ConfigError, match=r"got data_shape \(2, 8, 8\)"):
        tiny_model("cvae", network="conv", data_shape=(2, 8, 8))
    with pytest.raises(ConfigError, match="token sequences"):
        tiny_model("vae", network="conv", data_shape=(8,), likelihood="tokens", num_levels=5)
