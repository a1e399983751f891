"""
The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014) as a
Pyro model/guide pair.
"""

from typing import Optional, Sequence, Tuple

import pyro
import torch
from torch import nn

from .. import interpolation

# Draws averaged for the posterior mean of a family without a closed form.
POSTERIOR_MEAN_SAMPLES = 256


def temper(z: torch.Tensor, mean: torch.Tensor, temperature: float) -> torch.Tensor:
    """``mean + temperature * (z - mean)``, for ``temperature >= 0``."""
    if not temperature >= 0:
        raise ValueError(f"the sampling temperature must be >= 0, got {temperature}")
    return mean + temperature * (z - mean)


class VAE(nn.Module):
    """
    A VAE: prior p(z), decoder p(x|z) and amortized guide q(z|x).

    The generative model and the guide are written for Pyro::

        model(x):  z_n ~ p(z),  x_n ~ p(x | z_n)   for n in plate "data"
        guide(x):  z_n ~ q(z | x_n)                 for n in plate "data"

    so ``SVI(vae.model, vae.guide, optim, Trace_ELBO())`` trains it, and every
    site is inside the data plate: per-example log densities have shape
    ``(batch,)``. The verbs ``encode``, ``decode``, ``reconstruct``, ``sample``
    and ``interpolate`` work in data space (pixel values in ``[0, 1]``).

    :param torch.nn.Module encoder: maps ``x`` to the distribution q(z|x).
    :param torch.nn.Module decoder: maps ``z`` to the distribution p(x|z); its
        last module is a :class:`~pyprobvae.likelihoods.Likelihood`.
    :param torch.nn.Module prior: maps a batch size to p(z).
    :param dict spec: the keyword arguments of :func:`build_vae` that rebuild
        this architecture (stored in checkpoints).
    """

    generative = True
    """Whether p(z) is a real prior, so that the ELBO and the IWAE estimate bound log p(x)."""

    conditional = False
    """Whether the networks and the prior take labels ``y`` (the :class:`~pyprobvae.models.ConditionalVAE`)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module, spec: Optional[dict] = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.spec = spec

    @property
    def likelihood(self):
        """The :class:`~pyprobvae.likelihoods.Likelihood` ending the decoder."""
        return self.decoder[-1]

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    @property
    def data_shape(self) -> Tuple[int, ...]:
        return self.likelihood.data_shape

    def condition(self, y: Optional[torch.Tensor], batch_size: int) -> tuple:
        """
        The extra inputs the networks and the prior take for labels ``y``:
        none for an unconditional model.

        :raises ValueError: when labels are given to an unconditional model.
        """
        if y is not None:
            raise ValueError(
                "this model is unconditional and takes no labels; train a conditional VAE "
                "(model='cvae') to generate examples of a chosen class"
            )
        return ()

    def posterior(self, x: torch.Tensor, y: Optional[torch.Tensor] = None):
        """The guide's distribution q(z|x) (q(z|x, y) for a conditional model), batch shape ``(batch,)``."""
        return self.encoder(x, *self.condition(y, x.shape[0]))

    def prior_distribution(self, batch_size: int, y: Optional[torch.Tensor] = None):
        """The prior p(z) (p(z|y) for a conditional model), batch shape ``(batch_size,)``."""
        return self.prior(batch_size, *self.condition(y, batch_size))

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True):
        """
        p(x, z) = p(z) p(x|z) for a batch ``x`` of shape ``(batch, *data_shape)``.

        :param y: labels, for conditional models only.
        :param bool register: register the decoder's and prior's parameters
            in Pyro's param store, which :class:`pyro.infer.SVI` needs to
            find them. pyprobvae's own loop optimizes the module's parameters
            directly and passes False, saving the registration on every step.
        """
        if register:
            pyro.module("decoder", self.decoder)
            pyro.module("prior", self.prior)
        condition = self.condition(y, x.shape[0])
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x.shape[0], *condition))
            pyro.sample("x", self.decoder(z, *condition), obs=x)

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True):
        """
        q(z|x) for a batch ``x`` of shape ``(batch, *data_shape)``.

        :param y: labels, for conditional models only.
        :param bool register: register the encoder's parameters in Pyro's
            param store (see :meth:`model`).
        """
        if register:
            pyro.module("encoder", self.encoder)
        condition = self.condition(y, x.shape[0])
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.encoder(x, *condition))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        :param torch.Tensor x: data, shape ``(batch, *data_shape)``.
        :param y: labels, for conditional models only.
        :return: the posterior means E_q[z|x], shape ``(batch, latent_dim)``;
            for families without a closed-form mean (normalizing flows) the
            average of :data:`POSTERIOR_MEAN_SAMPLES` draws.
        """
        q = self.posterior(x, y)
        try:
            return q.mean
        except NotImplementedError:
            return q.sample((POSTERIOR_MEAN_SAMPLES,)).mean(0)

    def decode(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        :param torch.Tensor z: codes, shape ``(batch, latent_dim)``.
        :param y: labels, for conditional models only.
        :return: the decoder's mean E[x|z], shape ``(batch, *data_shape)``.
        """
        return self._decode(z, self.condition(y, z.shape[0]))

    @torch.no_grad()
    def _decode(self, z, condition):
        return self.decoder(z, *condition).mean

    def reconstruct(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        :param torch.Tensor x: data, shape ``(batch, *data_shape)``.
        :param y: labels, for conditional models only.
        :return: E[x | z = E_q[z|x]], shape ``(batch, *data_shape)``.
        """
        return self.decode(self.encode(x, y), y)

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Draw ``z ~ p(z)``, scale its deviation from the prior mean by the
        temperature, ``z_T = m + T (z - m)``, and decode it. ``T = 1`` samples
        the prior, ``T < 1`` trades diversity for typical samples, ``T = 0``
        decodes the prior mean.

        :param int num_samples: how many examples.
        :param float temperature: T >= 0.
        :param y: labels, for conditional models only.
        :return: E[x|z_T] for each draw, shape ``(num_samples, *data_shape)``.
        """
        condition = self.condition(y, num_samples)
        prior = self.prior(num_samples, *condition)
        return self._decode(temper(prior.sample(), prior.mean, temperature), condition)

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, dims: Sequence[int], values: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Latent traversals: encode one input, then set one latent dimension at a
        time to each of ``values`` while holding the others at the input's
        code, and decode.

        :param torch.Tensor x: one input, shape ``(1, *data_shape)``.
        :param dims: the dimensions to vary, in display order (e.g. by
            decreasing KL, :func:`~pyprobvae.metrics.kl_per_dimension`).
        :param torch.Tensor values: the values each dimension takes, ``(steps,)``.
        :param y: the input's label, shape ``(1,)``, for conditional models only.
        :return: decoded images, shape ``(len(dims), steps, *data_shape)``.
        """
        if x.shape[0] != 1:
            raise ValueError(f"traverse takes one input of shape (1, *data_shape), got {tuple(x.shape)}")
        dims = [int(d) for d in dims]
        if any(not 0 <= d < self.latent_dim for d in dims):
            raise ValueError(f"latent dimensions must lie in [0, {self.latent_dim}), got {dims}")
        codes = self.encode(x, y).expand(len(dims), len(values), self.latent_dim).clone()
        for row, d in enumerate(dims):
            codes[row, :, d] = values
        condition = tuple(c.expand(codes.shape[0] * codes.shape[1], -1) for c in self.condition(y, 1))
        return self._decode(codes.reshape(-1, self.latent_dim), condition).reshape((len(dims), len(values)) + self.data_shape)

    def interpolate(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        steps: int = 8,
        method: str = "linear",
        y0: Optional[torch.Tensor] = None,
        y1: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Decode a path between the codes of two batches of inputs. For a
        conditional model the label moves along the straight line between the
        one-hot labels ``y0`` and ``y1`` while the code follows its path.

        :param torch.Tensor x0: start inputs, shape ``(batch, *data_shape)``.
        :param torch.Tensor x1: end inputs, same shape.
        :param int steps: points on each path, endpoints included (>= 2).
        :param str method: ``"linear"`` or ``"spherical"``
            (see :mod:`pyprobvae.interpolation`).
        :param y0: labels of ``x0``, for conditional models only.
        :param y1: labels of ``x1``, for conditional models only.
        :return: decoded paths, shape ``(batch, steps, *data_shape)``.
        """
        if method not in interpolation.INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {method!r}; choose one of {', '.join(interpolation.INTERPOLATIONS)}")
        if steps < 2:
            raise ValueError(f"an interpolation needs steps >= 2, got {steps}")
        z0, z1 = self.encode(x0, y0), self.encode(x1, y1)
        t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype)
        path = getattr(interpolation, method)(z0, z1, t)
        condition = tuple(
            interpolation.linear(c0, c1, t).reshape(path.shape[0] * steps, -1)
            for c0, c1 in zip(self.condition(y0, len(x0)), self.condition(y1, len(x1)))
        )
        return self._decode(path.reshape(-1, self.latent_dim), condition).reshape(path.shape[:2] + self.data_shape)
