r"""
How an autoregressive prior draws each code (or character) from its
conditional :math:`p(c_t \mid c_{<t}) = \mathrm{softmax}(\ell)`, the rules
every prior over codes shares:

* **temperature** :math:`T`: draw from :math:`\mathrm{softmax}(\ell / T)`;
  :math:`T < 1` sharpens the conditional, :math:`T > 1` flattens it;
* **top-k** (Fan et al. 2018): keep the :math:`k` largest logits and
  renormalize over them (:math:`k = 1` is greedy decoding);
* **top-p**, nucleus sampling (Holtzman et al. 2020): keep the smallest set
  of most likely codes whose probability (after the temperature) reaches
  :math:`p`, always at least the most likely one, and renormalize over it.

With ``T = 1`` and neither top-k nor top-p the draws are exact samples of
the prior; each rule trades diversity for typical samples.

**References**

- Fan et al. 2018, "Hierarchical Neural Story Generation".
- Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration".
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..config import Config, setting


@dataclass
class SamplingConfig(Config):
    """How each code is drawn from a learned prior's conditional."""

    temperature: float = setting(1.0, above=0, maximum=100)
    """T: draw from softmax(logits / T); 1 samples the prior itself."""
    top_k: Optional[int] = setting(None, minimum=1, maximum=65536)
    """Draw from the k most likely codes only (1: greedy); None: from all."""
    top_p: Optional[float] = setting(None, above=0, maximum=1)
    """Nucleus sampling: draw from the most likely codes that together hold probability p; None (or 1): from all."""

    def check_codebook(self, codebook_size: int) -> None:
        """:raises ValueError: when ``top_k`` exceeds the number of codes."""
        if self.top_k is not None and self.top_k > codebook_size:
            raise ValueError(f"top_k must be in [1, {codebook_size}] for {codebook_size} codes, got {self.top_k}")


def next_token(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """
    One draw per row of ``logits`` ``(batch, K)`` by the rules of this
    module's docstring, from torch's global random generator.

    :return: int64 codes of shape ``(batch,)``.
    """
    logits = logits / sampling.temperature
    if sampling.top_k is not None:
        logits = keep_top_k(logits, sampling.top_k)
    if sampling.top_p is not None and sampling.top_p < 1:
        logits = keep_top_p(logits, sampling.top_p)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)


def keep_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``logits`` with all but the ``k`` largest of each row set to ``-inf`` (exactly ``k`` kept under ties)."""
    values, indices = logits.topk(min(k, logits.shape[-1]), dim=-1)
    return torch.full_like(logits, -math.inf).scatter(-1, indices, values)


def keep_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    r"""
    ``logits`` with every code outside each row's nucleus set to ``-inf``:
    in order of decreasing probability, a code is kept when the codes before
    it hold less than ``p`` (so the most likely code is always kept, and the
    kept codes hold at least ``p``).
    """
    ordered, order = logits.sort(dim=-1, descending=True)
    probs = torch.softmax(ordered, dim=-1)
    before = probs.cumsum(-1) - probs
    ordered = ordered.masked_fill(before >= p, -math.inf)
    return torch.full_like(logits, -math.inf).scatter(-1, order, ordered)
