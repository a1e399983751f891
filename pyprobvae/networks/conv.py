"""
Convolutional encoders and decoders over a grid of code vectors, the
building blocks of a VQ-VAE (van den Oord et al. 2017): plain
:class:`torch.nn.Module` s that know nothing about probability.

An encoder maps one example to ``num_positions`` code vectors of size
``code_dim``, shape ``(*batch, num_positions, code_dim)``; positions are in
raster order (row-major over the code grid for images). A decoder maps such
codes back to the flat outputs a :mod:`~pyprobvae.likelihoods` likelihood
consumes, shape ``(*batch, prod(data_shape) * outputs_per_dim)``, laid out as
``data_shape + (outputs_per_dim,)`` flattened, i.e. the outputs of one data
dimension are contiguous (the last axis when ``outputs_per_dim > 1``).

Architecture (images and token sequences alike, with 2-D or 1-D
convolutions):

* encoder: ``d`` downsampling convolutions (kernel 4, stride 2, padding 1,
  each halving the length of every spatial axis exactly), a 3x3 convolution,
  residual blocks at the grid resolution, a ReLU and a 1x1 convolution to
  ``code_dim``;
* decoder: a 3x3 convolution from ``code_dim``, residual blocks, ``u``
  upsampling transposed convolutions (kernel 4, stride 2, padding 1, each
  doubling every spatial axis exactly), a ReLU and a 3x3 convolution to the
  outputs.

A residual block is ``h + conv1x1(relu(conv3x3(relu(h))))``.
"""

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}

# The smallest grid side that default_downsamplings keeps.
MIN_GRID_SIDE = 4


def default_downsamplings(spatial_shape: Sequence[int]) -> int:
    """
    The number of halvings ``d`` used when none is given: the largest ``d``
    for which every side of ``spatial_shape`` is divisible by ``2**d`` and the
    grid keeps at least :data:`MIN_GRID_SIDE` cells per side (0 when even one
    halving would break that). E.g. 2 for 28x28 (a 7x7 grid), 1 for 8x8 (4x4),
    3 for 32x32 (4x4).

    :param spatial_shape: the spatial sides, e.g. ``(28, 28)``.
    :rtype: int
    """
    d = 0
    while all(side % 2 ** (d + 1) == 0 and side // 2 ** (d + 1) >= MIN_GRID_SIDE for side in spatial_shape):
        d += 1
    return d


def grid_shape_of(spatial_shape: Sequence[int], halvings: int) -> Tuple[int, ...]:
    """
    The code grid after ``halvings`` stride-2 convolutions: every side divided
    by ``2**halvings``.

    :param spatial_shape: the spatial sides, e.g. ``(28, 28)``.
    :param int halvings: number of halvings, at least 0.
    :raises ValueError: when a side is not divisible by ``2**halvings``.
    :rtype: tuple
    """
    if halvings < 0:
        raise ValueError(f"the number of down/upsamplings must be >= 0, got {halvings}")
    factor = 2**halvings
    if any(side % factor for side in spatial_shape):
        raise ValueError(
            f"spatial shape {tuple(spatial_shape)} is not divisible by 2**{halvings} = {factor}: "
            f"{halvings} stride-2 down/upsamplings need every side to be a multiple of {factor}"
        )
    return tuple(side // factor for side in spatial_shape)


class ResidualBlock(nn.Module):
    """
    ``h + conv1x1(relu(conv3x3(relu(h))))`` with ``channels`` channels
    throughout, for 1-D or 2-D feature maps.

    :param int dims: 1 or 2 spatial dimensions.
    :param int channels: number of channels in and out.
    """

    def __init__(self, dims: int, channels: int) -> None:
        super().__init__()
        conv = _CONV[dims]
        self.body = nn.Sequential(
            nn.ReLU(), conv(channels, channels, 3, padding=1), nn.ReLU(), conv(channels, channels, 1)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


def _check_channels(channels):
    channels = tuple(channels)
    if not channels or any(c < 1 for c in channels):
        raise ValueError(f"channels must be a non-empty sequence of positive widths, got {channels}")
    return channels


def conv_encoder_body(
    dims: int, in_channels: int, code_dim: int, channels: Sequence[int], downsamplings: int, residual_blocks: int
) -> nn.Sequential:
    """
    The encoder stack of this module's docstring on channel-first feature
    maps ``(batch, in_channels, *sides)`` -> ``(batch, code_dim, *sides / 2**d)``.
    The ``i``-th downsampling outputs ``channels[i]`` channels (the last width
    repeating when there are more downsamplings than widths); the 3x3
    convolution and the residual blocks use ``channels[-1]``.

    :param int dims: 1 or 2 spatial dimensions.
    :param int in_channels: input channels.
    :param int code_dim: output channels, the size of a code vector.
    :param channels: widths, see above.
    :param int downsamplings: number ``d`` of stride-2 convolutions.
    :param int residual_blocks: number of residual blocks.
    """
    channels = _check_channels(channels)
    conv = _CONV[dims]
    layers: List[nn.Module] = []
    width = in_channels
    for i in range(downsamplings):
        out = channels[min(i, len(channels) - 1)]
        layers += [conv(width, out, 4, stride=2, padding=1), nn.ReLU()]
        width = out
    layers.append(conv(width, channels[-1], 3, padding=1))
    layers += [ResidualBlock(dims, channels[-1]) for _ in range(residual_blocks)]
    layers += [nn.ReLU(), conv(channels[-1], code_dim, 1)]
    return nn.Sequential(*layers)


def conv_decoder_body(
    dims: int, code_dim: int, out_channels: int, channels: Sequence[int], upsamplings: int, residual_blocks: int,
    output_conv: bool = True,
) -> nn.Sequential:
    """
    The decoder stack of this module's docstring on channel-first code grids
    ``(batch, code_dim, *sides)`` -> ``(batch, out_channels, *sides * 2**u)``.
    The 3x3 input convolution and the residual blocks use ``channels[0]``;
    the ``i``-th upsampling outputs ``channels[i + 1]`` (the last width
    repeating).

    :param int dims: 1 or 2 spatial dimensions.
    :param int code_dim: input channels, the size of a code vector.
    :param int out_channels: output channels.
    :param channels: widths, see above.
    :param int upsamplings: number ``u`` of stride-2 transposed convolutions.
    :param int residual_blocks: number of residual blocks.
    :param bool output_conv: end with a ReLU and a 3x3 convolution to
        ``out_channels``; False: the last upsampling outputs
        ``out_channels`` itself, with no convolution at full resolution
        (needs ``u >= 1``).
    """
    channels = _check_channels(channels)
    if not output_conv and upsamplings < 1:
        raise ValueError("a decoder without its output convolution needs at least one upsampling to end with")
    conv, conv_transpose = _CONV[dims], _CONV_TRANSPOSE[dims]
    layers: List[nn.Module] = [conv(code_dim, channels[0], 3, padding=1)]
    layers += [ResidualBlock(dims, channels[0]) for _ in range(residual_blocks)]
    width = channels[0]
    for i in range(upsamplings):
        last = i == upsamplings - 1 and not output_conv
        out = out_channels if last else channels[min(i + 1, len(channels) - 1)]
        layers += [nn.ReLU(), conv_transpose(width, out, 4, stride=2, padding=1)]
        width = out
    if output_conv:
        layers += [nn.ReLU(), conv(width, out_channels, 3, padding=1)]
    return nn.Sequential(*layers)


def _check_input(tensor, shape, what):
    """Raise ValueError unless ``tensor`` has shape ``(*batch, *shape)``."""
    if tuple(tensor.shape[-len(shape):]) != tuple(shape) or tensor.dim() < len(shape):
        raise ValueError(f"{what} have shape {tuple(tensor.shape)}; expected (*batch, {', '.join(map(str, shape))})")


class ConvEncoder2d(nn.Module):
    """
    Images ``(*batch, C, H, W)`` -> code vectors ``(*batch, num_positions,
    code_dim)`` with ``num_positions = h * w`` in raster order over the
    ``(h, w) = (H, W) / 2**downsamplings`` code grid: position ``i * w + j``
    is grid cell ``(i, j)``.

    :param tuple data_shape: ``(C, H, W)``.
    :param int code_dim: size of a code vector.
    :param channels: widths of the downsamplings; the last is also the width
        at grid resolution (see :func:`conv_encoder_body`).
    :param downsamplings: number of stride-2 convolutions; None for
        :func:`default_downsamplings` of ``(H, W)``.
    :type downsamplings: int or None
    :param int residual_blocks: residual blocks at grid resolution.
    :raises ValueError: when ``data_shape`` is not ``(C, H, W)`` or ``H``,
        ``W`` are not divisible by ``2**downsamplings``.
    """

    def __init__(
        self, data_shape: Sequence[int], code_dim: int, channels: Sequence[int] = (32, 64),
        downsamplings: Optional[int] = None, residual_blocks: int = 2,
    ) -> None:
        super().__init__()
        self.data_shape = _image_shape(data_shape)
        if downsamplings is None:
            downsamplings = default_downsamplings(self.data_shape[1:])
        self.grid_shape = grid_shape_of(self.data_shape[1:], downsamplings)
        self.num_positions = math.prod(self.grid_shape)
        self.code_dim = code_dim
        self.body = conv_encoder_body(2, self.data_shape[0], code_dim, channels, downsamplings, residual_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.data_shape, "images")
        batch = x.shape[:-3]
        h = self.body(x.reshape((-1,) + self.data_shape))
        return h.flatten(2).transpose(1, 2).reshape(batch + (self.num_positions, self.code_dim))


class ConvDecoder2d(nn.Module):
    """
    Code vectors ``(*batch, num_positions, code_dim)`` in raster order ->
    flat likelihood outputs ``(*batch, C * H * W * outputs_per_dim)``, laid
    out as ``(C, H, W, outputs_per_dim)`` flattened, which is how the
    likelihoods reshape decoder outputs.

    :param tuple data_shape: ``(C, H, W)``.
    :param int code_dim: size of a code vector.
    :param int outputs_per_dim: outputs per data dimension, the likelihood's
        ``outputs_per_dim`` (e.g. the number of levels of the categorical
        likelihood, 1 for Bernoulli).
    :param channels: widths at grid resolution (first) and of the
        upsamplings (see :func:`conv_decoder_body`).
    :param upsamplings: number of stride-2 transposed convolutions; None for
        :func:`default_downsamplings` of ``(H, W)``, which matches a
        :class:`ConvEncoder2d` with default downsamplings.
    :type upsamplings: int or None
    :param int residual_blocks: residual blocks at grid resolution.
    :raises ValueError: when ``data_shape`` is not ``(C, H, W)`` or ``H``,
        ``W`` are not divisible by ``2**upsamplings``.
    """

    def __init__(
        self, data_shape: Sequence[int], code_dim: int, outputs_per_dim: int, channels: Sequence[int] = (64, 32),
        upsamplings: Optional[int] = None, residual_blocks: int = 2,
    ) -> None:
        super().__init__()
        self.data_shape = _image_shape(data_shape)
        if upsamplings is None:
            upsamplings = default_downsamplings(self.data_shape[1:])
        self.grid_shape = grid_shape_of(self.data_shape[1:], upsamplings)
        self.num_positions = math.prod(self.grid_shape)
        self.code_dim = code_dim
        self.outputs_per_dim = outputs_per_dim
        out_channels = self.data_shape[0] * outputs_per_dim
        self.body = conv_decoder_body(2, code_dim, out_channels, channels, upsamplings, residual_blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(z, (self.num_positions, self.code_dim), "codes")
        batch = z.shape[:-2]
        grid = z.reshape((-1,) + self.grid_shape + (self.code_dim,)).permute(0, 3, 1, 2)
        return likelihood_layout(self.body(grid), self.data_shape, self.outputs_per_dim, batch)


def likelihood_layout(
    maps: torch.Tensor, data_shape: Sequence[int], outputs_per_dim: int, batch: Tuple[int, ...]
) -> torch.Tensor:
    """
    Decoder output maps ``(n, C * K, H, W)``, channel ``c * K + k`` holding
    output ``k`` of image channel ``c``, as the flat outputs the likelihoods
    read: ``(*batch, C * H * W * K)``, laid out as ``(C, H, W, K)`` flattened
    (``n = prod(batch)``, ``K = outputs_per_dim``).
    """
    channels, height, width = data_shape
    out = maps.reshape(-1, channels, outputs_per_dim, height, width).permute(0, 1, 3, 4, 2)
    return out.reshape(tuple(batch) + (-1,))


def _image_shape(data_shape):
    data_shape = tuple(data_shape)
    if len(data_shape) != 3:
        raise ValueError(f"image data_shape must be (C, H, W), got {data_shape}")
    return data_shape


class ConvEncoder1d(nn.Module):
    """
    Token sequences ``(*batch, seq_len)`` of int64 ids -> code vectors
    ``(*batch, num_positions, code_dim)`` with ``num_positions = seq_len /
    2**downsamplings``, in sequence order. Ids are embedded first.

    :param int seq_len: length of a sequence.
    :param int vocab_size: number of token ids.
    :param int code_dim: size of a code vector.
    :param int embed_dim: size of a token embedding.
    :param channels: widths of the downsamplings; the last is also the width
        at grid resolution (see :func:`conv_encoder_body`).
    :param int downsamplings: number of stride-2 convolutions.
    :param int residual_blocks: residual blocks at grid resolution.
    :raises ValueError: when ``seq_len`` is not divisible by
        ``2**downsamplings``.
    """

    def __init__(
        self,
        seq_len: int,
        vocab_size: int,
        code_dim: int,
        embed_dim: int = 64,
        channels: Sequence[int] = (128, 128),
        downsamplings: int = 2,
        residual_blocks: int = 2,
    ) -> None:
        super().__init__()
        (self.num_positions,) = grid_shape_of((seq_len,), downsamplings)
        self.seq_len = seq_len
        self.code_dim = code_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.body = conv_encoder_body(1, embed_dim, code_dim, channels, downsamplings, residual_blocks)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_input(tokens, (self.seq_len,), "token ids")
        batch = tokens.shape[:-1]
        h = self.embedding(tokens.reshape(-1, self.seq_len)).transpose(1, 2)
        return self.body(h).transpose(1, 2).reshape(batch + (self.num_positions, self.code_dim))


class ConvDecoder1d(nn.Module):
    """
    Code vectors ``(*batch, num_positions, code_dim)`` in sequence order ->
    flat token logits ``(*batch, seq_len * vocab_size)``, laid out as
    ``(seq_len, vocab_size)`` flattened: the logits of one position are
    contiguous, as :class:`~pyprobvae.likelihoods.TokenLikelihood` expects.

    :param int seq_len: length of a sequence.
    :param int code_dim: size of a code vector.
    :param int vocab_size: number of token ids, the logits per position.
    :param channels: widths at grid resolution (first) and of the
        upsamplings (see :func:`conv_decoder_body`).
    :param int upsamplings: number of stride-2 transposed convolutions.
    :param int residual_blocks: residual blocks at grid resolution.
    :raises ValueError: when ``seq_len`` is not divisible by
        ``2**upsamplings``.
    """

    def __init__(
        self, seq_len: int, code_dim: int, vocab_size: int, channels: Sequence[int] = (128, 128), upsamplings: int = 2,
        residual_blocks: int = 2,
    ) -> None:
        super().__init__()
        (self.num_positions,) = grid_shape_of((seq_len,), upsamplings)
        self.seq_len = seq_len
        self.code_dim = code_dim
        self.body = conv_decoder_body(1, code_dim, vocab_size, channels, upsamplings, residual_blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(z, (self.num_positions, self.code_dim), "codes")
        batch = z.shape[:-2]
        logits = self.body(z.reshape(-1, self.num_positions, self.code_dim).transpose(1, 2))
        return logits.transpose(1, 2).reshape(batch + (-1,))
