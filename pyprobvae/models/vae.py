"""
The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014) as a
Pyro model/guide pair.
"""

from dataclasses import dataclass
from typing import ClassVar, List, Optional, Protocol, Sequence, Tuple, Type

import pyro
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from .. import interpolation
from ..config import ConfigError, setting
from ..evaluation.metrics import (
    EvaluationConfig,
    active_units,
    iwae_log_likelihood,
    kl_per_dimension,
    reconstruction_mse,
)
from ..families import FAMILIES, FLOWS, make_family
from ..infer.training import dataset_elbo
from ..likelihoods import Likelihood, make_likelihood
from ..networks import MLP, ConvVectorDecoder, ConvVectorEncoder
from ..distributions import tempered_sample
from ..priors import PRIORS, MixturePrior, StandardNormal, VampPrior
from .base import Exhibit, LatentVariableModel, ModelConfig, _derived

# Draws averaged for the posterior mean of a family without a closed form.
POSTERIOR_MEAN_SAMPLES = 256


@dataclass
class VAEConfig(ModelConfig):
    """The architecture of a :class:`VAE`: an encoder and a decoder (MLPs or convolutional, ``network``) around a latent z."""

    priors: ClassVar[Tuple[str, ...]] = PRIORS
    """The values of ``prior`` this model takes."""

    model: str = setting("vae", choices=("vae",))
    latent_dim: int = setting(8, minimum=1, maximum=4096)
    """Dimension of z."""
    family: str = setting("diagonal", choices=FAMILIES, aliases=("--guide",))
    """The variational family q(z|x): diagonal (normal, closed-form KL), mixture (of diagonal normals) or flow (a normalizing flow on a diagonal normal)."""
    num_components: int = setting(2, minimum=1, maximum=256, aliases=("--components",))
    """Mixture components K of the mixture family."""
    flow: str = setting("iaf", choices=FLOWS)
    """Layers of the flow family: planar, radial, iaf or spline."""
    flow_depth: int = setting(2, minimum=1, maximum=256)
    """Number of flow layers of the flow family."""
    prior: str = setting("standard", choices=(*PRIORS, "learned"), since="0.3.0")
    """p(z): standard (N(0, I)), mixture (a learned mixture of Gaussians) or vamp (the VampPrior: the guide's posteriors at learned pseudo-inputs, Tomczak & Welling 2018; diagonal or mixture family); for the conditional VAE standard or learned (a learned Gaussian per class)."""
    prior_components: int = setting(10, minimum=1, maximum=4096, since="0.3.0")
    """Components K of the mixture prior, pseudo-inputs K of the VampPrior."""

    def check(self) -> None:
        if self.likelihood == "tokens":
            raise ConfigError(
                f"token sequences (text) need the VQ-VAE's embedding network (model='vqvae'), not {self.model!r}"
            )
        if self.prior not in self.priors:
            owner = "the conditional VAE (model 'cvae')" if self.prior == "learned" else "the VAE (model 'vae')"
            raise ConfigError(f"prior {self.prior!r} needs {owner}; model {self.model!r} takes {', '.join(self.priors)}")
        if self.prior == "vamp" and self.family == "flow":
            raise ConfigError("the VampPrior mixes the guide's posteriors at its pseudo-inputs, which needs their density "
                              "anywhere: use the diagonal or mixture family, or the mixture prior with a flow")


def encoder_features(config: ModelConfig) -> nn.Module:
    """
    The encoder's features :math:`h(x)` of ``config.network``, on which the
    family (or a linear layer) adds the output: an MLP of the ``hidden``
    widths, or a :class:`~pyprobvae.networks.ConvVectorEncoder`; its
    ``out_features`` is the width of :math:`h`.
    """
    if config.network == "conv":
        return ConvVectorEncoder(config.data_shape)
    return MLP(config.data_shape, config.hidden)


class _CodeSettings(Protocol):
    """The settings of a model with a continuous code (:class:`VAEConfig`, and the autoencoder's)."""

    data_shape: Tuple[int, ...]
    network: str
    hidden: Tuple[int, ...]
    latent_dim: int


def decoder_network(config: _CodeSettings, likelihood: Likelihood, condition_features: int = 0) -> nn.Module:
    """
    The decoder's network of ``config.network``, from :math:`z` (with
    ``condition_features`` appended, e.g. a one-hot label) to the outputs of
    ``likelihood``: an MLP of the ``hidden`` widths reversed, or a
    :class:`~pyprobvae.networks.ConvVectorDecoder`.
    """
    in_features = config.latent_dim + condition_features
    if config.network == "conv":
        return ConvVectorDecoder(config.data_shape, in_features, likelihood.outputs_per_dim)
    return MLP(in_features, config.hidden[::-1], likelihood.num_outputs)


class VAE(LatentVariableModel):
    r"""
    A VAE: prior :math:`p(z)`, decoder :math:`p(x \mid z)` and amortized guide
    :math:`q(z \mid x)`.

    The generative model and the guide are written for Pyro::

        model(x):  z_n ~ p(z),  x_n ~ p(x | z_n)   for n in plate "data"
        guide(x):  z_n ~ q(z | x_n)                 for n in plate "data"

    so ``SVI(vae.model, vae.guide, optim, Trace_ELBO())`` trains it, and every
    site is inside the data plate: per-example log densities have shape
    ``(batch,)``. The verbs ``encode``, ``decode``, ``reconstruct``, ``sample``
    and ``interpolate`` work in data space (pixel values in ``[0, 1]``).

    With ``network="mlp"`` the encoder is ``x -> hidden[0] -> ... ->
    hidden[-1]`` followed by the family's output layer
    (:func:`~pyprobvae.families.make_family`), and the decoder mirrors it,
    ``z -> hidden[-1] -> ... -> hidden[0] -> likelihood outputs``; with
    ``network="conv"`` they are the residual convolutional stacks of
    :mod:`pyprobvae.networks.conv_latent` (:func:`encoder_features`,
    :func:`decoder_network`). The prior of ``prior`` is :math:`\mathcal{N}(0, I)`
    (:class:`~pyprobvae.priors.StandardNormal`), a learned mixture of Gaussians
    (:class:`~pyprobvae.priors.MixturePrior`) or the VampPrior
    (:class:`~pyprobvae.priors.VampPrior`).

    :param VAEConfig config: the architecture.
    """

    Config: ClassVar[Type[ModelConfig]] = VAEConfig  # the autoencoder, a VAE, has its own
    description = "the VAE"
    config: VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        likelihood = make_likelihood(
            _derived(config.likelihood, "likelihood"), config.data_shape, config.num_levels, config.gaussian_scale,
            config.learn_scale,
        )
        self.encoder, self.decoder, self.prior = self._networks(config, likelihood)

    def _networks(self, config, likelihood):
        """``(encoder, decoder, prior)``: the modules the model and guide use."""
        # (built in this order, the order of 0.1, so that a seed gives the same initial weights)
        features = encoder_features(config)
        decoder = nn.Sequential(decoder_network(config, likelihood), likelihood)
        family = make_family(
            config.family, features.out_features, config.latent_dim,
            num_components=config.num_components, flow=config.flow, flow_depth=config.flow_depth,
        )
        return nn.Sequential(features, family), decoder, self._prior(config)

    def _prior(self, config):
        r""":math:`p(z)` of ``config.prior`` (:mod:`pyprobvae.priors`)."""
        if config.prior == "mixture":
            return MixturePrior(config.latent_dim, config.prior_components)
        if config.prior == "vamp":
            return VampPrior(self.posterior, config.data_shape, config.prior_components)
        return StandardNormal(config.latent_dim)

    @property
    def likelihood(self) -> Likelihood:
        return self.decoder[-1]

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

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

    def posterior(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> TorchDistribution:
        r"""The guide's distribution :math:`q(z \mid x)` (:math:`q(z \mid x, y)` for a conditional model), batch shape ``(batch,)``."""
        return self.encoder(x, *self.condition(y, x.shape[0]))

    def prior_distribution(self, batch_size: int, y: Optional[torch.Tensor] = None) -> TorchDistribution:
        r"""The prior :math:`p(z)` (:math:`p(z \mid y)` for a conditional model), batch shape ``(batch_size,)``."""
        return self.prior(batch_size, *self.condition(y, batch_size))

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True) -> None:
        r"""
        :math:`p(x, z) = p(z)\, p(x \mid z)` for a batch ``x`` of shape ``(batch, *data_shape)``.

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

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True) -> None:
        r"""
        :math:`q(z \mid x)` for a batch ``x`` of shape ``(batch, *data_shape)``.

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
        r"""
        :param torch.Tensor x: data, shape ``(batch, *data_shape)``.
        :param y: labels, for conditional models only.
        :return: the posterior means :math:`\mathbb{E}_q[z \mid x]`, shape ``(batch, latent_dim)``;
            for families without a closed-form mean (normalizing flows) the
            average of :data:`POSTERIOR_MEAN_SAMPLES` draws.
        """
        q = self.posterior(x, y)
        try:
            return q.mean
        except NotImplementedError:
            return q.sample((POSTERIOR_MEAN_SAMPLES,)).mean(0)

    def decode(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        r"""
        :param torch.Tensor z: codes, shape ``(batch, latent_dim)``.
        :param y: labels, for conditional models only.
        :return: the decoder's mean :math:`\mathbb{E}[x \mid z]`, shape ``(batch, *data_shape)``.
        """
        return self._decode(z, self.condition(y, z.shape[0]))

    @torch.no_grad()
    def _decode(self, z, condition):
        return self.decoder(z, *condition).mean

    @torch.no_grad()
    def sample(  # type: ignore[override]  # the draws are given what this model takes: labels
        self, num_samples: int, *, temperature: float = 1.0, y: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        r"""
        Draw :math:`z \sim p(z)`, scale its deviation from the prior mean
        :math:`m` by the temperature, :math:`z_T = m + T (z - m)`, and decode
        it (for a mixture prior :math:`m` is the drawn component's mean,
        :func:`~pyprobvae.distributions.tempered_sample`). :math:`T = 1`
        samples the prior, :math:`T < 1` trades diversity for typical
        samples, :math:`T = 0` decodes the prior mean.

        :param int num_samples: how many examples.
        :param float temperature: :math:`T \ge 0`.
        :param y: labels, for conditional models only.
        :return: :math:`\mathbb{E}[x \mid z_T]` for each draw, shape ``(num_samples, *data_shape)``.
        """
        condition = self.condition(y, num_samples)
        prior = self.prior(num_samples, *condition)
        return self._decode(tempered_sample(prior, temperature), condition)

    @torch.no_grad()
    def traverse(
        self, x: torch.Tensor, dims: Sequence[int], values: torch.Tensor, y: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """
        Latent traversals: encode one input, then set one latent dimension at a
        time to each of ``values`` while holding the others at the input's
        code, and decode.

        :param torch.Tensor x: one input, shape ``(1, *data_shape)``.
        :param dims: the dimensions to vary, in display order (e.g.
            :meth:`traversal_order`).
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

    def traversal_order(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> List[int]:
        """
        The latent dimensions by decreasing KL per dimension on ``x`` (closed
        form) or, where there is none, by decreasing variance of the codes
        (active units first).
        """
        kl = kl_per_dimension(self, x, y) if self.generative else None
        activity = kl if kl is not None else self.encode(x, y).var(0)
        return activity.argsort(descending=True).tolist()

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

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: Optional[torch.Tensor] = None, *, iwae_samples: int = EvaluationConfig.iwae_samples,
        analytic_kl: bool = True,
    ) -> dict:
        r"""
        Every held-out number, in nats per example:

        * ``test_elbo``: :math:`\mathbb{E}_q[\log p(x \mid z)] - \mathrm{KL}(q(z \mid x) \,\|\, p(z))`,
          one sample per example (closed-form KL where available);
        * ``test_nll``: :math:`-L_K`, the IWAE estimate of :math:`-\log p(x)`
          with ``iwae_samples`` samples (an upper bound on the NLL in
          expectation, :func:`~pyprobvae.evaluation.metrics.iwae_log_likelihood`);
        * ``kl``: :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z))`; ``kl_per_dim``
          when it has a closed form;
        * ``recon_nll``: :math:`-\mathbb{E}_q[\log p(x \mid z)]`; ``recon_mse``
          per dimension;
        * ``active_units`` out of ``latent_dim``.

        A model that is not generative (the
        :class:`~pyprobvae.models.Autoencoder`, whose :math:`p(z)` is flat)
        bounds no likelihood: its ``test_elbo``, ``test_nll`` and ``kl`` are
        None and ``recon_nll`` is :math:`-\log p(x \mid f(x))`. A conditional
        model is evaluated given the labels: its bounds are on
        :math:`\log p(x \mid y)`.

        :param torch.Tensor x: held-out data as the model sees it (see
            :func:`~pyprobvae.infer.training.evaluation_data`).
        :param y: labels of ``x``, required by a conditional model.
        :param int iwae_samples: :math:`K` of the IWAE estimate.
        :param bool analytic_kl: closed-form KL where available.
        """
        self.eval()
        self.likelihood.check_data(x, "evaluation data")
        terms = dataset_elbo(self, x, y, analytic_kl=analytic_kl)
        active = active_units(self, x, y=y)
        generative = self.generative
        kl_dims = kl_per_dimension(self, x, y) if generative else None
        return {
            "test_elbo": float(terms.elbo.double().mean()) if generative else None,
            "test_nll": float(-iwae_log_likelihood(self, x, iwae_samples, y=y).double().mean()) if generative else None,
            "iwae_samples": iwae_samples if generative else None,
            "kl": float(terms.kl.double().mean()) if generative else None,
            "kl_per_dim": None if kl_dims is None else [round(float(v), 6) for v in kl_dims],
            "recon_nll": float(-terms.log_likelihood.double().mean()),
            "recon_mse": reconstruction_mse(self, x, y),
            "active_units": int(active.sum()),
            "latent_dim": int(active.numel()),
            "num_examples": len(x),
        }

    @torch.no_grad()
    def tracked(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> dict:
        """``kl_per_dim``, the KL of each latent dimension as :meth:`evaluate` has it, where it has a closed form; else nothing."""
        kl_dims = kl_per_dimension(self, x, y) if self.generative else None
        return {} if kl_dims is None else {"kl_per_dim": kl_dims.tolist()}

    def exhibits(self, x: torch.Tensor, y: Optional[torch.Tensor], labels: Optional[torch.Tensor]) -> List[Exhibit]:
        """
        The latent space (posterior means of the test set), and for image
        data reconstructions, an interpolation strip between test codes and
        decoded prior samples.
        """
        shown = [Exhibit("latent", "latent", (self.encode(x, y), labels), "posterior means of the test set")]
        if len(self.data_shape) != 3:
            return shown
        generator = torch.Generator().manual_seed(0)
        first = slice(0, 32)
        recon = self.reconstruct(x[first], None if y is None else y[first])
        shown.append(Exhibit("reconstructions", "reconstructions", (x[first], recon), "test inputs and reconstructions"))
        num_pairs = min(8, len(x) // 2)
        pairs = torch.randperm(len(x), generator=generator)[: 2 * num_pairs].to(x.device)
        start, end = pairs[:num_pairs], pairs[num_pairs:]
        ends = (None, None) if y is None else (y[start], y[end])
        strips = self.interpolate(x[start], x[end], 10, "linear", *ends)
        shown.append(Exhibit("interpolation", "paths", (strips,), "linear interpolation between test codes"))
        shown.extend(self._sample_exhibits())
        return shown

    def _sample_exhibits(self) -> List[Exhibit]:
        prior = {"standard": "N(0, I)", "mixture": "the mixture prior", "vamp": "the VampPrior"}.get(self.config.prior, "p(z | y)")
        return [Exhibit("samples", "images", (self.sample(64),), f"decoded prior samples  z ~ {prior}", 8)]


__all__ = ["POSTERIOR_MEAN_SAMPLES", "VAE", "VAEConfig"]
