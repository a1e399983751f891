"""
TensorBoard event files of ``train`` and ``train-prior``, read back as
TensorBoard reads them: the tags, their steps, their values against
``metrics.json``, the pictures, the hyperparameters; resume; and training
with ``--no-tensorboard`` or without TensorBoard installed.
"""

import io
import json
import os
import shutil
import sys
import textwrap
import time

import numpy as np
import pytest
from matplotlib import image as mpimg

from pyprobvae.cli import main
from pyprobvae.data import load_dataset
from pyprobvae.infer import TrainConfig
from pyprobvae.infer.loop import scheduled_lr

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 3
SMALL = ["--hidden", "16", "--latent-dim", "2", "--iwae-samples", "10", "--batch-size", "100", "--log-every", "4", "--quiet"]
STEPS = 15
"""Steps per epoch: 1437 training digits in batches of 100."""
WINDOW_ENDS = (4, 8, 12, 15)
"""The steps of an epoch that end a log window: every 4th (--log-every 4) and the last."""
WINDOW_EXAMPLES = (400, 400, 400, 237)
"""The examples in each of those windows."""
VAE = ["--tensorboard-images-every", "2", "--lr-schedule", "cosine", *SMALL]
TERMS = ("log_likelihood", "kl", "penalty", "bound", "loss", "lr", "grad_norm")


def _steps(epochs, per_epoch=STEPS, ends=WINDOW_ENDS):
    return [epoch * per_epoch + end for epoch in range(epochs) for end in ends]


def _events(folder):
    """TensorBoard's view of the event files in ``folder`` (every event kept)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(folder, size_guidance=dict.fromkeys(accumulator.DEFAULT_SIZE_GUIDANCE, 0))
    events.Reload()
    return events


def _scalars(events, tag):
    return [(event.step, event.value) for event in events.Scalars(tag)]


def _float32(value):
    return float(np.float32(value))


def _metrics(run):
    with open(os.path.join(run, "metrics.json")) as f:
        return json.load(f)


def _without_seconds(metrics):
    return {**metrics, "history": [{k: v for k, v in record.items() if k != "seconds"} for record in metrics["history"]]}


def _event_files(folder):
    return sorted(name for name in os.listdir(folder) if "tfevents" in name)


def _after_the_second_of(folder):
    """Wait until the clock has left the second of the newest event file's name (its files are read in the order of their names)."""
    newest = max(int(name.split(".")[3]) for name in _event_files(folder))
    while time.time() < newest + 1:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tensorboard") / "vae")
    assert main(["train", "--epochs", str(EPOCHS), "--out", out, *VAE]) == 0
    return out


@pytest.fixture(scope="module")
def vae_events(vae_run):
    return _events(os.path.join(vae_run, "tensorboard"))


def test_each_log_window_has_the_terms_the_learning_rate_and_the_gradient_norm(vae_events, vae_run):
    for name in TERMS:
        assert [step for step, _ in _scalars(vae_events, f"step/{name}")] == _steps(EPOCHS), name
    # the windows' per-example means make up the epoch's: train_elbo = sum over windows of examples * (ll - kl) / 1437
    history = _metrics(vae_run)["history"]
    ll, kl = (np.reshape([value for _, value in _scalars(vae_events, f"step/{name}")], (EPOCHS, -1)) for name in ("log_likelihood", "kl"))
    for epoch, record in enumerate(history):
        assert np.dot(WINDOW_EXAMPLES, ll[epoch] - kl[epoch]) / sum(WINDOW_EXAMPLES) == pytest.approx(record["train_elbo"], rel=1e-6)
        assert np.dot(WINDOW_EXAMPLES, kl[epoch]) / sum(WINDOW_EXAMPLES) == pytest.approx(record["train_kl"], rel=1e-5)
    config = TrainConfig(lr_schedule="cosine")
    for step, lr in _scalars(vae_events, "step/lr"):
        assert lr == _float32(scheduled_lr(config, step - 1, EPOCHS * STEPS))
    for (step, loss), (_, bound) in zip(_scalars(vae_events, "step/loss"), _scalars(vae_events, "step/bound")):
        assert loss == -bound  # beta 1, no warm-up: the loss is minus the ELBO
    assert all(np.isfinite(norm) and norm > 0 for _, norm in _scalars(vae_events, "step/grad_norm"))


def test_each_epoch_has_every_number_of_its_record_in_metrics_json(vae_events, vae_run):
    metrics = _metrics(vae_run)
    keys = {key for record in metrics["history"] for key, value in record.items() if key != "epoch" and isinstance(value, float)}
    assert keys == {"train_elbo", "train_kl", "test_elbo", "seconds"}
    for key in keys:
        assert _scalars(vae_events, f"epoch/{key}") == [(STEPS * r["epoch"], _float32(r[key])) for r in metrics["history"]], key
    # the KL of each latent dimension on the test set, every epoch; the last epoch's is the final evaluation's
    for dim, final in enumerate(metrics["kl_per_dim"]):
        points = _scalars(vae_events, f"epoch/kl_per_dim/{dim}")
        assert [step for step, _ in points] == [STEPS * epoch for epoch in range(1, EPOCHS + 1)]
        assert points[-1][1] == pytest.approx(final, abs=1e-6)


def test_the_final_evaluation_is_written_at_the_last_step(vae_events, vae_run):
    metrics = _metrics(vae_run)
    for key in ("test_elbo", "test_nll", "kl", "recon_nll", "recon_mse", "active_units"):
        assert _scalars(vae_events, f"final/{key}") == [(EPOCHS * STEPS, _float32(metrics[key]))], key
    assert _scalars(vae_events, "final/kl_per_dim/1") == [(EPOCHS * STEPS, _float32(metrics["kl_per_dim"][1]))]
    frechet = metrics["sample_scores"]["prior"]["frechet_distance"]
    assert _scalars(vae_events, "final/sample_scores/prior/frechet_distance") == [(EPOCHS * STEPS, _float32(frechet))]


def test_the_pictures_come_every_few_epochs_and_at_the_last(vae_events):
    sizes = {"samples": (73, 73), "reconstructions": (73, 73), "interpolation": (73, 91)}  # 8x8 tiles with 1-pixel borders
    assert set(vae_events.Tags()["images"]) == {f"images/{name}" for name in sizes}
    for name, (height, width) in sizes.items():
        pictures = vae_events.Images(f"images/{name}")
        assert [picture.step for picture in pictures] == [2 * STEPS, 3 * STEPS], name  # --tensorboard-images-every 2; the last epoch
        assert {(picture.height, picture.width) for picture in pictures} == {(height, width)}, name
    # the reconstructions: a row of 8 test inputs above their 8 reconstructions, and so on
    grid = mpimg.imread(io.BytesIO(vae_events.Images("images/reconstructions")[-1].encoded_image_string), format="png")[..., 0]
    test = load_dataset("digits", "test").x[:16, 0].numpy()
    for index, row in ((0, 0), (7, 0), (8, 2), (15, 2)):
        tile = grid[1 + 9 * row : 9 + 9 * row, 1 + 9 * (index % 8) : 9 + 9 * (index % 8)]
        np.testing.assert_allclose(tile, test[index], atol=1.01 / 255)


def test_the_settings_are_hyperparameters_and_text(vae_events, vae_run):
    plugin_data = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")
    content = vae_events.PluginTagToContent("hparams")
    hparams = plugin_data.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info.hparams
    assert hparams["train/lr"].number_value == pytest.approx(1e-3)
    assert hparams["train/lr_schedule"].string_value == "cosine"
    assert hparams["model/hidden"].string_value == "16"
    assert hparams["data/data_dir"].string_value == "none"
    experiment = plugin_data.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {"final/test_elbo", "final/test_nll", "final/kl"} <= {metric.name.tag for metric in experiment.metric_infos}
    (text,) = vae_events.Tensors("config/text_summary")
    with open(os.path.join(vae_run, "config.json")) as f:
        assert json.loads(textwrap.dedent(text.tensor_proto.string_val[0].decode())) == json.load(f)


def test_no_tensorboard_writes_no_events_and_the_same_numbers(vae_run, tmp_path):
    out = str(tmp_path / "quiet")
    assert main(["train", "--epochs", str(EPOCHS), "--out", out, "--no-tensorboard", *VAE[2:]]) == 0
    assert "tensorboard" not in os.listdir(out)
    assert _without_seconds(_metrics(out)) == _without_seconds(_metrics(vae_run))  # TensorBoard changes no number


def test_without_tensorboard_installed_training_goes_on_silently(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    out = str(tmp_path / "run")
    assert main(["train", "--epochs", "1", "--out", out, *SMALL]) == 0
    assert "tensorboard" not in os.listdir(out) and os.path.isfile(os.path.join(out, "metrics.json"))
    assert capsys.readouterr().err == ""


def test_resume_continues_the_steps_and_hides_what_a_killed_process_wrote(tmp_path):
    writer = pytest.importorskip("torch.utils.tensorboard").SummaryWriter
    out = str(tmp_path / "run")
    board = os.path.join(out, "tensorboard")
    assert main(["train", "--epochs", "1", "--out", out, *SMALL]) == 0
    # what a process killed in epoch 2, after its checkpoint of epoch 1, would have left
    _after_the_second_of(board)
    with writer(board) as orphans:
        orphans.add_scalar("step/loss", 1e6, STEPS + 4)
        orphans.add_scalar("epoch/train_elbo", 1e6, 2 * STEPS)
    _after_the_second_of(board)
    assert main(["train", "--epochs", "2", "--out", out, "--resume", *SMALL]) == 0
    assert len(_event_files(board)) == 3  # the run's, the orphans', the resumed run's
    events = _events(board)
    assert [step for step, _ in _scalars(events, "step/loss")] == _steps(2)
    assert max(value for _, value in _scalars(events, "step/loss")) < 1e6
    history = _metrics(out)["history"]
    assert _scalars(events, "epoch/train_elbo") == [(STEPS * r["epoch"], _float32(r["train_elbo"])) for r in history]
    assert [step for step, _ in _scalars(events, "final/test_elbo")] == [STEPS, 2 * STEPS]  # each stretch's final evaluation


def test_a_resumed_run_whose_event_folder_is_a_file_is_refused(vae_run, tmp_path, capsys):
    pytest.importorskip("torch.utils.tensorboard")  # without TensorBoard no folder is needed
    out = str(tmp_path / "run")
    shutil.copytree(vae_run, out)
    shutil.rmtree(os.path.join(out, "tensorboard"))
    with open(os.path.join(out, "tensorboard"), "w") as f:
        f.write("not a folder\n")
    capsys.readouterr()
    assert main(["train", "--epochs", str(EPOCHS + 1), "--out", out, "--resume", *VAE]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tensorboard: it exists and is not a directory" in err, err
    assert main(["train", "--epochs", str(EPOCHS + 1), "--out", out, "--resume", "--no-tensorboard", *VAE[2:]]) == 0


def test_vqvae_runs_follow_the_codebook_and_train_prior_has_its_own_events(tmp_path):
    out = str(tmp_path / "vq")
    vq = ["--model", "vqvae", "--codebook-size", "8", "--code-dim", "2", "--batch-size", "100", "--log-every", "4", "--quiet"]
    assert main(["train", "--epochs", "2", "--out", out, *vq]) == 0
    events, metrics = _events(os.path.join(out, "tensorboard")), _metrics(out)
    for key in ("codebook_perplexity", "codes_used"):
        points = _scalars(events, f"epoch/{key}")
        assert [step for step, _ in points] == [STEPS, 2 * STEPS]
        assert points[-1][1] == _float32(metrics[key]) and _scalars(events, f"final/{key}") == [points[-1]], key
    assert _scalars(events, "epoch/train_penalty") == [(STEPS * r["epoch"], _float32(r["train_penalty"])) for r in metrics["history"]]
    assert {"images/samples", "images/reconstructions"} == set(events.Tags()["images"])

    prior = ["--d-model", "8", "--num-heads", "1", "--num-layers", "1", "--batch-size", "100", "--log-every", "4", "--quiet"]
    assert main(["train-prior", out, "--epochs", "2", *prior]) == 0
    events, metrics = _events(os.path.join(out, "tensorboard", "prior")), _metrics(out)
    steps = 13  # 1294 training codes (1437 less the 143 held out) in batches of 100
    for name in ("nll", "loss", "lr", "grad_norm"):
        assert [step for step, _ in _scalars(events, f"step/{name}")] == _steps(2, steps, (4, 8, 12, 13)), name
    for key in ("train_nll", "validation_nll", "test_nll", "seconds"):
        assert _scalars(events, f"epoch/{key}") == [(steps * r["epoch"], _float32(r[key])) for r in metrics["prior_history"]], key
    assert _scalars(events, "final/test_nll") == [(2 * steps, _float32(metrics["test_nll"]))]
    assert events.Tags()["images"] == ["images/samples"]  # drawn from the prior as it trains
    plugin_data = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["prior/d_model"].number_value == 8 and hparams["train/epochs"].number_value == 2


@pytest.mark.parametrize("argv, message", [
    (["train", "--tensorboard-images-every", "0"], "must be in [1, 100000], got 0"),
    (["train", "--tensorboard-images-every", "two"], "expected an integer, got 'two'"),
    (["train", "--no-tensorboard", "--tensorboard-images-every", "2"], "--tensorboard-images-every does not apply with --no-tensorboard"),
    (["train-prior", "RUN", "--tensorboard-images-every", "-1"], "must be in [1, 100000], got -1"),
])
def test_bad_tensorboard_options_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyprobvae: error: ") and message in err, err
    assert os.listdir(tmp_path) == []
