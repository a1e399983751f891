r"""
Multimodal priors :math:`p(z)` for the VAE: a learned mixture of Gaussians,
and the VampPrior, the mixture of the guide's own posteriors at learned
pseudo-inputs. Both give :class:`~pyprobvae.distributions.MixtureOfDiagonalNormals`,
with an exact log density (a log-sum-exp over components) and exact samples.
Neither has a closed-form KL to a Gaussian guide, so the ELBO's KL is the
sampled :math:`\log q(z \mid x) - \log p(z)` with these priors.

**References**

- Tomczak & Welling 2018, "VAE with a VampPrior", AISTATS, arXiv:1705.07120.
- Dilokthanakul et al. 2016, "Deep Unsupervised Clustering with Gaussian
  Mixture Variational Autoencoders", arXiv:1611.02648 (a learned mixture prior).
"""

from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.distributions import Independent, Normal

from ..distributions import MixtureOfDiagonalNormals
from ..families.layers import latin_hypercube_normal

PSEUDO_INPUT_MEAN = 0.5
"""The VampPrior's pseudo-inputs start at this grey level (data in [0, 1]) ..."""
PSEUDO_INPUT_SCALE = 0.01
"""... plus Gaussian noise of this scale, so that they differ (Tomczak & Welling 2018 start theirs at N(0.05, 0.01))."""


class MixturePrior(nn.Module):
    r"""
    A learned mixture of :math:`K` diagonal Gaussians,

    .. math::

        p(z) = \sum_k \pi_k\, \mathcal{N}(z; \mu_k, \mathrm{diag}\, \sigma_k^2),
        \qquad \pi = \mathrm{softmax}(\mathrm{logits}),
        \qquad \sigma_k = \exp(s_k),

    with :math:`\mu`, :math:`s` and the logits trained with the rest of the
    model. At initialization the weights are equal, the scales 1, and the
    means a Latin-hypercube sample of :math:`\mathcal{N}(0, I)`
    (:func:`~pyprobvae.families.layers.latin_hypercube_normal`, seeded from
    torch's global generator), so that the components start apart.

    :param int latent_dim: dimension :math:`D` of :math:`z`.
    :param int num_components: :math:`K`.
    """

    def __init__(self, latent_dim: int, num_components: int) -> None:
        super().__init__()
        if num_components < 1:
            raise ValueError(f"a mixture prior needs num_components >= 1, got {num_components}")
        self.latent_dim = latent_dim
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        self.locs = nn.Parameter(latin_hypercube_normal(num_components, latent_dim, generator))
        self.log_scales = nn.Parameter(torch.zeros(num_components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(num_components))

    def forward(self, batch_size: int, labels: Optional[torch.Tensor] = None) -> MixtureOfDiagonalNormals:
        """:math:`p(z)` with batch shape ``(batch_size,)``; ``labels`` are ignored."""
        return MixtureOfDiagonalNormals(self.locs, self.log_scales.exp(), self.logits, validate_args=False).expand((batch_size,))


def _as_mixture(posteriors) -> MixtureOfDiagonalNormals:
    """The uniform mixture of ``posteriors`` (batch shape ``(K,)``), as one mixture of diagonal normals."""
    if isinstance(posteriors, MixtureOfDiagonalNormals):  # K mixtures of M: one mixture of K * M, weights pi_km / K
        locs, scales = (t.flatten(0, 1) for t in (posteriors.locs, posteriors.scales))
        return MixtureOfDiagonalNormals(locs, scales, posteriors.component_log_weights.flatten(), validate_args=False)
    if isinstance(posteriors, Independent) and isinstance(posteriors.base_dist, Normal):
        base = posteriors.base_dist
        return MixtureOfDiagonalNormals(base.loc, base.scale, base.loc.new_zeros(base.loc.shape[0]), validate_args=False)
    raise ValueError(
        "the VampPrior mixes the guide's posteriors at its pseudo-inputs, which needs their density anywhere: "
        f"the diagonal or mixture family, not {type(posteriors).__name__}"
    )


class VampPrior(nn.Module):
    r"""
    The VampPrior (Tomczak & Welling 2018): the guide's posteriors at
    :math:`K` learned pseudo-inputs :math:`u_k` in data space, mixed uniformly,

    .. math::

        p(z) = \frac{1}{K} \sum_k q(z \mid u_k),

    an approximation of the aggregate posterior
    :math:`\frac{1}{N} \sum_n q(z \mid x_n)`, which is the prior that
    maximizes the ELBO averaged over the data. The posteriors are those of
    the model's own encoder (``posterior``), so the prior moves with it: in
    training the encoder gets gradient from both the guide and the prior.
    With the mixture family, each :math:`q(z \mid u_k)` is a mixture of
    :math:`M` components and :math:`p` one of :math:`K M`. The pseudo-inputs
    start at :data:`PSEUDO_INPUT_MEAN` plus noise of scale
    :data:`PSEUDO_INPUT_SCALE`.

    :param callable posterior: maps a batch of inputs to the guide's
        :math:`q(z \mid x)` (the model's bound ``posterior`` method: the
        encoder is the model's, not registered here a second time).
    :param data_shape: shape of one input.
    :param int num_components: :math:`K`.
    """

    def __init__(self, posterior: Callable, data_shape: Sequence[int], num_components: int) -> None:
        super().__init__()
        if num_components < 1:
            raise ValueError(f"a VampPrior needs num_components >= 1, got {num_components}")
        self.posterior = posterior
        noise = torch.randn((num_components, *data_shape)) * PSEUDO_INPUT_SCALE
        self.pseudo_inputs = nn.Parameter(PSEUDO_INPUT_MEAN + noise)

    def forward(self, batch_size: int, labels: Optional[torch.Tensor] = None) -> MixtureOfDiagonalNormals:
        """:math:`p(z)` with batch shape ``(batch_size,)``; ``labels`` are ignored."""
        return _as_mixture(self.posterior(self.pseudo_inputs)).expand((batch_size,))


PRIORS = ("standard", "mixture", "vamp")
"""The VAE's priors by the name ``VAEConfig.prior`` takes."""

__all__ = ["MixturePrior", "PRIORS", "PSEUDO_INPUT_MEAN", "PSEUDO_INPUT_SCALE", "VampPrior"]
