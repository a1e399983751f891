r"""
The one source of the normalizing-flow layers and of the Latin-hypercube
initialization shared by the VAE families (:mod:`pyprobvae.families`) and the
autoguides (:mod:`pyprobvae.autoguides`).

:func:`flow_layers` builds the stack :math:`f = f_L \circ \dots \circ f_1` of
:class:`~pyprobvae.families.flow.NormalizingFlow` (*conditional* layers, whose
parameters are the output of a network reading a context :math:`h`, the
encoder features) and of :class:`~pyprobvae.autoguides.AutoFlowNormal`
(*unconditional* layers with free parameters). Both use the same layer for the
same name, from Pyro's transforms. Every layer is a bijection
:math:`\mathbb{R}^D \to \mathbb{R}^D` whose log-determinant is :math:`O(D)`
given its parameters, so that a draw :math:`z_L = f(z_0)` is scored by the
change of variables,

.. math::

    \log q(z_L) = \log q_0(z_0) - \sum_{l=1}^L \log |\det J_{f_l}(z_{l-1})|.

In the conditional case every parameter below is also a function of
:math:`h`; that is the only difference.

**Planar** (``"planar"``; Rezende & Mohamed 2015). One hyperplane's worth of deformation:

.. math::

    f(z) = z + \hat u \tanh(w^\top z + b), \qquad
    \log |\det J_f(z)| = \log \big|1 + \hat u^\top \psi(z)\big|, \quad
    \psi(z) = \big(1 - \tanh^2(w^\top z + b)\big)\, w,

by the matrix determinant lemma. It is invertible when :math:`w^\top \hat u
\ge -1`, which Pyro enforces with :math:`\hat u = u + (m(w^\top u) - w^\top
u)\, w / \lVert w \rVert^2`, :math:`m(a) = -1 + \operatorname{softplus}(a)`.
No closed-form inverse.

**Radial** (``"radial"``; Rezende & Mohamed 2015). A contraction or expansion
around a point :math:`z_r`:

.. math::

    f(z) = z + \beta \frac{z - z_r}{\alpha + r}, \quad r = \lVert z - z_r \rVert,
    \qquad
    \log |\det J_f(z)| = (D - 1) \log(1 + \beta\eta) + \log(1 + \beta\eta - \beta\eta^2 r),
    \quad \eta = \frac{1}{\alpha + r},

invertible for :math:`\alpha > 0`, :math:`\beta \ge -\alpha` (Pyro's
parameterization). No closed-form inverse.

**Inverse autoregressive flow** (``"iaf"``; Kingma et al. 2016). Each coordinate is
shifted and scaled by amounts that depend on the coordinates before it:

.. math::

    f(z)_i = m_i(z_{<i}) + e^{s_i(z_{<i})} z_i, \qquad
    \log |\det J_f(z)| = \sum_{i=1}^D s_i(z_{<i}),

where :math:`(m, s)` are the outputs of one masked autoencoder (MADE; Germain
et al. 2015) in the natural
order :math:`z_1, \dots, z_D`, so that the Jacobian is triangular; Pyro clips
:math:`s_i` to :math:`[-5, 3]`. The inverse is analytic but sequential,
:math:`D` network passes.

**Neural spline flow** (``"spline"``; Durkan et al. 2019). Each coordinate
goes through a monotone rational-quadratic spline,
:math:`f(z)_i = g(z_i;\ \theta_i(z_{<i}))`, of :math:`K` =
:data:`SPLINE_BINS` bins on :math:`[-B, B]`, :math:`B` =
:data:`SPLINE_BOUND`, and the identity outside. In bin :math:`k`, with knots
:math:`(x_k, y_k)`, width :math:`w_k`, height :math:`h_k`, slope :math:`s_k =
h_k / w_k`, derivatives :math:`\delta_k, \delta_{k+1} > 0` at the knots and
:math:`\xi = (z_i - x_k) / w_k \in [0, 1]`,

.. math::

    g = y_k + \frac{h_k \big(s_k \xi^2 + \delta_k \xi (1 - \xi)\big)}
                   {s_k + (\delta_{k+1} + \delta_k - 2 s_k)\, \xi (1 - \xi)},
    \qquad
    g' = \frac{s_k^2 \big(\delta_{k+1} \xi^2 + 2 s_k \xi (1 - \xi) + \delta_k (1 - \xi)^2\big)}
              {\big(s_k + (\delta_{k+1} + \delta_k - 2 s_k)\, \xi (1 - \xi)\big)^2},

and :math:`\log |\det J_f| = \sum_i \log g'`. The :math:`K` widths,
:math:`K` heights and :math:`K - 1` inner derivatives of each coordinate are
the outputs of a MADE, as for the IAF (order ``"quadratic"`` of Pyro's
splines, :data:`SPLINE_ORDER`); the derivatives at :math:`\pm B` are 1, so
the spline joins the identity smoothly. The inverse is analytic (a quadratic
equation per bin) and sequential over the coordinates.

**Order reversal.** Between consecutive autoregressive layers (``"iaf"``,
``"spline"``) a :class:`~pyro.distributions.transforms.Permute` reverses the
order of the coordinates (log-determinant 0), so that every coordinate is
transformed given the others somewhere in the stack (Papamakarios et al.
2017).

**One-dimensional latents** (:math:`D = 1`). There is nothing for a MADE to
condition on. ``"spline"`` then uses an elementwise spline whose parameters
are free (unconditional) or a function of :math:`h` alone (conditional);
``"planar"`` and ``"radial"`` are unchanged; and ``"iaf"`` is refused with a
:class:`ValueError`, by both callers: an affine map of a Gaussian is
Gaussian, so it would add nothing to the diagonal Gaussian it transforms.

**Latin-hypercube initialization** (McKay et al. 1979).
:func:`latin_hypercube_normal` spreads the initial locations of mixture
components: :math:`K` points of :math:`\mathcal{N}(0, I_D)` whose every
coordinate takes each of the :math:`K` stratum midpoints
:math:`\Phi^{-1}((k + 1/2) / K)`, :math:`k = 0, \dots, K - 1`, once, in an
order drawn independently per coordinate.

**References**

- Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows".
- Kingma et al. 2016, "Improved Variational Inference with Inverse
  Autoregressive Flow".
- Germain et al. 2015, "MADE: Masked Autoencoder for Distribution
  Estimation".
- Durkan et al. 2019, "Neural Spline Flows".
- Papamakarios et al. 2017, "Masked Autoregressive Flow for Density
  Estimation".
- McKay et al. 1979, "A Comparison of Three Methods for Selecting Values of
  Input Variables in the Analysis of Output from a Computer Code".
"""

from typing import List, Optional, Sequence, Union

import torch
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.transforms import (
    AffineAutoregressive,
    ConditionalAffineAutoregressive,
    ConditionalSplineAutoregressive,
    Permute,
    Planar,
    Radial,
    Spline,
    SplineAutoregressive,
    conditional_planar,
    conditional_radial,
    conditional_spline,
)
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch.special import ndtri

__all__ = [
    "AUTOREGRESSIVE_FLOWS",
    "ConditionalPermute",
    "FLOWS",
    "SPLINE_BINS",
    "SPLINE_BOUND",
    "SPLINE_ORDER",
    "default_hidden",
    "flow_layers",
    "latin_hypercube_normal",
]

#: The flow layers, by name.
FLOWS = ("planar", "radial", "iaf", "spline")
#: The flows whose layers are autoregressive for :math:`D \ge 2` (and reversed between layers).
AUTOREGRESSIVE_FLOWS = ("iaf", "spline")
#: Bins per coordinate of the splines of the ``"spline"`` flow.
SPLINE_BINS = 8
#: Half-width :math:`B` of the box :math:`[-B, B]^2` outside which each spline is the identity.
SPLINE_BOUND = 3.0
#: The splines' order: rational-quadratic (Durkan et al. 2019).
SPLINE_ORDER = "quadratic"

_IAF_IN_ONE_DIMENSION = (
    "an iaf flow of a 1-dimensional latent is an affine map of a Gaussian, hence Gaussian, "
    "and adds nothing to the diagonal Gaussian it transforms: use the 'spline', 'planar' or "
    "'radial' flow, or a diagonal guide"
)


class _OrientationPreserving:
    # Every layer of FLOWS has a positive Jacobian determinant by construction
    # (see the module docstring; Pyro's AffineAutoregressive says so too):
    # torch's Transform.sign would raise NotImplementedError instead, which
    # torch.jit's probing of a module's attributes (hasattr) does not survive.
    sign = +1


class _Planar(_OrientationPreserving, Planar):
    """Pyro's ``Planar``, with ``sign`` +1."""


class _Radial(_OrientationPreserving, Radial):
    """Pyro's ``Radial``, with ``sign`` +1."""


class _Spline(_OrientationPreserving, Spline):
    """Pyro's ``Spline``, with ``sign`` +1."""


class _SplineAutoregressive(_OrientationPreserving, SplineAutoregressive):
    """Pyro's ``SplineAutoregressive``, with ``sign`` +1."""


class _Permute(Permute):
    # The sign of a permutation's determinant, its parity: (-1)^(inversions).
    @property
    def sign(self):
        order = self.permutation
        inversions = int((order.unsqueeze(1) > order.unsqueeze(0)).triu(1).sum())  # i < j with order[i] > order[j]
        return -1 if inversions % 2 else +1


class ConditionalPermute(ConditionalTransform):
    """
    A fixed :class:`~pyro.distributions.transforms.Permute` in a stack of
    conditional layers. Each :meth:`condition` returns a *new* ``Permute``, on
    the context's device: a transform's one-sample cache belongs to one
    distribution and must not be shared between them.

    :param torch.LongTensor permutation: the permutation of the coordinates.
    """

    def __init__(self, permutation: torch.Tensor) -> None:
        self.permutation = permutation

    def condition(self, context: torch.Tensor) -> Permute:
        return Permute(self.permutation.to(context.device))


def default_hidden(flow: str, dim: int, conditional: bool) -> Optional[List[int]]:
    """
    The default hidden-layer widths of a layer's network, which differ between
    the two callers (and are kept as they were):

    - conditional layers (:class:`~pyprobvae.families.flow.NormalizingFlow`),
      whose hypernetworks also read the encoder features: one layer of
      ``max(10 * dim, 32)`` units for every flow;
    - unconditional layers (:class:`~pyprobvae.autoguides.AutoFlowNormal`),
      Pyro's defaults: ``[3 * dim + 1]`` for ``"iaf"`` and ``[10 * dim, 10 *
      dim]`` for ``"spline"``; ``None`` where there is no network (planar,
      radial, and the elementwise spline of ``dim == 1``).
    """
    if conditional:
        return [max(10 * dim, 32)]
    if flow == "iaf":
        return [3 * dim + 1]
    if flow == "spline" and dim > 1:
        return [10 * dim, 10 * dim]
    return None


def _made(dim, hidden, param_dims, context_dim):
    # MADE in the natural order z_1, ..., z_D, also fed the context if any.
    order = torch.arange(dim)
    if context_dim is None:
        return AutoRegressiveNN(dim, hidden, param_dims=param_dims, permutation=order)
    return ConditionalAutoRegressiveNN(dim, context_dim, hidden, param_dims=param_dims, permutation=order)


def _layer(flow, dim, hidden, context_dim):
    conditional = context_dim is not None
    if flow == "planar":
        return conditional_planar(dim, context_dim, hidden) if conditional else _Planar(dim)
    if flow == "radial":
        return conditional_radial(dim, context_dim, hidden) if conditional else _Radial(dim)
    if flow == "iaf":
        made = _made(dim, hidden, [1, 1], context_dim)
        return ConditionalAffineAutoregressive(made) if conditional else AffineAutoregressive(made)
    spline = dict(count_bins=SPLINE_BINS, bound=SPLINE_BOUND, order=SPLINE_ORDER)
    if dim == 1:
        return conditional_spline(1, context_dim, hidden, **spline) if conditional else _Spline(1, **spline)
    made = _made(dim, hidden, [SPLINE_BINS, SPLINE_BINS, SPLINE_BINS - 1], context_dim)
    return (ConditionalSplineAutoregressive if conditional else _SplineAutoregressive)(dim, made, **spline)


def flow_layers(
    flow: str,
    dim: int,
    flow_depth: int,
    hidden: Optional[Sequence[int]] = None,
    context_dim: Optional[int] = None,
    device: Optional[Union[torch.device, str]] = None,
) -> list:
    """
    Build a stack of ``flow_depth`` flow layers of one kind (see the module
    docstring), in the order they apply, with an order-reversing ``Permute``
    between consecutive autoregressive layers of ``dim >= 2``.

    Unconditional (``context_dim=None``): a list of Pyro
    :class:`~pyro.distributions.torch_transform.TransformModule` layers and
    :class:`~pyro.distributions.transforms.Permute` transforms, to compose
    once (e.g. in a
    :class:`~pyro.distributions.transforms.ComposeTransformModule`).

    Conditional: a list of Pyro
    :class:`~pyro.distributions.conditional.ConditionalTransformModule`
    layers and :class:`ConditionalPermute` transforms; call
    ``condition(h)`` on each, for each new distribution.

    :param str flow: one of :data:`FLOWS`.
    :param int dim: dimension :math:`D` of the latent vector.
    :param int flow_depth: number of layers :math:`L \\ge 1`, not counting the
        permutations.
    :param hidden: hidden-layer widths of each layer's network (for the
        autoregressive flows, each at least ``dim``); default
        :func:`default_hidden`. Ignored by layers without a network
        (unconditional planar, radial and one-dimensional spline).
    :param int context_dim: width of the context :math:`h`; ``None`` for
        unconditional layers.
    :param device: device of the unconditional ``Permute`` transforms (the
        layers themselves are modules: move them with ``.to``).
    :raises ValueError: for an unknown flow, ``flow_depth < 1``, or ``"iaf"`` with
        ``dim == 1``.
    """
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; choose one of {', '.join(FLOWS)}")
    if flow_depth < 1:
        raise ValueError(f"a flow needs flow_depth >= 1, got {flow_depth}")
    if flow == "iaf" and dim == 1:
        raise ValueError(_IAF_IN_ONE_DIMENSION)
    conditional = context_dim is not None
    hidden = default_hidden(flow, dim, conditional) if hidden is None else [int(width) for width in hidden]
    reverses = flow in AUTOREGRESSIVE_FLOWS and dim > 1
    layers = []
    for k in range(flow_depth):
        if k and reverses:
            reversal = torch.arange(dim - 1, -1, -1, device=device)
            # A new Permute per position (its cache holds one pair).
            layers.append(ConditionalPermute(reversal) if conditional else _Permute(reversal))
        layers.append(_layer(flow, dim, hidden, context_dim))
    return layers


def latin_hypercube_normal(
    count: int,
    dim: int,
    generator: torch.Generator,
    dtype: Optional[torch.dtype] = None,
    device: Optional[Union[torch.device, str]] = None,
) -> torch.Tensor:
    """
    A Latin-hypercube sample of :math:`\\mathcal{N}(0, I_{\\text{dim}})`
    (McKay et al. 1979): ``count`` points whose every coordinate (column) is
    a random permutation of the ``count`` quantiles
    :math:`\\Phi^{-1}((k + 1/2) / \\text{count})` of :math:`\\mathcal{N}(0,
    1)`, drawn independently per column from ``generator`` (and from nothing
    else: the global random state is untouched).

    :param int count: number of points (rows), at least 1.
    :param int dim: dimension (columns).
    :param torch.Generator generator: the source of the permutations.
    :param dtype: dtype of the result (default: torch's default dtype).
    :param device: device of the result (default: the CPU).
    :returns: a tensor of shape ``(count, dim)``.
    """
    if count < 1:
        raise ValueError(f"a Latin hypercube needs count >= 1, got {count}")
    quantiles = ndtri((torch.arange(count, dtype=torch.float64) + 0.5) / count)
    # argsort of i.i.d. uniforms: a uniformly random permutation per column.
    ranks = torch.rand(dim, count, generator=generator, device=generator.device).argsort(-1).cpu()
    sample = quantiles[ranks].T.contiguous()
    return sample.to(dtype=dtype or torch.get_default_dtype(), device=device)
