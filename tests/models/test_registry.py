"""
Adding a model is one class plus one registration: a toy model defined and
registered here trains, evaluates and samples through the command line, and
its run folder rebuilds it, with no other module edited.
"""

import json
import os
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyprobvae.cli import main
from pyprobvae.config import ConfigError, setting
from pyprobvae.evaluation import iwae_log_likelihood
from pyprobvae.families import DiagonalNormal
from pyprobvae.infer import dataset_elbo
from pyprobvae.likelihoods import make_likelihood
from pyprobvae.models import MODELS, LatentVariableModel, ModelConfig, build_model, model_config, register_model
from pyprobvae.runs import Run


@dataclass
class ToyConfig(ModelConfig):
    """A linear-Gaussian latent model with a prior of adjustable scale."""

    model: str = setting("toy", choices=("toy",))
    latent_dim: int = setting(2, minimum=1)
    """Dimension of z."""
    prior_scale: float = setting(1.0, above=0)
    """Scale s of the prior N(0, s^2 I)."""


class Toy(LatentVariableModel):
    """z ~ N(0, s^2 I), x ~ p(x | linear(z)); q(z|x) a diagonal normal of linear(x)."""

    Config = ToyConfig
    description = "the toy model"

    def __init__(self, config):
        super().__init__(config)
        likelihood = make_likelihood(config.likelihood, config.data_shape, config.num_levels)
        self.encoder = nn.Sequential(nn.Flatten(), DiagonalNormal(likelihood.data_dim, config.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(config.latent_dim, likelihood.num_outputs), likelihood)

    @property
    def likelihood(self):
        return self.decoder[-1]

    def _prior(self, n):
        loc = self.decoder[0].weight.new_zeros(n, self.config.latent_dim)
        return dist.Normal(loc, self.config.prior_scale).to_event(1)

    def model(self, x, y=None, register=True):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self._prior(x.shape[0]))
            pyro.sample("x", self.decoder(z), obs=x)

    def guide(self, x, y=None, register=True):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.encoder(x))

    @torch.no_grad()
    def encode(self, x, y=None):
        return self.encoder(x).mean

    @torch.no_grad()
    def decode(self, z, y=None):
        return self.decoder(z).mean

    def sample(self, num_samples, *, temperature=1.0):
        return self.decode(temperature * self._prior(num_samples).sample())

    def evaluate(self, x, y=None, *, iwae_samples=1000, analytic_kl=True):
        terms = dataset_elbo(self, x, analytic_kl=analytic_kl)
        return {"test_elbo": float(terms.elbo.mean()), "test_nll": float(-iwae_log_likelihood(self, x, iwae_samples).mean())}


@pytest.fixture
def toy():
    register_model(Toy)
    yield Toy
    del MODELS["toy"]


def test_a_registered_model_trains_evaluates_and_samples_through_the_cli(toy, tmp_path, capsys):
    out = str(tmp_path / "toy")
    assert main(["train", "--model", "toy", "--prior-scale", "0.5", "--latent-dim", "3", "--epochs", "2",
                 "--iwae-samples", "5", "--quiet", "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert np.isfinite(summary["test_nll"])
    run = Run(out)  # rebuilt from the checkpoint alone
    assert isinstance(run.model, Toy) and run.model.config.prior_scale == 0.5 and run.model.config.latent_dim == 3
    assert main(["evaluate", out, "--iwae-samples", "5"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["test_elbo"])
    assert main(["sample", out, "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 1, 8, 8)
    assert os.path.exists(os.path.join(out, "curves.png"))
    # what the toy cannot do is refused in one line, by the interface's defaults
    capsys.readouterr()
    assert main(["interpolate", out, "--out", str(tmp_path / "i.png")]) == 2
    assert "the toy model has no path between its codes" in capsys.readouterr().err
    assert main(["train", "--model", "toy", "--codebook-size", "8", "--out", str(tmp_path / "x")]) == 2
    assert "--codebook-size does not apply to --model toy" in capsys.readouterr().err
    assert main(["train", "--prior-scale", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--prior-scale does not apply to --model vae: it needs the toy model (--model toy)" in capsys.readouterr().err


def test_the_registry_builds_every_model_from_its_stored_config(toy):
    for name in MODELS:
        settings = dict(data_shape=(1, 8, 8), likelihood="categorical", num_levels=17)
        if name == "cvae":
            settings["num_classes"] = 10
        model = build_model(model_config(name, **settings))
        rebuilt = build_model(json.loads(json.dumps(model.config.to_dict())))
        assert type(rebuilt) is type(model) and rebuilt.config == model.config
        rebuilt.load_state_dict(model.state_dict())


def test_unknown_models_and_settings_are_named():
    with pytest.raises(ConfigError, match="unknown model 'gan'; choose one of vae, ae, cvae, vqvae"):
        model_config("gan")
    with pytest.raises(ConfigError, match="VAEConfig has no setting 'widths'"):
        model_config("vae", widths=(3,))
    with pytest.raises(ConfigError, match="codebook_size does not apply to model='vae': it needs a VQ-VAE"):
        model_config("vae", codebook_size=8)
    with pytest.raises(ValueError, match="must give its 'model' field the model's name"):
        register_model(type("Nameless", (LatentVariableModel,), {"Config": ModelConfig}))
