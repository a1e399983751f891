import torch.nn.functional as F
from pyro.distributions import Normal
from torch import nn


class DiagonalNormal(nn.Module):
    """
    The mean-field Gaussian q(z|x) = N(z; mu(x), diag(sigma(x)^2)).

    A linear layer reads the encoder features h and outputs
    ``mu = W_mu h + b_mu`` and ``sigma = softplus(W_s h + b_s) + min_scale``.
    Samples are reparameterized, ``z = mu + sigma * eps`` with
    ``eps ~ N(0, I)``, so gradients flow through them, and the KL divergence to
    a diagonal Gaussian prior has the closed form

        KL(q || N(0, I)) = 1/2 sum_i (mu_i^2 + sigma_i^2 - log sigma_i^2 - 1),

    which torch's ``kl_divergence`` evaluates for the analytic-KL ELBO.

    :param int in_features: width of the encoder features.
    :param int latent_dim: dimension of z.
    :param float min_scale: lower bound on sigma, which keeps log sigma finite.
    """

    def __init__(self, in_features: int, latent_dim: int, min_scale: float = 1e-4):
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.linear = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, features):
        loc, raw_scale = self.linear(features).chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + self.min_scale
        return Normal(loc, scale, validate_args=False).to_event(1)
