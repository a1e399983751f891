r"""
The evidence lower bound, per example.

For a model :math:`p(x, z)` and a guide :math:`q(z \mid x)` whose sample sites
all sit inside the data plate,

.. math::

    \mathrm{ELBO}(x) = \mathbb{E}_q[\log p(x \mid z)]
        - \mathrm{KL}(q(z \mid x) \,\|\, p(z)) \le \log p(x),

and :math:`\log p(x) - \mathrm{ELBO}(x) = \mathrm{KL}(q(z \mid x) \,\|\, p(z \mid x)) \ge 0`.
The estimator here is Pyro's ``Trace_ELBO`` for reparameterized guides (one
sample :math:`z \sim q` per example), with the KL of each latent site in
closed form when torch knows it (Pyro's ``TraceMeanField_ELBO``) and
estimated by :math:`\log q(z) - \log p(z)` otherwise. It runs the guide and
the model once each under Pyro's trace and replay handlers and keeps every term per example, which is what a training
loop needs to report nats per example whatever the batch size, to apply a KL
weight, and to say which term went wrong when one is not finite.
"""

from typing import Any, Callable, NamedTuple

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, kl_divergence

from ..distributions import MixtureOfDiagonalNormals, stop_gradient


class ELBOTerms(NamedTuple):
    r"""
    The terms of the ELBO of each example in a batch, in nats, each of
    shape ``(batch,)``: ``ELBO = log_likelihood - kl``, and the training
    objective to maximize is ``ELBO - penalty``.

    :ivar log_likelihood: the sum over observed sites of :math:`\log p(x \mid z)`
        at the sampled :math:`z` (including the model's ``pyro.factor`` terms).
    :ivar kl: the sum over latent sites of :math:`\mathrm{KL}(q \,\|\, p)`, in
        closed form or as the single-sample estimate :math:`\log q(z) - \log p(z)`.
    :ivar penalty: the sum of the guide's ``pyro.factor`` terms (zero for
        most guides). Pyro's ``Trace_ELBO`` subtracts a guide factor from
        the ELBO as part of :math:`\log q`; pyprobvae keeps it apart, as a
        training penalty outside the bound on :math:`\log p(x)`, which is how
        the VQ-VAE's codebook and commitment terms enter
        (:class:`~pyprobvae.models.VQVAE`).
    """

    log_likelihood: torch.Tensor
    kl: torch.Tensor
    penalty: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        return self.log_likelihood - self.kl


def _traces(model, guide, args, kwargs):
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


class _PerExample:
    """
    Sums per-example terms, checking that each has shape ``(batch,)``, or
    ``(samples, batch)`` with ``sample_dims=1``.
    """

    def __init__(self, sample_dims: int = 0):
        self.sample_dims = sample_dims
        self.batch_shape = None

    def add(self, total, site, value):
        value = scale_and_mask(value, site["scale"], site["mask"])
        if self.batch_shape is None:
            self.batch_shape = value.shape
        if value.dim() != 1 + self.sample_dims or value.shape != self.batch_shape:
            raise ValueError(
                f"sample site {site['name']!r} has a log-density of shape {tuple(value.shape)}, "
                f"expected {tuple(self.batch_shape)}: every site must sit inside the data plate "
                "so that each example gets its own ELBO"
            )
        return total + value


def _observed_sites(trace):
    for site in trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            yield site


def _latent_sites(model_trace, guide_trace):
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        guide_site = guide_trace.nodes[name]
        if not guide_site["fn"].has_rsample:
            raise ValueError(
                f"latent site {name!r} is not reparameterizable; pyprobvae's ELBO uses pathwise "
                "gradients only (use pyro.infer.Trace_ELBO for score-function estimators)"
            )
        yield site, guide_site


def _sampled_kl(site, guide_site):
    z = site["value"]
    return guide_site["fn"].log_prob(z) - site["fn"].log_prob(z)


def _kl(site, guide_site, analytic):
    # the site's KL, and whether it is in closed form
    if not analytic:
        return _sampled_kl(site, guide_site), False
    try:
        return kl_divergence(guide_site["fn"], site["fn"]), True
    except NotImplementedError:  # no closed form for this pair of families
        return _sampled_kl(site, guide_site), False


class Estimate(NamedTuple):
    r"""
    What an estimator (:mod:`~pyprobvae.infer.estimators`) gives for a batch,
    each of shape ``(batch,)``, in nats:

    :ivar objective: the per-example training objective, maximized; its
        gradient is the estimator's (for DReG a surrogate whose value is not
        the bound).
    :ivar terms: the :class:`ELBOTerms` on the same draws, for the report:
        whatever is trained, ``terms.elbo`` estimates the ELBO.
    :ivar bound: the estimate of the bound trained (the ELBO, the IWAE bound
        or the stratified bound), at weight 1 on the KL.
    """

    objective: torch.Tensor
    terms: ELBOTerms
    bound: torch.Tensor


def _free_bits_kl(site, guide_site, free_bits):
    q, p = guide_site["fn"], site["fn"]
    try:
        if not (isinstance(q, Independent) and isinstance(p, Independent)):
            raise NotImplementedError
        per_dimension = kl_divergence(q.base_dist, p.base_dist)
    except NotImplementedError:
        raise ValueError(
            f"free bits floor the KL of each latent dimension, which needs q and p of site {site['name']!r} to factorize over "
            f"dimensions with a closed-form KL (the diagonal family with the standard prior), not {type(q).__name__} "
            f"and {type(p).__name__}"
        ) from None
    return per_dimension.clamp(min=free_bits).sum(-1)


def _site_gradient(guide_site, closed_form, gradient):
    # "auto": stl for a mixture guide's sampled KL, where it was measured to help (docs/guides/mixture.rst)
    if gradient != "auto":
        return gradient
    return "stl" if not closed_form and isinstance(guide_site["fn"], MixtureOfDiagonalNormals) else "pathwise"


def _trained_kl(site, guide_site, kl, gradient, free_bits):
    if free_bits:
        return _free_bits_kl(site, guide_site, free_bits)
    if gradient == "stl":
        z = site["value"]
        return stop_gradient(guide_site["fn"]).log_prob(z) - site["fn"].log_prob(z)
    return kl


def elbo_estimate(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, analytic_kl: bool = True, gradient: str = "auto",
    free_bits: float = 0.0, kl_weight: float = 1.0, **kwargs: Any,
) -> Estimate:
    r"""
    The per-example ELBO of ``model`` and ``guide`` with one draw from the
    guide, and the training objective

    .. math::

        \log p(x \mid z) - \beta\, \widehat{\mathrm{KL}} - \mathrm{penalty},

    with :math:`\beta` = ``kl_weight`` and :math:`\widehat{\mathrm{KL}}` by
    ``gradient`` and ``free_bits``:

    * ``auto``: ``stl`` at a site whose guide is a
      :class:`~pyprobvae.distributions.MixtureOfDiagonalNormals` (its KL is
      sampled), ``pathwise`` elsewhere: the sampled KL's score term is the
      noisiest part of a mixture guide's gradient (measured in
      ``docs/guides/mixture.rst``), while a closed-form KL has none and a
      diagonal guide under a learned prior trained no better with STL;
    * ``pathwise``: the KL of the reported terms, in closed form or sampled
      (``analytic_kl``);
    * ``stl``, "sticking the landing" (Roeder et al. 2017):
      :math:`\log q_{\bot}(z \mid x) - \log p(z)`, the sampled KL with
      :math:`q`'s parameters stopped (:func:`~pyprobvae.distributions.stop_gradient`)
      while the gradient still flows through :math:`z`. Its value is the
      sampled KL, and its gradient drops the score term
      :math:`-\nabla_\phi \log q_\phi(z)`, whose expectation is zero: the
      gradient is unbiased, and exactly zero when :math:`q` is the posterior;
    * free bits (Kingma et al. 2016, ``free_bits`` :math:`\lambda > 0`):
      :math:`\sum_i \max(\lambda, \mathrm{KL}(q(z_i \mid x) \,\|\, p(z_i)))`,
      each latent dimension's closed-form KL floored at :math:`\lambda` nats,
      so that no dimension is pushed below :math:`\lambda`. Kingma et al. floor the
      minibatch average of each dimension's KL; pyprobvae floors each
      example's, so that the objective stays a sum over examples,
      independent of the batch size and of the number of processes.

    The reported :class:`ELBOTerms` are the true ELBO's whatever the
    objective. With ``gradient="pathwise"`` (or ``"auto"`` where every KL
    is in closed form), ``free_bits=0`` and
    :math:`\beta = 1` the objective is ``terms.elbo - terms.penalty``.

    :param callable model: a Pyro model whose sites sit inside a data plate.
    :param callable guide: a Pyro guide with reparameterized latent sites.
    :param args: the batch (and anything else) passed to model and guide.
    :param bool analytic_kl: closed-form KL divergences where torch has
        them; with False every KL is the Monte Carlo estimate.
    :param str gradient: ``"auto"``, ``"pathwise"`` or ``"stl"``.
    :param float free_bits: :math:`\lambda \ge 0` in nats per latent dimension (0: none).
    :param float kl_weight: :math:`\beta`.
    :return: :class:`Estimate`; its ``bound`` is ``terms.elbo``.
    """
    model_trace, guide_trace = _traces(model, guide, args, kwargs)
    terms = _PerExample()
    log_likelihood = kl = trained_kl = penalty = 0.0
    for site in _observed_sites(model_trace):
        log_likelihood = terms.add(log_likelihood, site, site["fn"].log_prob(site["value"]))
    for site, guide_site in _latent_sites(model_trace, guide_trace):
        site_kl, closed_form = _kl(site, guide_site, analytic_kl)
        kl = terms.add(kl, site, site_kl)
        site_gradient = _site_gradient(guide_site, closed_form, gradient)
        trained_kl = terms.add(trained_kl, site, _trained_kl(site, guide_site, site_kl, site_gradient, free_bits))
    for site in _observed_sites(guide_trace):
        penalty = terms.add(penalty, site, site["fn"].log_prob(site["value"]))
    log_likelihood, kl, trained_kl, penalty = torch.broadcast_tensors(
        *(torch.as_tensor(t) for t in (log_likelihood, kl, trained_kl, penalty))
    )
    elbo = ELBOTerms(log_likelihood, kl, penalty)
    return Estimate(log_likelihood - kl_weight * trained_kl - penalty, elbo, elbo.elbo)


def elbo_terms(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, analytic_kl: bool = True, **kwargs: Any
) -> ELBOTerms:
    """
    The :class:`ELBOTerms` of :func:`elbo_estimate`: the per-example ELBO of
    ``model`` and ``guide`` with one draw from the guide, the KL in closed
    form where torch has it (``analytic_kl``).
    """
    return elbo_estimate(model, guide, *args, analytic_kl=analytic_kl, **kwargs).terms


def stratified_estimate(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, kl_weight: float = 1.0, **kwargs: Any
) -> Estimate:
    r"""
    The stratified bound for a mixture guide (Morningstar et al. 2021, SIWAE
    with one sample per component): with
    :math:`q(z \mid x) = \sum_k \pi_k q_k(z \mid x)` and one reparameterized
    draw :math:`z_k \sim q_k` from each component,

    .. math::

        L_\mathrm{strat}(x) = \log \sum_k \pi_k \frac{p(x, z_k)}{q(z_k \mid x)}.

    :math:`\log q` is the full mixture density. Since
    :math:`\sum_k \pi_k f(z_k)` is an unbiased estimate of
    :math:`\mathbb{E}_q[f(z)]`, Jensen's inequality gives
    :math:`\mathbb{E}[L_\mathrm{strat}] \ge \mathbb{E}[\sum_k \pi_k \log p(x, z_k) / q(z_k \mid x)] = \mathrm{ELBO}`:
    the bound is never looser than the ELBO, and it needs no pathwise gradient through the
    choice of component. The guide must have exactly one latent site, drawn
    from a distribution with ``stratified_rsample()`` and
    ``component_log_weights`` (:class:`~pyprobvae.distributions.MixtureOfDiagonalNormals`).

    The objective is :math:`\log \sum_k \pi_k \exp(\log p(x \mid z_k) + \beta \log (p(z_k) / q(z_k \mid x)))`
    with :math:`\beta` = ``kl_weight`` (the bound at :math:`\beta = 1`),
    and the reported terms are the ELBO's unbiased stratified estimate,
    ``log_likelihood`` :math:`\sum_k \pi_k \log p(x \mid z_k)` and ``kl``
    :math:`\sum_k \pi_k \log (q(z_k \mid x) / p(z_k))`.

    :return: :class:`Estimate` of shape ``(batch,)``.
    """
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    latent = [
        site for site in guide_trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]
    if len(latent) != 1 or not hasattr(latent[0]["fn"], "stratified_rsample"):
        raise ValueError(
            "the stratified estimator needs a guide with exactly one latent site drawn from a mixture "
            f"(MixtureOfDiagonalNormals); this guide has {[site['name'] for site in latent]} "
            f"of type {[type(site['fn']).__name__ for site in latent]}"
        )
    mixture: Any = latent[0]["fn"]  # duck-typed: stratified_rsample() and component_log_weights
    latent[0]["value"] = mixture.stratified_rsample()
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    terms = _PerExample(sample_dims=1)
    log_likelihood = log_ratio = 0.0
    for site in _observed_sites(model_trace):
        log_likelihood = terms.add(log_likelihood, site, site["fn"].log_prob(site["value"]))
    for site, guide_site in _latent_sites(model_trace, guide_trace):
        z = site["value"]
        log_ratio = terms.add(log_ratio, site, site["fn"].log_prob(z) - guide_site["fn"].log_prob(z))
    log_weights = mixture.component_log_weights.movedim(-1, 0)
    bound = (log_weights + log_likelihood + log_ratio).logsumexp(0)
    objective = bound if kl_weight == 1 else (log_weights + log_likelihood + kl_weight * log_ratio).logsumexp(0)
    weights = log_weights.exp()
    elbo = ELBOTerms((weights * log_likelihood).sum(0), -(weights * log_ratio).sum(0), torch.zeros_like(bound))
    return Estimate(objective, elbo, bound)


def log_importance_weights(model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
    r"""
    One importance weight per example,
    :math:`\log w = \log p(x, z) - \log q(z \mid x)` with
    :math:`z \sim q(z \mid x)`, so that :math:`\mathbb{E}_q[w] = p(x)`. The
    guide's ``pyro.factor`` penalties are not part of :math:`q`'s density and
    do not enter (see :class:`ELBOTerms`).

    :return: tensor of shape ``(batch,)``.
    """
    model_trace, guide_trace = _traces(model, guide, args, kwargs)
    terms = _PerExample()
    log_w = 0.0
    for site in _observed_sites(model_trace):
        log_w = terms.add(log_w, site, site["fn"].log_prob(site["value"]))
    for site, guide_site in _latent_sites(model_trace, guide_trace):
        z = site["value"]
        log_w = terms.add(log_w, site, site["fn"].log_prob(z) - guide_site["fn"].log_prob(z))
    return torch.as_tensor(log_w)
