r"""
Likelihoods :math:`p(x \mid z)`: turn a decoder's raw outputs into a Pyro distribution over
one example.

Every likelihood here is an :class:`torch.nn.Module` ``likelihood(output)``
mapping decoder outputs of shape ``(*batch, num_outputs)`` to a distribution
with batch shape ``batch`` and event shape ``data_shape``, whose support is
data in the package's data space (pixel values in ``[0, 1]``, or int64 token
ids for ``"tokens"``). Its ``log_prob`` is therefore the log-likelihood of a
whole example, in nats.
"""

import math
from typing import Optional, Tuple, cast

import torch
import torch.nn.functional as F
from pyro.distributions import Bernoulli, Categorical, Independent, Normal, TorchDistribution, constraints
from torch import nn
from torch.types import _size

from .data.dataset import Dataset

LIKELIHOODS = ("bernoulli", "gaussian", "categorical", "tokens")

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class Likelihood(nn.Module):
    """
    Base class: a likelihood with ``outputs_per_dim`` decoder outputs per data
    dimension.

    :param tuple data_shape: shape of one example, e.g. ``(1, 8, 8)``.
    """

    outputs_per_dim = 1

    def __init__(self, data_shape: Tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.data_dim = math.prod(self.data_shape)

    @property
    def num_outputs(self) -> int:
        """Number of decoder outputs this likelihood consumes per example."""
        return self.outputs_per_dim * self.data_dim

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        """
        Raise :class:`ValueError` naming the problem when ``x`` is not a batch
        of examples inside this likelihood's support.

        :param torch.Tensor x: data of shape ``(batch, *data_shape)``.
        :param str name: how to call the data in the error message.
        """
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, but the model expects "
                f"(batch, {', '.join(map(str, self.data_shape))})"
            )
        bad = ~torch.isfinite(x)
        if bad.any():
            raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite values")

    def decoded(self, distribution: TorchDistribution) -> torch.Tensor:
        """
        The data an output distribution decodes to, e.g. for reconstructions:
        its mean, of shape ``(*batch, *data_shape)``.

        :param distribution: a distribution returned by this likelihood.
        :rtype: torch.Tensor
        """
        return distribution.mean

    def _event(self, base: TorchDistribution) -> TorchDistribution:
        return base.to_event(len(self.data_shape))


class BernoulliLikelihood(Likelihood):
    r"""
    :math:`p(x \mid z) = \prod_i \mathrm{Bernoulli}(x_i; \sigma(f_i(z)))`, with
    :math:`\sigma` the logistic sigmoid, for binary data; the decoder outputs
    the logits :math:`f(z)`.
    """

    def forward(self, output: torch.Tensor) -> TorchDistribution:
        logits = output.reshape(output.shape[:-1] + self.data_shape)
        return self._event(Bernoulli(logits=logits, validate_args=False))

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        super().check_data(x, name)
        non_binary = ((x != 0) & (x != 1)).sum()
        if non_binary:
            raise ValueError(
                f"the Bernoulli likelihood needs binary data, but {name} has "
                f"{int(non_binary)} values other than 0 and 1: binarize it "
                "(binarize='threshold' or 'dynamic') or choose the 'gaussian' or "
                "'categorical' likelihood"
            )


class GaussianLikelihood(Likelihood):
    r"""
    :math:`p(x \mid z) = \prod_i \mathcal{N}(x_i; f_i(z), \sigma^2)` with one
    scale :math:`\sigma` shared by all dimensions: fixed, or learned jointly
    with the decoder (the :math:`\sigma`-VAE of Rybkin et al. 2021),
    :math:`\sigma = \mathrm{softplus}(s) + \sigma_\mathrm{min}`
    (:math:`\sigma_\mathrm{min}` = ``min_scale``).

    :param tuple data_shape: shape of one example.
    :param float scale: the fixed scale, or the initial scale when learned.
    :param bool learn_scale: whether :math:`\sigma` is a trained parameter.
    :param float min_scale: lower bound of a learned scale, which keeps the
        likelihood bounded on data with constant pixels.
    """

    fixed_scale: torch.Tensor  # a buffer, without learn_scale

    def __init__(
        self, data_shape: Tuple[int, ...], scale: float = 0.1, learn_scale: bool = False, min_scale: float = 1e-3
    ) -> None:
        super().__init__(data_shape)
        if not scale > 0:
            raise ValueError(f"the Gaussian likelihood's scale must be positive, got {scale}")
        self.learn_scale = learn_scale
        self.min_scale = min_scale
        if learn_scale:
            if not scale > min_scale:
                raise ValueError(f"the initial learned scale must exceed min_scale={min_scale}, got {scale}")
            excess = scale - min_scale
            # the inverse of softplus, log(expm1(excess)), written to stay finite for large scales
            self.raw_scale = nn.Parameter(torch.tensor(excess + math.log(-math.expm1(-excess))))
        else:
            self.register_buffer("fixed_scale", torch.tensor(float(scale)))

    @property
    def scale(self) -> torch.Tensor:
        r"""The shared standard deviation :math:`\sigma`."""
        if self.learn_scale:
            return F.softplus(self.raw_scale) + self.min_scale
        return self.fixed_scale

    def forward(self, output: torch.Tensor) -> TorchDistribution:
        loc = output.reshape(output.shape[:-1] + self.data_shape)
        return self._event(Normal(loc, self.scale, validate_args=False))


class QuantizedCategorical(TorchDistribution):
    r"""
    A categorical distribution over :math:`L` evenly spaced values
    :math:`\{0, 1/(L-1), \dots, 1\}`: the exact likelihood of pixels that take
    :math:`L` intensity levels (:math:`L = 17` for scikit-learn's digits).

    :param torch.Tensor logits: unnormalized log-probabilities, shape
        ``batch_shape + (L,)``.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.unit_interval

    def __init__(self, logits: torch.Tensor, validate_args: Optional[bool] = None) -> None:
        self.logits = logits
        self.num_levels = logits.shape[-1]
        super().__init__(logits.shape[:-1], validate_args=validate_args)

    def _levels(self) -> torch.Tensor:
        return torch.linspace(0, 1, self.num_levels, dtype=self.logits.dtype, device=self.logits.device)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_probs = self.logits.log_softmax(-1)
        index = torch.round(value * (self.num_levels - 1)).long().unsqueeze(-1)
        shape = torch.broadcast_shapes(index.shape[:-1], log_probs.shape[:-1])
        return log_probs.expand(shape + (self.num_levels,)).gather(-1, index.expand(shape + (1,))).squeeze(-1)

    def sample(self, sample_shape: _size = torch.Size()) -> torch.Tensor:
        index = Categorical(logits=self.logits).sample(sample_shape)
        return index.to(self.logits.dtype) / (self.num_levels - 1)

    @property
    def mean(self) -> torch.Tensor:
        return self.logits.softmax(-1) @ self._levels()

    def expand(self, batch_shape: _size, _instance: Optional["QuantizedCategorical"] = None) -> "QuantizedCategorical":
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        return QuantizedCategorical(self.logits.expand(batch_shape + (self.num_levels,)), validate_args=False)


class CategoricalLikelihood(Likelihood):
    r"""
    :math:`p(x \mid z) = \prod_i \mathrm{Categorical}(x_i; \mathrm{softmax}(f_i(z)))`
    over the :math:`L` = ``num_levels`` pixel values
    :math:`\{0, 1/(L-1), \dots, 1\}`; the decoder outputs :math:`L` logits per
    pixel. Exact for quantized data, with no binarization or dequantization.

    :param tuple data_shape: shape of one example.
    :param int num_levels: number of intensity levels :math:`L \ge 2`.
    """

    def __init__(self, data_shape: Tuple[int, ...], num_levels: int) -> None:
        super().__init__(data_shape)
        if num_levels < 2:
            raise ValueError(f"the categorical likelihood needs num_levels >= 2, got {num_levels}")
        self.num_levels = num_levels
        self.outputs_per_dim = num_levels

    def forward(self, output: torch.Tensor) -> TorchDistribution:
        logits = output.reshape(output.shape[:-1] + self.data_shape + (self.num_levels,))
        return self._event(QuantizedCategorical(logits, validate_args=False))

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        super().check_data(x, name)
        scaled = x * (self.num_levels - 1)
        off_grid = ((scaled - scaled.round()).abs() > 1e-3) | (x < 0) | (x > 1)
        if off_grid.any():
            raise ValueError(
                f"the categorical likelihood with {self.num_levels} levels needs data in "
                f"{{0, 1/{self.num_levels - 1}, ..., 1}}, but {name} has {int(off_grid.sum())} "
                "values off that grid: pass the data set's num_levels, or choose the "
                "'gaussian' likelihood for real-valued data"
            )


class TokenLikelihood(Likelihood):
    r"""
    :math:`p(x \mid z) = \prod_t \mathrm{Categorical}(x_t; \mathrm{softmax}(f_t(z)))`
    over token ids :math:`x_t \in \{0, \dots, V - 1\}`, :math:`V` =
    ``vocab_size``; the decoder outputs ``vocab_size``
    logits per position, laid out as ``data_shape + (vocab_size,)``
    flattened. Data are integer token ids of shape ``(batch, *data_shape)``,
    usually ``(batch, seq_len)``; ``log_prob`` is the log-likelihood of a
    whole sequence in nats.

    :param tuple data_shape: shape of one example, e.g. ``(seq_len,)``.
    :param int vocab_size: number of token ids, at least 2.
    """

    def __init__(self, data_shape: Tuple[int, ...], vocab_size: int) -> None:
        super().__init__(data_shape)
        if vocab_size < 2:
            raise ValueError(f"the tokens likelihood needs vocab_size >= 2, got {vocab_size}")
        self.vocab_size = vocab_size
        self.outputs_per_dim = vocab_size

    def forward(self, output: torch.Tensor) -> TorchDistribution:
        logits = output.reshape(output.shape[:-1] + self.data_shape + (self.vocab_size,))
        return self._event(Categorical(logits=logits, validate_args=False))

    def decoded(self, distribution: TorchDistribution) -> torch.Tensor:
        """
        The most likely token id at every position (ties go to the lowest
        id), shape ``(*batch, *data_shape)``, int64. Token ids are labels, not
        quantities: the mean of a categorical over ids is not a token (and
        torch leaves it undefined), so text decodes to the argmax instead.

        :param distribution: a distribution returned by this likelihood.
        :rtype: torch.LongTensor
        """
        tokens = cast(Categorical, cast(Independent, distribution).base_dist)  # what forward returns
        return tokens.logits.argmax(-1)

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        super().check_data(x, name)
        if x.dtype not in _INTEGER_DTYPES:
            raise ValueError(
                f"the tokens likelihood needs integer token ids (int64), but {name} has dtype "
                f"{x.dtype}: encode text with pyprobvae.data.text.encode_text"
            )
        outside = ((x < 0) | (x >= self.vocab_size)).sum()
        if outside:
            raise ValueError(
                f"the tokens likelihood with vocab_size {self.vocab_size} needs ids in "
                f"[0, {self.vocab_size - 1}], but {name} has {int(outside)} ids outside"
            )


def make_likelihood(
    name: str, data_shape: Tuple[int, ...], num_levels: Optional[int] = None, gaussian_scale: float = 0.1,
    learn_scale: bool = False,
) -> Likelihood:
    """
    Build a likelihood by name.

    :param str name: one of ``"bernoulli"``, ``"gaussian"``, ``"categorical"``,
        ``"tokens"``.
    :param tuple data_shape: shape of one example.
    :param num_levels: pixel levels, required by ``"categorical"``; the
        vocabulary size, required by ``"tokens"``.
    :param float gaussian_scale: fixed (or initial, when learned) scale of
        ``"gaussian"``.
    :param bool learn_scale: learn the scale of ``"gaussian"``.
    """
    if name == "bernoulli":
        return BernoulliLikelihood(data_shape)
    if name == "gaussian":
        return GaussianLikelihood(data_shape, gaussian_scale, learn_scale)
    if name == "categorical":
        if num_levels is None:
            raise ValueError("the categorical likelihood needs the number of pixel levels (num_levels)")
        return CategoricalLikelihood(data_shape, num_levels)
    if name == "tokens":
        if num_levels is None:
            raise ValueError("the tokens likelihood needs the vocabulary size (num_levels)")
        return TokenLikelihood(data_shape, num_levels)
    raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")


def default_likelihood(dataset: Dataset) -> str:
    """
    The likelihood a data set is modelled with unless the user says
    otherwise: ``"tokens"`` for text, the exact ``"categorical"`` over pixel
    levels for the bundled ``digits`` (17 levels), ``"gaussian"`` for
    real-valued data, ``"bernoulli"`` for other quantized images (MNIST,
    binarized as :func:`~pyprobvae.infer.training.default_binarization` says).

    :param dataset: a :class:`~pyprobvae.data.Dataset`.
    """
    if dataset.vocabulary is not None:
        return "tokens"
    if dataset.name == "digits":
        return "categorical"
    if dataset.num_levels is None:
        return "gaussian"
    return "bernoulli"
