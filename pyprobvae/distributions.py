"""
Distributions that Pyro does not provide in the form pyprobvae's guides need.
"""

import math
from typing import Optional, Sequence, Tuple, Union, cast

import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import Categorical, Distribution, Independent, Normal, constraints
from torch.special import ndtr
from torch.types import _size


class MixtureOfDiagonalNormals(TorchDistribution):
    r"""
    A mixture of :math:`K` Gaussians with diagonal covariances in :math:`D`
    dimensions,

    .. math::

        q(z) = \sum_k \pi_k\, \mathcal{N}(z; \mu_k, \mathrm{diag}\, \sigma_k^2),
        \qquad \pi = \mathrm{softmax}(\mathrm{logits}),

    with reparameterized samples for every :math:`D \ge 1`.

    A draw picks a component and then samples it, a discrete choice that the
    reparameterization trick cannot differentiate. :meth:`rsample` returns
    the draw :math:`z` with the derivative :math:`\partial z / \partial \theta`
    of a transport that keeps :math:`z \sim q` as the parameters
    :math:`\theta` move, so that
    :math:`\mathbb{E}_q[\nabla_z f(z)\, \partial z / \partial \theta] = \nabla_\theta \mathbb{E}_q[f(z)]`
    for every :math:`f`:

    - for the means and scales, the field of Jankowiak & Karaletsos 2019,
      :math:`\partial z_d / \partial \mu_{kd} = r_k(z)` and
      :math:`\partial z_d / \partial \sigma_{kd} = r_k(z)\, (z_d - \mu_{kd}) / \sigma_{kd}`,
      with responsibilities
      :math:`r_k(z) = \pi_k \mathcal{N}(z; \mu_k, \sigma_k) / q(z)`: the
      reparameterization trick of the drawn component, averaged over which
      component drew :math:`z`;
    - for the logits, implicit reparameterization (Figurnov et al. 2018)
      through the distributional transform of Graves 2016: the conditional
      CDFs
      :math:`u_d = F_d(z_d \mid z_{<d}) = \sum_k w_{kd}\, \Phi((z_d - \mu_{kd}) / \sigma_{kd})`,
      with :math:`w_{kd}` proportional to
      :math:`\pi_k \prod_{j<d} \mathcal{N}(z_j; \mu_{kj}, \sigma_{kj})`, map
      :math:`q` to the uniform distribution, so holding :math:`u` fixed gives
      :math:`\partial z / \partial \theta = -(\partial F / \partial z)^{-1}\, \partial F / \partial \theta`,
      a lower-triangular solve that costs :math:`O(K D^2)` per draw. For
      :math:`D = 1` this is
      :math:`\partial z / \partial \theta = -(\partial F / \partial \theta) / q(z)`.

    :class:`pyro.distributions.MixtureOfDiagNormals` has the same fields for
    the means and scales (and refuses :math:`D = 1`), but its derivative in
    the logits is biased: it matches :math:`\nabla \mathbb{E}_q[f]` for
    :math:`f(z) = \lvert z \rvert^2` but not for :math:`f(z) = z_1 z_2` or
    :math:`\sin(z_1)`.

    Any transport for the weights must carry mass across the low-density gap
    between components, so when they are far apart the derivative in the
    logits is heavy-tailed. :meth:`stratified_rsample` avoids it: it draws
    once from each component, for the stratified estimator
    :math:`\sum_k \pi_k f(z_k)` of :math:`\mathbb{E}_q[f(z)]` (Morningstar et
    al. 2021), whose gradient reaches the weights through :math:`\pi_k`
    directly.

    **References**

    - Jankowiak & Karaletsos 2019, "Pathwise Derivatives for Multivariate
      Distributions", AISTATS, arXiv:1806.01856.
    - Figurnov et al. 2018, "Implicit Reparameterization Gradients", NeurIPS,
      arXiv:1805.08498.
    - Graves 2016, "Stochastic Backpropagation through Mixture Density
      Distributions", arXiv:1607.05690.
    - Morningstar et al. 2021, "Automatic Differentiation Variational
      Inference with Mixtures", AISTATS, arXiv:2003.01687.

    :param torch.Tensor locs: component means :math:`\mu`, shape
        ``batch_shape + (K, D)``.
    :param torch.Tensor scales: component standard deviations
        :math:`\sigma > 0`, shape ``batch_shape + (K, D)``.
    :param torch.Tensor logits: unnormalized log weights, shape
        ``batch_shape + (K,)``.
    :param bool validate_args: check the parameters and the values passed to
        :meth:`log_prob` (torch's default when None).
    """

    arg_constraints = {
        "locs": constraints.independent(constraints.real, 2),
        "scales": constraints.independent(constraints.positive, 2),
        "logits": constraints.real_vector,
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self, locs: torch.Tensor, scales: torch.Tensor, logits: torch.Tensor, validate_args: Optional[bool] = None
    ) -> None:
        if locs.dim() < 2 or logits.dim() < 1:
            raise ValueError("locs and scales need shape batch_shape + (K, D), logits batch_shape + (K,)")
        locs, scales = torch.broadcast_tensors(locs, scales)
        if logits.size(-1) != locs.size(-2):
            raise ValueError(f"logits have {logits.size(-1)} components but locs have {locs.size(-2)}")
        batch_shape = torch.broadcast_shapes(locs.shape[:-2], logits.shape[:-1])
        self.locs = locs.expand(batch_shape + locs.shape[-2:])
        self.scales = scales.expand(batch_shape + scales.shape[-2:])
        self.logits = logits.expand(batch_shape + logits.shape[-1:])
        super().__init__(batch_shape, locs.shape[-1:], validate_args=validate_args)

    @classmethod
    def infer_shapes(  # type: ignore[override]  # Pyro's convention: a family names its parameters
        cls, locs: Sequence[int], scales: Sequence[int], logits: Sequence[int]
    ) -> Tuple[torch.Size, torch.Size]:
        """
        ``(batch_shape, event_shape)`` of a mixture with parameters of these
        shapes (Pyro's distribution convention): the batch shape broadcasts
        ``locs[:-2]``, ``scales[:-2]`` and ``logits[:-1]``; the event shape
        is ``(D,)``.
        """
        components = torch.broadcast_shapes(torch.Size(locs), torch.Size(scales))
        return torch.broadcast_shapes(components[:-2], torch.Size(logits[:-1])), components[-1:]

    @property
    def component_log_weights(self) -> torch.Tensor:
        r""":math:`\log \pi = \log \mathrm{softmax}(\mathrm{logits})`, shape ``batch_shape + (K,)``."""
        return self.logits.log_softmax(-1)

    @property
    def mean(self) -> torch.Tensor:
        r""":math:`\mathbb{E}[z] = \sum_k \pi_k \mu_k`."""
        return (self.component_log_weights.exp().unsqueeze(-1) * self.locs).sum(-2)

    @property
    def variance(self) -> torch.Tensor:
        r"""
        :math:`\mathrm{Var}[z] = \sum_k \pi_k (\sigma_k^2 + \mu_k^2) - \mathbb{E}[z]^2`,
        evaluated as :math:`\sum_k \pi_k (\sigma_k^2 + (\mu_k - \mathbb{E}[z])^2)`,
        which cannot cancel to a negative number.
        """
        weights = self.component_log_weights.exp().unsqueeze(-1)
        return (weights * (self.scales.pow(2) + (self.locs - self.mean.unsqueeze(-2)).pow(2))).sum(-2)

    def expand(
        self, batch_shape: _size, _instance: Optional["MixtureOfDiagonalNormals"] = None
    ) -> "MixtureOfDiagonalNormals":
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        new = self._get_checked_instance(MixtureOfDiagonalNormals, _instance)
        new.locs = self.locs.expand(batch_shape + self.locs.shape[-2:])
        new.scales = self.scales.expand(batch_shape + self.scales.shape[-2:])
        new.logits = self.logits.expand(batch_shape + self.logits.shape[-1:])
        super(MixtureOfDiagonalNormals, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _component_log_densities(self, value):
        # log N(value_d; mu_kd, sigma_kd) and the standardized value, each of shape ... + (K, D)
        standardized = (value.unsqueeze(-2) - self.locs) / self.scales
        return -0.5 * standardized.pow(2) - self.scales.log() - 0.5 * math.log(2 * math.pi), standardized

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r"""
        :math:`\log q(z) = \operatorname{logsumexp}_k \bigl(\log \pi_k + \sum_d \log \mathcal{N}(z_d; \mu_{kd}, \sigma_{kd})\bigr)`.

        :param torch.Tensor value: points :math:`z`, shape ``sample_shape +
            batch_shape + (D,)`` (or broadcastable to it).
        """
        if self._validate_args:
            self._validate_sample(value)
        log_densities, _ = self._component_log_densities(value)
        return torch.logsumexp(self.component_log_weights + log_densities.sum(-1), dim=-1)

    @torch.no_grad()
    def marginal_icdf(self, levels: Union[Sequence[float], torch.Tensor]) -> torch.Tensor:
        r"""
        The quantiles of every coordinate's marginal distribution: for each
        level :math:`p` the root :math:`t` of

        .. math::

            F_d(t) = \sum_k \pi_k\, \Phi\bigl((t - \mu_{kd}) / \sigma_{kd}\bigr) = p,

        which is unique since :math:`F_d` is continuous and strictly
        increasing. It lies between the smallest and the largest of the
        components' own quantiles :math:`t_k = \mu_{kd} + \sigma_{kd}\,
        \Phi^{-1}(p)` (at the smallest every :math:`\Phi_k \le p`, at the
        largest every :math:`\Phi_k \ge p`), and bisection of that bracket in
        float64 finds it to double precision in 64 halvings. Exact and
        deterministic; no gradient flows.

        :param levels: the levels :math:`p \in [0, 1]`, a list or 1-D tensor.
        :return: the quantiles, shape ``(len(levels),) + batch_shape + (D,)``,
            in the dtype of ``locs``; :math:`\mp\infty` at :math:`p = 0, 1`.
        :raises ValueError: for levels outside :math:`[0, 1]` or not 1-D.
        """
        levels = torch.as_tensor(levels, dtype=torch.float64, device=self.locs.device)
        if levels.dim() != 1 or not bool(((levels >= 0) & (levels <= 1)).all()):
            raise ValueError(f"quantile levels must be a 1-D list of numbers in [0, 1], got {levels.tolist()}")
        levels = levels.reshape((-1,) + (1,) * self.locs.dim())
        locs, scales = self.locs.double(), self.scales.double()
        # normalized in float64: float32 weights sum to 1 only within ~1e-7,
        # which moves the root wherever F_d is flat (between separated components)
        weights = self.logits.double().softmax(-1).unsqueeze(-1)
        component_quantiles = locs + scales * torch.special.ndtri(levels)
        low, high = component_quantiles.amin(-2), component_quantiles.amax(-2)
        levels = levels.squeeze(-1)
        for _ in range(64):
            middle = (low + high) / 2
            below = (weights * ndtr((middle.unsqueeze(-2) - locs) / scales)).sum(-2) < levels
            low, high = torch.where(below, middle, low), torch.where(below, high, middle)
        return ((low + high) / 2).to(self.locs.dtype)

    def sample(self, sample_shape: _size = torch.Size()) -> torch.Tensor:
        r"""
        Pick a component :math:`k \sim \mathrm{Categorical}(\pi)`, then draw
        :math:`z \sim \mathcal{N}(\mu_k, \mathrm{diag}\, \sigma_k^2)`; no
        gradient flows.

        :param torch.Size sample_shape: leading shape of the draws.
        """
        with torch.no_grad():
            return torch.normal(*self.draw_components(sample_shape))

    @torch.no_grad()
    def draw_components(self, sample_shape: _size = torch.Size()) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""
        Pick a component :math:`k \sim \mathrm{Categorical}(\pi)` for each
        draw: its mean and scale, each of shape ``sample_shape + batch_shape + (D,)``.
        """
        shape = self._extended_shape(sample_shape)
        which = Categorical(logits=self.logits, validate_args=False).sample(sample_shape)
        index = which[..., None, None].expand(shape[:-1] + (1,) + shape[-1:])
        locs = self.locs.expand(shape[:-1] + self.locs.shape[-2:]).gather(-2, index).squeeze(-2)
        scales = self.scales.expand(shape[:-1] + self.scales.shape[-2:]).gather(-2, index).squeeze(-2)
        return locs, scales

    def rsample(self, sample_shape: _size = torch.Size()) -> torch.Tensor:
        r"""
        Draw :math:`z \sim q` with pathwise derivatives with respect to locs, scales and
        logits (see the class docstring). The value is that of :meth:`sample`;
        the derivatives enter through terms whose value is zero.

        :param torch.Size sample_shape: leading shape of the draws.
        """
        z = self.sample(sample_shape)
        if not torch.is_grad_enabled():
            return z
        with torch.no_grad():
            log_densities, standardized = self._component_log_densities(z)
        # log w_kd for d = 1..D, then log r_k = log w_k,D+1: the weights of
        # the components given z_<d, and given all of z
        log_weights = self.component_log_weights.unsqueeze(-1) + F.pad(log_densities.cumsum(-1), (1, 0))
        log_weights = log_weights - log_weights.logsumexp(-2, keepdim=True)
        responsibilities = log_weights[..., -1:].detach().exp()
        moved = responsibilities * ((self.locs - self.locs.detach()) + (self.scales - self.scales.detach()) * standardized)
        return z + moved.sum(-2) + self._weight_transport(log_weights[..., :-1], log_densities, standardized)

    def _weight_transport(self, log_weights, log_densities, standardized):
        # Zero, with derivative -(dF/dz)^{-1} dF/dlogits through the conditional
        # CDFs F_d = sum_k w_kd Phi_kd; log_weights carries the logits' graph.
        weights = log_weights.exp()
        cdf = (weights * ndtr(standardized)).sum(-2)
        with torch.no_grad():
            # dF_d/dz_j for j < d, through d log w_kd/dz_j = s_kj - sum_k' w_k'd s_k'j,
            # with s_kj = d log N(z_j; mu_kj, sigma_kj)/dz_j; dF_d/dz_d = q(z_d | z_<d).
            scores = -standardized / self.scales
            jacobian = torch.einsum("...kd,...kj->...dj", weights * ndtr(standardized), scores)
            jacobian = jacobian - cdf.unsqueeze(-1) * torch.einsum("...kd,...kj->...dj", weights, scores)
            jacobian = jacobian.tril(-1) + torch.diag_embed((weights * log_densities.exp()).sum(-2))
        offset = (cdf - cdf.detach()).unsqueeze(-1)
        return -torch.linalg.solve_triangular(jacobian, offset, upper=False).squeeze(-1)

    def stratified_rsample(self) -> torch.Tensor:
        r"""
        Draw once from every component,
        :math:`z_k = \mu_k + \sigma_k \odot \epsilon_k` with
        :math:`\epsilon_k \sim \mathcal{N}(0, I)`, reparameterized. Then
        :math:`\sum_k \pi_k f(z_k)` is an unbiased estimate of
        :math:`\mathbb{E}_q[f(z)] = \sum_k \pi_k \mathbb{E}_{\mathcal{N}(\mu_k, \sigma_k^2)}[f(z)]`
        whose gradient reaches the weights through :math:`\pi_k` directly; it
        is the one-sample-per-component case of the SIWAE bound of
        Morningstar et al. 2021.

        :return: the draws, shape ``(K,) + batch_shape + (D,)``, component
            first.
        """
        z = self.locs + self.scales * torch.randn_like(self.locs)
        return z.movedim(-2, 0)


def can_stop_gradient(distribution: Distribution) -> bool:
    """Whether :func:`stop_gradient` takes ``distribution``: diagonal normals, also inside ``Independent``, and their mixtures."""
    if isinstance(distribution, Independent):
        return can_stop_gradient(distribution.base_dist)
    return isinstance(distribution, (Normal, MixtureOfDiagonalNormals))


def stop_gradient(distribution: Distribution) -> Distribution:
    r"""
    ``distribution`` with its parameters detached: the same density,
    through which no gradient reaches the parameters, while a gradient still
    flows through the point where it is evaluated. Evaluated at a
    reparameterized draw :math:`z(\phi, \epsilon)`, it gives
    :math:`\log q_{\bot(\phi)}(z)`, the density of "sticking the landing"
    (Roeder et al. 2017) and of DReG (Tucker et al. 2019).

    Defined for the families whose density can be evaluated anywhere from
    their parameters: diagonal normals (``Normal``, also inside
    ``Independent``) and :class:`MixtureOfDiagonalNormals`.

    :raises ValueError: for any other distribution (a normalizing flow's
        density is its layers' networks, not tensors that can be detached).
    """
    if not can_stop_gradient(distribution):
        raise ValueError(
            f"the stl and dreg gradients need log q(z) at stopped parameters, which pyprobvae has for diagonal normals "
            f"and their mixtures (the diagonal and mixture families), not for {type(distribution).__name__}; "
            "train this guide with --gradient pathwise"
        )
    if isinstance(distribution, Independent):
        return Independent(stop_gradient(distribution.base_dist), distribution.reinterpreted_batch_ndims, validate_args=False)
    if isinstance(distribution, Normal):
        return Normal(distribution.loc.detach(), distribution.scale.detach(), validate_args=False)
    mixture = cast(MixtureOfDiagonalNormals, distribution)  # the one family left
    return MixtureOfDiagonalNormals(
        mixture.locs.detach(), mixture.scales.detach(), mixture.logits.detach(), validate_args=False
    )


def tempered_sample(distribution: Distribution, temperature: float) -> torch.Tensor:
    r"""
    A draw from ``distribution`` with its spread scaled by ``temperature``
    :math:`T \ge 0`: :math:`m + T (z - m)` for a draw :math:`z` and the mean
    :math:`m` of a unimodal distribution, and for a
    :class:`MixtureOfDiagonalNormals` the same within the drawn component,
    :math:`\mu_k + T \sigma_k \epsilon`, so that a low temperature sharpens
    every mode instead of pulling them all to the mixture's mean. :math:`T = 1`
    is an ordinary draw, :math:`T = 0` the mean (the drawn component's).
    """
    if not temperature >= 0:
        raise ValueError(f"the sampling temperature must be >= 0, got {temperature}")
    if isinstance(distribution, MixtureOfDiagonalNormals):
        locs, scales = distribution.draw_components()
        return locs + temperature * scales * torch.randn_like(locs)
    mean = distribution.mean
    return mean + temperature * (distribution.sample() - mean)
