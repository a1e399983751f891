"""
Normalizing-flow variational families: a diagonal Gaussian pushed through a
stack of invertible maps conditioned on the encoder features. The layers, their
math and references are in :mod:`pyprobvae.families.layers`.
"""

from typing import Optional, Sequence

import torch
from pyro.distributions import TransformedDistribution
from torch import nn

from .diagonal import DiagonalNormal
from .layers import FLOWS, SPLINE_BINS, SPLINE_BOUND, flow_layers

__all__ = ["FLOWS", "NormalizingFlow", "SPLINE_BINS", "SPLINE_BOUND"]


class NormalizingFlow(nn.Module):
    r"""
    An amortized normalizing-flow guide (Rezende & Mohamed 2015):

    .. math::

        z_0 \sim \mathcal{N}(\mu(h), \mathrm{diag}\, \sigma(h)^2), \qquad
        z = f_K \circ \dots \circ f_1(z_0),

    where :math:`h` are the encoder features, the base is a
    :class:`DiagonalNormal` head and every layer :math:`f_k` is an invertible
    map whose parameters are the output of a hypernetwork reading :math:`h`.
    By the change of variables,

    .. math::

        \log q(z \mid x) = \log \mathcal{N}(z_0; \mu(h), \mathrm{diag}\, \sigma(h)^2)
            - \sum_k \log \left|\det \frac{\partial f_k}{\partial z_{k-1}}\right|.

    Samples are reparameterized (gradients flow through :math:`z` to
    :math:`h` and to every weight). The layers are the conditional layers of
    :func:`~pyprobvae.families.layers.flow_layers`, whose module docstring
    gives the math of each (``"planar"``, ``"radial"``, ``"iaf"``,
    ``"spline"``), the order reversal between autoregressive layers and the
    rule for ``latent_dim == 1`` (``"spline"`` becomes elementwise, ``"iaf"``
    is refused with a :class:`ValueError`). The same names give the same
    layers, unconditional, in :class:`~pyprobvae.autoguides.AutoFlowNormal`.

    Planar and radial maps have no closed-form inverse: their ``log_prob`` is
    defined only at the distribution's latest sample, which every layer keeps
    from its forward pass (Pyro's ``cache_size=1``) and recognizes by
    identity. Score the very tensor that ``rsample`` returned, on this
    distribution or on one ``expand``-ed from it (which shares the layers),
    as Pyro's plates and its trace and replay handlers do. Autoregressive
    flows invert any point, at the cost of ``latent_dim`` network passes when
    it is not the cached sample.

    :param int in_features: width of the encoder features :math:`h`.
    :param int latent_dim: dimension of :math:`z`.
    :param str flow: the layer type, one of :data:`FLOWS`.
    :param int flow_depth: number of layers :math:`K` (:math:`\ge 1`).
    :param hidden: hidden-layer widths of each layer's hypernetwork (for the
        autoregressive flows, each at least ``latent_dim``); default one layer
        of ``max(10 * latent_dim, 32)`` units
        (:func:`~pyprobvae.families.layers.default_hidden`).
    :param float min_scale: lower bound on the base scale :math:`\sigma`.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        flow: str,
        flow_depth: int,
        hidden: Optional[Sequence[int]] = None,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.base = DiagonalNormal(in_features, latent_dim, min_scale)
        # The whole stack, permutations included; the layers with parameters
        # are registered (as layers.0, ..., layers.K-1) in a ModuleList.
        self._stack = flow_layers(flow, latent_dim, flow_depth, hidden, context_dim=in_features)
        self.layers = nn.ModuleList(layer for layer in self._stack if isinstance(layer, nn.Module))

    def forward(self, features: torch.Tensor) -> TransformedDistribution:
        # Every call conditions anew, so that no transform (hence no
        # one-sample cache) is shared between distributions.
        transforms = [layer.condition(features) for layer in self._stack]
        return TransformedDistribution(self.base(features), transforms, validate_args=False)
