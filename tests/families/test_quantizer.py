"""
Tests of the VQ-VAE vector quantizer.

Values computed by two routes in float64 must agree to rounding (rtol
1e-12); the straight-through gradient is exactly the incoming gradient.
"""

import math

import pytest
import torch

from pyprobvae.families.quantizer import (
    VectorQuantizer,
    code_counts,
    codes_used,
    perplexity,
)
from pyprobvae.validation import validation_enabled

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL = 1e-12


def quantizer(codebook_size=6, code_dim=3, **kwargs):
    """A float64 quantizer; by default with no state changes in training mode but the moving averages."""
    kwargs.setdefault("kmeans_init", False)
    kwargs.setdefault("min_usage", 0.0)
    return VectorQuantizer(codebook_size, code_dim, **kwargs).double()


def set_codebook(q, codes):
    """Put the codes in the codebook, with moving averages that agree with them (N_k = 1, m_k = e_k)."""
    with torch.no_grad():
        q.codebook.copy_(codes)
        if q.ema:
            q.cluster_size.fill_(1.0)
            q.code_sum.copy_(codes)


def data(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def brute_force_nearest(z, codes):
    return torch.cdist(z.reshape(-1, z.size(-1)), codes).argmin(-1).reshape(z.shape[:-1])


def clusters(centres, per_cluster, scale, seed=0):
    """``per_cluster`` points around each centre, shuffled, as (batch, positions, D), and the points of each cluster."""
    generator = torch.Generator().manual_seed(seed)
    points = centres.repeat_interleave(per_cluster, 0)
    points = points + scale * torch.randn(points.shape, generator=generator, dtype=points.dtype)
    shuffled = points[torch.randperm(points.size(0), generator=generator)]
    return shuffled.reshape(per_cluster, centres.size(0), centres.size(1)), points.reshape(centres.size(0), per_cluster, -1)


# ---------------------------------------------------------------------------
# gradients


def test_straight_through_gradient_is_the_identity():
    q = quantizer()
    set_codebook(q, data(6, 3, seed=1))
    z_e = data(4, 5, 3).requires_grad_()
    weights = data(4, 5, 3, seed=2)
    out = q(z_e)
    assert torch.allclose(out.z_q, q.codebook[out.indices], rtol=0, atol=1e-14)
    (weights * out.z_q).sum().backward()
    assert torch.equal(z_e.grad, weights)
    assert q.codebook.grad is None


def test_codebook_term_reaches_only_the_codebook():
    q = quantizer()
    set_codebook(q, data(6, 3, seed=1))
    z_e = data(4, 5, 3).requires_grad_()
    out = q(z_e)
    out.codebook_loss.sum().backward()
    assert z_e.grad is None
    # d/de_k sum_p ||z_p - e_{k_p}||^2 = -2 sum_{p: k_p = k} (z_p - e_k)
    expected = torch.zeros(6, 3, dtype=torch.float64)
    expected.index_add_(0, out.indices.reshape(-1), -2 * (z_e.detach() - q.codebook.detach()[out.indices]).reshape(-1, 3))
    assert torch.allclose(q.codebook.grad, expected, rtol=RTOL)


def test_commitment_term_reaches_only_the_encoder_outputs():
    q = quantizer()
    set_codebook(q, data(6, 3, seed=1))
    z_e = data(4, 5, 3).requires_grad_()
    out = q(z_e)
    out.commitment_loss.sum().backward()
    assert q.codebook.grad is None
    assert torch.allclose(z_e.grad, 2 * (z_e.detach() - q.codebook.detach()[out.indices]), rtol=RTOL)


# ---------------------------------------------------------------------------
# loss values


@pytest.mark.parametrize("ema", [False, True])
def test_losses_match_the_formulas(ema):
    q = quantizer(ema=ema)
    codes = data(6, 3, seed=1)
    set_codebook(q, codes)
    z_e = data(4, 5, 3)
    out = q(z_e)
    assert out.indices.shape == (4, 5) and out.indices.dtype == torch.long
    assert out.codebook_loss.shape == out.commitment_loss.shape == (4,)
    assert torch.equal(out.indices, brute_force_nearest(z_e, codes))
    expected = torch.zeros(4, dtype=torch.float64)
    for b in range(4):
        for p in range(5):
            expected[b] += sum((z_e[b, p, d] - codes[out.indices[b, p], d]) ** 2 for d in range(3))
    assert torch.allclose(out.commitment_loss, expected, rtol=RTOL)
    if ema:
        assert torch.equal(out.codebook_loss, torch.zeros(4, dtype=torch.float64))
    else:
        assert torch.allclose(out.codebook_loss, expected, rtol=RTOL)


def test_loss_per_example_does_not_depend_on_the_batch_size():
    q = quantizer()
    set_codebook(q, data(6, 3, seed=1))
    z_e = data(4, 5, 3)
    small, large = q(z_e), q(torch.cat([z_e, z_e]))
    for name in ("codebook_loss", "commitment_loss"):
        assert torch.allclose(getattr(large, name).mean(), getattr(small, name).mean(), rtol=RTOL)
        assert torch.equal(getattr(large, name)[:4], getattr(small, name))


# ---------------------------------------------------------------------------
# nearest-code search


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 4096])
def test_nearest_matches_brute_force(chunk_size):
    # 55 rows and 37 codes: with chunk_size 3 or 7, many blocks of rows and of codes, the last ones partial
    q = quantizer(codebook_size=37, code_dim=4, chunk_size=chunk_size)
    codes = data(37, 4, seed=1)
    set_codebook(q, codes)
    z = data(5, 11, 4)
    indices = q.nearest(z)
    assert indices.shape == (5, 11)
    assert torch.equal(indices, brute_force_nearest(z, codes))


@pytest.mark.parametrize("chunk_size", [3, 4096])
def test_nearest_in_float32_finds_a_minimal_distance(chunk_size):
    # rounding may break near-ties differently from cdist: the chosen code must be as near as the nearest
    q = VectorQuantizer(300, 8, kmeans_init=False, chunk_size=chunk_size)
    with torch.no_grad():
        q.codebook.copy_(data(300, 8, seed=1).float())
    z = data(2, 500, 8).float()
    indices = q.nearest(z).reshape(-1)
    distances = torch.cdist(z.reshape(-1, 8).double(), q.codebook.detach().double()).pow(2)
    chosen = distances.gather(1, indices.unsqueeze(1)).squeeze(1)
    assert torch.allclose(chosen, distances.min(1).values, rtol=1e-5)


def test_lookup_returns_the_codes():
    q = quantizer()
    indices = torch.tensor([[0, 5], [2, 2]])
    assert torch.equal(q.lookup(indices), q.codebook.detach()[indices])


# ---------------------------------------------------------------------------
# moving averages


def test_ema_update_matches_the_formula_for_one_step():
    decay, epsilon, size = 0.9, 0.1, 4
    q = quantizer(codebook_size=size, code_dim=2, ema=True, decay=decay, epsilon=epsilon)
    assert "codebook" not in dict(q.named_parameters()) and list(q.parameters()) == []
    assert {"codebook", "cluster_size", "code_sum"} <= set(dict(q.named_buffers()))
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], dtype=torch.float64)
    set_codebook(q, codes)
    z_e = data(3, 4, 2)
    out = q(z_e)
    assert torch.allclose(out.z_q, codes[out.indices], rtol=0, atol=1e-14)  # the codes before the update

    rows, assigned = z_e.reshape(-1, 2), out.indices.reshape(-1)
    cluster_size, code_sum = [], []
    for k in range(size):
        n_k = float((assigned == k).sum())
        s_k = rows[assigned == k].sum(0)
        cluster_size.append(decay * 1.0 + (1 - decay) * n_k)
        code_sum.append(decay * codes[k] + (1 - decay) * s_k)
    cluster_size, code_sum = torch.tensor(cluster_size, dtype=torch.float64), torch.stack(code_sum)
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + size * epsilon) * total
    assert torch.allclose(q.cluster_size, cluster_size, rtol=RTOL)
    assert torch.allclose(q.code_sum, code_sum, rtol=RTOL)
    assert torch.allclose(q.codebook, code_sum / smoothed.unsqueeze(-1), rtol=RTOL)


def test_ema_converges_to_the_cluster_means():
    # with the assignments fixed, N_k and m_k approach n_k and s_k geometrically (error ~ decay^steps = 1e-12),
    # so e_k approaches s_k / n_k up to the smoothing's relative bias, below epsilon / n_k = 1e-6
    centres = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    z_e, members = clusters(centres, 10, 0.1)
    q = quantizer(codebook_size=3, code_dim=2, ema=True, decay=0.5)
    set_codebook(q, centres + 0.5)
    for _ in range(40):
        q(z_e)
    assert torch.allclose(q.codebook, members.mean(1), rtol=0, atol=1e-5)
    assert torch.allclose(q.cluster_size, torch.full((3,), 10.0, dtype=torch.float64), rtol=1e-10)


# ---------------------------------------------------------------------------
# k-means initialization


@pytest.mark.parametrize("ema", [False, True])
def test_kmeans_init_recovers_separated_clusters_once_and_in_training_only(ema):
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [5.0, -5.0], [-5.0, 5.0], [-5.0, -5.0]], dtype=torch.float64)
    z_e, members = clusters(centres, 50, 0.1)
    q = quantizer(codebook_size=4, code_dim=2, ema=ema, kmeans_init=True)
    uniform = q.codebook.detach().clone()
    assert uniform.abs().max() <= 1 / 4 and not q.initialized

    q.eval()
    q(z_e)
    assert not q.initialized and torch.equal(q.codebook, uniform)

    q.train()
    q(z_e)
    assert q.initialized
    # Lloyd's fixed point: each code is the mean of one cluster (the smoothing of equal clusters cancels)
    order = brute_force_nearest(members.mean(1), q.codebook.detach())
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(q.codebook.detach()[order], members.mean(1), rtol=0, atol=1e-10)
    if ema:
        assert torch.allclose(q.cluster_size, torch.full((4,), 50.0, dtype=torch.float64), rtol=RTOL)

    initialized = q.codebook.detach().clone()
    q(z_e + 1.0)  # not initialized again: without ema or restarts, the codebook stays
    if not ema:
        assert torch.equal(q.codebook, initialized)
    else:
        # one moving-average step towards the shifted data, not a jump onto it
        assert torch.allclose(q.codebook, initialized + (1 - q.decay), rtol=0, atol=1e-6)


def test_kmeans_init_with_fewer_rows_than_codes_uses_every_row():
    torch.manual_seed(0)
    q = quantizer(codebook_size=8, code_dim=2, kmeans_init=True)
    z_e = data(1, 3, 2)
    q(z_e)
    codes = q.codebook.detach()
    assert torch.isfinite(codes).all() and torch.unique(codes, dim=0).size(0) == 8
    assert torch.cdist(z_e[0], codes).min(1).values.max() == 0


# ---------------------------------------------------------------------------
# usage and rare-code restarts


def share_batch(codes, counts, step):
    """One batch (1, N, D) with counts[k] encoder outputs near code k (noise 0.1), and its N."""
    rows = torch.cat([codes[k].repeat(n, 1) for k, n in enumerate(counts)])
    rows = rows + 0.1 * data(*rows.shape, seed=step)
    return rows[torch.randperm(rows.size(0), generator=torch.Generator().manual_seed(step))].unsqueeze(0)


def check_restart(ema, counts, min_usage, usage_decay, restart_step):
    """
    Code 3 is chosen by counts[3] of the N positions of every batch, so its usage follows
    u <- usage_decay u + (1 - usage_decay) K counts[3] / N from u = 1; it must be restarted at
    ``restart_step`` exactly, onto an encoder output of that batch, with its statistics reset.
    """
    torch.manual_seed(0)
    codes = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [5.0, 5.0]], dtype=torch.float64)
    q = quantizer(codebook_size=4, code_dim=2, ema=ema, min_usage=min_usage, usage_decay=usage_decay)
    set_codebook(q, codes)
    assert torch.equal(q.usage, torch.ones(4, dtype=torch.float64))
    share = torch.tensor(counts, dtype=torch.float64) * 4 / sum(counts)
    expected = torch.ones(4, dtype=torch.float64)
    for step in range(1, restart_step + 1):
        z_e = share_batch(codes, counts, step).requires_grad_()
        before = q.codebook.detach().clone()
        out = q(z_e)
        (out.codebook_loss + out.commitment_loss).sum().backward()  # the restart does not break backward
        assert torch.equal(code_counts(out.indices, 4), torch.tensor(counts))
        expected = usage_decay * expected + (1 - usage_decay) * share
        if step < restart_step:
            assert expected[3] >= min_usage
            assert torch.allclose(q.usage, expected, rtol=RTOL)
            assert torch.cdist(q.codebook.detach()[3:], codes[3:]).item() < 1  # still near (5, 5)
    assert expected[3] < min_usage and (expected[:3] >= min_usage).all()
    restarted = q.codebook.detach()[3]
    rows = z_e.detach().reshape(-1, 2)
    errors = (rows - before[brute_force_nearest(rows, before)]).pow(2).sum(-1)
    assert torch.equal(restarted, rows[errors.argmax()])
    assert torch.allclose(q.usage, torch.cat([expected[:3], torch.ones(1, dtype=torch.float64)]), rtol=RTOL)
    if ema:
        assert q.cluster_size[3] == 1 and torch.equal(q.code_sum[3], restarted)


@pytest.mark.parametrize("ema", [False, True])
def test_unused_code_is_restarted_when_its_usage_falls_below_min_usage(ema):
    # code 3 is never chosen: u = 0.5^t, below 0.2 first at t = 3
    check_restart(ema, [2, 2, 2, 0], min_usage=0.2, usage_decay=0.5, restart_step=3)


@pytest.mark.parametrize("ema", [False, True])
def test_rare_code_is_restarted_when_its_usage_falls_below_min_usage(ema):
    # code 3 is chosen by 1 of 12 positions, a third of an even share: u = 2/3, 1/2, 5/12, 3/8: below 0.4 at t = 4
    check_restart(ema, [4, 4, 3, 1], min_usage=0.4, usage_decay=0.5, restart_step=4)


def test_several_restarts_take_the_outputs_in_decreasing_error_cyclically():
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0]], dtype=torch.float64)
    q = quantizer(codebook_size=5, code_dim=2, min_usage=0.5, usage_decay=0.5)
    set_codebook(q, codes)
    # errors 4, 1 and 9: codes 2, 3 and 4 (never chosen, usage 0.25 after two steps) take rows 2, 0 and 1
    z_e = torch.tensor([[[2.0, 0.0], [10.0, 1.0], [0.0, 3.0]]], dtype=torch.float64)
    q(z_e)
    assert torch.equal(q.codebook.detach(), codes)
    q(z_e)
    assert torch.equal(q.codebook.detach()[2:], z_e[0, [2, 0, 1]])
    assert torch.equal(q.usage[2:], torch.ones(3, dtype=torch.float64))
    # with more restarted codes than rows, the rows are reused in the same order
    q = quantizer(codebook_size=5, code_dim=2, min_usage=0.5, usage_decay=0.5)
    set_codebook(q, codes)
    z_e = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    q(z_e)
    q(z_e)
    assert torch.equal(q.codebook.detach(), torch.cat([codes[:1], z_e[0].repeat(4, 1)]))


def test_no_restart_when_min_usage_is_zero():
    torch.manual_seed(0)
    codes = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [100.0, 100.0]], dtype=torch.float64)
    q = quantizer(codebook_size=4, code_dim=2, min_usage=0.0, usage_decay=0.5)
    set_codebook(q, codes)
    for step in range(60):
        q(share_batch(codes, [2, 2, 2, 0], step))
    assert torch.equal(q.codebook.detach(), codes)
    assert 0 < q.usage[3] < 1e-15  # the usage is still tracked


# ---------------------------------------------------------------------------
# state


def snapshot(q):
    return {name: value.clone() for name, value in q.state_dict().items()}


@pytest.mark.parametrize("ema", [False, True])
def test_eval_mode_changes_no_state(ema):
    torch.manual_seed(0)
    q = quantizer(codebook_size=8, code_dim=3, ema=ema, kmeans_init=True, min_usage=0.9, usage_decay=0.5)
    q(data(4, 5, 3))
    q.eval()
    before = snapshot(q)
    first = q(data(4, 5, 3, seed=1) + 3.0)
    again = q(data(4, 5, 3, seed=1) + 3.0)
    after = snapshot(q)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("ema", [False, True])
def test_state_dict_round_trip_keeps_the_usage_and_does_not_initialize_again(ema):
    torch.manual_seed(0)
    kwargs = dict(codebook_size=5, code_dim=2, ema=ema, kmeans_init=True, min_usage=0.5, usage_decay=0.5)
    trained = quantizer(**kwargs)
    for step in range(3):
        trained(data(4, 6, 2, seed=step))
    loaded = quantizer(**kwargs)
    assert not loaded.initialized
    loaded.load_state_dict(trained.state_dict())
    assert loaded.initialized and loaded.initialized.dtype == torch.bool
    state = snapshot(trained)
    assert not torch.equal(state["usage"], torch.ones(5, dtype=torch.float64))
    assert all(torch.equal(state[name], value) for name, value in loaded.state_dict().items())
    # the same step from the same state and random numbers: no k-means again, the same restarts
    z_e = data(4, 6, 2, seed=9) + 10.0
    rng = torch.get_rng_state()
    first = trained(z_e)
    torch.set_rng_state(rng)
    second = loaded(z_e)
    assert torch.equal(first.indices, second.indices)
    state = snapshot(trained)
    assert all(torch.equal(state[name], value) for name, value in loaded.state_dict().items())


# ---------------------------------------------------------------------------
# code usage


def test_perplexity_and_codes_used():
    assert perplexity(torch.tensor([5, 5, 5, 0, 0])) == pytest.approx(3.0, rel=RTOL)
    assert perplexity(torch.tensor([0, 7, 0])) == 1.0
    assert perplexity(torch.tensor([2.0, 1.0, 1.0])) == pytest.approx(2**1.5, rel=RTOL)
    assert codes_used(torch.tensor([5, 5, 5, 0, 0])) == 3
    assert codes_used(torch.tensor([0, 7, 0])) == 1


def test_code_counts_is_the_histogram():
    indices = torch.tensor([[0, 3, 3], [3, 1, 0]])
    assert torch.equal(code_counts(indices, 5), torch.tensor([2, 1, 0, 3, 0]))
    counts = code_counts(torch.arange(12).reshape(3, 4) % 4, 4)
    assert perplexity(counts) == pytest.approx(4.0, rel=RTOL) and codes_used(counts) == 4


# ---------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"codebook_size": 0}, "codebook_size"),
        ({"codebook_size": 2.5}, "codebook_size"),
        ({"code_dim": 0}, "code_dim"),
        ({"decay": 0.0}, "decay"),
        ({"decay": 1.0}, "decay"),
        ({"decay": math.nan}, "decay"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"min_usage": -0.1}, "min_usage"),
        ({"min_usage": 1.0}, "min_usage"),
        ({"min_usage": math.nan}, "min_usage"),
        ({"usage_decay": 0.0}, "usage_decay"),
        ({"usage_decay": 1.0}, "usage_decay"),
        ({"usage_decay": math.nan}, "usage_decay"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"kmeans_iterations": -1}, "kmeans_iterations"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, name):
    args = {"codebook_size": 4, "code_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        VectorQuantizer(**args)


@pytest.mark.parametrize(
    "z_e, message",
    [
        (torch.zeros(4, 2), "expects"),
        (torch.zeros(1, 4, 3, 2), "expects"),
        (torch.zeros(2, 4, 3), "code_dim=2"),
        (torch.tensor([[[0.0, math.nan]]]), "NaN"),
        (torch.tensor([[[math.inf, 0.0]]]), "infinite"),
        (torch.zeros(2, 4, 2, dtype=torch.float64), "dtype"),
    ],
)
def test_bad_encoder_outputs_are_rejected(z_e, message):
    """Shapes and dtypes always; finiteness (which reads the values) under validation."""
    q = VectorQuantizer(4, 2)
    with validation_enabled(), pytest.raises(ValueError, match=message):
        q(z_e)


def test_training_step_reads_nothing_back_after_initialization(monkeypatch):
    """After the k-means step, forward in training mode makes no host read (no .item(), bool() or nonzero())."""
    q = VectorQuantizer(8, 2, ema=True, min_usage=0.5)
    q.train()
    z_e = torch.randn(16, 4, 2, generator=torch.Generator().manual_seed(0))
    q(z_e)  # initializes by k-means
    reads = []
    for name in ("item", "__bool__", "nonzero", "tolist"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _name=name, **k: reads.append(_name) or _real(self, *a, **k))
    for _ in range(3):
        q(torch.randn(16, 4, 2) * 3)
    assert reads == []


def test_bad_indices_are_rejected():
    q = VectorQuantizer(4, 2)
    for indices in (torch.tensor([0, 4]), torch.tensor([-1])):
        with pytest.raises(ValueError, match="indices must lie"):
            q.lookup(indices)
        with pytest.raises(ValueError, match="indices must lie"):
            code_counts(indices, 4)
    with pytest.raises(ValueError, match="integer"):
        q.lookup(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="code_dim"):
        q.nearest(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="counts"):
        perplexity(torch.zeros(3))
