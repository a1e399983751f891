import torch
import torch.nn.functional as F
from pyro.distributions import Independent, Normal
from torch import nn


class DiagonalNormal(nn.Module):
    r"""
    The mean-field Gaussian
    :math:`q(z \mid x) = \mathcal{N}(z; \mu(x), \mathrm{diag}\, \sigma(x)^2)`.

    A linear layer reads the encoder features :math:`h` and outputs
    :math:`\mu = W_\mu h + b_\mu` and
    :math:`\sigma = \mathrm{softplus}(W_s h + b_s) + \sigma_\mathrm{min}`
    (:math:`\sigma_\mathrm{min}` = ``min_scale``). Samples are
    reparameterized, :math:`z = \mu + \sigma \odot \epsilon` with
    :math:`\epsilon \sim \mathcal{N}(0, I)`, so gradients flow through them,
    and the KL divergence to a diagonal Gaussian prior has the closed form

    .. math::

        \mathrm{KL}(q \,\|\, \mathcal{N}(0, I))
        = \frac{1}{2} \sum_i \left(\mu_i^2 + \sigma_i^2 - \log \sigma_i^2 - 1\right),

    which torch's ``kl_divergence`` evaluates for the analytic-KL ELBO.

    :param int in_features: width of the encoder features.
    :param int latent_dim: dimension of :math:`z`.
    :param float min_scale: lower bound on :math:`\sigma`, which keeps
        :math:`\log \sigma` finite.
    """

    def __init__(self, in_features: int, latent_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.linear = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, features: torch.Tensor) -> Independent:
        loc, raw_scale = self.linear(features).chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + self.min_scale
        return Normal(loc, scale, validate_args=False).to_event(1)
