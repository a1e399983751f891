"""
Building the models of :mod:`pyprobvae.models` from a JSON-able spec.
"""

import math
from typing import Optional, Sequence

from torch import nn

from ..families import make_family
from ..likelihoods import make_likelihood
from ..nets import MLP, Conditioned
from ..priors import LabelConditionalNormal, StandardNormal
from .ae import Autoencoder
from .cvae import ConditionalVAE
from .vae import VAE

MODELS = ("vae", "ae", "cvae")
PRIORS = ("standard", "learned")


def build_vae(
    data_shape: Sequence[int],
    model: str = "vae",
    latent_dim: int = 8,
    hidden: Sequence[int] = (256,),
    likelihood: str = "bernoulli",
    guide: str = "diagonal",
    components: int = 2,
    flow: str = "iaf",
    flow_depth: int = 2,
    num_levels: Optional[int] = None,
    gaussian_scale: float = 0.1,
    learn_scale: bool = False,
    num_classes: Optional[int] = None,
    prior: str = "standard",
) -> VAE:
    """
    Build a VAE, its deterministic autoencoder baseline, or the conditional
    VAE, with MLP encoder and decoder.

    The encoder is ``x -> hidden[0] -> ... -> hidden[-1]`` followed by the
    guide family's output layer; the decoder mirrors it,
    ``z -> hidden[-1] -> ... -> hidden[0] -> likelihood outputs``. The
    conditional VAE appends the one-hot label to the inputs of both.

    :param data_shape: shape of one example, e.g. ``(1, 8, 8)``.
    :param str model: ``"vae"``; ``"ae"``, the
        :class:`~pyprobvae.models.Autoencoder` (a point guide, which takes
        no ``guide`` options); or ``"cvae"``, the
        :class:`~pyprobvae.models.ConditionalVAE`.
    :param int latent_dim: dimension of z (>= 1).
    :param hidden: hidden-layer widths of the encoder (the decoder reverses
        them).
    :param str likelihood: ``"bernoulli"``, ``"gaussian"`` or
        ``"categorical"``.
    :param str guide: the variational family: ``"diagonal"``, ``"mixture"``
        or ``"flow"`` (see :func:`~pyprobvae.families.make_family`).
    :param int components: mixture components of the ``"mixture"`` guide.
    :param str flow: flow of the ``"flow"`` guide: ``"planar"``,
        ``"radial"``, ``"iaf"`` or ``"spline"``.
    :param int flow_depth: number of flow layers.
    :param num_levels: pixel levels for the categorical likelihood.
    :param float gaussian_scale: scale of the Gaussian likelihood.
    :param bool learn_scale: learn the Gaussian likelihood's scale.
    :param num_classes: number of label classes, required by ``"cvae"``.
    :param str prior: the conditional VAE's prior p(z|y): ``"standard"``,
        N(0, I) for every class, or ``"learned"``, a
        :class:`~pyprobvae.priors.LabelConditionalNormal`.
    """
    data_shape = tuple(int(d) for d in data_shape)
    hidden = tuple(int(h) for h in hidden)
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if model == "ae" and guide != "diagonal":
        raise ValueError(f"the autoencoder has a point guide: guide={guide!r} does not apply")
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
    if model != "cvae" and prior != "standard":
        raise ValueError(f"a {prior} label-conditional prior needs the conditional VAE (model='cvae'), not {model!r}")
    if model == "cvae" and not (num_classes is not None and num_classes >= 2):
        raise ValueError(f"the conditional VAE needs labelled data with num_classes >= 2, got num_classes={num_classes}")
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden widths must be >= 1, got {list(hidden)}")
    spec = dict(
        data_shape=list(data_shape),
        model=model,
        latent_dim=int(latent_dim),
        hidden=list(hidden),
        likelihood=likelihood,
        guide=guide,
        components=int(components),
        flow=flow,
        flow_depth=int(flow_depth),
        num_levels=num_levels,
        gaussian_scale=float(gaussian_scale),
        learn_scale=bool(learn_scale),
        num_classes=None if num_classes is None else int(num_classes),
        prior=prior,
    )
    lik = make_likelihood(likelihood, data_shape, num_levels, gaussian_scale, learn_scale)
    if model == "cvae":
        features = MLP(math.prod(data_shape) + num_classes, hidden)
        family = make_family(guide, features.out_features, latent_dim, components, flow, flow_depth)
        encoder = Conditioned(nn.Sequential(features, family), data_shape)
        decoder = Conditioned(nn.Sequential(MLP(latent_dim + num_classes, hidden[::-1], lik.num_outputs), lik), latent_dim)
        p_z = StandardNormal(latent_dim) if prior == "standard" else LabelConditionalNormal(num_classes, latent_dim)
        return ConditionalVAE(encoder, decoder, p_z, num_classes, spec)
    features = MLP(data_shape, hidden)
    decoder = nn.Sequential(MLP(latent_dim, hidden[::-1], lik.num_outputs), lik)
    if model == "ae":
        return Autoencoder(nn.Sequential(features, nn.Linear(features.out_features, latent_dim)), decoder, StandardNormal(latent_dim), spec)
    encoder = nn.Sequential(features, make_family(guide, features.out_features, latent_dim, components, flow, flow_depth))
    return VAE(encoder, decoder, StandardNormal(latent_dim), spec)
