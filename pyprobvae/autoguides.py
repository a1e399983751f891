r"""
Automatic guides for arbitrary Pyro models beyond Pyro's Gaussian families: a
mixture of diagonal Gaussians and a normalizing flow.

Both follow Pyro's :class:`~pyro.infer.autoguide.AutoContinuous` recipe, the
automatic differentiation variational inference (ADVI) of Kucukelbir et al.
2017. Every latent
site :math:`x_s` of the model, with support :math:`S_s`, is mapped to
unconstrained space by the bijection :math:`T_s` = ``biject_to(S_s)``, and the
unconstrained values are concatenated into one vector
:math:`u \in \mathbb{R}^D`. The guide fits a density :math:`q(u)`, hands the
model :math:`x_s = T_s(u_s)`, and scores it with the change of variables

.. math::

    \log q(x) = \log q(u) - \sum_s \log |\det J_{T_s}(u_s)|,

so that ``SVI(model, guide, optim, Trace_ELBO())`` maximizes the evidence lower
bound :math:`\mathbb{E}_q[\log p(x, y) - \log q(x)] \le \log p(y)` with
reparameterized (pathwise) gradients. The guides assume, like every
``AutoContinuous``, that the latent sites are continuous and have fixed shapes
(global latent variables, or local ones in plates of fixed size); they do not
depend on the model's arguments.

The guides plug in wherever Pyro's do: as the ``guide`` of
:class:`~pyro.infer.SVI`, in :class:`~pyro.infer.Predictive`, and through
:meth:`get_posterior`, ``median()`` and ``quantiles()``. The mixture's
quantiles are exact (its coordinates' marginal distribution functions are
sums of Gaussian ones); a flow has no closed-form marginals, so its
quantiles are a Monte Carlo estimate (see :class:`MonteCarloAutoContinuous`).

The flow layers of :class:`AutoFlowNormal`, with their math and references,
are those of :mod:`pyprobvae.families.layers`, shared with the VAE family
:class:`~pyprobvae.families.flow.NormalizingFlow`.

**References**

- Kucukelbir et al. 2017, "Automatic Differentiation Variational Inference",
  JMLR 18(14).
- Gershman et al. 2012, "Nonparametric Variational Inference", ICML.
- Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows",
  ICML.
- McKay et al. 1979, "A Comparison of Three Methods for Selecting Values of
  Input Variables in the Analysis of Output from a Computer Code",
  Technometrics 21(2).
- Morningstar et al. 2021, "Automatic Differentiation Variational Inference
  with Mixtures", AISTATS.
- Figurnov et al. 2018, "Implicit Reparameterization Gradients", NeurIPS.
- Jankowiak & Karaletsos 2019, "Pathwise Derivatives for Multivariate
  Distributions", AISTATS.
"""

import math
from typing import Any, Callable, Dict, NoReturn, Optional, Sequence, Union

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.transforms import AffineTransform, ComposeTransform, ComposeTransformModule
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_feasible
from pyro.nn.module import PyroParam
from torch import nn
from torch.distributions import biject_to

from .distributions import MixtureOfDiagonalNormals
from .families.layers import FLOWS, flow_layers, latin_hypercube_normal

__all__ = ["AutoFlowNormal", "AutoMixtureNormal", "MonteCarloAutoContinuous"]


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"Expected {name} > 0 but got {value!r}")


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum} but got {value!r}")


def _constrained_rows(guide, latents):
    """
    :param guide: an ``AutoContinuous`` guide.
    :param torch.Tensor latents: ``N`` unconstrained latent vectors, shape ``(N, D)``.
    :returns: a dict mapping each latent site to its ``N`` constrained values,
        :math:`T_s(u_s)`, shaped ``(N,) + site shape``.
    """
    rows = {}
    pos = 0
    for name, site in guide.prototype_trace.iter_stochastic_nodes():
        shape = guide._unconstrained_shapes[name]
        size = math.prod(shape)
        rows[name] = biject_to(site["fn"].support)(latents[:, pos : pos + size].reshape((-1,) + shape))
        pos += size
    return rows


class MonteCarloAutoContinuous(AutoContinuous):
    r"""
    Base class of :class:`~pyro.infer.autoguide.AutoContinuous` guides whose
    posterior :math:`q(u)` over the unconstrained latent vector has no
    closed-form marginal quantiles. Subclasses implement :meth:`get_posterior`.

    :meth:`quantiles` draws :math:`S` = ``num_quantile_samples`` vectors
    :math:`u^{(1)}, \dots, u^{(S)} \sim q`, maps them to constrained space,
    :math:`x^{(i)}_s = T_s(u^{(i)}_s)`, and returns the empirical quantiles of
    each coordinate of each site (``torch.quantile``, linear interpolation
    between order statistics). The result is stochastic (it uses Pyro's global
    random state; seed it with :func:`pyro.set_rng_seed` to reproduce it), and
    a quantile :math:`x_p` of a coordinate with density :math:`f` has Monte
    Carlo standard error :math:`\sqrt{p(1-p)/S}\,/\,f(x_p)`: about
    :math:`0.040\,\sigma` for the median and :math:`0.067\,\sigma` for the 5%
    and 95% quantiles of a Gaussian coordinate of standard deviation
    :math:`\sigma` at the default :math:`S = 1000`. All requested quantiles
    come from the same draws, so they are ordered, and since each draw lies in
    the support, so does each quantile of a coordinate whose support is an
    interval (real, positive, unit interval, ...). For sites with joint
    constraints (simplex, correlation matrices) the per-coordinate quantiles
    are marginal summaries and need not lie in the joint support.

    :param callable model: a Pyro model.
    :param callable init_loc_fn: a per-site initialization function, see
        :ref:`autoguide-initialization`.
    :param int num_quantile_samples: the number :math:`S` of draws of ``q``
        behind each call of :meth:`quantiles` (and of ``median()`` where it is
        a Monte Carlo estimate). Memory grows as :math:`S \times D`.
    """

    def __init__(
        self, model: Callable[..., Any], init_loc_fn: Callable[..., torch.Tensor] = init_to_feasible, *,
        num_quantile_samples: int = 1000,
    ) -> None:
        _check_count("num_quantile_samples", num_quantile_samples, 1)
        self.num_quantile_samples = num_quantile_samples
        super().__init__(model, init_loc_fn=init_loc_fn)

    @torch.no_grad()
    def quantiles(self, quantiles: Union[Sequence[float], torch.Tensor], *args: Any, **kwargs: Any) -> Dict[str, torch.Tensor]:
        """
        Returns Monte Carlo estimates of the posterior quantiles of each latent
        variable in constrained space (see the class docstring). Example::

            print(guide.quantiles([0.05, 0.5, 0.95]))

        :param quantiles: a list of requested quantiles between 0 and 1.
        :type quantiles: torch.Tensor or list
        :return: a dict mapping sample site name to a tensor of shape
            ``(len(quantiles),) + site shape``.
        :rtype: dict
        """
        result = {}
        latents = self.get_posterior(*args, **kwargs).sample((self.num_quantile_samples,))
        for name, draws in _constrained_rows(self, latents).items():
            levels = torch.as_tensor(quantiles, dtype=draws.dtype, device=draws.device)
            result[name] = torch.quantile(draws, levels, dim=0)
        return result


_NOT_A_TRANSFORM = (
    "AutoMixtureNormal's posterior is a mixture of Gaussians, not an invertible transform of one base distribution, "
    "so it has no get_base_dist/get_transform: for NeuTraReparam use AutoNormal, AutoMultivariateNormal, AutoIAFNormal "
    "or pyprobvae's AutoFlowNormal"
)


class AutoMixtureNormal(AutoContinuous):
    r"""
    An :class:`~pyro.infer.autoguide.AutoContinuous` guide whose density over
    the unconstrained latent vector :math:`u \in \mathbb{R}^D` is a mixture of
    :math:`K` diagonal Gaussians (Gershman et al. 2012),

    .. math::

        q(u) = \sum_{k=1}^K \pi_k\, \mathcal{N}(u;\ \mu_k,\ \mathrm{diag}\,\sigma_k^2),
        \qquad \pi = \mathrm{softmax}(\ell),

    a :class:`~pyprobvae.distributions.MixtureOfDiagonalNormals` with learnable
    locations ``locs`` :math:`\mu \in \mathbb{R}^{K \times D}`, scales
    ``scales`` :math:`\sigma \in \mathbb{R}_{>0}^{K \times D}` and mixture
    logits ``logits`` :math:`\ell \in \mathbb{R}^K`. Unlike Pyro's Gaussian
    guides it can put mass on several modes of a multimodal posterior; the
    guide does not depend on the model's ``*args, **kwargs``. Usage::

        guide = AutoMixtureNormal(model, num_components=2)
        svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())

    **Initialization.** Components that start at one point receive identical
    gradients and stay together, so the locations start spread around the
    point :math:`c` of ``init_loc_fn`` (in unconstrained space):
    :math:`\mu_{kd} = c_d + \delta_{kd}`, where the offsets
    :math:`\delta` are a Latin hypercube sample (McKay et al. 1979) of
    :math:`\mathcal{N}(0, s^2 I)`, :math:`s` = ``init_spread``. In every
    coordinate :math:`d` the :math:`K` offsets are the :math:`K` stratum
    midpoints :math:`s\,\Phi^{-1}((j + 1/2)/K)`, :math:`j = 0, \dots, K-1`,
    assigned to the components in an order drawn independently per coordinate
    from a fixed-seed generator (so the guide is the same whatever the global
    random state), by
    :func:`~pyprobvae.families.layers.latin_hypercube_normal`. Hence the
    components start at :math:`K` distinct values along *every* coordinate
    (for :math:`K = 2`, at :math:`c_d \pm 0.674\,s`), whichever coordinate
    the posterior's modes differ in. All scales start at
    ``init_scale`` and all weights at :math:`1/K`. The default ``init_loc_fn``
    is ``init_to_feasible``, :math:`c = 0` in unconstrained space, as for
    Pyro's ``AutoNormal``: Pyro's ``AutoContinuous`` default,
    ``init_to_median``, is the median of 15 prior draws, which for a wide
    prior lands far from the posterior (standard deviation about 3.2 for a
    Normal(0, 10) prior). From such a start the first steps have gradients
    thousands of times larger than later ones; Adam's second-moment estimate
    remembers them for thousands of steps, and a component that does not
    reach the posterior with the first is left behind, moving at a fraction
    of the learning rate with a weight that its noisy gradient lowers only
    slowly (on a Bayesian linear regression, a component of weight 0.33
    sat 7 posterior standard deviations out after 4000 steps of Adam at
    ``lr=0.01``; restarting Adam at step 1000 let it reach the posterior).
    (Distinct locations are
    also what the pathwise derivative for :math:`D \ge 2` needs: it divides
    by the distance between component means.)

    **Gradients.** Draws of :math:`u` are reparameterized by
    :meth:`MixtureOfDiagonalNormals.rsample
    <pyprobvae.distributions.MixtureOfDiagonalNormals.rsample>`, with
    pathwise derivatives for the locations, scales and logits (implicit
    reparameterization of Figurnov et al. 2018 for :math:`D = 1`, the
    transport of Jankowiak & Karaletsos 2019 for :math:`D \ge 2`), so
    ``Trace_ELBO`` differentiates through the draws as for Pyro's Gaussian
    guides. These derivatives are unbiased, but the one for the logits divides by
    :math:`q(u)` at the draw: when components sit far apart relative to
    their scales, the rare draws between them give very large gradients,
    whose variance grows without bound as the components separate. The
    locations and scales are learned reliably; the weights follow their
    gradient noisily, and Adam can leave them visibly away from their
    optimum (for two modes of equal mass in ``examples/bimodal_posterior.py``
    the fitted masses range from about 0.3/0.7 to 0.5/0.5 across seeds);
    smaller learning rates reduce the drift. The stratified estimator
    :math:`\sum_k \pi_k f(u_k)`, :math:`u_k \sim \mathcal{N}(\mu_k,
    \mathrm{diag}\,\sigma_k^2)` (Morningstar et al. 2021) removes the problem, but needs an ELBO
    that evaluates the model once per component, which ``Trace_ELBO`` does
    not.

    **Median and quantiles.** Each coordinate :math:`u_d` of a mixture of
    diagonal Gaussians has the marginal distribution function
    :math:`F_d(t) = \sum_k \pi_k \Phi((t - \mu_{kd}) / \sigma_{kd})`, so
    :meth:`quantiles` are exact: the roots of :math:`F_d(t) = p`, found by
    bisection to double precision
    (:meth:`~pyprobvae.distributions.MixtureOfDiagonalNormals.marginal_icdf`),
    pushed to constrained space by each site's bijection :math:`T_s`, as
    Pyro's Gaussian guides do with the Gaussian quantile. They are
    deterministic, and ``median()`` is ``quantiles([0.5])``: the median of
    the whole mixture, not of one component. For sites with element-wise
    increasing bijections (real, positive, interval supports) these are the
    quantiles of the constrained variable itself; for sites with joint
    constraints (simplex, correlation matrices) they are per-coordinate
    summaries, as for Pyro's guides.

    :param callable model: a Pyro model.
    :param int num_components: the number :math:`K \ge 1` of mixture
        components.
    :param callable init_loc_fn: a per-site initialization function giving the
        centre :math:`c` of the initial locations, see
        :ref:`autoguide-initialization`.
    :param float init_scale: the initial standard deviation of every
        component in every (unconstrained) coordinate.
    :param float init_spread: the standard deviation :math:`s > 0` of the
        Latin hypercube offsets of the initial locations around :math:`c`.
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self, model: Callable[..., Any], num_components: int = 2,
        init_loc_fn: Callable[..., torch.Tensor] = init_to_feasible, init_scale: float = 0.1, init_spread: float = 1.0,
    ) -> None:
        _check_count("num_components", num_components, 1)
        _check_positive("init_scale", init_scale)
        _check_positive("init_spread", init_spread)
        self.num_components = num_components
        self._init_scale = float(init_scale)
        self._init_spread = float(init_spread)
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        centre = self._init_loc()
        self.locs = nn.Parameter(centre + self._init_offsets(centre))
        self.scales = PyroParam(
            centre.new_full((self.num_components, self.latent_dim), self._init_scale),
            self.scale_constraint,
        )
        self.logits = nn.Parameter(centre.new_zeros(self.num_components))

    def _init_offsets(self, centre):
        """
        :returns: the Latin hypercube offsets :math:`\\delta`, shape ``(K, D)``
            (see the class docstring).
        """
        generator = torch.Generator().manual_seed(0)
        offsets = latin_hypercube_normal(
            self.num_components, self.latent_dim, generator, dtype=centre.dtype, device=centre.device
        )
        return self._init_spread * offsets

    def get_posterior(self, *args: Any, **kwargs: Any) -> MixtureOfDiagonalNormals:
        """
        Returns the mixture :math:`q(u)` over the unconstrained latent vector.

        :rtype: ~pyprobvae.distributions.MixtureOfDiagonalNormals
        """
        return MixtureOfDiagonalNormals(self.locs, self.scales, self.logits)

    def get_base_dist(self) -> NoReturn:
        """
        Refused: a mixture of Gaussians is not an invertible transform of one
        base distribution, which is what NeuTra reparameterization
        (:class:`~pyro.infer.reparam.NeuTraReparam`) and other users of
        ``get_base_dist``/``get_transform`` need.

        :raises NotImplementedError: always, saying which guides have them.
        """
        raise NotImplementedError(_NOT_A_TRANSFORM)

    def get_transform(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused, as :meth:`get_base_dist`."""
        raise NotImplementedError(_NOT_A_TRANSFORM)

    @torch.no_grad()
    def quantiles(self, quantiles: Union[Sequence[float], torch.Tensor], *args: Any, **kwargs: Any) -> Dict[str, torch.Tensor]:
        """
        Returns the exact posterior quantiles of each latent variable in
        constrained space (see the class docstring). Example::

            print(guide.quantiles([0.05, 0.5, 0.95]))

        :param quantiles: a list of requested quantiles between 0 and 1.
        :type quantiles: torch.Tensor or list
        :return: a dict mapping sample site name to a tensor of shape
            ``(len(quantiles),) + site shape``.
        :rtype: dict
        """
        return _constrained_rows(self, self.get_posterior(*args, **kwargs).marginal_icdf(quantiles))

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> Dict[str, torch.Tensor]:
        """
        Returns the exact posterior median of each latent variable in
        constrained space, ``quantiles([0.5])`` (see the class docstring).

        :return: a dict mapping sample site name to a tensor of the site's
            shape.
        :rtype: dict
        """
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}


class AutoFlowNormal(MonteCarloAutoContinuous):
    r"""
    An :class:`~pyro.infer.autoguide.AutoContinuous` guide whose density over
    the unconstrained latent vector :math:`u \in \mathbb{R}^D` is a diagonal
    Gaussian made flexible by a normalizing flow (Rezende & Mohamed 2015):

    .. math::

        u = \mu + \sigma \odot f(\varepsilon), \qquad
        f = f_L \circ \dots \circ f_1, \qquad
        \varepsilon \sim \mathcal{N}(0, I_D),

    .. math::

        \log q(u) = \log \mathcal{N}(\varepsilon; 0, I_D)
            - \sum_{l=1}^L \log |\det J_{f_l}(\varepsilon_{l-1})|
            - \sum_{d=1}^D \log \sigma_d,

    with learnable location ``loc`` :math:`\mu`, scale ``scale``
    :math:`\sigma > 0` and the parameters of the :math:`L` = ``flow_depth`` flow
    layers in ``flow``. Equivalently, :math:`q` is the diagonal Gaussian
    :math:`\mathcal{N}(\mu, \mathrm{diag}\,\sigma^2)` of
    :class:`~pyro.infer.autoguide.AutoDiagonalNormal` pushed through the flow
    conjugated by its affine map, :math:`A \circ f \circ A^{-1}`,
    :math:`A(v) = \mu + \sigma \odot v`. The flow acts in the standardized
    coordinates of the Gaussian rather than after it, so that (i) the spline
    layers' bounding box :math:`[-3, 3]` covers the bulk of the base
    distribution wherever the posterior sits, and (ii) at initialization,
    whatever the random initial flow parameters, :math:`q` is concentrated
    within a few ``init_scale`` of the point of ``init_loc_fn``. The guide
    does not depend on the model's ``*args, **kwargs``. Usage::

        guide = AutoFlowNormal(model, flow="iaf", flow_depth=2)
        svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())

    The layers :math:`f_l`, one of :data:`FLOWS` (``"planar"``,
    ``"radial"``, ``"iaf"``, ``"spline"``), are the unconditional layers of
    :func:`~pyprobvae.families.layers.flow_layers`, whose module docstring
    gives the math of each and its reference: the same layers, by name, as
    the VAE family :class:`~pyprobvae.families.flow.NormalizingFlow` (there
    conditioned on the encoder features), with rational-quadratic splines of
    8 bins on :math:`[-3, 3]`, and the order of the coordinates reversed
    between consecutive autoregressive layers (``"iaf"``, ``"spline"``).

    **One-dimensional latent** (:math:`D = 1`). ``"spline"`` uses
    element-wise splines with free knots; ``"planar"`` and ``"radial"`` are
    unchanged; and ``"iaf"`` is refused with a :class:`ValueError` when the
    guide is first called (and :math:`D` becomes known), since it would
    reduce to a learnable affine map and :math:`q` would stay exactly
    Gaussian. For a one-dimensional posterior choose ``"spline"``,
    ``"planar"`` or ``"radial"``, or a Gaussian autoguide.

    ``median()`` is the Monte Carlo per-coordinate median of :math:`q` in
    constrained space, that is ``quantiles([0.5])`` (see
    :class:`MonteCarloAutoContinuous`). Planar and radial layers have no
    closed-form inverse: :math:`\log q` can be evaluated at the guide's own
    draws (which is all the ELBO needs) but not at arbitrary points.

    :param callable model: a Pyro model.
    :param str flow: the kind of flow layer, one of :data:`FLOWS`.
    :param int flow_depth: the number :math:`L \ge 1` of flow layers.
    :param hidden: hidden layer sizes of the autoregressive networks of
        ``"iaf"`` and ``"spline"`` (``None`` for Pyro's defaults, ``[3D + 1]``
        and ``[10D, 10D]``, see
        :func:`~pyprobvae.families.layers.default_hidden`); must be ``None``
        for ``"planar"`` and ``"radial"``, and is unused by ``"spline"`` when
        :math:`D = 1`.
    :type hidden: list[int] or None
    :param callable init_loc_fn: a per-site initialization function giving the
        initial ``loc``, see :ref:`autoguide-initialization`.
    :param float init_scale: the initial ``scale`` of every (unconstrained)
        coordinate.
    :param int num_quantile_samples: number of draws behind ``median()`` and
        :meth:`quantiles`, see :class:`MonteCarloAutoContinuous`.
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable[..., Any],
        flow: str = "iaf",
        flow_depth: int = 2,
        hidden: Optional[Sequence[int]] = None,
        init_loc_fn: Callable[..., torch.Tensor] = init_to_feasible,
        init_scale: float = 0.1,
        *,
        num_quantile_samples: int = 1000,
    ) -> None:
        if flow not in FLOWS:
            raise ValueError(f"Unknown flow {flow!r}; choose one of {', '.join(map(repr, FLOWS))}")
        _check_count("flow_depth", flow_depth, 1)
        if hidden is not None:
            if flow not in ("iaf", "spline"):
                raise ValueError(f"hidden sizes apply to the autoregressive flows 'iaf' and 'spline', not {flow!r}")
            hidden = list(hidden)
            for size in hidden:
                _check_count("each hidden size", size, 1)
        _check_positive("init_scale", init_scale)
        self.flow_kind = flow
        self.flow_depth = flow_depth
        self.hidden = hidden
        self._init_scale = float(init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn, num_quantile_samples=num_quantile_samples)

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        centre = self._init_loc()
        try:
            # Before any parameter is set, so that a refused flow (iaf at D = 1) leaves none.
            layers = flow_layers(self.flow_kind, self.latent_dim, self.flow_depth, self.hidden, device=centre.device)
        except ValueError:
            self.prototype_trace = None  # so that the next call fails the same way
            raise
        self.loc = nn.Parameter(centre)
        self.scale = PyroParam(self.loc.new_full((self.latent_dim,), self._init_scale), self.scale_constraint)
        self.flow = ComposeTransformModule(layers).to(self.loc)

    def get_base_dist(self) -> TorchDistribution:
        """
        Returns the standard normal :math:`\\mathcal{N}(0, I_D)` of
        :math:`\\varepsilon`.
        """
        return dist.Normal(torch.zeros_like(self.loc), torch.ones_like(self.loc)).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> ComposeTransform:
        """
        Returns :math:`\\varepsilon \\mapsto \\mu + \\sigma \\odot f(\\varepsilon)`.
        """
        affine = AffineTransform(self.loc, self.scale, event_dim=1, cache_size=1)
        return ComposeTransform([*self.flow.parts, affine], cache_size=1)

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> Dict[str, torch.Tensor]:
        """
        Returns the Monte Carlo per-coordinate posterior median of each latent
        variable in constrained space, ``quantiles([0.5])``.

        :return: a dict mapping sample site name to a tensor of the site's
            shape.
        :rtype: dict
        """
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}
