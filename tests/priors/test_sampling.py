"""
Tests of the sampling rules shared by the priors over codes
(pyprobvae.priors.sampling): top-k, nucleus (top-p) and temperature, against
their definitions computed by brute force.
"""

import math

import pytest
import torch

from pyprobvae.config import ConfigError
from pyprobvae.priors.sampling import SamplingConfig, keep_top_k, keep_top_p, next_token


def _nucleus_by_brute_force(probs, p):
    """The smallest set of most likely codes holding at least p, by adding codes in order of probability."""
    kept, mass = set(), 0.0
    for index in sorted(range(len(probs)), key=lambda i: -probs[i]):
        if mass >= p:
            break
        kept.add(index)
        mass += probs[index]
    return kept


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.75, 0.9, 0.999])
def test_top_p_keeps_the_nucleus(p):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 9, generator=generator, dtype=torch.float64) * 2
    kept = keep_top_p(logits, p)
    probs = torch.softmax(logits, -1)
    for row in range(len(logits)):
        expected = _nucleus_by_brute_force(probs[row].tolist(), p)
        assert set(torch.isfinite(kept[row]).nonzero().flatten().tolist()) == expected
        assert probs[row, sorted(expected)].sum() >= p - 1e-12
    finite = torch.isfinite(kept)
    assert torch.equal(kept[finite], logits[finite])  # kept logits unchanged


def test_top_p_always_keeps_the_most_likely_code():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    kept = keep_top_p(logits, 0.01)
    assert torch.isfinite(kept).sum(-1).tolist() == [1, 1]
    assert kept.argmax(-1).tolist() == [0, 2]


def test_top_k_keeps_exactly_k_under_ties():
    kept = keep_top_k(torch.zeros(3, 6), 4)
    assert torch.isfinite(kept).sum(-1).tolist() == [4, 4, 4]


def test_next_token_draws_from_the_renormalized_nucleus():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0])
    probs = torch.softmax(logits / 0.8, -1)
    nucleus = sorted(_nucleus_by_brute_force(probs.tolist(), 0.7))
    expected = torch.zeros(5)
    expected[nucleus] = probs[nucleus] / probs[nucleus].sum()
    n = 40000
    torch.manual_seed(0)
    draws = next_token(logits.expand(n, -1), SamplingConfig(temperature=0.8, top_p=0.7))
    frequencies = torch.bincount(draws, minlength=5) / n
    # binomial proportions: standard error sqrt(q (1 - q) / n); codes outside the nucleus never drawn
    tolerance = 5 * torch.sqrt(expected * (1 - expected) / n)
    assert torch.all((frequencies - expected).abs() <= tolerance), (frequencies, expected)


def test_plain_settings_draw_from_the_softmax_itself():
    logits = torch.tensor([0.5, -0.5, 1.0])
    n = 40000
    torch.manual_seed(0)
    frequencies = torch.bincount(next_token(logits.expand(n, -1), SamplingConfig()), minlength=3) / n
    probs = torch.softmax(logits, -1)
    assert torch.all((frequencies - probs).abs() < 5 * torch.sqrt(probs * (1 - probs) / n))


@pytest.mark.parametrize(
    "settings", [dict(temperature=0.0), dict(temperature=math.nan), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.01)]
)
def test_bad_settings_raise(settings):
    with pytest.raises(ConfigError):
        SamplingConfig(**settings)


def test_top_k_beyond_the_codebook_raises():
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 4\]"):
        SamplingConfig(top_k=5).check_codebook(4)
