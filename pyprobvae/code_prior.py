"""
Stage 2 of a VQ-VAE: an autoregressive prior over sequences of discrete codes.

A VQ-VAE encodes each example to ``seq_len`` code indices ``c = (c_0, ...,
c_{L-1})`` in ``{0, ..., K-1}`` (raster order for images). Its uniform prior
is replaced after training by a learned one, factorized autoregressively:

    p(c) = prod_{t=0}^{L-1} p(c_t | c_<t),

each factor a softmax over the ``K`` codes computed by a small causal
transformer (:class:`TransformerPrior`). Because every factor is normalized,
``log p(c)`` is exact, not a bound, and with the decoder gives a likelihood
bound for the VQ-VAE: with the deterministic encoder as variational
posterior, ``log p(x) >= log p(x | z_q(c)) + log p(c)``, where ``z_q(c)`` are
the codebook vectors of the codes ``c`` of ``x``.

Training (:func:`train_prior`) uses teacher forcing: the true codes are fed
in, shifted right behind a learned start token, so a single forward pass
yields all ``L`` conditionals and the loss ``-log p(c)`` (nats per sequence).
Sampling (:meth:`TransformerPrior.sample`) is ancestral, one code at a time
from ``softmax(logits / T)``: a temperature ``T < 1`` sharpens each
conditional and ``T > 1`` flattens it; top-k sampling renormalizes over the
``k`` largest logits only, so unlikely codes are never drawn (``k = 1`` is
greedy decoding).
"""

import math
import time
from typing import List, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import iterate_minibatches
from .infer.training import NonFiniteLossError, _Random

# Batch size of the held-out NLL, which needs no gradients.
EVAL_BATCH_SIZE = 1000


class TransformerPrior(nn.Module):
    """
    A causal transformer over code sequences: ``p(c) = prod_t p(c_t | c_<t)``
    with ``p(c_t | c_<t) = softmax(logits_t)`` and ``logits_t`` a function of
    ``c_<t`` only.

    The input at position ``t`` is a learned start token for ``t = 0`` and
    the embedding of ``c_{t-1}`` otherwise, plus a learned embedding of the
    position ``t``; pre-norm transformer encoder layers with a causal
    attention mask (position ``t`` attends to positions ``<= t``), a final
    LayerNorm and a linear head map it to ``logits_t``.

    :param int num_codes: codebook size ``K`` (>= 1).
    :param int seq_len: number of codes per example ``L`` (>= 1).
    :param int d_model: width of the embeddings and layers; divisible by
        ``num_heads``.
    :param int num_heads: attention heads per layer (>= 1).
    :param int num_layers: transformer layers (>= 1).
    :param float dropout: dropout rate in ``[0, 1)`` of the layers.
    """

    def __init__(
        self,
        num_codes: int,
        seq_len: int,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        dropout: float = 0.1,
    ):
        super().__init__()
        _check_architecture(num_codes, seq_len, d_model, num_heads, num_layers, dropout)
        self.num_codes = num_codes
        self.seq_len = seq_len
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.dropout = dropout
        self.token_embedding = nn.Embedding(num_codes, d_model)
        self.start_token = nn.Parameter(torch.randn(d_model) * 0.02)
        self.position_embedding = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward=4 * d_model, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        # Nested tensors only serve padding masks, which causal sequences of
        # equal length do not need (and norm_first layers do not support).
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_codes)

    @property
    def spec(self) -> dict:
        """The constructor's keyword arguments, JSON-able, to rebuild the prior from a checkpoint."""
        return dict(
            num_codes=self.num_codes, seq_len=self.seq_len, d_model=self.d_model,
            num_heads=self.num_heads, num_layers=self.num_layers, dropout=self.dropout,
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """
        The logits of every conditional under teacher forcing.

        :param torch.Tensor codes: integer codes of shape ``(batch, L)`` with
            ``1 <= L <= seq_len``, values in ``[0, K)``.
        :return: ``logits`` of shape ``(batch, L, K)``; ``logits[:, t]``
            parameterizes ``p(c_t | c_<t)`` and does not depend on ``c_t, ...,
            c_{L-1}`` (so the last code only matters to the caller's loss).
        """
        codes = self._check_codes(codes)
        return self._logits(codes[:, :-1])

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """
        ``log p(c) = sum_t log softmax(logits_t)[c_t]``, exact, in nats.

        :param torch.Tensor codes: integer codes of shape ``(batch, seq_len)``.
        :return: tensor of shape ``(batch,)``.
        """
        codes = self._check_codes(codes, full_length=True)
        log_probs = torch.log_softmax(self._logits(codes[:, :-1]), dim=-1)
        return log_probs.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(-1)

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0, top_k: Optional[int] = None) -> torch.Tensor:
        """
        Ancestral sampling: for ``t = 0, ..., seq_len - 1`` draw ``c_t`` from
        ``softmax(logits_t / temperature)``, restricted to (and renormalized
        over) the ``top_k`` largest logits if given. Runs in eval mode (no
        dropout) and restores the previous mode; draws from torch's global
        random generator (seed it with :func:`torch.manual_seed`). Step ``t``
        reruns the network on the whole prefix (no key/value cache), so a
        sample costs ``seq_len`` passes: fine for short code sequences.

        :param int num_samples: sequences to draw (>= 1).
        :param float temperature: ``T > 0``, finite; 1 samples the model.
        :param top_k: ``1 <= top_k <= K`` (``1`` is greedy decoding), or None
            for all codes.
        :type top_k: int or None
        :return: int64 codes of shape ``(num_samples, seq_len)`` on the
            prior's device.
        """
        _check_sampling(num_samples, temperature, top_k, self.num_codes)
        was_training = self.training
        self.eval()
        try:
            codes = torch.empty(num_samples, 0, dtype=torch.long, device=self.start_token.device)
            for _ in range(self.seq_len):
                logits = self._logits(codes)[:, -1] / temperature
                if top_k is not None:
                    logits = _keep_top_k(logits, top_k)
                codes = torch.cat([codes, torch.multinomial(torch.softmax(logits, dim=-1), 1)], dim=1)
        finally:
            self.train(was_training)
        return codes

    def _check_codes(self, codes: torch.Tensor, full_length: bool = False) -> torch.Tensor:
        """
        :param torch.Tensor codes: integer codes of shape ``(batch, L)``.
        :param bool full_length: require ``L == seq_len`` instead of
            ``1 <= L <= seq_len``.
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
        if full_length and length != self.seq_len:
            raise ValueError(f"codes must have length seq_len = {self.seq_len}, got {length}")
        if not 1 <= length <= self.seq_len:
            raise ValueError(f"codes must have length between 1 and seq_len = {self.seq_len}, got {length}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.num_codes):
            raise ValueError(
                f"codes must lie in [0, {self.num_codes}), got values in [{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.to(device=self.start_token.device, dtype=torch.long)

    def _logits(self, context: torch.Tensor) -> torch.Tensor:
        """
        :param torch.Tensor context: int64 codes ``c_0 .. c_{n-1}`` of shape
            ``(batch, n)``, ``n < seq_len``.
        :return: logits of ``p(c_t | c_<t)`` for ``t = 0 .. n``, shape
            ``(batch, n + 1, K)``.
        """
        length = context.shape[1] + 1
        start = self.start_token.expand(context.shape[0], 1, self.d_model)
        inputs = torch.cat([start, self.token_embedding(context)], dim=1) + self.position_embedding[:length]
        # The explicit mask (-inf above the diagonal) is what the fused eval
        # fast path applies; is_causal=True is the matching hint for the others.
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=inputs.device, dtype=inputs.dtype)
        return self.head(self.encoder(inputs, mask=mask, is_causal=True))


def _check_architecture(num_codes, seq_len, d_model, num_heads, num_layers, dropout):
    checks = [
        (num_codes >= 1, f"num_codes must be >= 1, got {num_codes}"),
        (seq_len >= 1, f"seq_len must be >= 1, got {seq_len}"),
        (d_model >= 1, f"d_model must be >= 1, got {d_model}"),
        (num_heads >= 1, f"num_heads must be >= 1, got {num_heads}"),
        (num_layers >= 1, f"num_layers must be >= 1, got {num_layers}"),
        (0 <= dropout < 1, f"dropout must be in [0, 1), got {dropout}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")


def _check_sampling(num_samples, temperature, top_k, num_codes):
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature}")
    if top_k is not None and not 1 <= top_k <= num_codes:
        raise ValueError(f"top_k must be in [1, num_codes = {num_codes}], got {top_k}")


def _keep_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``logits`` with all but the ``k`` largest of each row set to ``-inf`` (exactly ``k`` kept under ties)."""
    values, indices = logits.topk(k, dim=-1)
    return torch.full_like(logits, -math.inf).scatter(-1, indices, values)


@torch.no_grad()
def _dataset_nll(prior: TransformerPrior, codes: torch.Tensor) -> float:
    """Mean ``-log p(c)`` over the rows of ``codes`` (nats per sequence), in batches."""
    batches = iterate_minibatches(len(codes), EVAL_BATCH_SIZE, False, device=codes.device)
    return float(sum(-prior.log_prob(codes[idx]).sum() for idx in batches)) / len(codes)


def _check_training(epochs, batch_size, lr, num_train):
    checks = [
        (epochs >= 1, f"epochs must be >= 1, got {epochs}"),
        (batch_size >= 1, f"batch_size must be >= 1, got {batch_size}"),
        (lr > 0, f"lr must be > 0, got {lr}"),
        (num_train >= 1, "train_codes holds no sequences"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def train_prior(
    prior: TransformerPrior,
    train_codes: torch.Tensor,
    test_codes: Optional[torch.Tensor] = None,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    validation_codes: Optional[torch.Tensor] = None,
) -> List[dict]:
    """
    Fit ``prior`` by maximum likelihood: minibatch descent with
    :class:`torch.optim.Adam` (no weight decay, as ``"adam"`` in
    :class:`~pyprobvae.infer.training.TrainConfig`; dropout regularizes) on

        loss = -mean_n log p(c_n)   (nats per sequence),

    with teacher forcing. The codes are moved to the prior's device; batches
    are shuffled with a generator seeded by ``seed``, which also seeds the
    global generators as :func:`~pyprobvae.infer.training.fit` does (torch's
    drives dropout), so a prior initialized the same way gives the same
    numbers. After each epoch the held-out NLL is computed in eval mode.
    A NaN or infinite loss stops training before the parameters change.

    With ``validation_codes`` (held out from the training codes, not the
    test codes) training stops early in effect: the prior ends with the
    parameters of the epoch with the lowest validation NLL. A transformer
    over the codes of a small data set overfits within tens of epochs
    (on digits, 1437 sequences, the held-out NLL rises after about 10).

    :param TransformerPrior prior: the prior to train, in place.
    :param torch.Tensor train_codes: integer codes ``(N, seq_len)``, N >= 1.
    :param test_codes: held-out codes ``(M, seq_len)``, or None.
    :type test_codes: torch.Tensor or None
    :param int epochs: passes over the training codes (>= 1).
    :param int batch_size: sequences per step (>= 1).
    :param float lr: learning rate (> 0).
    :param int seed: seed of the shuffling and dropout.
    :param bool progress: show a tqdm progress bar with the running NLL.
    :param validation_codes: codes ``(V, seq_len)`` that choose the epoch
        whose parameters the prior keeps, or None to keep the last.
    :type validation_codes: torch.Tensor or None
    :raises NonFiniteLossError: on a NaN or infinite loss.
    :return: the history, one dict per epoch with ``epoch``, ``train_nll``
        (running mean over the epoch, in train mode), ``validation_nll`` and
        ``test_nll`` (if given) in nats per sequence, and ``seconds``; with
        validation codes, the kept epoch's record has ``"kept": True``. The
        prior is left in eval mode.
    """
    train_codes = prior._check_codes(train_codes, full_length=True)
    test_codes = None if test_codes is None else prior._check_codes(test_codes, full_length=True)
    if validation_codes is not None:
        validation_codes = prior._check_codes(validation_codes, full_length=True)
    best_nll, best_state, best_record = math.inf, None, None
    _check_training(epochs, batch_size, lr, len(train_codes))
    device = train_codes.device
    random = _Random(seed, device)
    optimizer = torch.optim.Adam(prior.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(train_codes) / batch_size)
    history = []
    for epoch in range(1, epochs + 1):
        prior.train()
        started = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
        nll_sum, seen = 0.0, 0
        for step, idx in enumerate(iterate_minibatches(len(train_codes), batch_size, True, random.shuffle, device)):
            nll = _prior_step(prior, optimizer, train_codes[idx], epoch, step)
            nll_sum += float(nll) * len(idx)
            seen += len(idx)
            bar.update()
            if step % 10 == 0:
                bar.set_postfix(nll=f"{nll_sum / seen:.3f}", refresh=False)
        bar.close()
        record = {"epoch": epoch, "train_nll": nll_sum / len(train_codes)}
        prior.eval()
        if validation_codes is not None:
            record["validation_nll"] = _dataset_nll(prior, validation_codes)
            if record["validation_nll"] < best_nll:
                best_nll, best_record = record["validation_nll"], record
                best_state = {name: value.detach().clone() for name, value in prior.state_dict().items()}
        if test_codes is not None:
            record["test_nll"] = _dataset_nll(prior, test_codes)
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if progress:
            tqdm.write(_format_record(record, epochs))
    if best_state is not None:
        prior.load_state_dict(best_state)
        best_record["kept"] = True
    prior.eval()
    return history


def _prior_step(prior, optimizer, codes, epoch, step) -> float:
    """One descent step on ``-mean log p(codes)``; returns that loss."""
    loss = -prior.log_prob(codes).mean()
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"the prior's loss is {value} at epoch {epoch}, step {step + 1}; training stopped. "
            "Try a lower learning rate."
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value


def _format_record(record, epochs):
    text = f"epoch {record['epoch']:>3}/{epochs}  train NLL {record['train_nll']:9.3f}"
    if "validation_nll" in record:
        text += f"  validation NLL {record['validation_nll']:9.3f}"
    if "test_nll" in record:
        text += f"  test NLL {record['test_nll']:9.3f}"
    return text + f"  nats/sequence  ({record['seconds']:.1f} s)"
