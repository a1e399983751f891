"""
Tests of the likelihoods p(x|z) (pyprobvae.likelihoods) against per-pixel
brute force written with numpy.
"""

import math

import numpy as np
import pytest
import torch

from pyprobvae.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    QuantizedCategorical,
    TokenLikelihood,
    make_likelihood,
)

SHAPE = (1, 3, 4)  # 12 pixels
BATCH = 5


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------ Bernoulli


def test_bernoulli_log_prob_against_brute_force():
    rng = _rng(0)
    logits = rng.normal(0, 3, size=(BATCH, 12))
    x = rng.integers(0, 2, size=(BATCH, 12)).astype(np.float64)
    lik = BernoulliLikelihood(SHAPE)
    assert lik.num_outputs == 12
    p = lik(torch.from_numpy(logits))
    assert p.batch_shape == (BATCH,) and p.event_shape == SHAPE
    log_prob = p.log_prob(torch.from_numpy(x).reshape(BATCH, *SHAPE))
    assert log_prob.shape == (BATCH,)

    brute = np.zeros(BATCH)
    for n in range(BATCH):
        for i in range(12):
            prob = 1 / (1 + math.exp(-logits[n, i]))
            brute[n] += math.log(prob) if x[n, i] == 1 else math.log(1 - prob)
    np.testing.assert_allclose(log_prob.numpy(), brute, rtol=1e-10)
    np.testing.assert_allclose(lik(torch.from_numpy(logits)).mean.reshape(BATCH, 12).numpy(), 1 / (1 + np.exp(-logits)), rtol=1e-12)


def test_bernoulli_log_prob_is_finite_for_extreme_logits():
    lik = BernoulliLikelihood((2,))
    logits = torch.tensor([[80.0, -80.0]])
    log_prob = lik(logits).log_prob(torch.tensor([[0.0, 1.0]]))
    # log sigmoid(-80) = -80 - log(1 + e^-80), twice
    torch.testing.assert_close(log_prob, torch.tensor([-160.0]))


# ------------------------------------------------------------ Gaussian


@pytest.mark.parametrize("scale", [0.05, 0.3, 2.0])
def test_gaussian_log_prob_against_brute_force(scale):
    rng = _rng(1)
    loc = rng.normal(0.5, 0.3, size=(BATCH, 12))
    x = rng.uniform(0, 1, size=(BATCH, 12))
    lik = GaussianLikelihood(SHAPE, scale=scale).double()
    torch.testing.assert_close(lik.scale, torch.tensor(scale, dtype=torch.float64), rtol=1e-6, atol=0)
    p = lik(torch.from_numpy(loc))
    log_prob = p.log_prob(torch.from_numpy(x).reshape(BATCH, *SHAPE))
    assert log_prob.shape == (BATCH,)
    s = float(lik.scale)
    brute = [
        sum(-0.5 * ((x[n, i] - loc[n, i]) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi) for i in range(12))
        for n in range(BATCH)
    ]
    np.testing.assert_allclose(log_prob.numpy(), brute, rtol=1e-10)
    np.testing.assert_allclose(lik(torch.from_numpy(loc)).mean.reshape(BATCH, 12).numpy(), loc)


def test_gaussian_learned_scale_is_a_parameter_and_fixed_scale_is_not():
    fixed = GaussianLikelihood(SHAPE, scale=0.2)
    learned = GaussianLikelihood(SHAPE, scale=0.2, learn_scale=True)
    assert list(fixed.parameters()) == []
    assert "fixed_scale" in dict(fixed.named_buffers())  # still follows .to(device) and the state dict
    assert [name for name, _ in learned.named_parameters()] == ["raw_scale"]
    torch.testing.assert_close(learned.scale, fixed.scale)

    # the gradient of the log-likelihood reaches the learned scale: with residuals
    # r, d/d sigma sum log N(r; 0, sigma) = -n/sigma + sum r^2 / sigma^3
    x = torch.rand(BATCH, *SHAPE, generator=torch.Generator().manual_seed(0))
    loc = torch.full((BATCH, 12), 0.5)
    learned(loc).log_prob(x).sum().backward()
    sigma = float(learned.scale.detach())
    r2 = float(((x.reshape(BATCH, 12) - loc) ** 2).sum())
    d_sigma = -BATCH * 12 / sigma + r2 / sigma**3
    d_raw = d_sigma * float(torch.sigmoid(learned.raw_scale.detach()))  # d softplus(u)/du = sigmoid(u)
    torch.testing.assert_close(learned.raw_scale.grad, torch.tensor(d_raw), rtol=1e-4, atol=1e-3)


def test_gaussian_learned_scale_is_bounded_below():
    lik = GaussianLikelihood(SHAPE, scale=0.1, learn_scale=True, min_scale=0.01)
    with torch.no_grad():
        lik.raw_scale.fill_(-1e4)
    assert float(lik.scale.detach()) == pytest.approx(0.01)


def test_gaussian_rejects_non_positive_scale():
    for scale in (0.0, -1.0):
        with pytest.raises(ValueError, match="scale"):
            GaussianLikelihood(SHAPE, scale=scale)


def test_gaussian_fixed_scale_below_min_scale_is_kept():
    lik = GaussianLikelihood(SHAPE, scale=1e-4)
    assert float(lik.scale) == pytest.approx(1e-4, rel=1e-3)


def test_gaussian_large_fixed_scale():
    assert float(GaussianLikelihood(SHAPE, scale=1000.0).scale) == pytest.approx(1000.0)


# ------------------------------------------------------------ categorical


def test_categorical_log_prob_against_brute_force():
    L = 5
    rng = _rng(2)
    logits = rng.normal(0, 2, size=(BATCH, 12, L))
    levels = rng.integers(0, L, size=(BATCH, 12))
    x = (levels / (L - 1)).astype(np.float32)  # float32 data, as the loaders produce
    lik = CategoricalLikelihood(SHAPE, L)
    assert lik.num_outputs == 12 * L
    p = lik(torch.from_numpy(logits).reshape(BATCH, 12 * L))
    assert p.batch_shape == (BATCH,) and p.event_shape == SHAPE
    log_prob = p.log_prob(torch.from_numpy(x).double().reshape(BATCH, *SHAPE))
    assert log_prob.shape == (BATCH,)
    brute = np.zeros(BATCH)
    for n in range(BATCH):
        for i in range(12):
            row = logits[n, i]
            brute[n] += row[levels[n, i]] - math.log(sum(math.exp(v) for v in row))
    np.testing.assert_allclose(log_prob.numpy(), brute, rtol=1e-10)


def test_categorical_likelihood_on_digits_levels():
    """17 levels, values k/16 in float32: every level is read back exactly."""
    L = 17
    logits = torch.randn(L, L, generator=torch.Generator().manual_seed(0))
    x = (torch.arange(L, dtype=torch.float32) / 16).reshape(L, 1)
    lik = CategoricalLikelihood((1,), L)
    lik.check_data(x)
    log_prob = lik(logits).log_prob(x)
    torch.testing.assert_close(log_prob, logits.log_softmax(-1).diagonal())


def test_categorical_reads_nearly_on_grid_values_as_the_nearest_level():
    """check_data accepts values within 1e-3 of a level (float rounding);
    log_prob must read them as that level, from either side."""
    L = 11
    lik = CategoricalLikelihood((L,), L)
    logits = torch.randn(1, L * L, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = (torch.arange(L, dtype=torch.float64) / (L - 1)).unsqueeze(0)
    reference = lik(logits).log_prob(exact)
    torch.testing.assert_close(reference, logits.reshape(L, L).log_softmax(-1).diagonal().sum().reshape(1))
    for offset in (-1e-5, 1e-5):
        nearby = (exact + offset).clamp(0, 1)
        lik.check_data(nearby)
        torch.testing.assert_close(lik(logits).log_prob(nearby), reference, rtol=0, atol=0)


def test_quantized_categorical_normalized_mean_and_grid():
    L = 7
    logits = torch.randn(3, 4, L, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = QuantizedCategorical(logits)
    assert q.batch_shape == (3, 4) and q.event_shape == ()
    grid = torch.arange(L, dtype=torch.float64) / (L - 1)
    log_probs = torch.stack([q.log_prob(torch.full((3, 4), float(v), dtype=torch.float64)) for v in grid])
    torch.testing.assert_close(log_probs.exp().sum(0), torch.ones(3, 4, dtype=torch.float64), rtol=0, atol=1e-12)
    probs = logits.softmax(-1)
    torch.testing.assert_close(q.mean, (probs * grid).sum(-1), rtol=0, atol=1e-12)
    expanded = q.expand((2, 3, 4))
    assert expanded.batch_shape == (2, 3, 4)
    torch.testing.assert_close(expanded.mean[1], q.mean)


def _chi2_df4_survival(x):
    """P(chi^2_4 > x) = exp(-x/2) (1 + x/2) (closed form for 4 degrees of freedom)."""
    return math.exp(-x / 2) * (1 + x / 2)


def test_quantized_categorical_samples_on_grid_with_softmax_frequencies():
    L = 5
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
    q = QuantizedCategorical(logits)
    n = 20000
    torch.manual_seed(0)
    samples = q.sample((n,))
    assert samples.shape == (n,) and samples.dtype == logits.dtype
    assert ((samples >= 0) & (samples <= 1)).all()
    scaled = samples * (L - 1)
    assert (scaled - scaled.round()).abs().max() < 1e-6
    counts = torch.bincount(scaled.round().long(), minlength=L).double()
    expected = n * logits.softmax(-1).double()
    # Pearson chi-square with L - 1 = 4 degrees of freedom; reject at p < 1e-6
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert _chi2_df4_survival(stat) > 1e-6, (stat, counts, expected)
    # and every level within 5 binomial standard errors
    p = logits.softmax(-1).double()
    assert ((counts / n - p).abs() <= 5 * (p * (1 - p) / n).sqrt()).all()
    # sanity of the test: a wrong distribution (uniform) is rejected
    uniform_stat = float(((counts - n / L) ** 2 / (n / L)).sum())
    assert _chi2_df4_survival(uniform_stat) < 1e-6


def test_categorical_likelihood_samples_have_data_shape():
    lik = CategoricalLikelihood(SHAPE, 4)
    x = lik(torch.zeros(BATCH, 12 * 4)).sample()
    assert x.shape == (BATCH, *SHAPE)
    lik.check_data(x)  # samples are valid data


# ------------------------------------------------------------ data checks


@pytest.mark.parametrize(
    "lik",
    [BernoulliLikelihood(SHAPE), GaussianLikelihood(SHAPE), CategoricalLikelihood(SHAPE, 17)],
    ids=["bernoulli", "gaussian", "categorical"],
)
def test_check_data_names_shape_and_nan(lik):
    good = torch.zeros(BATCH, *SHAPE)
    lik.check_data(good)
    with pytest.raises(ValueError, match=r"shape \(5, 12\).*\(batch, 1, 3, 4\)"):
        lik.check_data(torch.zeros(BATCH, 12), "my batch")
    with pytest.raises(ValueError, match="my batch"):
        lik.check_data(torch.zeros(BATCH, 1, 4, 3), "my batch")
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    bad[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="2 NaN or infinite"):
        lik.check_data(bad, "training data")


def test_bernoulli_check_data_rejects_non_binary():
    lik = BernoulliLikelihood(SHAPE)
    x = torch.zeros(BATCH, *SHAPE)
    x[0, 0, 0, :3] = torch.tensor([0.5, 1.0, 0.25])
    with pytest.raises(ValueError, match="binary") as info:
        lik.check_data(x, "training data")
    message = str(info.value)
    assert "training data" in message and "2 values" in message and "binarize" in message
    lik.check_data((x > 0.4).float())


def test_categorical_check_data_rejects_off_grid():
    lik = CategoricalLikelihood(SHAPE, 17)
    x = torch.zeros(BATCH, *SHAPE)
    x[0, 0, 0, 0] = 0.5 / 16  # between two levels
    x[0, 0, 0, 1] = 1.5  # outside [0, 1]
    x[0, 0, 0, 2] = -1 / 16  # on the lattice, but negative
    with pytest.raises(ValueError, match="off that grid") as info:
        lik.check_data(x, "test data")
    message = str(info.value)
    assert "17 levels" in message and "test data" in message and "3 values" in message
    lik.check_data(torch.full((BATCH, *SHAPE), 3 / 16))


def test_gaussian_check_data_accepts_real_values():
    GaussianLikelihood(SHAPE).check_data(torch.randn(BATCH, *SHAPE) * 5)


# ------------------------------------------------------------ construction


def test_make_likelihood():
    assert isinstance(make_likelihood("bernoulli", SHAPE), BernoulliLikelihood)
    g = make_likelihood("gaussian", SHAPE, gaussian_scale=0.25, learn_scale=True)
    assert isinstance(g, GaussianLikelihood) and g.learn_scale and float(g.scale.detach()) == pytest.approx(0.25)
    c = make_likelihood("categorical", SHAPE, num_levels=9)
    assert isinstance(c, CategoricalLikelihood) and c.num_outputs == 9 * 12
    with pytest.raises(ValueError, match="num_levels"):
        make_likelihood("categorical", SHAPE)
    with pytest.raises(ValueError, match="'poisson'") as info:
        make_likelihood("poisson", SHAPE)
    assert all(name in str(info.value) for name in LIKELIHOODS)
    with pytest.raises(ValueError, match="num_levels >= 2"):
        CategoricalLikelihood(SHAPE, 1)


# ------------------------------------------------------------ tokens


def test_token_log_prob_against_brute_force():
    V, T = 6, 4
    rng = _rng(3)
    logits = rng.normal(0, 2, size=(BATCH, T, V))
    tokens = rng.integers(0, V, size=(BATCH, T))
    lik = TokenLikelihood((T,), V)
    assert lik.num_outputs == T * V and lik.outputs_per_dim == V
    p = lik(torch.from_numpy(logits).reshape(BATCH, T * V))
    assert p.batch_shape == (BATCH,) and p.event_shape == (T,)
    log_prob = p.log_prob(torch.from_numpy(tokens))
    assert log_prob.shape == (BATCH,)
    brute = np.zeros(BATCH)
    for n in range(BATCH):
        for t in range(T):
            row = logits[n, t]
            brute[n] += row[tokens[n, t]] - math.log(sum(math.exp(v) for v in row))
    np.testing.assert_allclose(log_prob.numpy(), brute, rtol=1e-10)


def test_token_decoded_is_argmax_and_samples_are_valid_data():
    V, T = 5, 7
    logits = torch.randn(BATCH, T, V, generator=torch.Generator().manual_seed(0))
    lik = TokenLikelihood((T,), V)
    p = lik(logits.reshape(BATCH, T * V))
    decoded = lik.decoded(p)
    assert decoded.dtype == torch.int64 and torch.equal(decoded, logits.argmax(-1))
    lik.check_data(decoded)
    lik.check_data(p.sample())
    # the other likelihoods decode to the mean
    bernoulli = BernoulliLikelihood(SHAPE)
    q = bernoulli(torch.zeros(BATCH, 12))
    torch.testing.assert_close(bernoulli.decoded(q), q.mean)


def test_token_check_data_errors():
    lik = TokenLikelihood((4,), 10)
    lik.check_data(torch.tensor([[0, 9, 3, 4]]))
    lik.check_data(torch.tensor([[0, 9, 3, 4]], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"shape \(1, 5\).*\(batch, 4\)"):
        lik.check_data(torch.zeros(1, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer token ids.*my text.*torch.float32"):
        lik.check_data(torch.zeros(1, 4), "my text")
    with pytest.raises(ValueError, match=r"ids in \[0, 9\], but my text has 2 ids outside"):
        lik.check_data(torch.tensor([[-1, 10, 3, 4]]), "my text")


def test_make_token_likelihood():
    lik = make_likelihood("tokens", (64,), num_levels=96)
    assert isinstance(lik, TokenLikelihood) and lik.num_outputs == 64 * 96
    assert "tokens" in LIKELIHOODS
    with pytest.raises(ValueError, match="vocabulary size"):
        make_likelihood("tokens", (64,))
    with pytest.raises(ValueError, match="vocab_size >= 2"):
        TokenLikelihood((64,), 1)
