"""
Priors p(z): modules mapping a batch size to a distribution over latent codes
with batch shape ``(batch,)``.
"""

import torch
from pyro.distributions import Normal
from torch import nn


class StandardNormal(nn.Module):
    """
    The standard normal prior p(z) = N(0, I) on ``latent_dim`` dimensions. Its
    zero mean and unit scale are buffers, so the prior follows the model to
    its device.

    :param int latent_dim: dimension of z.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, batch_size: int):
        return Normal(self.loc, self.scale, validate_args=False).expand([batch_size, self.latent_dim]).to_event(1)
