"""
Evaluation of a trained latent-variable model on held-out data, every number
in nats per example unless said otherwise.
"""

import math
from typing import Optional

import torch
from torch.distributions import Independent, kl_divergence

from .data import iterate_minibatches
from .infer.elbo import log_importance_weights
from .infer.training import dataset_elbo
from .models import VQVAE
from .quantizer import code_counts, codes_used, perplexity

ACTIVE_UNIT_THRESHOLD = 0.01


@torch.no_grad()
def iwae_log_likelihood(
    model, x: torch.Tensor, num_samples: int, max_rows: int = 16384, y: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """
    The importance-weighted estimate of log p(x) (Burda et al. 2016),

        log p(x) >= L_K(x) = E[ log (1/K) sum_k p(x, z_k) / q(z_k|x) ],  z_k ~ q(z|x),

    a lower bound in expectation that increases with K and reaches log p(x) as
    K -> infinity (K = 1 is the ELBO). Examples are processed a chunk at a
    time and the K samples in passes of at most ``max_rows`` rows, combined
    with a running log-sum-exp, so memory stays bounded whatever K is.

    :param model: a module with Pyro ``model(x, register)`` and
        ``guide(x, register)`` methods.
    :param torch.Tensor x: data, shape ``(N, *data_shape)``.
    :param int num_samples: K >= 1.
    :param int max_rows: most examples-times-samples evaluated at once.
    :param y: labels of ``x``, for a conditional model (which then bounds
        log p(x|y)).
    :return: the estimates, shape ``(N,)``.
    """
    if num_samples < 1:
        raise ValueError(f"the IWAE estimate needs num_samples >= 1, got {num_samples}")
    samples_per_pass = min(num_samples, max_rows)
    examples_per_chunk = max(1, max_rows // samples_per_pass)
    estimates = []
    for idx in iterate_minibatches(len(x), examples_per_chunk, False, device=x.device):
        batch = x[idx]
        labels = None if y is None else y[idx]
        log_sum = torch.full((len(batch),), -math.inf, device=x.device)
        for start in range(0, num_samples, samples_per_pass):
            k = min(samples_per_pass, num_samples - start)
            args = [t.expand((k,) + t.shape).reshape((k * len(batch),) + t.shape[1:]) for t in (batch, labels) if t is not None]
            log_w = log_importance_weights(model.model, model.guide, *args, register=False).reshape(k, len(batch))
            log_sum = torch.logaddexp(log_sum, log_w.logsumexp(0))
        estimates.append(log_sum - math.log(num_samples))
    return torch.cat(estimates)


@torch.no_grad()
def kl_per_dimension(model, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """
    The average over examples of KL(q(z_i|x) || p(z_i)) for each latent
    dimension i, when both q and p factorize over dimensions with a closed-form
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
    model, x: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD, y: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """
    Activity of each latent dimension (Burda et al. 2016): the variance over
    the data of the posterior mean, ``A_i = Cov_x(E_q[z_i|x])``. A dimension
    with ``A_i > threshold`` (0.01) is active; an inactive one carries no
    information about x. ``y`` are the labels of ``x`` for a conditional
    model.

    :return: boolean tensor of shape ``(latent_dim,)``.
    """
    return model.encode(x, y).var(0, unbiased=False) > threshold


@torch.no_grad()
def reconstruction_mse(model, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> float:
    """
    Mean over examples and dimensions of ``(x - E[x | z = E_q[z|x]])^2``
    (given the labels ``y`` for a conditional model).
    """
    return float((model.reconstruct(x, y) - x).pow(2).mean())


def evaluate(
    model, x: torch.Tensor, iwae_samples: int = 1000, analytic_kl: bool = True, y: Optional[torch.Tensor] = None
) -> dict:
    """
    Every held-out number of a model, in nats per example:

    * ``test_elbo``: E_q[log p(x|z)] - KL(q(z|x) || p(z)), one sample per
      example (closed-form KL where available);
    * ``test_nll``: -L_K, the IWAE estimate of -log p(x) with
      ``iwae_samples`` samples (an upper bound on the NLL in expectation);
    * ``kl``: KL(q(z|x) || p(z)); ``kl_per_dim`` when it has a closed form;
    * ``recon_nll``: -E_q[log p(x|z)]; ``recon_mse`` per dimension;
    * ``active_units`` out of ``latent_dim``.

    A model that is not generative (the
    :class:`~pyprobvae.models.Autoencoder`, whose p(z) is flat) bounds no
    likelihood: its ``test_elbo``, ``test_nll`` and ``kl`` are None and
    ``recon_nll`` is -log p(x | f(x)). A VQ-VAE gets the numbers of
    :func:`evaluate_vqvae`. A conditional model is evaluated
    given the labels: its bounds are on log p(x|y).

    :param model: a trained :class:`~pyprobvae.models.VAE` or
        :class:`~pyprobvae.models.Autoencoder`.
    :param torch.Tensor x: held-out data as the model sees it (see
        :func:`~pyprobvae.infer.training.evaluation_data`).
    :param int iwae_samples: K of the IWAE estimate.
    :param bool analytic_kl: closed-form KL where available.
    :param y: labels of ``x``, required by a conditional model.
    """
    if isinstance(model, VQVAE):
        return evaluate_vqvae(model, x)
    model.eval()
    model.likelihood.check_data(x, "evaluation data")
    terms = dataset_elbo(model, x, y, analytic_kl=analytic_kl)
    active = active_units(model, x, y=y)
    kl_dims = kl_per_dimension(model, x, y) if model.generative else None
    return {
        "test_elbo": float(terms.elbo.mean()) if model.generative else None,
        "test_nll": float(-iwae_log_likelihood(model, x, iwae_samples, y=y).mean()) if model.generative else None,
        "iwae_samples": iwae_samples if model.generative else None,
        "kl": float(terms.kl.mean()) if model.generative else None,
        "kl_per_dim": None if kl_dims is None else [round(float(v), 6) for v in kl_dims],
        "recon_nll": float(-terms.log_likelihood.mean()),
        "recon_mse": reconstruction_mse(model, x, y),
        "active_units": int(active.sum()),
        "latent_dim": int(active.numel()),
        "num_examples": len(x),
    }


@torch.no_grad()
def evaluate_vqvae(model, x: torch.Tensor, batch_size: int = 500) -> dict:
    """
    Every held-out number of a :class:`~pyprobvae.models.VQVAE`:

    * ``test_nll``: the bound ``-log p(x) <= -log p(x | z_q(x)) - log p(k(x))``
      in nats per example, under the current prior over codes (``prior``:
      ``"uniform"``, where ``-log p(k) = P log K``, or ``"transformer"`` once
      stage 2 has trained one), and the same in ``bits_per_dim``,
      ``test_nll / (dims * log 2)``;
    * ``recon_nll``: ``-log p(x | z_q(x))``; ``code_nll``: ``-log p(k(x))``;
    * ``recon_mse`` per dimension for pixel data, or ``recon_accuracy``, the
      share of tokens reconstructed exactly, for token data;
    * ``codebook_perplexity``: ``exp(H)`` of the code usage histogram over
      the whole evaluation set (not averaged per batch), between 1 and K;
      ``codes_used``: how many of the K codes are used at all.

    :param model: a trained VQ-VAE.
    :param torch.Tensor x: held-out data as the model sees it.
    :param int batch_size: examples per pass.
    """
    model.eval()
    model.likelihood.check_data(x, "evaluation data")
    terms = dataset_elbo(model, x, batch_size=batch_size)
    counts = torch.zeros(model.codebook_size, dtype=torch.long, device=x.device)
    squared_error = exact = 0.0
    tokens = not torch.is_floating_point(x)
    for idx in iterate_minibatches(len(x), batch_size, False, device=x.device):
        codes = model.codes(x[idx])
        counts += code_counts(codes, model.codebook_size)
        decoded = model.decode_codes(codes)
        if tokens:
            exact += float((decoded == x[idx]).sum())
        else:
            squared_error += float((decoded - x[idx]).pow(2).sum())
    nll = float(-terms.elbo.mean())
    dims = x[0].numel()
    result = {
        "test_nll": nll,
        "bits_per_dim": nll / (dims * math.log(2)),
        "prior": "uniform" if model.code_prior is None else "transformer",
        "recon_nll": float(-terms.log_likelihood.mean()),
        "code_nll": float(terms.kl.mean()),
        "codebook_perplexity": perplexity(counts),
        "codes_used": codes_used(counts),
        "codebook_size": model.codebook_size,
        "num_positions": model.num_positions,
        "num_examples": len(x),
    }
    if tokens:
        result["recon_accuracy"] = exact / x.numel()
    else:
        result["recon_mse"] = squared_error / x.numel()
    return result
