"""
Normalizing-flow variational families: a diagonal Gaussian pushed through a
stack of invertible maps conditioned on the encoder features.
"""

from typing import Optional, Sequence

import torch
from pyro.distributions import TransformedDistribution
from pyro.distributions.transforms import (
    ConditionalAffineAutoregressive,
    ConditionalSplineAutoregressive,
    Permute,
    conditional_planar,
    conditional_radial,
    conditional_spline,
)
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from .diagonal import DiagonalNormal

FLOWS = ("planar", "radial", "iaf", "spline")

# The rational-quadratic splines of the "spline" flow: bins per dimension and
# the half-width B of the box [-B, B]^2 outside which each spline is the identity.
SPLINE_BINS = 8
SPLINE_BOUND = 3.0


def _autoregressive_nn(latent_dim, in_features, hidden, param_dims):
    # MADE (Germain et al. 2015) in the natural order z_1, ..., z_D, also fed h.
    order = torch.arange(latent_dim)
    return ConditionalAutoRegressiveNN(latent_dim, in_features, hidden, param_dims, permutation=order)


def _layer(flow, latent_dim, in_features, hidden):
    if flow == "planar":
        return conditional_planar(latent_dim, in_features, hidden)
    if flow == "radial":
        return conditional_radial(latent_dim, in_features, hidden)
    if flow == "iaf":
        return ConditionalAffineAutoregressive(_autoregressive_nn(latent_dim, in_features, hidden, [1, 1]))
    if latent_dim == 1:
        return conditional_spline(1, in_features, hidden, SPLINE_BINS, SPLINE_BOUND, order="quadratic")
    param_dims = [SPLINE_BINS, SPLINE_BINS, SPLINE_BINS - 1]
    return ConditionalSplineAutoregressive(
        latent_dim,
        _autoregressive_nn(latent_dim, in_features, hidden, param_dims),
        count_bins=SPLINE_BINS,
        bound=SPLINE_BOUND,
        order="quadratic",
    )


class NormalizingFlow(nn.Module):
    r"""
    An amortized normalizing-flow guide (Rezende & Mohamed 2015):

        z_0 ~ N(mu(h), diag(sigma(h)^2)),   z = f_K o ... o f_1(z_0),

    where h are the encoder features, the base is a :class:`DiagonalNormal`
    head and every layer f_k is an invertible map whose parameters are the
    output of a hypernetwork reading h. By the change of variables,
    ::

        log q(z|x) = log N(z_0; mu(h), diag(sigma(h)^2))
                     - sum_k log |det df_k/dz_{k-1}|.

    Samples are reparameterized (gradients flow through z to h and to every
    weight). The layers are Pyro's conditional transforms:

    - ``"planar"``: ``f(z) = z + u tanh(w^T z + b)`` with ``w^T u > -1``;
      ``log|det| = log|1 + u^T psi(z)|``, ``psi = (1 - tanh^2) w``
      (Rezende & Mohamed 2015).
    - ``"radial"``: ``f(z) = z + beta (z - z_r) / (alpha + |z - z_r|)`` with
      ``beta > -alpha`` (Rezende & Mohamed 2015).
    - ``"iaf"``: the inverse autoregressive flow
      ``f(z)_i = m_i(z_<i, h) + exp(s_i(z_<i, h)) z_i``, with a triangular
      Jacobian, ``log|det| = sum_i s_i`` (Kingma et al. 2016).
    - ``"spline"``: the neural spline flow
      ``f(z)_i = g_i(z_i; theta_i(z_<i, h))`` with ``g_i`` a monotonic
      rational-quadratic spline of :data:`SPLINE_BINS` bins on
      ``[-SPLINE_BOUND, SPLINE_BOUND]`` and the identity outside
      (Durkan et al. 2019).

    The autoregressive flows reverse the order of the coordinates between
    layers (a :class:`~pyro.distributions.transforms.Permute` of unit
    Jacobian), so that every coordinate is transformed given the others. With
    ``latent_dim == 1`` there is nothing to be autoregressive on:
    ``"spline"`` then uses the elementwise spline whose parameters are a
    function of h alone, and ``"iaf"`` is refused, since an affine map of a
    Gaussian is Gaussian and would add nothing to :class:`DiagonalNormal`.

    Planar and radial maps have no closed-form inverse: their ``log_prob`` is
    defined only at the distribution's latest sample, which every layer keeps
    from its forward pass (Pyro's ``cache_size=1``) and recognizes by
    identity. Score the very tensor that ``rsample`` returned, on this
    distribution or on one ``expand``-ed from it (which shares the layers),
    as Pyro's plates and its trace and replay handlers do. Autoregressive
    flows invert any point, at the cost of ``latent_dim`` network passes when
    it is not the cached sample.

    :param int in_features: width of the encoder features h.
    :param int latent_dim: dimension of z.
    :param str flow: the layer type, one of :data:`FLOWS`.
    :param int depth: number of layers K (>= 1).
    :param hidden: hidden-layer widths of each layer's hypernetwork (for the
        autoregressive flows, each at least ``latent_dim``); default one layer
        of ``max(10 * latent_dim, 32)`` units.
    :param float min_scale: lower bound on the base scale sigma.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        flow: str = "iaf",
        depth: int = 2,
        hidden: Optional[Sequence[int]] = None,
        min_scale: float = 1e-4,
    ):
        if flow not in FLOWS:
            raise ValueError(f"unknown flow {flow!r}; choose one of {', '.join(FLOWS)}")
        if depth < 1:
            raise ValueError(f"a flow needs depth >= 1, got {depth}")
        if flow == "iaf" and latent_dim == 1:
            raise ValueError(
                "an iaf flow of a 1-dimensional z is an affine map of a Gaussian, hence Gaussian: "
                "use the spline flow or the diagonal family"
            )
        super().__init__()
        hidden = [max(10 * latent_dim, 32)] if hidden is None else [int(width) for width in hidden]
        self.latent_dim = latent_dim
        self.base = DiagonalNormal(in_features, latent_dim, min_scale)
        self.layers = nn.ModuleList(_layer(flow, latent_dim, in_features, hidden) for _ in range(depth))
        self.reverses = flow in ("iaf", "spline") and latent_dim > 1

    def forward(self, features):
        transforms = []
        for k, layer in enumerate(self.layers):
            if k and self.reverses:
                # A new Permute per distribution: its cache must not be shared.
                reversal = torch.arange(self.latent_dim - 1, -1, -1, device=features.device)
                transforms.append(Permute(reversal))
            transforms.append(layer.condition(features))
        return TransformedDistribution(self.base(features), transforms, validate_args=False)
