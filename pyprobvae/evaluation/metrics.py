"""
Evaluation of a trained latent-variable model on held-out data, every number
in nats per example unless said otherwise.
"""

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch.distributions import Independent, kl_divergence

from ..config import SEED, Config, setting
from ..data import iterate_minibatches
from ..families.quantizer import code_counts, codes_used, perplexity
from ..infer.elbo import log_importance_weights

ACTIVE_UNIT_THRESHOLD = 0.01


@dataclass
class EvaluationConfig(Config):
    """How a run is evaluated."""

    iwae_samples: int = setting(1000, minimum=1, maximum=100_000)
    """K of the importance-weighted estimate of the test NLL."""
    seed: int = setting(0, **SEED)
    """Seeds the Monte Carlo estimates and the scored samples."""
    scored_samples: int = setting(1000, minimum=2, maximum=100_000)
    """Samples decoded and judged by the classifier (labelled image data)."""
    scored_texts: int = setting(50, minimum=1, maximum=10_000, since="0.3.0")
    """Samples drawn and checked for real words (text data, :mod:`~pyprobvae.evaluation.text`)."""


@torch.no_grad()
def iwae_log_likelihood(
    model: Any, x: torch.Tensor, num_samples: int, max_rows: int = 16384, y: Optional[torch.Tensor] = None
) -> torch.Tensor:
    r"""
    The importance-weighted estimate of :math:`\log p(x)` (Burda et al. 2016),

    .. math::

        \log p(x) \ge L_K(x)
        = \mathbb{E}\left[ \log \frac{1}{K} \sum_k \frac{p(x, z_k)}{q(z_k \mid x)} \right],
        \qquad z_k \sim q(z \mid x),

    a lower bound in expectation that increases with :math:`K` and reaches
    :math:`\log p(x)` as :math:`K \to \infty` (:math:`K = 1` is the ELBO).

    Examples are processed a chunk at a time and the :math:`K` samples in
    passes :math:`P_1, \dots, P_J` of at most ``max_rows`` rows (examples
    times samples), combined with a running log-sum-exp: with
    :math:`\log w_k = \log p(x, z_k) - \log q(z_k \mid x)`,

    .. math::

        S_0 = -\infty, \qquad
        S_j = \log\left( e^{S_{j-1}} + \sum_{k \in P_j} w_k \right), \qquad
        L_K = S_J - \log K.

    Each chunk's :math:`L_K` is written into the output, allocated once, and
    nothing else outlives its chunk, so memory is
    :math:`O(N + \texttt{max\_rows})` whatever :math:`K` and however many
    chunks: the same tensors are allocated and freed in every pass, and no
    small per-chunk result is left between them to fragment the heap.

    :param model: a module with Pyro ``model(x, register)`` and
        ``guide(x, register)`` methods.
    :param torch.Tensor x: data, shape ``(N, *data_shape)``.
    :param int num_samples: :math:`K \ge 1`.
    :param int max_rows: most examples-times-samples evaluated at once.
    :param y: labels of ``x``, for a conditional model (which then bounds
        :math:`\log p(x \mid y)`).
    :return: the estimates, shape ``(N,)``, in torch's default dtype
        promoted with that of the weights.
    """
    if num_samples < 1:
        raise ValueError(f"the IWAE estimate needs num_samples >= 1, got {num_samples}")
    samples_per_pass = min(num_samples, max_rows)
    examples_per_chunk = max(1, max_rows // samples_per_pass)
    estimates = torch.empty(len(x), device=x.device)
    for first in range(0, len(x), examples_per_chunk):
        chunk = slice(first, first + examples_per_chunk)
        batch = x[chunk]
        labels = None if y is None else y[chunk]
        log_sum = torch.full((len(batch),), -math.inf, device=x.device)
        for start in range(0, num_samples, samples_per_pass):
            k = min(samples_per_pass, num_samples - start)
            args = [t.expand((k,) + t.shape).reshape((k * len(batch),) + t.shape[1:]) for t in (batch, labels) if t is not None]
            log_w = log_importance_weights(model.model, model.guide, *args, register=False).reshape(k, len(batch))
            log_sum = torch.logaddexp(log_sum, log_w.logsumexp(0))
        # the weights of a float64 model promote the output, once, at the first chunk
        estimates = estimates.to(log_sum.dtype)
        estimates[chunk] = log_sum - math.log(num_samples)
    return estimates


@torch.no_grad()
def kl_per_dimension(model: Any, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    r"""
    The average over examples of
    :math:`\mathrm{KL}(q(z_i \mid x) \,\|\, p(z_i))` for each latent dimension
    :math:`i`, when both :math:`q` and :math:`p` factorize over dimensions with a closed-form
    KL (the diagonal-normal guide and prior); None otherwise. ``y`` are the
    labels of ``x`` for a conditional model.

    :return: tensor of shape ``(latent_dim,)`` or None.
    """
    q = model.posterior(x, y)
    p = model.prior_distribution(len(x), y)
    if not (isinstance(q, Independent) and isinstance(p, Independent)):
        return None
    try:
        return kl_divergence(q.base_dist, p.base_dist).mean(0)
    except NotImplementedError:
        return None


@torch.no_grad()
def active_units(
    model: Any, x: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD, y: Optional[torch.Tensor] = None
) -> torch.Tensor:
    r"""
    Activity of each latent dimension (Burda et al. 2016): the variance over
    the data of the posterior mean,
    :math:`A_i = \mathrm{Cov}_x(\mathbb{E}_q[z_i \mid x])`. A dimension with
    :math:`A_i >` ``threshold`` (0.01) is active; an inactive one carries no
    information about :math:`x`. ``y`` are the labels of ``x`` for a conditional
    model.

    :return: boolean tensor of shape ``(latent_dim,)``.
    """
    return model.encode(x, y).var(0, unbiased=False) > threshold


@torch.no_grad()
def reconstruction_mse(model: Any, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> float:
    r"""
    Mean over examples and dimensions of
    :math:`(x - \mathbb{E}[x \mid z = \mathbb{E}_q[z \mid x]])^2` (given the
    labels ``y`` for a conditional model).
    """
    return float((model.reconstruct(x, y) - x).pow(2).mean())


def evaluate(
    model: Any, x: torch.Tensor, iwae_samples: int = EvaluationConfig.iwae_samples, analytic_kl: bool = True,
    y: Optional[torch.Tensor] = None,
) -> dict:
    """
    Every held-out number of a model, in nats per example:
    ``model.evaluate(x, y, iwae_samples=..., analytic_kl=...)``, the
    :meth:`~pyprobvae.models.base.LatentVariableModel.evaluate` of the
    model's interface (:meth:`pyprobvae.models.VAE.evaluate` lists the
    numbers of the Gaussian-latent models, :meth:`pyprobvae.models.VQVAE.evaluate`
    those of the VQ-VAE).

    :param model: a trained model.
    :param torch.Tensor x: held-out data as the model sees it (see
        :func:`~pyprobvae.infer.training.evaluation_data`).
    :param int iwae_samples: :math:`K` of the IWAE estimate.
    :param bool analytic_kl: closed-form KL where available.
    :param y: labels of ``x``, required by a conditional model.
    """
    return model.evaluate(x, y, iwae_samples=iwae_samples, analytic_kl=analytic_kl)


@torch.no_grad()
def code_usage(model: Any, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """
    How often each code of a model with discrete codes (``model.encode``
    returns code indices, ``model.codebook_size`` of them) is used over the
    whole of ``x``: a count per code, shape ``(K,)``, from which
    :func:`~pyprobvae.families.quantizer.perplexity` and
    :func:`~pyprobvae.families.quantizer.codes_used` follow (over the whole
    set, not averaged per batch, which would depend on the batch size).
    """
    counts = torch.zeros(model.codebook_size, dtype=torch.long, device=x.device)
    for idx in iterate_minibatches(len(x), batch_size, False, device=x.device):
        counts += code_counts(model.encode(x[idx]), model.codebook_size)
    return counts


__all__ = [
    "ACTIVE_UNIT_THRESHOLD", "EvaluationConfig", "active_units", "code_usage", "codes_used", "evaluate", "iwae_log_likelihood",
    "kl_per_dimension", "perplexity", "reconstruction_mse",
]
