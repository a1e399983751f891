import math

import pytest
import torch

from pyprobvae.data import from_arrays
from pyprobvae.evaluation import scores
from pyprobvae.evaluation.scores import (
    ClassifierConfig,
    SampleClassifier,
    frechet_distance,
    load_or_train_classifier,
    sample_scores,
    train_classifier,
)
from pyprobvae.infer.checkpoint import CheckpointError, save_checkpoint


@pytest.fixture(scope="module")
def classifier(digits, one_thread):
    return train_classifier(digits[0], ClassifierConfig(epochs=20))


@pytest.fixture(scope="module")
def noise():
    return torch.rand((360, 1, 8, 8), generator=torch.Generator().manual_seed(1))


def test_classifier_accuracy(classifier, digits):
    test = digits[1]
    assert isinstance(classifier, SampleClassifier)
    accuracy = (classifier(test.x).argmax(-1) == test.y).double().mean().item()
    assert accuracy > 0.9
    assert classifier.features(test.x).shape == (len(test), 128)


def test_train_classifier_deterministic(digits):
    small = from_arrays(digits[0].x[:200], digits[0].y[:200], name="small")
    a = train_classifier(small, ClassifierConfig(epochs=2, seed=3))
    b = train_classifier(small, ClassifierConfig(epochs=2, seed=3))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_train_classifier_unlabelled():
    with pytest.raises(ValueError, match="labelled"):
        train_classifier(from_arrays(torch.rand(10, 4)))


def test_frechet_identical():
    features = torch.randn(500, 20, generator=torch.Generator().manual_seed(0)) * 3 + 1
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)


def test_frechet_1d_closed_form():
    g = torch.Generator().manual_seed(0)
    a = 1.0 + 2.0 * torch.randn(200_000, 1, generator=g)
    b = -0.5 + 0.5 * torch.randn(200_000, 1, generator=g)
    expected = (1.0 + 0.5) ** 2 + (2.0 - 0.5) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_frechet_diagonal_closed_form():
    g = torch.Generator().manual_seed(0)
    mu_a, mu_b = torch.tensor([0.0, 1.0, -2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0, 2.5])
    s_a, s_b = torch.tensor([1.0, 2.0, 0.5, 3.0]), torch.tensor([2.0, 2.0, 1.5, 0.5])
    a = mu_a + s_a * torch.randn(200_000, 4, generator=g)
    b = mu_b + s_b * torch.randn(200_000, 4, generator=g)
    expected = ((mu_a - mu_b) ** 2 + (s_a - s_b) ** 2).sum().item()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_frechet_symmetric_and_non_negative():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(10, 10, generator=g)
    a = torch.randn(300, 10, generator=g) @ mixing
    b = torch.randn(400, 10, generator=g) @ mixing.T + 1
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    # Rank-deficient covariances (3 rows in 10 dimensions) stress the clamping.
    for _ in range(20):
        x, y = torch.randn(3, 10, generator=g), torch.randn(3, 10, generator=g)
        assert frechet_distance(x, y) >= 0.0
        assert frechet_distance(x, x) >= 0.0


def test_frechet_bad_inputs():
    with pytest.raises(ValueError, match="features"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"N >= 2"):
        frechet_distance(torch.randn(1, 3), torch.randn(5, 3))


def test_scores_on_real_images(classifier, digits, noise):
    train, test = digits
    real = sample_scores(classifier, test.x, real=train.x[:500], labels=test.y)
    assert real["confident_share"] > 0.7
    assert real["class_entropy_max"] == pytest.approx(math.log(10))
    assert real["class_entropy"] > math.log(10) - 0.05
    assert real["conditional_accuracy"] > 0.9
    noise_fd = sample_scores(classifier, noise, real=train.x)["frechet_distance"]
    single_class = test.x[test.y == 3]
    single_fd = sample_scores(classifier, single_class, real=train.x)["frechet_distance"]
    assert real["frechet_distance"] * 10 < noise_fd
    assert real["frechet_distance"] * 10 < single_fd
    assert "conditional_accuracy" not in sample_scores(classifier, test.x)
    assert "frechet_distance" not in sample_scores(classifier, test.x)


def test_noise_scores_worse(classifier, digits, noise):
    train, test = digits
    real = sample_scores(classifier, test.x, real=train.x, labels=test.y)
    bad = sample_scores(classifier, noise, real=train.x, labels=test.y)
    assert bad["confident_share"] < real["confident_share"]
    assert bad["class_entropy"] < real["class_entropy"]
    assert bad["conditional_accuracy"] < real["conditional_accuracy"]
    assert bad["frechet_distance"] > real["frechet_distance"]


def test_scores_bad_inputs(classifier, digits):
    test = digits[1]
    with pytest.raises(ValueError, match=r"\(360, 64\).*\(1, 8, 8\)"):
        sample_scores(classifier, test.x.reshape(360, 64))
    with pytest.raises(ValueError, match="N >= 1"):
        sample_scores(classifier, test.x[:0])
    with pytest.raises(ValueError, match="real"):
        sample_scores(classifier, test.x, real=test.x[:, :, :4])
    with pytest.raises(ValueError, match="labels"):
        sample_scores(classifier, test.x, labels=test.y[:10])
    with pytest.raises(ValueError, match="confidence"):
        sample_scores(classifier, test.x, confidence=1.5)


def _refuse(*args, **kwargs):
    raise AssertionError("train_classifier should not be called")


def test_load_or_train_caches(tmp_path, digits, monkeypatch):
    path = str(tmp_path / "classifier.pt")
    first = load_or_train_classifier(path, digits[0], config=ClassifierConfig(epochs=1))
    monkeypatch.setattr(scores, "train_classifier", _refuse)
    second = load_or_train_classifier(path, digits[0], config=ClassifierConfig(epochs=1))
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)


def test_load_or_train_retrains_on_mismatch(tmp_path, digits, monkeypatch):
    path = str(tmp_path / "classifier.pt")
    load_or_train_classifier(path, digits[0], config=ClassifierConfig(epochs=1))
    other = from_arrays(torch.rand(50, 1, 4, 4), torch.arange(50) % 3, name="other")
    retrained = load_or_train_classifier(path, other, config=ClassifierConfig(epochs=1))
    assert (retrained.data_shape, retrained.num_classes) == ((1, 4, 4), 3)
    monkeypatch.setattr(scores, "train_classifier", _refuse)
    assert load_or_train_classifier(path, other, config=ClassifierConfig(epochs=1)).data_shape == (1, 4, 4)


def test_load_or_train_refuses_corrupt_or_foreign_file(tmp_path, digits):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_or_train_classifier(str(corrupt), digits[0], epochs=1)
    assert corrupt.read_bytes() == b"not a checkpoint"
    foreign = str(tmp_path / "vae.pt")
    save_checkpoint({"kind": "vae"}, foreign)
    with pytest.raises(CheckpointError, match="not of a sample classifier"):
        load_or_train_classifier(foreign, digits[0], config=ClassifierConfig(epochs=1))
