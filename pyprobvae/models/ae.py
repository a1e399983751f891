"""
The deterministic autoencoder, written as a Pyro model/guide pair so that its
one difference from the VAE is visible: a point guide and no prior term.
"""

from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from .vae import VAE, temper

CODE_SOURCES = ("standard", "fitted")


class Autoencoder(VAE):
    """
    A deterministic autoencoder: the VAE's encoder and decoder networks with

        model(x):  z_n ~ flat (improper, log density 0),  x_n ~ p(x | z_n)
        guide(x):  z_n = f(x_n)   (a Delta distribution)

    The ELBO of this pair is ``log p(x | f(x))``: the log density of a Delta
    guide and of the flat "prior" are both zero, so there is no KL term and
    training is reconstruction alone. Nothing shapes where codes lie, so the
    model is not generative: decoding a random ``z ~ N(0, I)`` gives whatever
    the decoder makes of a point that no training code is near.
    :meth:`sample` shows it, from N(0, I) or from a Gaussian fitted to the
    codes of data you pass.
    """

    generative = False

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True):
        """
        p(x|z) under a flat code distribution, for a batch ``x``.

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

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True):
        """
        The point guide z = f(x).

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
        :return: the codes f(x), shape ``(batch, latent_dim)``.
        """
        return self.encoder(x, *self.condition(y, x.shape[0]))

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0, fitted_to: torch.Tensor = None) -> torch.Tensor:
        """
        Decode random codes: ``z ~ N(0, I)`` by default, or ``z ~ N(m, S)``
        with the mean and covariance of the codes of ``fitted_to``; the
        temperature scales the deviation from the mean as in
        :meth:`VAE.sample <pyprobvae.models.VAE.sample>`.

        :param int num_samples: how many examples.
        :param float temperature: T >= 0.
        :param torch.Tensor fitted_to: data whose codes the Gaussian is fitted
            to (e.g. the training set), or None for N(0, I).
        :return: E[x|z] for each draw, shape ``(num_samples, *data_shape)``.
        """
        if fitted_to is None:
            return super().sample(num_samples, temperature)
        codes = self.encode(fitted_to)
        covariance = torch.cov(codes.T).reshape(self.latent_dim, self.latent_dim)
        jitter = 1e-6 * covariance.diagonal().mean().clamp(min=1e-12) * torch.eye(self.latent_dim, device=codes.device)
        gaussian = dist.MultivariateNormal(codes.mean(0), covariance + jitter)
        return self.decode(temper(gaussian.sample((num_samples,)), gaussian.mean, temperature))
