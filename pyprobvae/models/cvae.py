"""
The conditional VAE (Sohn et al. 2015): the VAE with the label :math:`y` given to the
encoder, the decoder and, optionally, the prior, so that one can ask for an
example of a chosen class.
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, setting
from ..data import Dataset
from ..families import make_family
from ..likelihoods import Likelihood
from ..networks import MLP, Conditioned, ConvFeatureMap
from ..networks.conv_latent import FEATURES as CONV_FEATURES
from ..priors import LabelConditionalNormal, StandardNormal
from .base import Exhibit, SamplingOptions, SamplingPlan, _derived
from .vae import VAE, VAEConfig, decoder_network

PRIORS = ("standard", "learned")
"""The conditional VAE's priors p(z | y): N(0, I) for every class (standard) or a learned Gaussian per class (learned)."""

# Tolerance on a label vector's entries summing to one.
LABEL_SUM_TOLERANCE = 1e-4


@dataclass
class CVAEConfig(VAEConfig):
    """The architecture of a :class:`ConditionalVAE`: the VAE's, with the label given to every part."""

    priors = PRIORS

    model: str = setting("cvae", choices=("cvae",))
    num_classes: Optional[int] = setting(None, derived=True)
    """Number of label classes; taken from the data set."""

    def data_settings(self, dataset: Dataset) -> dict:
        if dataset.y is None:
            raise ValueError(f"the conditional VAE needs labelled data, but {dataset.name} has no labels")
        return {**super().data_settings(dataset), "num_classes": dataset.num_classes}


def _encoder_features(config: CVAEConfig, classes: int):
    """
    ``(body, features)`` of the encoder of ``config.network``, whose
    :class:`~pyprobvae.networks.Conditioned` computes
    ``features(concat(body(x), label))``: the label joins the flattened
    image (mlp: ``body`` None, then an MLP of the ``hidden`` widths) or the
    flattened convolutional feature map (conv: a
    :class:`~pyprobvae.networks.ConvFeatureMap`, then the hidden layer of a
    :class:`~pyprobvae.networks.ConvVectorEncoder`).
    """
    if config.network == "conv":
        body = ConvFeatureMap(config.data_shape)
        return body, MLP(body.out_features + classes, (CONV_FEATURES,))
    return None, MLP(math.prod(config.data_shape) + classes, config.hidden)


class ConditionalVAE(VAE):
    r"""
    A conditional VAE over data with ``num_classes`` classes::

        model(x, y):  z_n ~ p(z | y_n),  x_n ~ p(x | z_n, y_n)   for n in plate "data"
        guide(x, y):  z_n ~ q(z | x_n, y_n)

    The ELBO bounds the conditional likelihood,

    .. math::

        \log p(x \mid y) \ge \mathbb{E}_q[\log p(x \mid z, y)]
            - \mathrm{KL}(q(z \mid x, y) \,\|\, p(z \mid y)),

    and all the VAE's evaluation carries over with :math:`y` given. Since
    :math:`y` is given to the decoder, :math:`z` need not encode the class: it
    is free to carry the style (slant, thickness), and ``sample(n, y=...)``
    draws examples of class ``y``.

    Labels are int64 class indices of shape ``(batch,)``; the networks see
    them one-hot. Anywhere a label is taken, a label vector of shape
    ``(batch, num_classes)`` with non-negative entries summing to one also
    works: mixing two one-hot vectors is how :meth:`interpolate_classes`
    moves between classes.

    The encoder (``(x, label vectors)`` :math:`\to q(z \mid x, y)`) and the
    decoder (``(z, label vectors)`` :math:`\to p(x \mid z, y)`) are
    :class:`~pyprobvae.networks.Conditioned` networks of ``network``: MLPs
    seeing the label with the flattened input, or convolutional networks
    seeing it with the flattened feature map of the images (encoder) and
    with :math:`z` (decoder); the prior is
    :class:`~pyprobvae.priors.StandardNormal` (which ignores :math:`y`) or
    :class:`~pyprobvae.priors.LabelConditionalNormal`.

    :param CVAEConfig config: the architecture.
    """

    Config = CVAEConfig
    description = "the conditional VAE"
    conditional = True
    config: CVAEConfig

    def _networks(self, config, likelihood):
        classes = config.num_classes
        if not (classes is not None and classes >= 2):
            raise ConfigError(f"the conditional VAE needs labelled data with num_classes >= 2, got num_classes={classes}")
        body, features = _encoder_features(config, classes)
        family = make_family(
            config.family, features.out_features, config.latent_dim,
            num_components=config.num_components, flow=config.flow, flow_depth=config.flow_depth,
        )
        encoder = Conditioned(nn.Sequential(features, family), config.data_shape, body)
        decoder = Conditioned(nn.Sequential(decoder_network(config, likelihood, classes), likelihood), config.latent_dim)
        prior = StandardNormal(config.latent_dim) if config.prior == "standard" else LabelConditionalNormal(classes, config.latent_dim)
        return encoder, decoder, prior

    @property
    def num_classes(self) -> int:
        return _derived(self.config.num_classes, "num_classes")

    @property
    def likelihood(self) -> Likelihood:
        return self.decoder.net[-1]

    def condition(self, y: Optional[torch.Tensor], batch_size: int) -> tuple:
        """
        ``(label vectors,)``: the one-hot encoding of int64 labels, or label
        vectors as given.

        :raises ValueError: without labels, or for labels that are not one per
            example, outside ``0 .. num_classes - 1``, or vectors whose rows are
            not probabilities.
        """
        if y is None:
            raise ValueError(f"the conditional VAE needs labels y (classes 0 to {self.num_classes - 1}) with its data")
        if not torch.is_floating_point(y):
            if tuple(y.shape) != (batch_size,):
                raise ValueError(f"labels have shape {tuple(y.shape)}; expected ({batch_size},), one per example")
            outside = (y < 0) | (y >= self.num_classes)
            if outside.any():
                raise ValueError(
                    f"label {int(y[outside][0])} is outside the model's classes 0 to {self.num_classes - 1}"
                )
            return (F.one_hot(y, self.num_classes).float(),)
        if tuple(y.shape) != (batch_size, self.num_classes):
            raise ValueError(
                f"label vectors have shape {tuple(y.shape)}; expected ({batch_size}, {self.num_classes})"
            )
        if (y < 0).any() or ((y.sum(-1) - 1).abs() > LABEL_SUM_TOLERANCE).any():
            raise ValueError("label vectors must have non-negative entries summing to one")
        return (y,)

    @torch.no_grad()
    def sample(  # type: ignore[override]  # the draws are given what this model takes: labels
        self, num_samples: int, *, temperature: float = 1.0, y: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        r"""
        Draw :math:`z \sim p(z \mid y)`, temper it as :meth:`VAE.sample
        <pyprobvae.models.VAE.sample>` does, and decode it with label :math:`y`.

        :param int num_samples: how many examples.
        :param float temperature: :math:`T \ge 0`.
        :param y: the class of each example, shape ``(num_samples,)``; by
            default :meth:`balanced_labels`.
        :return: images of shape ``(num_samples, *data_shape)``.
        """
        if y is None:
            y = self.balanced_labels(num_samples)
        return super().sample(num_samples, temperature=temperature, y=y)

    def balanced_labels(self, num_samples: int) -> torch.Tensor:
        r"""
        Every class in turn, in blocks:
        :math:`y_n = \lfloor n C / N \rfloor` for :math:`C` = ``num_classes``
        and :math:`N` = ``num_samples``. Class counts differ by at most one, and
        ``num_samples = k * num_classes`` gives ``k`` of each class in order,
        one row per class in a grid of ``k`` columns.
        """
        return torch.arange(num_samples, device=self._device()) * self.num_classes // num_samples

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def interpolate_classes(self, y0: int, y1: int, num_paths: int, steps: int = 8) -> torch.Tensor:
        r"""
        Move between two classes with the style held: for each path draw one
        :math:`\epsilon \sim \mathcal{N}(0, I)`, and decode

        .. math::

            z_t = m(y_t) + s(y_t)\, \epsilon \quad \text{with label} \quad
            y_t = (1 - t)\, e_{y_0} + t\, e_{y_1},

        where :math:`m` and :math:`s` are the prior's mean and scale (0 and 1
        for the standard normal prior, so :math:`z` stays fixed and only the
        label moves).

        :param int y0: the class at :math:`t = 0`.
        :param int y1: the class at :math:`t = 1`.
        :param int num_paths: number of styles (rows).
        :param int steps: points on each path, endpoints included (>= 2).
        :return: images of shape ``(num_paths, steps, *data_shape)``.
        """
        if steps < 2:
            raise ValueError(f"an interpolation needs steps >= 2, got {steps}")
        device = self._device()
        ends = torch.tensor([y0, y1], device=device)
        (one_hot,) = self.condition(ends, 2)
        t = torch.linspace(0, 1, steps, device=device).unsqueeze(-1)
        labels = ((1 - t) * one_hot[0] + t * one_hot[1]).repeat(num_paths, 1)
        eps = torch.randn(num_paths, 1, self.latent_dim, device=device).expand(num_paths, steps, self.latent_dim)
        prior = self.prior(num_paths * steps, labels)
        z = prior.mean + prior.stddev * eps.reshape(-1, self.latent_dim)
        return self._decode(z, (labels,)).reshape((num_paths, steps) + self.data_shape)

    def labels(self, dataset: Dataset) -> torch.Tensor:
        """
        The data set's labels, checked against the model's classes.

        :raises ValueError: for data without labels or with labels outside
            the model's classes.
        """
        if dataset.y is None:
            raise ValueError(f"the conditional model needs labelled data, but {dataset.name} has no labels")
        self.condition(dataset.y, len(dataset))
        return dataset.y

    def sampling_plan(
        self, num_samples: int, options: SamplingOptions = SamplingOptions(), training_data: Optional[Callable[[], torch.Tensor]] = None
    ) -> SamplingPlan:
        """
        Samples of class ``label``; without one, every class in turn, one row
        per class (``num_samples`` rounded up to a multiple of the number of
        classes).
        """
        self._refuse(options, "label")
        label = options.label
        if label is None:
            per_class = -(-num_samples // self.num_classes)
            return SamplingPlan(per_class * self.num_classes, per_class, {"y": self.balanced_labels(per_class * self.num_classes)})
        y = torch.full((num_samples,), int(label), device=self._device())
        self.condition(y, num_samples)
        return SamplingPlan(num_samples, None, {"y": y})

    def scored_samples(self, num_samples: int, training_data: Callable[[], torch.Tensor]) -> Dict[str, SamplingPlan]:
        """Every class in turn (:meth:`balanced_labels`), scored on conditional accuracy as well."""
        return {"prior": SamplingPlan(num_samples, None, {"y": self.balanced_labels(num_samples)})}

    def _sample_exhibits(self) -> List[Exhibit]:
        per_class = 8
        samples = self.sample(per_class * self.num_classes)
        classes = torch.stack([
            self.interpolate_classes(c, (c + 1) % self.num_classes, 1, 10)[0] for c in range(self.num_classes)
        ])
        return [
            Exhibit("samples", "images", (samples,), "decoded samples  z ~ p(z|y), one row per class y", per_class),
            Exhibit("class_interpolation", "paths", (classes,), "label moved from class c to c + 1, style held"),
        ]
