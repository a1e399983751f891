"""
Tests of the causal transformer prior over VQ-VAE code sequences
(pyprobvae.code_prior): causality, exact normalization, sampling, and
learning a Markov chain to its entropy.
"""

import json
import math

import pytest
import torch

from pyprobvae.infer import (
    NonFiniteLossError,
    PriorTrainConfig,
    prior_training,
    train_prior,
)
from pyprobvae.priors import TransformerPrior, TransformerPriorConfig
from pyprobvae.validation import validation_enabled

pytestmark = pytest.mark.usefixtures("one_thread")


def _prior(codebook_size=5, num_positions=6, dropout=0.0, init_seed=0, **kwargs):
    torch.manual_seed(init_seed)
    kwargs = dict(dict(d_model=16, num_heads=2, num_layers=2), **kwargs)
    return TransformerPrior(TransformerPriorConfig(codebook_size, num_positions, dropout=dropout, **kwargs))


def _random_codes(n, prior, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, prior.codebook_size, (n, prior.num_positions), generator=generator)


def _next_logits(prior, prefix):
    """Logits of p(c_t | prefix) through the public forward: the appended code is never looked at."""
    return prior(torch.cat([prefix, prefix.new_zeros(len(prefix), 1)], dim=1))[:, -1]


# --- causality ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval", "eval-no-grad"])
def test_logits_do_not_depend_on_current_or_later_codes(mode):
    # eval under no_grad is where scaled_dot_product_attention may pick another
    # kernel; dropout only acts (and must be 0 to compare) in train mode.
    prior = _prior(dropout=0.0 if mode == "train" else 0.1)
    prior.train(mode == "train")
    codes = _random_codes(8, prior)
    with torch.set_grad_enabled(mode != "eval-no-grad"):
        logits = prior(codes)
        for t in range(prior.num_positions):
            changed = codes.clone()
            changed[:, t:] = (changed[:, t:] + 1 + torch.arange(prior.num_positions - t)) % prior.codebook_size
            new_logits = prior(changed)
            torch.testing.assert_close(new_logits[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-6)
            if t + 1 < prior.num_positions:  # c_t itself does reach the next position
                assert (new_logits[:, t + 1] - logits[:, t + 1]).abs().max() > 1e-4


def test_eval_fast_path_matches_the_reference_path():
    prior = _prior(dropout=0.1).eval()
    codes = _random_codes(8, prior)
    with torch.no_grad():
        fast = prior(codes)
    torch.testing.assert_close(fast, prior(codes).detach(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradient_of_logits_wrt_later_input_embeddings_is_zero(mode):
    prior = _prior().train(mode == "train")
    embedded = []
    prior.token_embedding.register_forward_hook(lambda module, args, out: embedded.append(out) or out.retain_grad())
    codes = _random_codes(4, prior)
    for t in range(prior.num_positions):
        embedded.clear()
        prior(codes)[:, t].sum().backward()
        # embedded[0][:, j] embeds c_j, the input at position j + 1.
        grad = embedded[0].grad.abs().amax(dim=(0, 2))
        assert torch.all(grad[t:] == 0), f"logits at {t} depend on later inputs: {grad}"
        assert torch.all(grad[:t] > 0), f"logits at {t} ignore earlier inputs: {grad}"


def test_forward_on_a_prefix_equals_the_full_forward():
    prior = _prior().eval()
    codes = _random_codes(4, prior)
    with torch.no_grad():
        full = prior(codes)
        for length in range(1, prior.num_positions + 1):
            torch.testing.assert_close(prior(codes[:, :length]), full[:, :length], rtol=0, atol=1e-6)


# --- exact likelihood ---------------------------------------------------------


def test_log_prob_is_the_sum_of_conditional_log_probs():
    prior = _prior(dropout=0.1).eval()
    codes = _random_codes(16, prior)
    with torch.no_grad():
        log_softmax = torch.log_softmax(prior(codes), dim=-1)
        expected = sum(log_softmax[torch.arange(len(codes)), t, codes[:, t]] for t in range(prior.num_positions))
        torch.testing.assert_close(prior.log_prob(codes), expected, rtol=0, atol=1e-5)


def test_probabilities_of_all_sequences_sum_to_one():
    prior = _prior(codebook_size=3, num_positions=3).eval()
    every_sequence = torch.cartesian_prod(*[torch.arange(3)] * 3)
    with torch.no_grad():
        total = prior.log_prob(every_sequence).double().exp().sum()
    assert len(every_sequence) == 27
    assert abs(float(total) - 1) < 1e-5


def test_int32_codes_are_accepted():
    prior = _prior().eval()
    codes = _random_codes(4, prior)
    with torch.no_grad():
        torch.testing.assert_close(prior.log_prob(codes.int()), prior.log_prob(codes), rtol=0, atol=0)


def test_spec_rebuilds_the_prior():
    prior = _prior(dropout=0.1).eval()
    rebuilt = TransformerPrior(TransformerPriorConfig.from_dict(json.loads(json.dumps(prior.config.to_dict()))))
    rebuilt.load_state_dict(prior.state_dict())
    codes = _random_codes(4, prior)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(codes), prior(codes), rtol=0, atol=0)


# --- sampling -----------------------------------------------------------------


def test_sample_shape_range_and_mode_restored():
    prior = _prior(dropout=0.1).train()
    torch.manual_seed(0)
    codes = prior.sample(7)
    assert codes.shape == (7, prior.num_positions) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < prior.codebook_size
    assert prior.training


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_top_k_1_is_greedy_decoding(temperature):
    prior = _prior().eval()
    torch.manual_seed(0)
    codes = prior.sample(5, temperature=temperature, top_k=1)
    greedy = torch.empty(1, 0, dtype=torch.long)
    with torch.no_grad():
        for _ in range(prior.num_positions):
            greedy = torch.cat([greedy, _next_logits(prior, greedy).argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(codes, greedy.expand(5, -1))


@pytest.mark.parametrize("k", [2, 3])
def test_top_k_draws_only_among_the_k_largest_logits(k):
    prior = _prior(codebook_size=6).eval()
    torch.manual_seed(0)
    codes = prior.sample(500, top_k=k)
    with torch.no_grad():
        for t in range(prior.num_positions):
            # The same computation as the sampler's step t, so no rounding differences.
            allowed = _next_logits(prior, codes[:, :t]).topk(k, dim=-1).indices
            assert (allowed == codes[:, t : t + 1]).any(-1).all(), f"a code outside the top {k} at step {t}"
            assert len(codes[:, t].unique()) > 1  # not degenerate greedy decoding


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_first_code_follows_the_tempered_softmax(temperature):
    prior = _prior(codebook_size=4, num_positions=2).eval()
    with torch.no_grad():
        prior.head.bias.copy_(torch.tensor([1.5, 0.0, -1.0, 0.5]))  # distinct, far from uniform
        probs = torch.softmax(_next_logits(prior, torch.empty(1, 0, dtype=torch.long))[0] / temperature, -1)
    n = 20000
    torch.manual_seed(0)
    frequencies = torch.bincount(prior.sample(n, temperature=temperature)[:, 0], minlength=4) / n
    # Each frequency is a binomial proportion: standard error sqrt(p (1 - p) / n).
    tolerance = 5 * torch.sqrt(probs * (1 - probs) / n)
    assert torch.all((frequencies - probs).abs() < tolerance), (frequencies, probs)


# --- the key/value cache -------------------------------------------------------


@pytest.mark.parametrize("prefill", [0, 1, 3])
def test_cached_decoding_gives_the_logits_of_the_uncached_forward(prefill):
    # float64, so that the only difference between the paths (the order of the
    # reductions in attention over 1 vs n queries) is at the 1e-15 level
    prior = _prior(codebook_size=7, num_positions=8, dropout=0.1).double().eval()
    codes = _random_codes(5, prior)
    with torch.no_grad():
        full = prior(codes)
        cache = prior.new_cache(len(codes))
        steps = [prior.logits(prior.inputs(codes[:, :prefill]), cache)]
        for t in range(prefill, prior.num_positions - 1):
            steps.append(prior.logits(prior.inputs(codes[:, t : t + 1], cache.length, with_start_token=False), cache))
    assert cache.length == prior.num_positions
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-12)


def test_cached_sampling_draws_what_uncached_sampling_draws():
    prior = _prior(codebook_size=6).double().eval()
    torch.manual_seed(3)
    codes = prior.sample(50)
    torch.manual_seed(3)
    expected = torch.empty(50, 0, dtype=torch.long)
    with torch.no_grad():
        for _ in range(prior.num_positions):
            probs = torch.softmax(_next_logits(prior, expected), -1)
            expected = torch.cat([expected, torch.multinomial(probs, 1)], 1)
    assert torch.equal(codes, expected)


@pytest.mark.parametrize("length", [0, 1, 3, 5])
def test_sampling_never_changes_the_prefix(length):
    prior = _prior(dropout=0.1)
    prefix = _random_codes(40, prior, seed=length)[:, :length]
    torch.manual_seed(0)
    codes = prior.sample(40, prefix=prefix, top_p=0.9, temperature=0.7)
    assert codes.shape == (40, prior.num_positions)
    assert torch.equal(codes[:, :length], prefix)


def test_the_code_after_a_prefix_follows_its_conditional():
    prior = _prior(codebook_size=4, num_positions=4).eval()
    prefix = torch.tensor([[2, 0]]).expand(20000, -1)
    with torch.no_grad():
        probs = torch.softmax(_next_logits(prior, prefix[:1]), -1)[0]
    torch.manual_seed(1)
    frequencies = torch.bincount(prior.sample(len(prefix), prefix=prefix)[:, 2], minlength=4) / len(prefix)
    # binomial proportions: standard error sqrt(p (1 - p) / n)
    tolerance = 5 * torch.sqrt(probs * (1 - probs) / len(prefix))
    assert torch.all((frequencies - probs).abs() < tolerance), (frequencies, probs)


# --- training -----------------------------------------------------------------

# A first-order Markov chain on K = 4 codes over L = 8 steps.
CHAIN_START = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
CHAIN_TRANSITIONS = torch.tensor(
    [[0.8, 0.1, 0.05, 0.05], [0.1, 0.1, 0.7, 0.1], [0.25, 0.25, 0.25, 0.25], [0.45, 0.05, 0.05, 0.45]],
    dtype=torch.float64,
)


def _chain_log_prob(codes):
    return CHAIN_START.log()[codes[:, 0]] + CHAIN_TRANSITIONS.log()[codes[:, :-1], codes[:, 1:]].sum(1)


def _draw_chain(n, num_positions, generator):
    codes = torch.empty(n, num_positions, dtype=torch.long)
    codes[:, 0] = torch.multinomial(CHAIN_START.expand(n, -1), 1, generator=generator)[:, 0]
    for t in range(1, num_positions):
        codes[:, t] = torch.multinomial(CHAIN_TRANSITIONS[codes[:, t - 1]], 1, generator=generator)[:, 0]
    return codes


@pytest.mark.slow
def test_learns_a_markov_chain_to_its_entropy():
    codebook_size, num_positions, n = 4, 8, 3000
    # Exact entropy H and standard deviation of -log p(c), enumerating all 4^8 sequences.
    log_p = _chain_log_prob(torch.cartesian_prod(*[torch.arange(codebook_size)] * num_positions))
    entropy = -(log_p.exp() * log_p).sum()
    std = ((log_p.exp() * log_p**2).sum() - entropy**2).sqrt()
    generator = torch.Generator().manual_seed(0)
    train_codes, test_codes = _draw_chain(n, num_positions, generator), _draw_chain(n, num_positions, generator)
    prior = _prior(codebook_size, num_positions, d_model=32, num_layers=1)
    history = train_prior(prior, train_codes, test_codes, progress=False, config=PriorTrainConfig(epochs=6, batch_size=64, lr=1e-3))
    test_nll = history[-1]["test_nll"]
    # The test NLL estimates H + KL(p || q) >= H from n independent sequences:
    # it can fall below H only by sampling noise, standard error std / sqrt(n) (~0.05).
    noise = 5 * float(std) / math.sqrt(n)
    # Margin: 0.1 nats per sequence (1.3% of H = 7.70) for estimation (~ parameters / 2n
    # for a Markov model) and optimization error; uniform codes give 11.09 and a model
    # ignoring the previous code at best 9.55, so passing requires learning the chain.
    margin = 0.1
    assert float(entropy) - noise <= test_nll <= float(entropy) + margin + noise, (test_nll, float(entropy))
    # Sharper, paired on the same test sequences: KL(p || q) estimated as mean(log p - log q),
    # whose standard error is that of the per-sequence differences.
    with torch.no_grad():
        excess = _chain_log_prob(test_codes) - prior.log_prob(test_codes).double()
    kl_noise = 5 * float(excess.std()) / math.sqrt(n)
    assert -kl_noise <= float(excess.mean()) <= margin, float(excess.mean())


def _history_numbers(history):
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


def test_train_prior_history_determinism_and_eval_mode():
    def run(seed, test=True):
        prior = _prior(dropout=0.1)
        codes = _random_codes(96, prior)
        history = train_prior(prior, codes[:64], codes[64:] if test else None, progress=False, config=PriorTrainConfig(epochs=2, batch_size=16, seed=seed))
        return prior, history

    prior, history = run(seed=3)
    assert [sorted(record) for record in history] == [["epoch", "seconds", "test_nll", "train_nll"]] * 2
    assert [record["epoch"] for record in history] == [1, 2]
    assert all(math.isfinite(record["train_nll"]) and record["seconds"] >= 0 for record in history)
    assert not prior.training
    again, same_history = run(seed=3)
    assert _history_numbers(same_history) == _history_numbers(history)
    assert all(torch.equal(a, b) for a, b in zip(prior.state_dict().values(), again.state_dict().values()))
    assert _history_numbers(run(seed=4)[1]) != _history_numbers(history)
    assert "test_nll" not in run(seed=3, test=False)[1][0]


def test_train_prior_progress_bar_runs(capsys):
    prior = _prior()
    train_prior(prior, _random_codes(8, prior), _random_codes(4, prior, seed=2), progress=True, config=PriorTrainConfig(epochs=1))
    assert "test NLL" in capsys.readouterr().out


def test_nan_loss_raises_before_changing_parameters(monkeypatch):
    prior = _prior()
    before = {name: value.clone() for name, value in prior.state_dict().items()}
    monkeypatch.setattr(prior, "log_prob", lambda codes: torch.full((len(codes),), math.nan, requires_grad=True))
    with pytest.raises(NonFiniteLossError, match="nan"):
        train_prior(prior, _random_codes(32, prior), progress=False, config=PriorTrainConfig(epochs=1))
    assert all(torch.equal(before[name], value) for name, value in prior.state_dict().items())


# --- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(codebook_size=0), "codebook_size"),
        (dict(num_positions=0), "num_positions"),
        (dict(d_model=10, num_heads=4), "divisible"),
        (dict(num_heads=0), "num_heads"),
        (dict(num_layers=0), "num_layers"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_architecture_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerPrior(TransformerPriorConfig(**dict(dict(codebook_size=5, num_positions=6), **kwargs)))


@pytest.mark.parametrize(
    "codes, message",
    [
        (torch.zeros(6, dtype=torch.long), "2-D"),
        (torch.zeros(2, 7, dtype=torch.long), "length"),
        (torch.zeros(2, 0, dtype=torch.long), "length"),
        (torch.full((2, 6), 5), r"\[0, 5\)"),
        (torch.full((2, 6), -1), r"\[0, 5\)"),
        (torch.zeros(2, 6), "integer dtype"),
        (torch.zeros(2, 6, dtype=torch.bool), "integer dtype"),
        ([[0] * 6], "tensor"),
    ],
)
def test_bad_codes_raise(codes, message):
    """Shapes and dtypes are always checked; the range check reads the values, so it runs under validation."""
    prior = _prior()
    for method in (prior, prior.log_prob):
        with validation_enabled(), pytest.raises(ValueError, match=message):
            method(codes)


def test_log_prob_needs_full_sequences():
    prior = _prior()
    with pytest.raises(ValueError, match="num_positions = 6"):
        prior.log_prob(torch.zeros(2, 5, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_samples=0), "num_samples"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=math.inf), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=6), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(prefix=torch.zeros(3, 2, dtype=torch.long)), "one row per sample"),
        (dict(prefix=torch.zeros(2, 6, dtype=torch.long)), "shorter than num_positions = 6"),
        (dict(prefix=torch.full((2, 2), 5)), r"\[0, 5\)"),
        (dict(prefix=torch.zeros(2, 2)), "integer dtype"),
    ],
)
def test_bad_sampling_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _prior().sample(**dict(dict(num_samples=2), **kwargs))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(train_codes=torch.zeros(0, 6, dtype=torch.long)), "no sequences"),
        (dict(train_codes=torch.zeros(4, 5, dtype=torch.long)), "length"),
        (dict(test_codes=torch.full((4, 6), 9)), r"\[0, 5\)"),
    ],
)
def test_bad_training_arguments_raise(kwargs, message):
    prior = _prior()
    settings = {name: kwargs.pop(name) for name in ("epochs", "batch_size", "lr") if name in kwargs}
    kwargs = dict(dict(train_codes=_random_codes(4, prior), progress=False), **kwargs)
    with pytest.raises(ValueError, match=message):
        train_prior(prior, config=PriorTrainConfig(**settings), **kwargs)


def test_held_out_nll_is_the_mean_negative_log_prob_over_batches(monkeypatch):
    monkeypatch.setattr(prior_training, "EVAL_BATCH_SIZE", 3)
    prior = _prior().eval()
    codes = _random_codes(10, prior)
    with torch.no_grad():
        expected = float(-prior.log_prob(codes).mean())
    assert prior_training.dataset_nll(prior, codes) == pytest.approx(expected, rel=1e-6)


def test_validation_codes_keep_the_best_epoch():
    """A large prior on few sequences overfits; the kept parameters are those of the lowest validation NLL."""
    generator = torch.Generator().manual_seed(0)
    train_codes, validation_codes = _draw_chain(40, 8, generator), _draw_chain(200, 8, generator)
    prior = _prior(4, 8, d_model=32, num_layers=1)
    history = train_prior(prior, train_codes, config=PriorTrainConfig(epochs=12, batch_size=8, lr=3e-3), progress=False,
                          validation_codes=validation_codes)
    kept = [record for record in history if record.get("kept")]
    assert len(kept) == 1
    assert kept[0]["validation_nll"] == min(record["validation_nll"] for record in history)
    with torch.no_grad():
        now = float(-prior.log_prob(validation_codes).mean())
    assert now == pytest.approx(kept[0]["validation_nll"], rel=1e-5)
