"""
The VQ-VAE (van den Oord et al. 2017) as a Pyro model/guide pair: a
deterministic guide with a straight-through codebook, a prior over code
indices (uniform in stage 1, a learned transformer in stage 2), and the
codebook and commitment terms as guide factors.
"""

import math
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from ..quantizer import VectorQuantizer


class CodebookPrior(TorchDistribution):
    """
    The VQ-VAE's prior as a distribution over grids of codebook vectors:
    ``z = (e_{k_1}, ..., e_{k_P})`` with the indices ``k`` drawn from a prior
    over code sequences, uniform,

        p(k) = prod_p 1/K,   log p(k) = -P log K,

    or a learned one (:class:`~pyprobvae.code_prior.TransformerPrior`).
    ``log_prob(z)`` is ``log p(k(z))`` with ``k(z)`` the codes of ``z``
    (``z`` must lie on the codebook, as the guide's quantized codes do).

    :param VectorQuantizer quantizer: holds the codebook.
    :param code_prior: a module with ``log_prob(codes)`` and
        ``sample(n)`` over ``(n, P)`` code sequences, or None for uniform.
    :param int batch_size: number of examples.
    :param int num_positions: codes per example P.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(self, quantizer: VectorQuantizer, code_prior: Optional[nn.Module], batch_size: int, num_positions: int):
        self.quantizer = quantizer
        self.code_prior = code_prior
        self.num_positions = num_positions
        codebook = quantizer.codebook
        super().__init__(torch.Size([batch_size]), torch.Size([num_positions, codebook.shape[1]]), validate_args=False)

    def uniform_log_prob(self) -> float:
        """``-P log K``, the log-probability of any code sequence under the uniform prior."""
        return -self.num_positions * math.log(self.quantizer.codebook.shape[0])

    def code_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(k) of code sequences ``(batch, P)``, shape ``(batch,)``."""
        if self.code_prior is None:
            return torch.full(codes.shape[:-1], self.uniform_log_prob(), device=codes.device)
        return self.code_prior.log_prob(codes)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self.code_prior is None:  # a constant: no need to look the codes up
            return value.new_full(value.shape[:-2], self.uniform_log_prob())
        codes = self.quantizer.nearest(value.reshape((-1,) + value.shape[-2:]))
        return self.code_log_prob(codes).reshape(value.shape[:-2])

    def sample_codes(self, num_samples: int, temperature: float = 1.0, top_k: Optional[int] = None) -> torch.Tensor:
        """Code sequences ``(num_samples, P)`` from the prior (temperature and top-k apply to a learned one)."""
        if self.code_prior is None:
            size, device = self.quantizer.codebook.shape[0], self.quantizer.codebook.device
            return torch.randint(size, (num_samples, self.num_positions), device=device)
        return self.code_prior.sample(num_samples, temperature, top_k)

    def sample(self, sample_shape=torch.Size()):
        count = math.prod(sample_shape) * self.batch_shape[0]
        codes = self.sample_codes(count)
        return self.quantizer.lookup(codes).reshape(sample_shape + self.batch_shape + self.event_shape)


class VQVAE(nn.Module):
    """
    A VQ-VAE with P code positions per example and a codebook of K codes in
    R^D. As a Pyro model/guide pair::

        model(x):  k_n ~ p(k),  z_n = e_{k_n},  x_n ~ p(x | z_n)
        guide(x):  z_n = Delta(z_q(x_n)),  z_q = z_e + sg[e_k(z_e) - z_e],  z_e = f(x_n)
                   factor("codebook",   ||sg[z_e] - e_k||^2)
                   factor("commitment", beta ||z_e - sg[e_k]||^2)

    The guide is deterministic: the encoder output ``z_e`` snaps to its
    nearest codes (:class:`~pyprobvae.quantizer.VectorQuantizer`), and the
    straight-through value passes the decoder's gradient to the encoder
    unchanged. Since q is a point mass on the codes, the ELBO is

        log p(x) >= log p(x | z_q(x)) + log p(k(x)),

    a true bound on log p(x) for any prior over codes: for the uniform prior
    ``log p(k) = -P log K`` is a constant and training needs the
    reconstruction term only. The codebook and commitment terms are not part
    of the bound; they are the guide's ``pyro.factor`` penalties, summed over
    positions per example, which pyprobvae's loop subtracts from the
    objective as ``penalty`` (:class:`~pyprobvae.infer.elbo.ELBOTerms`) and
    Pyro's ``Trace_ELBO`` as part of log q, so both descend on

        -log p(x|z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2   (nats per example).

    Stage 2 fits ``code_prior`` (a :class:`~pyprobvae.code_prior.TransformerPrior`)
    to the codes of the training set; the same bound then uses it.

    :param torch.nn.Module encoder: ``x -> z_e``, shape ``(batch, P, D)``.
    :param VectorQuantizer quantizer: the codebook.
    :param torch.nn.Module decoder: ``z -> p(x|z)``; its last module is a
        :class:`~pyprobvae.likelihoods.Likelihood`.
    :param int num_positions: P.
    :param float beta: weight of the commitment term.
    :param dict spec: the :func:`~pyprobvae.models.build_vqvae` arguments.
    """

    generative = True
    conditional = False

    def __init__(
        self, encoder: nn.Module, quantizer: VectorQuantizer, decoder: nn.Module, num_positions: int, beta: float = 0.25,
        spec: Optional[dict] = None,
    ):
        super().__init__()
        if not beta >= 0:
            raise ValueError(f"the commitment weight beta must be >= 0, got {beta}")
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        self.num_positions = num_positions
        self.beta = beta
        self.spec = spec
        self.code_prior = None

    @property
    def likelihood(self):
        """The :class:`~pyprobvae.likelihoods.Likelihood` ending the decoder."""
        return self.decoder[-1]

    @property
    def data_shape(self):
        return self.likelihood.data_shape

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook.shape[0]

    def condition(self, y: Optional[torch.Tensor], batch_size: int) -> tuple:
        """The VQ-VAE takes no labels: ``()``, or a ValueError when labels are given."""
        if y is not None:
            raise ValueError("the VQ-VAE is unconditional and takes no labels")
        return ()

    def prior(self, batch_size: int) -> CodebookPrior:
        """p(z): the codebook grids under the current prior over codes."""
        return CodebookPrior(self.quantizer, self.code_prior, batch_size, self.num_positions)

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True):
        """
        p(x, k) = p(k) p(x | e_k) for a batch ``x`` of shape ``(batch, *data_shape)``.

        :param y: must be None.
        :param bool register: register the decoder (and a learned prior) with
            Pyro's param store, as :class:`pyro.infer.SVI` needs.
        """
        if register:
            pyro.module("decoder", self.decoder)
        self.condition(y, x.shape[0])
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x.shape[0]))
            pyro.sample("x", self.decoder(z), obs=x)

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True):
        """
        The deterministic guide: quantize the encoder's output, and add the
        codebook and commitment terms as factors.

        :param y: must be None.
        :param bool register: register the encoder and the codebook with Pyro.
        """
        if register:
            pyro.module("encoder", self.encoder)
            pyro.module("quantizer", self.quantizer)
        self.condition(y, x.shape[0])
        quantized = self.quantizer(self.encoder(x))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(quantized.z_q, event_dim=2))
            pyro.factor("codebook", quantized.codebook_loss, has_rsample=True)
            pyro.factor("commitment", self.beta * quantized.commitment_loss, has_rsample=True)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """
        :param torch.Tensor x: data, shape ``(batch, *data_shape)``.
        :return: the code indices k(x), shape ``(batch, P)``.
        """
        return self.quantizer.nearest(self.encoder(x))

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """
        :param torch.Tensor codes: code indices, shape ``(batch, P)``.
        :return: the decoded data (pixel means, or the most likely tokens),
            shape ``(batch, *data_shape)``.
        """
        return self.likelihood.decoded(self.decoder(self.quantizer.lookup(codes)))

    def reconstruct(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        :param torch.Tensor x: data, shape ``(batch, *data_shape)``.
        :return: the decoded codes of ``x``, shape ``(batch, *data_shape)``.
        """
        self.condition(y, x.shape[0])
        return self.decode_codes(self.codes(x))

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0, top_k: Optional[int] = None) -> torch.Tensor:
        """
        Draw code sequences from the prior and decode them. With the uniform
        prior of stage 1 every code is independent and equally likely
        (temperature and top-k do not apply); with a trained
        ``code_prior`` they are drawn one position at a time from
        ``softmax(logits / temperature)``, restricted to the ``top_k`` most
        likely codes if given.

        :return: decoded data, shape ``(num_samples, *data_shape)``.
        """
        return self.decode_codes(self.prior(num_samples).sample_codes(num_samples, temperature, top_k))
