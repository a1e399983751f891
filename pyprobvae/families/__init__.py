r"""
Variational families :math:`q(z \mid x)`: modules mapping an encoder's features to a
distribution over the latent code with batch shape ``(batch,)`` and event
shape ``(latent_dim,)``, reparameterized so that gradients flow through
samples; and the vector quantizer, the deterministic "family" of the VQ-VAE
(:mod:`~pyprobvae.families.quantizer`).
"""

from torch import nn

from .diagonal import DiagonalNormal
from .flow import FLOWS, NormalizingFlow
from .layers import flow_layers, latin_hypercube_normal
from .mixture import DiagonalNormalMixture
from .quantizer import VectorQuantizer

FAMILIES = ("diagonal", "mixture", "flow")


def make_family(
    name: str, in_features: int, latent_dim: int, *, num_components: int, flow: str, flow_depth: int
) -> nn.Module:
    """
    Build a variational family by name (the settings, and their defaults,
    are those of :class:`~pyprobvae.models.VAEConfig`).

    :param str name: ``"diagonal"`` (:class:`DiagonalNormal`), ``"mixture"``
        (:class:`DiagonalNormalMixture`) or ``"flow"`` (:class:`NormalizingFlow`).
    :param int in_features: width of the encoder features it reads.
    :param int latent_dim: dimension of :math:`z`.
    :param int num_components: number of mixture components :math:`K` (``"mixture"``).
    :param str flow: one of :data:`FLOWS` (``"flow"``).
    :param int flow_depth: number of flow layers (``"flow"``).
    """
    if name == "diagonal":
        return DiagonalNormal(in_features, latent_dim)
    if name == "mixture":
        if num_components < 1:
            raise ValueError(f"a mixture guide needs num_components >= 1, got {num_components}")
        return DiagonalNormalMixture(in_features, latent_dim, num_components)
    if name == "flow":
        return NormalizingFlow(in_features, latent_dim, flow, flow_depth)
    raise ValueError(f"unknown guide {name!r}; choose one of {', '.join(FAMILIES)}")


__all__ = [
    "DiagonalNormal",
    "DiagonalNormalMixture",
    "FAMILIES",
    "FLOWS",
    "NormalizingFlow",
    "VectorQuantizer",
    "flow_layers",
    "latin_hypercube_normal",
    "make_family",
]
