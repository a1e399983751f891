r"""
Stage 2 of a VQ-VAE: an autoregressive prior over sequences of discrete codes.

A VQ-VAE encodes each example to :math:`L` = ``num_positions`` code indices
:math:`c = (c_0, \dots, c_{L-1})` in :math:`\{0, \dots, K-1\}` (raster order
for images). Its uniform prior is replaced after training by a learned one,
factorized autoregressively:

.. math::

    p(c) = \prod_{t=0}^{L-1} p(c_t \mid c_{<t}),

each factor a softmax over the :math:`K` codes computed by a small causal
transformer (:class:`TransformerPrior`; Vaswani et al. 2017, in the pre-norm
GPT-2 arrangement of Radford et al. 2019). Because every factor is
normalized, :math:`\log p(c)` is exact, not a bound, and with the decoder
gives a likelihood bound for the VQ-VAE: with the deterministic encoder as
variational posterior, :math:`\log p(x) \ge \log p(x \mid z_q(c)) + \log p(c)`,
where :math:`z_q(c)` are the codebook vectors of the codes :math:`c` of
:math:`x`. The same network over raw token ids (no codebook) is a plain
character-level language model.

Training (:func:`pyprobvae.infer.prior_training.train_prior`) uses teacher
forcing: the true codes are fed in, shifted right behind a learned start
token, so a single forward pass yields all :math:`L` conditionals and the loss
:math:`-\log p(c)` (nats per sequence). Attention is
:func:`torch.nn.functional.scaled_dot_product_attention` with a causal mask,
which dispatches to a fused (flash or memory-efficient) kernel where the
device has one.

Sampling (:meth:`TransformerPrior.sample`) is ancestral, one code at a time
from :math:`\mathrm{softmax}(\mathrm{logits} / T)`, with a key/value cache
(:class:`KeyValueCache`) so that each new code costs one forward step of one
position, not a pass over the whole prefix; :mod:`pyprobvae.priors.sampling`
holds the temperature, top-k and nucleus (top-p) rules.

**References**

- Vaswani et al. 2017, "Attention Is All You Need".
- Radford et al. 2019, "Language Models are Unsupervised Multitask Learners".
- van den Oord et al. 2017, "Neural Discrete Representation Learning".
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, setting
from ..validation import is_validation_enabled
from .sampling import SamplingConfig, next_token


@dataclass
class TransformerPriorConfig(Config):
    """The architecture of a :class:`TransformerPrior`."""

    codebook_size: int = setting(64, minimum=1, derived=True)
    """Codebook size K: the codes take values 0 .. K - 1; from the VQ-VAE."""
    num_positions: int = setting(16, minimum=1, derived=True)
    """Codes per example L; from the VQ-VAE."""
    d_model: int = setting(128, minimum=1, maximum=8192)
    """Width of the embeddings and of the transformer layers (divisible by num_heads)."""
    num_heads: int = setting(4, minimum=1, maximum=256, aliases=("--heads",))
    """Attention heads per layer."""
    num_layers: int = setting(2, minimum=1, maximum=256, aliases=("--layers",))
    """Transformer layers."""
    dropout: float = setting(0.1, minimum=0, below=1)
    """Dropout rate of the layers."""
    code_dim: Optional[int] = setting(None, minimum=1, derived=True)
    """Embed each code through its codebook vector (of this dimension; set by the VQ-VAE) and a learned linear map; None: a free learned embedding per code."""

    def check(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")


class KeyValueCache:
    r"""
    The keys and values every attention layer has computed so far, for
    incremental decoding: after positions :math:`0, \dots, n-1` have been
    fed, a new position attends to the stored :math:`n` keys and values and
    its own, so step :math:`t` costs one position's work instead of
    :math:`t + 1`.

    :param int num_layers: attention layers.
    :param int batch_size: sequences decoded together.
    :param int num_heads: heads per layer.
    :param int max_length: positions the cache holds.
    :param int head_dim: size of a key.
    :param like: a tensor whose dtype and device the cache takes.
    """

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, max_length: int, head_dim: int, like: torch.Tensor) -> None:
        shape = (num_layers, batch_size, num_heads, max_length, head_dim)
        self.keys = like.new_zeros(shape)
        self.values = like.new_zeros(shape)
        self.length = 0
        """Positions stored (and the position of the next one fed)."""

    def store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Append the new positions' ``keys`` and ``values`` ``(batch, heads, n,
        head_dim)`` of ``layer`` and return all of that layer's so far (the
        length advances in :meth:`advance`, once every layer has stored).
        """
        end = self.length + keys.shape[2]
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, count: int) -> None:
        self.length += count


class CausalSelfAttention(nn.Module):
    """
    Multi-head self-attention in which position :math:`t` attends to positions
    :math:`\\le t` only, through :func:`~torch.nn.functional.scaled_dot_product_attention`.

    :param int d_model: width.
    :param int num_heads: heads (dividing ``d_model``).
    :param float dropout: dropout on the attention weights and the output.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, cache: Optional[KeyValueCache] = None, layer: int = 0) -> torch.Tensor:
        batch, length, width = h.shape
        q, k, v = self.qkv(h).view(batch, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.store(layer, k, v)
        dropout = self.dropout if self.training else 0.0
        if start == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=length > 1)
        else:  # new positions start..start+length-1 see every stored key up to their own
            mask = torch.ones(length, start + length, dtype=torch.bool, device=h.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out_dropout(self.out(y.transpose(1, 2).reshape(batch, length, width)))


class Block(nn.Module):
    """A pre-norm transformer layer: ``h + attention(norm(h))``, then ``h + mlp(norm(h))`` (GELU, width 4 d_model)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, num_heads, dropout)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model), nn.Dropout(dropout)
        )

    def forward(self, h: torch.Tensor, cache: Optional[KeyValueCache] = None, layer: int = 0) -> torch.Tensor:
        h = h + self.attention(self.attention_norm(h), cache, layer)
        return h + self.mlp(self.mlp_norm(h))


class TransformerPrior(nn.Module):
    r"""
    A causal transformer over code sequences:
    :math:`p(c) = \prod_t p(c_t \mid c_{<t})` with
    :math:`p(c_t \mid c_{<t}) = \mathrm{softmax}(\mathrm{logits}_t)` and
    :math:`\mathrm{logits}_t` a function of :math:`c_{<t}` only.

    The input at position :math:`t` is a learned start token for
    :math:`t = 0` and the embedding of :math:`c_{t-1}` otherwise, plus a
    learned embedding of the position :math:`t`, with dropout; ``num_layers``
    pre-norm :class:`Block` s, a final LayerNorm and a linear head map it to
    :math:`\mathrm{logits}_t`.

    **Code embeddings.** With ``config.code_dim`` set, code :math:`k` is
    embedded as :math:`W e_k / s`: its codebook vector :math:`e_k` (a fixed
    buffer, set by :meth:`set_code_vectors`, divided by the mean norm
    :math:`s` of the codebook) through a learned linear map :math:`W`. A VQ-VAE's codebook holds
    near-duplicate codes that decode alike (on digits the median distance to
    the nearest other code is about 5% of a code's norm); free embeddings
    split the few training sequences of a small data set among them, and
    the transformer memorizes the sequences before it learns how codes
    depend on each other. Embeddings through the codebook start codes that
    decode alike alike. Without ``code_dim`` each code (or character) has a
    free learned embedding.

    :param TransformerPriorConfig config: the architecture.
    """

    code_vectors: torch.Tensor  # a buffer, with config.code_dim

    def __init__(self, config: TransformerPriorConfig) -> None:
        super().__init__()
        self.config = config
        self.codebook_size = config.codebook_size
        self.num_positions = config.num_positions
        self.d_model = d_model = config.d_model
        self.token_embedding: nn.Module
        if config.code_dim is None:
            self.token_embedding = nn.Embedding(self.codebook_size, d_model)
        else:
            self.register_buffer("code_vectors", torch.zeros(self.codebook_size, config.code_dim))
            self.token_embedding = nn.Linear(config.code_dim, d_model)
        self.start_token = nn.Parameter(torch.randn(d_model) * 0.02)
        self.position_embedding = nn.Parameter(torch.randn(self.num_positions, d_model) * 0.02)
        self.input_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(d_model, config.num_heads, config.dropout) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.codebook_size)

    def set_code_vectors(self, vectors: torch.Tensor) -> None:
        """
        The codebook vectors the codes are embedded through, ``(K, code_dim)``,
        stored divided by their mean norm.
        """
        if tuple(vectors.shape) != tuple(self.code_vectors.shape):
            raise ValueError(f"code vectors have shape {tuple(vectors.shape)}; expected {tuple(self.code_vectors.shape)}")
        vectors = vectors.detach()
        self.code_vectors.copy_(vectors / vectors.norm(dim=1).mean().clamp_min(1e-12))

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """The embeddings of int64 codes, shape ``codes.shape + (d_model,)``."""
        if self.config.code_dim is None:
            return self.token_embedding(codes)
        return self.token_embedding(self.code_vectors[codes])

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        r"""
        The logits of every conditional under teacher forcing.

        :param torch.Tensor codes: integer codes of shape ``(batch, L)`` with
            ``1 <= L <= num_positions``, values in ``[0, K)``.
        :return: ``logits`` of shape ``(batch, L, K)``; ``logits[:, t]``
            parameterizes :math:`p(c_t \mid c_{<t})` and does not depend on
            :math:`c_t, \dots, c_{L-1}` (so the last code only matters to the caller's loss).
        """
        codes = self.check_codes(codes)
        return self.logits(self.inputs(codes[:, :-1]))

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        r"""
        :math:`\log p(c) = \sum_t \log \mathrm{softmax}(\mathrm{logits}_t)[c_t]`, exact, in nats.

        :param torch.Tensor codes: integer codes of shape ``(batch, num_positions)``.
        :return: tensor of shape ``(batch,)``.
        """
        codes = self.check_codes(codes, full_length=True)
        logits = self.logits(self.inputs(codes[:, :-1]))
        return -F.cross_entropy(logits.transpose(1, 2), codes, reduction="none").sum(-1)

    def inputs(self, context: torch.Tensor, start: int = 0, with_start_token: bool = True) -> torch.Tensor:
        r"""
        The transformer's inputs for codes ``context`` ``(batch, n)`` at
        positions ``start, ...``: the start token first (with
        ``with_start_token``), then the embedding of each code, each plus its
        position's embedding.
        """
        embedded = self.embed(context)
        if with_start_token:
            token = self.start_token.to(embedded.dtype).expand(context.shape[0], 1, self.d_model)
            embedded = torch.cat([token, embedded], dim=1)
        positions = self.position_embedding[start : start + embedded.shape[1]]
        return self.input_dropout(embedded + positions)

    def logits(self, inputs: torch.Tensor, cache: Optional[KeyValueCache] = None) -> torch.Tensor:
        """
        The logits ``(batch, n, K)`` of the next code after each of ``n`` input
        positions, which follow the ``cache.length`` positions already in
        ``cache`` (which then holds them too).
        """
        h = inputs
        for layer, block in enumerate(self.blocks):
            h = block(h, cache, layer)
        if cache is not None:
            cache.advance(inputs.shape[1])
        return self.head(self.final_norm(h))

    def new_cache(self, batch_size: int) -> KeyValueCache:
        """An empty :class:`KeyValueCache` for decoding ``batch_size`` sequences."""
        heads = self.config.num_heads
        return KeyValueCache(len(self.blocks), batch_size, heads, self.num_positions, self.d_model // heads, self.start_token)

    @torch.no_grad()
    def sample(
        self, num_samples: int, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
        prefix: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        r"""
        Ancestral sampling with a key/value cache: for :math:`t = n, \dots, L - 1`
        (:math:`L` = ``num_positions``, :math:`n` the prefix's length) draw
        :math:`c_t` from :math:`p(c_t \mid c_{<t})` by the rules of
        :mod:`~pyprobvae.priors.sampling` (temperature, top-k, top-p). The
        start token and the prefix are fed in one pass, every later code in
        one step of one position. Runs in eval mode (no dropout) and restores
        the previous mode; draws from torch's global random generator (seed
        it with :func:`torch.manual_seed`).

        :param int num_samples: sequences to draw (>= 1).
        :param float temperature: :math:`T > 0`; 1 samples the model.
        :param top_k: ``1 <= top_k <= K`` (1 is greedy decoding), or None for all codes.
        :param top_p: the nucleus's probability in ``(0, 1]``, or None for all codes.
        :param prefix: int64 codes ``(num_samples, n)`` with ``0 <= n < L``
            that every sequence starts with (kept unchanged), or None.
        :return: int64 codes of shape ``(num_samples, num_positions)`` on the
            prior's device.
        """
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
        sampling.check_codebook(self.codebook_size)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        device = self.start_token.device
        if prefix is None:
            prefix = torch.empty(num_samples, 0, dtype=torch.long, device=device)
        else:
            prefix = self._check_prefix(prefix, num_samples)
        was_training = self.training
        self.eval()
        try:
            cache = self.new_cache(num_samples)
            codes: List[torch.Tensor] = list(prefix.unbind(1))
            logits = self.logits(self.inputs(prefix), cache)[:, -1]
            while len(codes) < self.num_positions:
                code = next_token(logits, sampling)
                codes.append(code)
                if len(codes) < self.num_positions:
                    logits = self.logits(self.inputs(code[:, None], cache.length, with_start_token=False), cache)[:, -1]
        finally:
            self.train(was_training)
        return torch.stack(codes, 1)

    def _check_prefix(self, prefix: torch.Tensor, num_samples: int) -> torch.Tensor:
        if prefix.dim() != 2 or prefix.shape[0] != num_samples:
            raise ValueError(f"a prefix must have shape ({num_samples}, n), one row per sample, got {tuple(prefix.shape)}")
        if prefix.shape[1] >= self.num_positions:
            raise ValueError(f"a prefix must be shorter than num_positions = {self.num_positions}, got length {prefix.shape[1]}")
        if prefix.shape[1] == 0:
            return prefix.to(device=self.start_token.device, dtype=torch.long)
        return self.check_codes(prefix, values=True)

    def check_codes(self, codes: torch.Tensor, full_length: bool = False, values: Optional[bool] = None) -> torch.Tensor:
        """
        :param torch.Tensor codes: integer codes of shape ``(batch, L)``.
        :param bool full_length: require ``L == num_positions`` instead of
            ``1 <= L <= num_positions``.
        :param values: check that the codes lie in ``[0, K)``, which reads
            them back from the device; by default only while validation is
            enabled (:mod:`pyprobvae.validation`).
        :raises ValueError: naming what is wrong with ``codes``.
        :return: ``codes`` as int64 on the prior's device.
        """
        if not isinstance(codes, torch.Tensor):
            raise ValueError(f"codes must be a tensor, got {type(codes).__name__}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"codes must have an integer dtype, got {codes.dtype}")
        if codes.dim() != 2:
            raise ValueError(f"codes must be 2-D (batch, length), got shape {tuple(codes.shape)}")
        length = codes.shape[1]
        if full_length and length != self.num_positions:
            raise ValueError(f"codes must have length num_positions = {self.num_positions}, got {length}")
        if not 1 <= length <= self.num_positions:
            raise ValueError(f"codes must have length between 1 and num_positions = {self.num_positions}, got {length}")
        if values is None:
            values = is_validation_enabled()
        if values and codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"codes must lie in [0, {self.codebook_size}), got values in [{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.to(device=self.start_token.device, dtype=torch.long)
