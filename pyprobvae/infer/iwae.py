r"""
The importance-weighted bound (Burda et al. 2016) for training, vectorized
over particles, with three gradient estimators.

With :math:`K` draws :math:`z_k \sim q(z \mid x)` and weights
:math:`w_k = p(x, z_k) / q(z_k \mid x)`,

.. math::

    L_K(x) = \log \frac{1}{K} \sum_k w_k \le \log p(x),

a bound that is the ELBO for :math:`K = 1`, never looser in expectation as
:math:`K` grows, and reaches :math:`\log p(x)` as :math:`K \to \infty`. The
:math:`K` draws are one batched pass: guide and model run once, inside a
``pyro.plate`` of the particles at dimension -2 (as Pyro's
``vectorize_particles``), so that the decoder and the prior see codes of
shape ``(K, batch, latent_dim)``.

Gradient estimators, with :math:`\tilde w_k = w_k / \sum_j w_j` the
normalized weights and :math:`\phi` the guide's parameters:

* ``pathwise``: the reparameterized gradient of :math:`L_K`,
  :math:`\sum_k \tilde w_k \nabla \log w_k`;
* ``stl`` ("sticking the landing", Roeder et al. 2017): the same with
  :math:`\log q` evaluated at stopped parameters,
  :math:`\log w_k = \log p(x, z_k) - \log q_\bot(z_k \mid x)`, so that the
  guide's gradient flows only through the draws :math:`z_k(\phi, \epsilon_k)`.
  For :math:`K > 1` it is biased for :math:`\nabla_\phi L_K` (Tucker et
  al. 2019, section 4), though often useful;
* ``dreg`` (doubly reparameterized, Tucker et al. 2019, eq. 7): for the
  guide, :math:`\sum_k \tilde w_k^2\, \frac{\partial \log w_k}{\partial z_k} \frac{\partial z_k}{\partial \phi}`
  with :math:`\log q` stopped as in ``stl``; for the model's parameters
  :math:`\theta`, the plain :math:`\sum_k \tilde w_k \nabla_\theta \log w_k`.
  It is unbiased for :math:`\nabla_\phi L_K`, and its variance does not grow
  with :math:`K` as the pathwise estimator's signal-to-noise ratio decays
  (Rainforth et al. 2018). It is implemented as the surrogate
  :math:`\sum_k \operatorname{stop}(\tilde w_k) \log w_k`, whose gradient
  is the model's part, with a hook on each draw :math:`z_k` that multiplies
  the gradient reaching it by :math:`\tilde w_k` (one extra factor on the
  path through :math:`z`, none on :math:`\theta`). Where the prior itself
  depends on :math:`\phi` (the VampPrior's pseudo-inputs go through the
  encoder), that dependence is the model's and gets :math:`\tilde w_k`.

**References**

- Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders",
  ICLR, arXiv:1509.00519.
- Roeder, Wu & Duvenaud 2017, "Sticking the Landing: Simple, Lower-Variance
  Gradient Estimators for Variational Inference", NeurIPS, arXiv:1703.09194.
- Tucker, Lawson, Gu & Maddison 2019, "Doubly Reparameterized Gradient
  Estimators for Monte Carlo Objectives", ICLR, arXiv:1810.04152.
- Rainforth et al. 2018, "Tighter Variational Bounds are Not Necessarily
  Better", ICML, arXiv:1802.04537.
"""

import math
from typing import Any, Callable, List, NamedTuple, Tuple

import pyro
import torch
from pyro import poutine

from ..distributions import stop_gradient
from .elbo import ELBOTerms, Estimate, _latent_sites, _observed_sites, _PerExample

PARTICLE_DIM = -2
"""The batch dimension of the particles; the data plate is the one to its right."""


class ParticleWeights(NamedTuple):
    r"""
    The log importance weights' parts for :math:`K` draws per example,
    each of shape ``(K, batch)``, and the draws.

    :ivar log_likelihood: :math:`\log p(x \mid z_k)`.
    :ivar log_prior: :math:`\log p(z_k)`.
    :ivar log_guide: :math:`\log q(z_k \mid x)` (at stopped parameters if asked).
    :ivar penalty: the guide's ``pyro.factor`` terms, shape ``(batch,)``.
    :ivar draws: ``(z, event_dim)`` of every latent site.
    """

    log_likelihood: torch.Tensor
    log_prior: torch.Tensor
    log_guide: torch.Tensor
    penalty: torch.Tensor
    draws: List[Tuple[torch.Tensor, int]]


def _vectorized(fn, particles: int):
    def vectorized(*args, **kwargs):
        with pyro.plate("particles", particles, dim=PARTICLE_DIM):
            return fn(*args, **kwargs)

    return vectorized


def particle_weights(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, particles: int, stop_guide_gradient: bool = False,
    **kwargs: Any,
) -> ParticleWeights:
    """
    Run ``guide`` and ``model`` once, vectorized over ``particles`` draws
    per example, and collect the parts of the log importance weights.

    :param int particles: :math:`K \\ge 1`.
    :param bool stop_guide_gradient: evaluate :math:`\\log q` with the guide's
        parameters stopped (:func:`~pyprobvae.distributions.stop_gradient`).
    :raises ValueError: when a site is outside the data plate or the
        guide's density cannot be stopped.
    """
    if particles < 1:
        raise ValueError(f"the importance-weighted bound needs particles >= 1, got {particles}")
    guide_trace = poutine.trace(_vectorized(guide, particles)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(_vectorized(model, particles), trace=guide_trace)).get_trace(*args, **kwargs)
    terms = _PerExample(sample_dims=1)
    log_likelihood = log_prior = log_guide = penalty = 0.0
    for site in _observed_sites(model_trace):
        log_likelihood = terms.add(log_likelihood, site, site["fn"].log_prob(site["value"]))
    draws = []
    for site, guide_site in _latent_sites(model_trace, guide_trace):
        z, q = site["value"], guide_site["fn"]
        log_prior = terms.add(log_prior, site, site["fn"].log_prob(z))
        log_guide = terms.add(log_guide, guide_site, (stop_gradient(q) if stop_guide_gradient else q).log_prob(z))
        draws.append((z, q.event_dim))
    for site in _observed_sites(guide_trace):
        penalty = terms.add(penalty, site, site["fn"].log_prob(site["value"]))
    log_likelihood, log_prior, log_guide, penalty = torch.broadcast_tensors(
        *(torch.as_tensor(t) for t in (log_likelihood, log_prior, log_guide, penalty))
    )
    return ParticleWeights(log_likelihood, log_prior, log_guide, penalty.mean(0), draws)


def _scale_gradient(weights):
    return lambda gradient: gradient * weights


def iwae_estimate(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, particles: int, gradient: str = "pathwise",
    kl_weight: float = 1.0, **kwargs: Any,
) -> Estimate:
    r"""
    The importance-weighted bound :math:`L_K` of ``model`` and ``guide`` per
    example, and the training objective of ``gradient`` (see the module).
    With :math:`\beta` = ``kl_weight`` the objective weighs the draws by
    :math:`\log w_k^\beta = \log p(x \mid z_k) + \beta \log (p(z_k) / q(z_k \mid x))`
    (the KL weight of the ELBO, inside the weights); the reported ``bound``
    is :math:`L_K` at :math:`\beta = 1`, and the reported terms are the
    ELBO's, averaged over the :math:`K` draws.

    :param int particles: :math:`K`.
    :param str gradient: ``"pathwise"``, ``"stl"`` or ``"dreg"``.
    :param float kl_weight: :math:`\beta`.
    :return: :class:`~pyprobvae.infer.elbo.Estimate`.
    """
    parts = particle_weights(model, guide, *args, particles=particles, stop_guide_gradient=gradient != "pathwise", **kwargs)
    log_ratio = parts.log_prior - parts.log_guide
    bound = (parts.log_likelihood + log_ratio).logsumexp(0) - math.log(particles)
    trained = parts.log_likelihood + kl_weight * log_ratio
    if gradient == "dreg":
        normalized = trained.detach().softmax(0)
        for z, event_dim in parts.draws:
            if z.requires_grad:
                z.register_hook(_scale_gradient(normalized.reshape(normalized.shape + (1,) * event_dim)))
        objective = (normalized * trained).sum(0)
    else:
        objective = trained.logsumexp(0) - math.log(particles)
    elbo = ELBOTerms(parts.log_likelihood.mean(0), -log_ratio.mean(0), parts.penalty)
    return Estimate(objective - parts.penalty, elbo, bound)


__all__ = ["PARTICLE_DIM", "ParticleWeights", "iwae_estimate", "particle_weights"]
