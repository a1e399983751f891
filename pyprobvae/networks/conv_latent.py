r"""
Convolutional encoder and decoder around a flat latent vector
:math:`z \in \mathbb{R}^d`, the ``network="conv"`` of the VAE (Kingma &
Welling 2014), the autoencoder and the conditional VAE: the residual stacks
of :mod:`pyprobvae.networks.conv` (van den Oord et al. 2017), joined to the
vector by one linear layer. Plain :class:`torch.nn.Module` s that know
nothing about probability.

They take grey or colour images, ``data_shape = (C, H, W)`` with ``C`` 1 or
3, halved ``d`` times to an ``h x w = (H, W) / 2**d`` grid with ``d`` from
:func:`~pyprobvae.networks.conv.default_downsamplings` (at least 1): a 4x4
grid for 8x8 digits (``d = 1``), 7x7 for 28x28 MNIST (``d = 2``), 4x4 for
32x32 (``d = 3``).

Architecture (default widths in brackets):

* encoder features, :class:`ConvFeatureMap` then one hidden layer:
  ``d`` stride-2 convolutions (kernel 4) [16 channels], a 3x3 convolution
  and residual blocks [1] at grid resolution, a ReLU and a 1x1 convolution
  to ``map_channels`` [32] (:func:`~pyprobvae.networks.conv.conv_encoder_body`);
  the map flattened to ``map_channels * h * w`` features; a linear layer
  to ``features`` [:data:`FEATURES`] and a ReLU. As on the features of
  ``MLP(..., out_features=None)``, the variational family adds its own
  output layer;
* decoder, :class:`ConvVectorDecoder`: a linear layer from the vector to
  ``grid_channels * h * w`` [64 channels] and a ReLU, shaped as a
  ``grid_channels x h x w`` map; a 3x3 convolution and residual blocks [1]
  at grid resolution [16 channels], then ``d`` stride-2 transposed
  convolutions (kernel 4), the last of which gives the ``C * K`` output
  channels (:func:`~pyprobvae.networks.conv.conv_decoder_body` without its
  output convolution), read out as the likelihood's ``K = outputs_per_dim``
  outputs per pixel (:func:`~pyprobvae.networks.conv.likelihood_layout`).

The widths are sized for a CPU. Trained 10 epochs on 10,000 Fashion-MNIST
images, what mattered was the decoder's start map (64 channels rather than
16 or 32: about 2 nats of test NLL), one residual block (none: 2 nats
worse), and 16 rather than 8 channels in the convolutions; a 3x3 output
convolution at full resolution (the VQ-VAE's ending) gained nothing and
cost most of the decoder's time, and wider convolutions (32, 64) gained
little at several times the cost.

A residual block is ``h + conv1x1(relu(conv3x3(relu(h))))``. Every module
keeps any number of leading batch dimensions, as the IWAE and the
stratified estimators need (the decoder sees ``(samples, batch, d)``).

**References**

- Kingma & Welling 2014, "Auto-Encoding Variational Bayes".
- van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation
  Learning" (the residual convolutional stacks).
"""

import math
from typing import Any, Sequence, Tuple

import torch
from torch import nn

from ..config import ConfigError
from ..data.dataset import IMAGE_CHANNELS
from .conv import _check_input, conv_decoder_body, conv_encoder_body, default_downsamplings, grid_shape_of, likelihood_layout
from .mlp import MLP

FEATURES = 256
"""Width of the encoder's features, the hidden layer after the flattened feature map."""


def conv_image_grid(data_shape: Sequence[int]) -> Tuple[int, Tuple[int, int]]:
    """
    ``(d, (h, w))``: the halvings of images of shape ``data_shape`` and the
    grid they leave (:func:`~pyprobvae.networks.conv.default_downsamplings`).

    :raises ConfigError: naming the shape, unless it is ``(C, H, W)`` with
        ``C`` in :data:`~pyprobvae.data.dataset.IMAGE_CHANNELS` (1 or 3) and
        sides that halve at least once to a grid side of at least 4: even
        sides of at least 8.
    """
    data_shape = tuple(data_shape)
    allowed = (
        "the conv network takes images of shape (C, H, W) with C = 1 (grey) or 3 (colour) and even sides of at "
        "least 8, e.g. (1, 8, 8), (1, 28, 28) or (3, 32, 32)"
    )
    instead = "use network='mlp' for other data"
    if len(data_shape) != 3 or data_shape[0] not in IMAGE_CHANNELS:
        raise ConfigError(f"{allowed}; got data_shape {data_shape}: {instead}")
    halvings = default_downsamplings(data_shape[1:])
    if halvings < 1:
        raise ConfigError(f"{allowed}; got data_shape {data_shape}, whose sides do not halve to a grid of at least "
                          f"4x4: {instead}")
    height, width = grid_shape_of(data_shape[1:], halvings)
    return halvings, (height, width)


class ConvFeatureMap(nn.Module):
    """
    Images ``(*batch, C, H, W)`` -> the flattened feature map of the
    residual encoder stack, ``(*batch, out_features)`` with ``out_features =
    map_channels * h * w`` (see the module's docstring).

    :param tuple data_shape: ``(C, H, W)``, see :func:`conv_image_grid`.
    :param channels: widths of the downsamplings; the last is also the width
        at grid resolution (:func:`~pyprobvae.networks.conv.conv_encoder_body`).
    :param int residual_blocks: residual blocks at grid resolution.
    :param int map_channels: channels of the map that is flattened.
    :raises ConfigError: for images the network does not take.
    """

    def __init__(
        self, data_shape: Sequence[int], channels: Sequence[int] = (16, 16), residual_blocks: int = 1,
        map_channels: int = 32,
    ) -> None:
        super().__init__()
        halvings, grid = conv_image_grid(data_shape)
        self.data_shape = tuple(data_shape)
        self.out_features = map_channels * math.prod(grid)
        self.body = conv_encoder_body(2, self.data_shape[0], map_channels, channels, halvings, residual_blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_input(images, self.data_shape, "images")
        batch = images.shape[:-3]
        return self.body(images.reshape((-1,) + self.data_shape)).reshape(batch + (self.out_features,))


class ConvVectorEncoder(nn.Sequential):
    """
    Images ``(*batch, C, H, W)`` -> features ``(*batch, features)``: a
    :class:`ConvFeatureMap` and a hidden layer ``relu(linear(.))`` of width
    ``features``, on which a variational family (or a linear layer) adds the
    output.

    :param tuple data_shape: ``(C, H, W)``, see :func:`conv_image_grid`.
    :param int features: width of the features, :attr:`out_features`.
    :param map_options: the :class:`ConvFeatureMap` 's ``channels``,
        ``residual_blocks`` and ``map_channels``.
    :raises ConfigError: for images the network does not take.
    """

    def __init__(self, data_shape: Sequence[int], features: int = FEATURES, **map_options: Any) -> None:
        feature_map = ConvFeatureMap(data_shape, **map_options)
        hidden = MLP(feature_map.out_features, (features,))
        super().__init__(feature_map, hidden)
        self.out_features = hidden.out_features


class ConvVectorDecoder(nn.Module):
    """
    Vectors ``(*batch, in_features)`` (codes :math:`z`, with a label
    appended for the conditional VAE) -> flat likelihood outputs
    ``(*batch, C * H * W * outputs_per_dim)``, laid out as ``(C, H, W,
    outputs_per_dim)`` flattened, as the likelihoods read decoder outputs
    (see the module's docstring).

    :param tuple data_shape: ``(C, H, W)``, see :func:`conv_image_grid`.
    :param int in_features: size of an input vector.
    :param int outputs_per_dim: the likelihood's outputs per data dimension.
    :param channels: width at grid resolution (first) and of the
        upsamplings before the last, which gives the outputs
        (:func:`~pyprobvae.networks.conv.conv_decoder_body`).
    :param int residual_blocks: residual blocks at grid resolution.
    :param int grid_channels: channels of the map the linear layer makes.
    :raises ConfigError: for images the network does not take.
    """

    def __init__(
        self, data_shape: Sequence[int], in_features: int, outputs_per_dim: int, channels: Sequence[int] = (16, 16),
        residual_blocks: int = 1, grid_channels: int = 64,
    ) -> None:
        super().__init__()
        halvings, grid = conv_image_grid(data_shape)
        self.data_shape = tuple(data_shape)
        self.in_features = in_features
        self.outputs_per_dim = outputs_per_dim
        self.to_grid = nn.Sequential(
            nn.Linear(in_features, grid_channels * math.prod(grid)), nn.ReLU(), nn.Unflatten(-1, (grid_channels,) + grid)
        )
        out_channels = self.data_shape[0] * outputs_per_dim
        self.body = conv_decoder_body(2, grid_channels, out_channels, channels, halvings, residual_blocks, output_conv=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(z, (self.in_features,), "decoder inputs")
        maps = self.body(self.to_grid(z.reshape(-1, self.in_features)))
        return likelihood_layout(maps, self.data_shape, self.outputs_per_dim, z.shape[:-1])
