"""
Gaussian priors :math:`p(z)`: the standard normal, and the learned label-conditional
normal of the conditional VAE.
"""

from typing import Optional

import torch
from pyro.distributions import Independent, Normal
from torch import nn


class StandardNormal(nn.Module):
    r"""
    The standard normal prior :math:`p(z) = \mathcal{N}(0, I)` on
    ``latent_dim`` dimensions. Its zero mean and unit scale are buffers, so
    the prior follows the model to its device. As the prior of a conditional
    model it ignores the labels: :math:`p(z \mid y) = \mathcal{N}(0, I)` for
    every :math:`y`.

    :param int latent_dim: dimension of :math:`z`.
    """

    loc: torch.Tensor  # buffers
    scale: torch.Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, batch_size: int, labels: Optional[torch.Tensor] = None) -> Independent:
        return Normal(self.loc, self.scale, validate_args=False).expand([batch_size, self.latent_dim]).to_event(1)


class LabelConditionalNormal(nn.Module):
    r"""
    A learned label-conditional prior for the conditional VAE,

    .. math::

        p(z \mid y) = \mathcal{N}(z; M y, \mathrm{diag}\, \exp(2 S y)),

    with :math:`y` a one-hot label (or a mixture of labels, as in class
    interpolation) and :math:`M`, :math:`S` learned ``latent_dim`` by
    ``num_classes`` matrices: each class gets its own mean and per-dimension
    scale, and the label path between two classes moves them linearly. Both
    start at zero, so training starts from :math:`\mathcal{N}(0, I)`.

    :param int num_classes: number of classes.
    :param int latent_dim: dimension of :math:`z`.
    """

    def __init__(self, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.loc = nn.Linear(num_classes, latent_dim, bias=False)
        self.log_scale = nn.Linear(num_classes, latent_dim, bias=False)
        nn.init.zeros_(self.loc.weight)
        nn.init.zeros_(self.log_scale.weight)

    def forward(self, batch_size: int, labels: torch.Tensor) -> Independent:
        """
        :param int batch_size: number of codes.
        :param torch.Tensor labels: label vectors, shape ``(batch_size, num_classes)``.
        """
        return Normal(self.loc(labels), self.log_scale(labels).exp(), validate_args=False).to_event(1)
