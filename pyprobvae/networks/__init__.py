"""
Encoder and decoder networks: plain :class:`torch.nn.Module` s that know
nothing about probability. The variational families and likelihoods turn their
outputs into distributions.
"""

from .conv import ConvDecoder1d, ConvDecoder2d, ConvEncoder1d, ConvEncoder2d
from .conv_latent import ConvFeatureMap, ConvVectorDecoder, ConvVectorEncoder
from .mlp import MLP, Conditioned

__all__ = [
    "Conditioned", "ConvDecoder1d", "ConvDecoder2d", "ConvEncoder1d", "ConvEncoder2d", "ConvFeatureMap", "ConvVectorDecoder",
    "ConvVectorEncoder", "MLP",
]
