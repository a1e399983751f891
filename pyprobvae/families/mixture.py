import torch
import torch.nn.functional as F
from torch import nn

from ..distributions import MixtureOfDiagonalNormals
from .layers import latin_hypercube_normal


class DiagonalNormalMixture(nn.Module):
    r"""
    The amortized mixture guide

    .. math::

        q(z \mid x) = \sum_k \pi_k(x)\, \mathcal{N}(z; \mu_k(x), \mathrm{diag}\, \sigma_k(x)^2),

    with :math:`\pi = \mathrm{softmax}(\mathrm{logits})`. One linear layer
    reads the encoder features :math:`h` and outputs, for each of the
    :math:`K` components, a logit, a mean :math:`\mu_k` and
    :math:`\sigma_k = \mathrm{softplus}(\mathrm{raw}_k) + \sigma_\mathrm{min}`
    (:math:`\sigma_\mathrm{min}` = ``min_scale``). Samples carry pathwise
    gradients (see :class:`~pyprobvae.distributions.MixtureOfDiagonalNormals`).

    There is no closed-form :math:`\mathrm{KL}(q \,\|\, \mathcal{N}(0, I))`
    for a mixture, so the ELBO's KL is estimated by Monte Carlo,
    :math:`\log q(z \mid x) - \log p(z)` at the sampled :math:`z`; evaluating
    the mixture density costs :math:`O(K D)` per sample (and a pathwise draw
    :math:`O(K D^2)`, for the derivative in the weights).

    At initialization the weights are equal for a zero input (zero logit
    biases) and the components sit apart: the mean biases form a
    Latin-hypercube sample of the prior :math:`\mathcal{N}(0, I)`, each
    coordinate taking the :math:`K` quantiles :math:`\Phi^{-1}((k + 1/2) / K)`
    of :math:`\mathcal{N}(0, 1)` in an independent random order
    (:func:`~pyprobvae.families.layers.latin_hypercube_normal`, from a
    generator seeded by one draw of torch's global generator, so that the
    initialization is reproducible under :func:`pyro.set_rng_seed`). Each
    coordinate of the offsets is thus spread like the prior, and any two
    components differ in every coordinate by at least the smallest gap
    between those quantiles. Components that started at one spot would
    get identical gradients and never separate.

    :param int in_features: width of the encoder features.
    :param int latent_dim: dimension :math:`D` of :math:`z`.
    :param int num_components: number of components :math:`K`.
    :param float min_scale: lower bound on :math:`\sigma`, which keeps
        :math:`\log \sigma` finite.
    """

    def __init__(self, in_features: int, latent_dim: int, num_components: int, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.min_scale = min_scale
        self.linear = nn.Linear(in_features, num_components * (2 * latent_dim + 1))
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        offsets = latin_hypercube_normal(num_components, latent_dim, generator)
        with torch.no_grad():
            logit_bias, loc_bias, _ = self._split(self.linear.bias)
            logit_bias.zero_()
            loc_bias.copy_(offsets)

    def _split(self, output):
        sizes = (self.num_components, self.num_components * self.latent_dim, self.num_components * self.latent_dim)
        logits, locs, raw_scales = output.split(sizes, dim=-1)
        shape = (self.num_components, self.latent_dim)
        return logits, locs.unflatten(-1, shape), raw_scales.unflatten(-1, shape)

    def forward(self, features: torch.Tensor) -> MixtureOfDiagonalNormals:
        r"""
        :param torch.Tensor features: encoder features, shape ``(batch,
            in_features)``.
        :return: :math:`q(z \mid x)` with batch shape ``(batch,)`` and event shape
            ``(latent_dim,)``.
        """
        logits, locs, raw_scales = self._split(self.linear(features))
        scales = F.softplus(raw_scales) + self.min_scale
        return MixtureOfDiagonalNormals(locs, scales, logits, validate_args=False)
