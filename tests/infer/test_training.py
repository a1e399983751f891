"""
Tests of the training loop (pyprobvae.infer.training) and checkpoints
(pyprobvae.infer.checkpoint) on small subsets of scikit-learn's digits.
"""

import math
import os

import pyro
import pytest
import torch

from pyprobvae.data import Dataset
from pyprobvae.infer import loop, training
from pyprobvae.infer.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from pyprobvae.infer.elbo import elbo_terms
from pyprobvae.infer.loop import NonFiniteLossError
from pyprobvae.infer.training import (
    ELBOLoss,
    ELBOObjective,
    TrainConfig,
    dataset_elbo,
    fit,
)
from tests.common import tiny_model


def _subset(dataset, n, start=0):
    return Dataset(dataset.name, dataset.x[start : start + n], dataset.y[start : start + n],
                   dataset.data_shape, dataset.num_levels, dataset.num_classes)


def _vae(likelihood="categorical", init_seed=0, hidden=(32,), latent_dim=3):
    return tiny_model(seed=init_seed, likelihood=likelihood, hidden=hidden, latent_dim=latent_dim)


def _without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def _assert_same_parameters(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


# ------------------------------------------------------------ (a) training improves the test ELBO


def test_training_improves_test_elbo(digits):
    train, test = _subset(digits[0], 500), _subset(digits[1], 200)
    vae = _vae(hidden=(64,), latent_dim=4)
    pyro.set_rng_seed(100)
    before = dataset_elbo(vae, test.x).elbo
    history = fit(vae, train, test, TrainConfig(epochs=3, batch_size=50, lr=3e-3, seed=0), progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert all(math.isfinite(r[k]) for r in history for k in ("train_elbo", "train_kl", "test_elbo"))

    # noise of the test ELBO: (1) Monte Carlo noise of the estimate, from
    # repeated evaluations of the trained model with different seeds;
    # (2) the paired standard error over test examples of the improvement
    # (how much it could change with another draw of the test set)
    repeats = []
    for seed in range(5):
        pyro.set_rng_seed(200 + seed)
        repeats.append(dataset_elbo(vae, test.x).elbo)
    repeats = torch.stack(repeats)
    mc_std = float(repeats.mean(1).std())
    after = repeats[0]
    assert float(after.mean()) == pytest.approx(history[-1]["test_elbo"], abs=5 * mc_std + 1e-3)
    diff = after - before
    paired_se = float(diff.std() / math.sqrt(len(diff)))
    improvement = float(diff.mean())
    noise = math.hypot(mc_std, paired_se)
    assert improvement > 20 * noise, (improvement, mc_std, paired_se)
    assert improvement > 20  # nats per example: from ~-180 (untrained) to ~-120
    # the per-epoch test ELBO improves overall too
    assert history[-1]["test_elbo"] > history[0]["test_elbo"] + 5 * mc_std


# ------------------------------------------------------------ (b) reproducibility


def _short_fit(digits, seed, disturb=0):
    vae = _vae()
    # move the global RNG between building the model and training: fit must
    # seed all its randomness itself
    torch.randn(disturb)
    history = fit(vae, _subset(digits[0], 200), _subset(digits[1], 50),
                  TrainConfig(epochs=2, batch_size=50, lr=3e-3, seed=seed), progress=False)
    return vae, history


def test_same_seed_same_run_different_seed_different_run(digits):
    vae_a, hist_a = _short_fit(digits, seed=3, disturb=100)
    vae_b, hist_b = _short_fit(digits, seed=3, disturb=7)
    vae_c, hist_c = _short_fit(digits, seed=4, disturb=100)
    assert _without_seconds(hist_a) == _without_seconds(hist_b)
    _assert_same_parameters(vae_a, vae_b)
    assert _without_seconds(hist_a) != _without_seconds(hist_c)
    assert any(not torch.equal(p, q) for p, q in zip(vae_a.state_dict().values(), vae_c.state_dict().values()))


class _Recorder(loop.Monitor):
    def __init__(self):
        self.calls = []

    def start(self, step):
        self.calls.append(("start", step, None))

    def window(self, step, numbers):
        self.calls.append(("window", step, numbers))

    def epoch(self, step, record):
        self.calls.append(("epoch", step, record))


def test_a_monitor_sees_each_window_and_epoch_and_changes_nothing(digits):
    train, test = _subset(digits[0], 200), _subset(digits[1], 50)
    config = TrainConfig(epochs=2, batch_size=50, lr=3e-3, seed=3, log_every=3)
    vae, watched, recorder = _vae(), _vae(), _Recorder()
    history = fit(vae, train, test, config, progress=False)
    watched_history = fit(watched, train, test, config, progress=False, monitor=recorder)
    assert _without_seconds(watched_history) == _without_seconds(history)
    _assert_same_parameters(vae, watched)  # measuring the gradient norm changes no parameter
    # 4 steps per epoch: windows end at steps 3 and 4 (the epoch's last), then 7 and 8
    assert [(kind, step) for kind, step, _ in recorder.calls] == [
        ("start", 0), ("window", 3), ("window", 4), ("epoch", 4), ("window", 7), ("window", 8), ("epoch", 8),
    ]
    windows = [numbers for kind, _, numbers in recorder.calls if kind == "window"]
    assert all(set(numbers) == {"log-likelihood", "KL", "penalty", "bound", "loss", "lr", "grad_norm"} for numbers in windows)
    assert all(numbers["lr"] == 3e-3 and math.isfinite(numbers["grad_norm"]) and numbers["grad_norm"] > 0 for numbers in windows)
    for epoch, record in enumerate(history):  # the windows' means make up the epoch's: 150 and 50 examples
        first, last = windows[2 * epoch], windows[2 * epoch + 1]
        elbo = (150 * (first["log-likelihood"] - first["KL"]) + 50 * (last["log-likelihood"] - last["KL"])) / 200
        assert elbo == pytest.approx(record["train_elbo"], rel=1e-9)
    assert [record for kind, _, record in recorder.calls if kind == "epoch"] == watched_history


def test_each_epoch_visits_every_example_once_in_a_seeded_shuffled_order(digits, monkeypatch):
    orders = []
    real = loop.iterate_minibatches

    def spy(n, batch_size, shuffle, *args, **kwargs):
        batches = list(real(n, batch_size, shuffle, *args, **kwargs))
        if n == 60:  # the training set (not the evaluation of the test set)
            orders.append(batches)
        return iter(batches)

    monkeypatch.setattr(loop, "iterate_minibatches", spy)
    for seed in (0, 0, 1):
        fit(_vae(), _subset(digits[0], 60), _subset(digits[1], 10), TrainConfig(epochs=2, batch_size=25, seed=seed),
            progress=False)
    assert len(orders) == 6
    for batches in orders:
        assert [len(b) for b in batches] == [25, 25, 10]
        assert sorted(torch.cat(batches).tolist()) == list(range(60))
    flat = [torch.cat(batches).tolist() for batches in orders]
    assert flat[0] != list(range(60))  # shuffled
    assert flat[0] != flat[1]  # a new order every epoch
    assert flat[:2] == flat[2:4]  # the same seed, the same orders
    assert flat[:2] != flat[4:]  # another seed, other orders


# ------------------------------------------------------------ (c) checkpoint and resume


@pytest.mark.parametrize(
    "likelihood, config",
    [
        ("categorical", dict(optimizer="adam")),
        # dynamic binarization and warm-up: the binarization generator and the global step must resume too
        ("bernoulli", dict(optimizer="clipped-adam", binarize="dynamic", kl_warmup_epochs=3)),
    ],
    ids=["categorical-adam", "bernoulli-dynamic-clipped-warmup"],
)
def test_resume_equals_straight_run(digits, tmp_path, likelihood, config):
    train, test = _subset(digits[0], 150), _subset(digits[1], 40)
    settings = dict(batch_size=40, lr=3e-3, seed=7, **config)

    straight = _vae(likelihood)
    hist_straight = fit(straight, train, test, TrainConfig(epochs=4, **settings),
                        checkpoint=str(tmp_path / "straight.pt"), progress=False)

    path = str(tmp_path / "run.pt")
    first = _vae(likelihood)
    fit(first, train, test, TrainConfig(epochs=2, **settings), checkpoint=path, progress=False)
    assert load_checkpoint(path)["epoch"] == 2
    torch.randn(1000)  # the global RNG moves on in between; resume must restore it
    resumed = _vae(likelihood, init_seed=99)  # different initial weights: replaced by the checkpoint
    hist_resumed = fit(resumed, train, test, TrainConfig(epochs=4, **settings), checkpoint=path, resume=True,
                       progress=False)

    assert [r["epoch"] for r in hist_resumed] == [1, 2, 3, 4]
    assert _without_seconds(hist_resumed) == _without_seconds(hist_straight)
    _assert_same_parameters(resumed, straight)
    assert load_checkpoint(path)["epoch"] == 4
    # both checkpoints agree, including the optimizer state
    a, b = load_checkpoint(path), load_checkpoint(str(tmp_path / "straight.pt"))
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name])
    for k, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["optimizer"]["state"][k][key]))


def test_a_run_stopped_midway_resumes_on_its_cosine_schedule(digits, tmp_path, monkeypatch):
    """The learning rate is a function of the global step and the run's epochs: a resumed run continues the same schedule."""
    train = _subset(digits[0], 150)
    config = TrainConfig(epochs=4, batch_size=40, lr=3e-3, seed=7, lr_schedule="cosine")
    straight = _vae()
    hist_straight = fit(straight, train, None, config, checkpoint=str(tmp_path / "straight.pt"), progress=False)

    real_save = training.save_checkpoint

    def save_then_stop(state, path):
        real_save(state, path)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    path = str(tmp_path / "run.pt")
    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        fit(_vae(), train, None, config, checkpoint=path, progress=False)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    resumed = _vae(init_seed=99)
    hist_resumed = fit(resumed, train, None, config, checkpoint=path, resume=True, progress=False)
    assert _without_seconds(hist_resumed) == _without_seconds(hist_straight)
    _assert_same_parameters(resumed, straight)


def test_resume_without_checkpoint(tmp_path, digits):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        fit(_vae(), _subset(digits[0], 20), None, TrainConfig(epochs=1), checkpoint=str(tmp_path / "none.pt"),
            resume=True, progress=False)


# ------------------------------------------------------------ (d) bad checkpoints


@pytest.fixture
def good_checkpoint(tmp_path, digits):
    path = str(tmp_path / "good.pt")
    fit(_vae(), _subset(digits[0], 40), None, TrainConfig(epochs=1, batch_size=20, seed=0), checkpoint=path,
        progress=False)
    return path


def test_truncated_or_garbage_checkpoint_names_the_file(tmp_path, good_checkpoint, digits):
    with open(good_checkpoint, "rb") as f:
        content = f.read()
    load_checkpoint(good_checkpoint)  # the intact file loads

    truncated = str(tmp_path / "truncated.pt")
    with open(truncated, "wb") as f:
        f.write(content[: len(content) // 2])
    garbage = str(tmp_path / "garbage.pt")
    with open(garbage, "wb") as f:
        f.write(os.urandom(4096))
    empty = str(tmp_path / "empty.pt")
    open(empty, "wb").close()
    for path in (truncated, garbage, empty):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert path in str(info.value)
        # and through fit(resume=True)
        with pytest.raises(CheckpointError) as info:
            fit(_vae(), _subset(digits[0], 40), None, TrainConfig(epochs=2, batch_size=20, seed=0),
                checkpoint=path, resume=True, progress=False)
        assert path in str(info.value)

    missing = str(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="no checkpoint") as info:
        load_checkpoint(missing)
    assert missing in str(info.value)

    # a readable torch file that is not a pyprobvae checkpoint
    foreign = str(tmp_path / "foreign.pt")
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a pyprobvae checkpoint") as info:
        load_checkpoint(foreign)
    assert foreign in str(info.value)


class _Evil:
    """Unpickling this calls open(marker, "w"), creating the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_that_would_execute_code_is_refused(tmp_path):
    marker = str(tmp_path / "pwned")
    evil = str(tmp_path / "evil.pt")
    torch.save({"format": FORMAT, "model": {}, "payload": _Evil(marker)}, evil)
    assert not os.path.exists(marker)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil)
    assert evil in str(info.value)
    assert not os.path.exists(marker)
    # the file really is malicious: an unsafe load runs the payload
    torch.load(evil, weights_only=False)
    assert os.path.exists(marker)


def test_resume_with_changed_settings_is_refused(tmp_path, good_checkpoint, digits):
    data = _subset(digits[0], 40)
    with pytest.raises(CheckpointError, match="batch_size") as info:
        fit(_vae(), data, None, TrainConfig(epochs=2, batch_size=10, seed=0), checkpoint=good_checkpoint,
            resume=True, progress=False)
    assert good_checkpoint in str(info.value)
    with pytest.raises(CheckpointError, match="lr, seed"):
        fit(_vae(), data, None, TrainConfig(epochs=2, batch_size=20, lr=0.1, seed=1), checkpoint=good_checkpoint,
            resume=True, progress=False)
    with pytest.raises(CheckpointError, match="different architecture"):
        fit(_vae(hidden=(16,)), data, None, TrainConfig(epochs=2, batch_size=20, seed=0),
            checkpoint=good_checkpoint, resume=True, progress=False)
    # epochs may change
    history = fit(_vae(), data, None, TrainConfig(epochs=2, batch_size=20, seed=0), checkpoint=good_checkpoint,
                  resume=True, progress=False)
    assert [r["epoch"] for r in history] == [1, 2]


def test_save_checkpoint_is_atomic_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint({"epoch": 1}, path)

    def save_half_then_fail(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("boom")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the previous file is intact
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]  # no temporary file left behind


# ------------------------------------------------------------ (e) non-finite loss


def _poison_decoder(vae, bad_call):
    """Make the decoder network output NaN from its ``bad_call``-th call on."""
    net = vae.decoder[0]
    original = net.forward
    calls = {"n": 0}

    def forward(z):
        calls["n"] += 1
        out = original(z)
        return out * float("nan") if calls["n"] >= bad_call else out

    net.forward = forward
    return calls


def _binary(dataset, n):
    data = _subset(dataset, n)
    return Dataset("binary digits", (data.x > 0.5).float(), data.y, data.data_shape, 2, data.num_classes)


def test_nan_loss_names_epoch_step_and_term_and_keeps_checkpoint(tmp_path, digits):
    path = str(tmp_path / "nan.pt")
    vae = _vae("bernoulli")
    # 80 examples / batch 20 = 4 steps per epoch, no test set: the decoder is
    # called once per step, so call 6 is epoch 2, step 2. The loop reads the
    # step sums back at the end of the epoch (log_every=50 > 4 steps), so
    # the epoch's last two steps ran too: 8 calls
    calls = _poison_decoder(vae, bad_call=6)
    with pytest.raises(NonFiniteLossError) as info:
        fit(vae, _binary(digits[0], 80), None, TrainConfig(epochs=3, batch_size=20, seed=0), checkpoint=path,
            progress=False)
    assert calls["n"] == 8
    message = str(info.value)
    assert "epoch 2, step 2" in message
    assert "the log-likelihood term is NaN" in message
    assert "KL term" not in message  # the KL term was fine
    assert path in message and "epoch 1" in message
    # training stopped before the parameters were touched
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    fresh = _vae("bernoulli")
    fresh.load_state_dict(state["model"])
    assert torch.isfinite(dataset_elbo(fresh, _binary(digits[0], 20).x).elbo).all()


def test_nan_in_first_epoch_and_infinite_kl(digits):
    vae = _vae("bernoulli")
    with torch.no_grad():  # an encoder producing infinite means: infinite KL (and a NaN likelihood)
        vae.encoder[1].linear.bias[:3] = float("inf")
    with pytest.raises(NonFiniteLossError) as info:
        fit(vae, _binary(digits[0], 40), None, TrainConfig(epochs=1, batch_size=20), progress=False)
    message = str(info.value)
    assert "epoch 1, step 1" in message
    assert "the log-likelihood term is NaN and the KL term is infinite" in message
    assert "no checkpoint had been written yet" in message


def test_nan_loss_with_categorical_likelihood(digits):
    # (the categorical likelihood must not validate its logits: torch's
    # ValueError would replace NonFiniteLossError)
    vae = _vae("categorical")
    _poison_decoder(vae, bad_call=1)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1.*log-likelihood term is NaN"):
        fit(vae, _subset(digits[0], 40), None, TrainConfig(epochs=1, batch_size=20), progress=False)


def test_non_finite_step_leaves_the_parameters_as_they_were(digits):
    """A NaN in the first step: the parameters are rolled back to their values before it."""
    vae = _vae("bernoulli")
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    calls = _poison_decoder(vae, bad_call=1)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1.*log-likelihood"):
        fit(vae, _binary(digits[0], 40), None, TrainConfig(epochs=1, batch_size=20, lr=0.1, log_every=1), progress=False)
    assert calls["n"] == 1  # with log_every=1 the loop reads every step: it stops at the bad one
    for k, v in vae.state_dict().items():
        assert torch.equal(v, before[k])


def test_the_loop_reads_the_device_only_at_the_log_interval(digits, monkeypatch):
    """No host synchronisation per step: the step sums are read back every log_every steps and at the epoch's end."""
    reads = []
    real = loop.Trainer.check

    def spy(self, epoch):
        reads.append(len(self._window))
        return real(self, epoch)

    monkeypatch.setattr(loop.Trainer, "check", spy)
    # 100 examples / batch 10 = 10 steps per epoch, read after 4 and 8 steps and at the end (2 left)
    fit(_vae(), _subset(digits[0], 100), None, TrainConfig(epochs=2, batch_size=10, log_every=4), progress=False)
    assert reads == [4, 4, 2, 4, 4, 2]


# ------------------------------------------------------------ (f) per-example losses


def test_dataset_elbo_does_not_depend_on_batch_size(digits):
    vae = _vae()
    x = _subset(digits[1], 300).x
    pyro.set_rng_seed(0)
    small = dataset_elbo(vae, x, batch_size=10)
    pyro.set_rng_seed(1)
    large = dataset_elbo(vae, x, batch_size=100)
    assert small.elbo.shape == large.elbo.shape == (300,)
    # the analytic KL does not depend on the noise: equal per example
    torch.testing.assert_close(small.kl, large.kl, rtol=1e-5, atol=1e-5)
    # the log-likelihood is one sample per example: means agree within 5
    # standard errors of the difference of two independent estimates
    se = math.sqrt((small.log_likelihood.var() + large.log_likelihood.var()) / 300)
    assert abs(float(small.elbo.mean() - large.elbo.mean())) <= 5 * se
    # sanity: the per-example ELBO is of the order of a per-example quantity
    # (a summed loss would be ~100x larger at batch size 100)
    assert abs(float(large.elbo.mean()) / float(small.elbo.mean()) - 1) < 0.1


def test_the_objective_descends_on_the_mean_per_example_loss():
    """The objective's per-example loss is -(ll_n - beta kl_n), and the mean the
    trainer descends on has that gradient: check on the same random numbers."""
    vae = _vae()
    x = torch.randint(0, 17, (30, 1, 8, 8), generator=torch.Generator().manual_seed(0)) / 16.0
    beta = 0.3
    objective = ELBOObjective(ELBOLoss(vae), warmup_steps=10)
    pyro.set_rng_seed(0)
    losses, terms = objective(objective.network, x, step=2)  # beta = (2 + 1) / 10
    terms = training.ELBOTerms(*terms[:3])  # and the bound, here the ELBO
    assert losses.shape == terms.log_likelihood.shape == terms.kl.shape == (30,)
    losses.mean().backward()
    applied = {name: p.grad.clone() for name, p in vae.named_parameters()}

    pyro.set_rng_seed(0)
    manual = elbo_terms(vae.model, vae.guide, x, register=False)
    vae.zero_grad()
    (-(manual.log_likelihood - beta * manual.kl).mean()).backward()
    for name, p in vae.named_parameters():
        torch.testing.assert_close(applied[name], p.grad, msg=name)
    torch.testing.assert_close(terms.elbo, manual.elbo)


# ------------------------------------------------------------ (g) KL warm-up


def test_kl_weight_helper():
    # 2 warm-up epochs of 5 steps
    objective = ELBOObjective(None, warmup_steps=2 * 5)
    weights = [objective.kl_weight(step) for step in range(20)]
    assert weights[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert weights[10:] == [1.0] * 10
    assert all(ELBOObjective(None, warmup_steps=0).kl_weight(s) == 1.0 for s in range(20))


def test_kl_warmup_ramps_the_beta_of_each_step(digits, monkeypatch):
    seen = []
    real_weight = ELBOObjective.kl_weight

    def spy(self, step):
        seen.append(real_weight(self, step))
        return seen[-1]

    monkeypatch.setattr(ELBOObjective, "kl_weight", spy)
    # 50 examples / batch 20 = 3 steps per epoch (the last one short)
    history = fit(_vae(), _subset(digits[0], 50), None, TrainConfig(epochs=3, batch_size=20, kl_warmup_epochs=2),
                  progress=False)
    assert seen == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0, 1.0, 1.0, 1.0])
    # the reported ELBO is the true one (beta = 1), whatever beta trained it
    assert all(r["train_elbo"] < 0 and r["train_kl"] >= 0 for r in history)

    seen.clear()
    fit(_vae(), _subset(digits[0], 50), None, TrainConfig(epochs=2, batch_size=20), progress=False)
    assert seen == [1.0] * 6


# ------------------------------------------------------------ (h) configuration errors


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(epochs=-1), ["epochs", "-1"]),
        (dict(epochs=0), ["epochs"]),
        (dict(batch_size=0), ["batch_size"]),
        (dict(lr=0.0), ["lr"]),
        (dict(lr=-1e-3), ["lr"]),
        (dict(optimizer="sgd"), ["optimizer", "'sgd'", "adam", "clipped-adam"]),
        (dict(clip_norm=0.0), ["clip_norm"]),
        (dict(kl_warmup_epochs=-2), ["kl_warmup_epochs"]),
        (dict(binarize="otsu"), ["binarization", "'otsu'", "threshold", "dynamic"]),
        (dict(device="quantum"), ["device", "'quantum'"]),
    ],
)
def test_train_config_rejects_bad_options(kwargs, words):
    with pytest.raises(ValueError) as info:
        TrainConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_config_rejects_cuda_without_gpu():
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available") as info:
            TrainConfig(device=device)
        assert repr(device) in str(info.value)


# ------------------------------------------------------------ (i) binarization


def test_bernoulli_on_grey_data_needs_binarize(digits):
    data = _subset(digits[0], 60)
    with pytest.raises(ValueError, match="binarize"):
        fit(_vae("bernoulli"), data, None, TrainConfig(epochs=1, batch_size=20), progress=False)
    with pytest.raises(ValueError, match="binarize"):  # the test set is checked too
        fit(_vae("bernoulli"), Dataset("bin", (data.x > 0.5).float(), None, (1, 8, 8), 2, None), data,
            TrainConfig(epochs=1, batch_size=20), progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit(_vae("bernoulli"), Dataset("big", data.x * 2, None, (1, 8, 8), None, None), None,
            TrainConfig(epochs=1, batch_size=20, binarize="dynamic"), progress=False)


@pytest.mark.parametrize("method", [
    "dynamic",
    "threshold",
])
def test_bernoulli_trains_with_binarize(digits, method):
    train, test = _subset(digits[0], 200), _subset(digits[1], 100)
    vae = _vae("bernoulli")
    test_x = training.evaluation_data(test, method)
    assert set(test_x.unique().tolist()) <= {0.0, 1.0}
    pyro.set_rng_seed(0)
    before = dataset_elbo(vae, test_x).elbo
    history = fit(vae, train, test, TrainConfig(epochs=3, batch_size=20, lr=3e-3, binarize=method), progress=False)
    assert all(math.isfinite(r["test_elbo"]) for r in history)
    pyro.set_rng_seed(0)
    after = dataset_elbo(vae, test_x).elbo
    diff = after - before
    assert float(diff.mean()) > 5 * float(diff.std()) / math.sqrt(len(diff))


def test_checkpoint_of_an_earlier_version_is_refused_naming_it(tmp_path):
    old = str(tmp_path / "old.pt")
    torch.save({"format": "pyprobvae-checkpoint-1", "model": {}}, old)
    with pytest.raises(CheckpointError, match="written by pyprobvae 0.1.*train the run again"):
        load_checkpoint(old)


@pytest.mark.parametrize("optimizer", ["adam", "clipped-adam"])
def test_weight_decay_zero_is_the_plain_optimizer_and_positive_shrinks_unused_weights(optimizer):
    weight = torch.nn.Parameter(torch.full((3,), 2.0))
    plain = loop.make_optimizer(loop.LoopConfig(optimizer=optimizer), [weight])
    assert type(plain) is (torch.optim.Adam if optimizer == "adam" else pyro.optim.clipped_adam.ClippedAdam)
    decayed = loop.make_optimizer(loop.LoopConfig(optimizer=optimizer, lr=0.1, weight_decay=0.5), [weight])
    weight.grad = torch.zeros(3)
    decayed.step()
    if optimizer == "adam":  # AdamW, decoupled: w <- w - lr * wd * w when the gradient is 0
        torch.testing.assert_close(weight.detach(), torch.full((3,), 2.0 * (1 - 0.1 * 0.5)))
    else:  # ClippedAdam's L2 term: the gradient becomes wd * w > 0, so Adam's first step moves w by -lr
        torch.testing.assert_close(weight.detach(), torch.full((3,), 2.0 - 0.1))


def test_cosine_schedule_falls_from_lr_to_a_tenth_along_half_a_cosine():
    config = loop.LoopConfig(lr=2e-3, lr_schedule="cosine")
    assert loop.scheduled_lr(config, 0, 100) == pytest.approx(2e-3)
    assert loop.scheduled_lr(config, 50, 100) == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5))
    assert loop.scheduled_lr(config, 100, 100) == pytest.approx(2e-4)
    rates = [loop.scheduled_lr(config, step, 100) for step in range(101)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert {loop.scheduled_lr(loop.LoopConfig(lr=2e-3), step, 100) for step in range(101)} == {2e-3}


@pytest.mark.parametrize("optimizer", ["adam", "clipped-adam"])
def test_each_step_descends_at_its_scheduled_learning_rate(digits, monkeypatch, optimizer):
    applied = []
    optimizer_class = torch.optim.Adam if optimizer == "adam" else pyro.optim.clipped_adam.ClippedAdam
    real_step = optimizer_class.step

    def spy(self, *args, **kwargs):
        applied.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(optimizer_class, "step", spy)
    config = TrainConfig(epochs=3, batch_size=20, lr=1e-2, optimizer=optimizer, lr_schedule="cosine")
    fit(_vae(), _subset(digits[0], 50), None, config, progress=False)  # 3 steps per epoch
    assert applied == pytest.approx([loop.scheduled_lr(config, step, 9) for step in range(9)])
    assert applied[0] == pytest.approx(1e-2) and applied[-1] < 0.2e-2
