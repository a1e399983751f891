"""
The deterministic autoencoder, written as a Pyro model/guide pair so that its
one difference from the VAE is visible: a point guide and no prior term.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

from ..config import setting
from ..distributions import tempered_sample
from ..priors import StandardNormal
from .base import Exhibit, ModelConfig, SamplingOptions, SamplingPlan
from .vae import VAE, decoder_network, encoder_features

CODE_SOURCES = ("standard", "fitted")

_POINT_GUIDE = "the autoencoder has a point guide: {} does not apply (it sets the variational family)"


@dataclass
class AEConfig(ModelConfig):
    """The architecture of an :class:`Autoencoder`: the VAE's networks (``network``) around a code z."""

    model: str = setting("ae", choices=("ae",))
    latent_dim: int = setting(8, minimum=1, maximum=4096)
    """Dimension of the code z."""


class Autoencoder(VAE):
    r"""
    A deterministic autoencoder: the VAE's encoder and decoder networks with::

        model(x):  z_n ~ flat (improper, log density 0),  x_n ~ p(x | z_n)
        guide(x):  z_n = f(x_n)   (a Delta distribution)

    The ELBO of this pair is :math:`\log p(x \mid f(x))`: the log density of a Delta
    guide and of the flat "prior" are both zero, so there is no KL term and
    training is reconstruction alone. Nothing shapes where codes lie, so the
    model is not generative: decoding a random :math:`z \sim \mathcal{N}(0, I)`
    gives whatever the decoder makes of a point that no training code is near.
    :meth:`sample` shows it, from :math:`\mathcal{N}(0, I)` or from a Gaussian fitted to the
    codes of data you pass.

    :param AEConfig config: the architecture.
    """

    Config = AEConfig
    description = "the autoencoder"
    config: AEConfig  # type: ignore[assignment]  # not a VAEConfig: the autoencoder has no family and no prior
    generative = False
    unused_training_settings = ("beta", "free_bits", "objective", "particles", "gradient")
    inapplicable = {name: _POINT_GUIDE.format(name) for name in ("family", "num_components", "flow", "flow_depth")}

    def _networks(self, config, likelihood):
        features = encoder_features(config)
        decoder = nn.Sequential(decoder_network(config, likelihood), likelihood)
        encoder = nn.Sequential(features, nn.Linear(features.out_features, config.latent_dim))
        return encoder, decoder, StandardNormal(config.latent_dim)

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True) -> None:
        r"""
        :math:`p(x \mid z)` under a flat code distribution, for a batch ``x``.

        :param y: must be None: the autoencoder takes no labels.
        :param bool register: register the decoder's parameters with Pyro
            (see :meth:`VAE.model <pyprobvae.models.VAE.model>`).
        """
        if register:
            pyro.module("decoder", self.decoder)
        self.condition(y, x.shape[0])
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.ImproperUniform(constraints.real, (x.shape[0],), (self.latent_dim,)))
            pyro.sample("x", self.decoder(z), obs=x)

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True) -> None:
        """
        The point guide :math:`z = f(x)`.

        :param y: must be None: the autoencoder takes no labels.
        :param bool register: register the encoder's parameters with Pyro.
        """
        if register:
            pyro.module("encoder", self.encoder)
        self.condition(y, x.shape[0])
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.encoder(x), event_dim=1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        :param torch.Tensor x: data, shape ``(batch, *data_shape)``.
        :param y: must be None: the autoencoder takes no labels.
        :return: the codes :math:`f(x)`, shape ``(batch, latent_dim)``.
        """
        return self.encoder(x, *self.condition(y, x.shape[0]))

    @torch.no_grad()
    def sample(  # type: ignore[override]  # the draws are given what this model takes: data to fit
        self, num_samples: int, *, temperature: float = 1.0, fitted_to: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        r"""
        Decode random codes: :math:`z \sim \mathcal{N}(0, I)` by default, or
        :math:`z \sim \mathcal{N}(m, S)` with the mean :math:`m` and covariance
        :math:`S` of the codes of ``fitted_to``; the
        temperature scales the deviation from the mean as in
        :meth:`VAE.sample <pyprobvae.models.VAE.sample>`.

        :param int num_samples: how many examples.
        :param float temperature: :math:`T \ge 0`.
        :param torch.Tensor fitted_to: data whose codes the Gaussian is fitted
            to (e.g. the training set), or None for :math:`\mathcal{N}(0, I)`.
        :return: :math:`\mathbb{E}[x \mid z]` for each draw, shape ``(num_samples, *data_shape)``.
        """
        if fitted_to is None:
            return super().sample(num_samples, temperature=temperature)
        codes = self.encode(fitted_to)
        covariance = torch.cov(codes.T).reshape(self.latent_dim, self.latent_dim)
        jitter = 1e-6 * covariance.diagonal().mean().clamp(min=1e-12) * torch.eye(self.latent_dim, device=codes.device)
        gaussian = dist.MultivariateNormal(codes.mean(0), covariance + jitter)
        return self.decode(tempered_sample(gaussian.expand((num_samples,)), temperature))

    def sampling_plan(
        self, num_samples: int, options: SamplingOptions = SamplingOptions(), training_data: Optional[Callable[[], torch.Tensor]] = None
    ) -> SamplingPlan:
        r"""``codes="fitted"`` draws from a Gaussian fitted to the codes of ``training_data()``; ``"standard"`` (default) from :math:`\mathcal{N}(0, I)`."""
        self._refuse(options, "codes")
        codes = options.codes
        if codes not in (None,) + CODE_SOURCES:
            raise ValueError(f"unknown code source {codes!r}; choose one of {', '.join(CODE_SOURCES)}")
        if codes != "fitted":
            return SamplingPlan(num_samples, None, {})
        if training_data is None:
            raise ValueError("codes='fitted' draws from a Gaussian fitted to the training codes: give training_data")
        return SamplingPlan(num_samples, None, {"fitted_to": training_data()})

    def scored_samples(self, num_samples: int, training_data: Callable[[], torch.Tensor]) -> Dict[str, SamplingPlan]:
        r"""Decoded codes from :math:`\mathcal{N}(0, I)` and from a Gaussian fitted to the training codes."""
        return {
            "standard_normal": SamplingPlan(num_samples, None, {}),
            "fitted_gaussian": SamplingPlan(num_samples, None, {"fitted_to": training_data()}),
        }

    def _sample_exhibits(self) -> List[Exhibit]:
        return [Exhibit("samples", "images", (self.sample(64),), "decoded random codes  z ~ N(0, I)", 8)]
