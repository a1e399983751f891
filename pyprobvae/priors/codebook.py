"""
The prior of a VQ-VAE as a Pyro distribution over grids of codebook vectors.
"""

import math
from typing import Optional

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.types import _size

from ..families.quantizer import VectorQuantizer
from .sampling import SamplingConfig
from .transformer import TransformerPrior


class CodebookPrior(TorchDistribution):
    r"""
    The VQ-VAE's prior as a distribution over grids of codebook vectors:
    :math:`z = (e_{k_1}, \dots, e_{k_P})` with the indices :math:`k` drawn
    from a prior over code sequences, uniform,

    .. math::

        p(k) = \prod_p \frac{1}{K}, \qquad \log p(k) = -P \log K,

    or a learned one (:class:`~pyprobvae.priors.TransformerPrior`).
    ``log_prob(z)`` is :math:`\log p(k(z))` with :math:`k(z)` the codes of
    :math:`z` (:math:`z` must lie on the codebook, as the guide's quantized
    codes do).

    :param quantizer: holds the codebook (a
        :class:`~pyprobvae.families.quantizer.VectorQuantizer`).
    :param code_prior: a module with ``log_prob(codes)`` and
        ``sample(n)`` over ``(n, P)`` code sequences, or None for uniform.
    :param int batch_size: number of examples.
    :param int num_positions: codes per example :math:`P`.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(
        self, quantizer: VectorQuantizer, code_prior: Optional[TransformerPrior], batch_size: int, num_positions: int
    ) -> None:
        self.quantizer = quantizer
        self.code_prior = code_prior
        self.num_positions = num_positions
        codebook = quantizer.codebook
        super().__init__(torch.Size([batch_size]), torch.Size([num_positions, codebook.shape[1]]), validate_args=False)

    def uniform_log_prob(self) -> float:
        r""":math:`-P \log K`, the log-probability of any code sequence under the uniform prior."""
        return -self.num_positions * math.log(self.quantizer.codebook.shape[0])

    def code_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(k)` of code sequences ``(batch, P)``, shape ``(batch,)``."""
        if self.code_prior is None:
            return torch.full(codes.shape[:-1], self.uniform_log_prob(), device=codes.device)
        return self.code_prior.log_prob(codes)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self.code_prior is None:  # a constant: no need to look the codes up
            return value.new_full(value.shape[:-2], self.uniform_log_prob())
        codes = self.quantizer.nearest(value.reshape((-1,) + value.shape[-2:]))
        return self.code_log_prob(codes).reshape(value.shape[:-2])

    def sample_codes(
        self, num_samples: int, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
        prefix: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Code sequences ``(num_samples, P)`` from the prior, each starting with
        the codes ``prefix`` ``(num_samples, n)`` if given (``n < P``). The
        sampling rules (:mod:`~pyprobvae.priors.sampling`) apply to a learned
        prior; under the uniform prior every code is independent of the
        others and equally likely.
        """
        if self.code_prior is not None:
            return self.code_prior.sample(num_samples, temperature, top_k, top_p, prefix)
        SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p).check_codebook(self.quantizer.codebook.shape[0])
        size, device = self.quantizer.codebook.shape[0], self.quantizer.codebook.device
        kept = 0 if prefix is None else prefix.shape[1]
        drawn = torch.randint(size, (num_samples, self.num_positions - kept), device=device)
        return drawn if prefix is None else torch.cat([prefix.to(device=device, dtype=torch.long), drawn], 1)

    def sample(self, sample_shape: _size = torch.Size()) -> torch.Tensor:
        count = math.prod(sample_shape) * self.batch_shape[0]
        codes = self.sample_codes(count)
        return self.quantizer.lookup(codes).reshape(torch.Size(sample_shape) + self.batch_shape + self.event_shape)
