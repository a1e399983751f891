"""
Building the models of :mod:`pyprobvae.models` from a JSON-able spec.
"""

import math
from typing import Optional, Sequence

from torch import nn

from ..families import make_family
from ..likelihoods import make_likelihood
from ..convnets import ConvDecoder1d, ConvDecoder2d, ConvEncoder1d, ConvEncoder2d
from ..nets import MLP, Conditioned
from ..priors import LabelConditionalNormal, StandardNormal
from ..quantizer import VectorQuantizer
from .ae import Autoencoder
from .cvae import ConditionalVAE
from .vae import VAE
from .vqvae import VQVAE

MODELS = ("vae", "ae", "cvae", "vqvae")
PRIORS = ("standard", "learned")
NETWORKS = ("conv", "mlp")
# Characters per code of the 1-D convolutional VQ-VAE (a power of two): with
# 64 codes, 6 bits for 2 characters, enough to reconstruct most text.
TOKENS_PER_CODE = 2


def build_model(**spec) -> nn.Module:
    """
    Build any model of this package from its spec (the ``spec`` attribute a
    built model carries, stored in checkpoints): :func:`build_vqvae` for
    ``model="vqvae"``, :func:`build_vae` otherwise.
    """
    if spec.get("model") == "vqvae":
        return build_vqvae(**spec)
    return build_vae(**spec)


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
    if model == "vqvae":
        raise ValueError("the VQ-VAE is built by build_vqvae (or build_model)")
    if likelihood == "tokens":
        raise ValueError(f"token sequences (text) need the VQ-VAE's embedding network (model='vqvae'), not {model!r}")
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


def build_vqvae(
    data_shape: Sequence[int],
    model: str = "vqvae",
    network: str = "conv",
    codebook_size: int = 64,
    code_dim: int = 16,
    beta: float = 0.25,
    ema: bool = False,
    decay: float = 0.99,
    min_usage: float = 0.5,
    usage_decay: float = 0.9,
    hidden: Sequence[int] = (256,),
    num_positions: int = 16,
    likelihood: str = "bernoulli",
    num_levels: Optional[int] = None,
    gaussian_scale: float = 0.1,
    learn_scale: bool = False,
) -> VQVAE:
    """
    Build a :class:`~pyprobvae.models.VQVAE`.

    With ``network="conv"`` images (``data_shape = (C, H, W)``) get the
    convolutional encoder and decoder of :mod:`pyprobvae.convnets`, with a
    grid of codes per image (4x4 for 8x8 digits, 7x7 for 28x28 MNIST), and
    token sequences (``likelihood="tokens"``, ``data_shape = (L,)``) the 1-D
    ones, with one code per :data:`TOKENS_PER_CODE` tokens. With ``network="mlp"`` an MLP
    maps the flattened example to ``num_positions`` codes and back.

    :param data_shape: shape of one example.
    :param str model: ``"vqvae"``.
    :param str network: ``"conv"`` or ``"mlp"``.
    :param int codebook_size: number of codes K.
    :param int code_dim: dimension D of the codes.
    :param float beta: weight of the commitment term (0.25 in van den Oord
        et al. 2017).
    :param bool ema: learn the codebook by moving averages instead of the
        codebook term.
    :param float decay: the moving averages' decay.
    :param float min_usage: restart a code whose moving-average usage falls
        below this fraction of an even share (0: never); see
        :class:`~pyprobvae.quantizer.VectorQuantizer`.
    :param float usage_decay: the decay of that moving average.
    :param hidden: hidden widths of the ``"mlp"`` network.
    :param int num_positions: codes per example of the ``"mlp"`` network.
    :param str likelihood: ``"bernoulli"``, ``"gaussian"``, ``"categorical"``
        or ``"tokens"``.
    :param num_levels: pixel levels of ``"categorical"``, vocabulary size of
        ``"tokens"``.
    :param float gaussian_scale: scale of the Gaussian likelihood.
    :param bool learn_scale: learn the Gaussian likelihood's scale.
    """
    data_shape = tuple(int(d) for d in data_shape)
    hidden = tuple(int(h) for h in hidden)
    if model != "vqvae":
        raise ValueError(f"build_vqvae builds model='vqvae', not {model!r}")
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
    spec = dict(
        data_shape=list(data_shape), model=model, network=network, codebook_size=int(codebook_size),
        code_dim=int(code_dim), beta=float(beta), ema=bool(ema), decay=float(decay),
        min_usage=float(min_usage), usage_decay=float(usage_decay), hidden=list(hidden), num_positions=int(num_positions),
        likelihood=likelihood, num_levels=num_levels, gaussian_scale=float(gaussian_scale),
        learn_scale=bool(learn_scale),
    )
    lik = make_likelihood(likelihood, data_shape, num_levels, gaussian_scale, learn_scale)
    tokens = likelihood == "tokens"
    if network == "mlp":
        if tokens:
            raise ValueError("the mlp network takes real-valued data; use network='conv' for token sequences")
        encoder = nn.Sequential(MLP(data_shape, hidden, num_positions * code_dim), nn.Unflatten(-1, (num_positions, code_dim)))
        decoder_net = MLP((num_positions, code_dim), hidden[::-1], lik.num_outputs)
    elif tokens:
        if len(data_shape) != 1:
            raise ValueError(f"token sequences have data_shape (length,), got {data_shape}")
        encoder = ConvEncoder1d(data_shape[0], num_levels, code_dim, downsamplings=TOKENS_PER_CODE.bit_length() - 1)
        decoder_net = ConvDecoder1d(data_shape[0], code_dim, num_levels, upsamplings=TOKENS_PER_CODE.bit_length() - 1)
        num_positions = encoder.num_positions
    else:
        if len(data_shape) != 3:
            raise ValueError(f"the conv network takes images of shape (channels, height, width), got {data_shape}")
        encoder = ConvEncoder2d(data_shape, code_dim)
        decoder_net = ConvDecoder2d(data_shape, code_dim, lik.outputs_per_dim)
        num_positions = encoder.num_positions
    quantizer = VectorQuantizer(
        codebook_size, code_dim, ema=ema, decay=decay, min_usage=min_usage, usage_decay=usage_decay
    )
    return VQVAE(encoder, quantizer, nn.Sequential(decoder_net, lik), num_positions, beta, spec)
