"""
Sample-quality scores for generated images, judged by a small classifier that
the package trains itself on the training split of the data set.

The classifier stands in for the Inception network of the Inception score
(Salimans et al. 2016) and of the Frechet Inception distance (Heusel et al.
2017): on small data sets such as the 8x8 digits an ImageNet network is both
unavailable offline and meaningless, while an MLP trained on the data itself
gives confident predictions and informative features.

**References**

- Salimans et al. 2016, "Improved Techniques for Training GANs".
- Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge
  to a Local Nash Equilibrium".
- Dowson & Landau 1982, "The Frechet distance between multivariate normal
  distributions".
"""

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..config import setting
from ..data import Dataset
from ..infer.checkpoint import CheckpointError, check_schema, check_weights, load_checkpoint, save_checkpoint
from ..infer.loop import LoopConfig, Objective, RandomState, Trainer
from ..networks import MLP

CHECKPOINT_KIND = "sample-classifier"


class SampleClassifier(nn.Module):
    """
    An MLP classifier ``data_dim -> hidden[0] -> ... -> hidden[-1] ->
    num_classes`` whose last hidden activations serve as image features.

    :param data_shape: shape of one image, e.g. ``(1, 8, 8)``.
    :type data_shape: sequence of int
    :param int num_classes: number of label classes.
    :param hidden: widths of the hidden layers; the last one is the number of
        features :math:`F`.
    :type hidden: sequence of int
    """

    def __init__(self, data_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        self.data_shape = tuple(int(d) for d in data_shape)
        self.num_classes = int(num_classes)
        self.hidden = tuple(int(h) for h in hidden)
        self.body = MLP(self.data_shape, self.hidden)
        self.head = nn.Linear(self.body.out_features, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """
        :param torch.Tensor x: images of shape ``(N, *data_shape)``.
        :return: the penultimate activations, shape ``(N, F)``.
        """
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        :param torch.Tensor x: images of shape ``(N, *data_shape)``.
        :return: unnormalized class log-probabilities, shape ``(N, num_classes)``.
        """
        return self.head(self.features(x))


@dataclass
class ClassifierConfig(LoopConfig):
    """Settings of :func:`train_classifier`: the loop's, with their own defaults."""

    epochs: int = setting(20, minimum=1, maximum=100_000)
    """Passes over the training split."""


class CrossEntropy(Objective):
    r""":math:`-\log \mathrm{softmax}(f(x_i))_{y_i}` of each example, the classifier's loss (nats per example; the trainer takes the mean)."""

    terms = ("cross-entropy",)

    def __init__(self, classifier: nn.Module) -> None:
        self.network = classifier

    def __call__(  # type: ignore[override]  # a batch of this objective is the images and their labels
        self, network: nn.Module, x: torch.Tensor, y: torch.Tensor, *, step: int
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor]]:
        loss = nn.functional.cross_entropy(network(x), y, reduction="none")
        return loss, (loss,)

    def record(self, means: Dict[str, float]) -> dict:
        return {"train_cross_entropy": means["cross-entropy"]}


def train_classifier(train: Dataset, config: Optional[ClassifierConfig] = None) -> SampleClassifier:
    """
    Fits a :class:`SampleClassifier` to the labelled training split by
    minimizing the cross-entropy with the one training loop
    (:class:`~pyprobvae.infer.loop.Trainer`). The result depends only on
    the data and the settings: the initialization and the shuffling draw
    from ``config.seed`` inside a forked random state, so the caller's
    global random state is left untouched (scoring a run's samples gives
    the same numbers whether or not the classifier was cached).

    :param Dataset train: the training split; must have labels.
    :param ClassifierConfig config: the settings (defaults if None).
    :raises ValueError: when ``train`` has no labels.
    :rtype: SampleClassifier
    """
    if train.y is None or train.num_classes is None:
        raise ValueError(f"{train.name}: the sample classifier needs labelled training data, but y is None")
    config = config or ClassifierConfig(device=str(train.x.device))
    with torch.random.fork_rng(devices=[train.x.device] if train.x.device.type == "cuda" else []):
        random = RandomState(config.seed, train.x.device)
        classifier = SampleClassifier(train.data_shape, train.num_classes).to(train.x.device)
        Trainer(CrossEntropy(classifier), config, random).run((train.x, train.y), progress=False)
    return classifier.eval()


def load_or_train_classifier(path: str, train: Dataset, **kwargs: Any) -> SampleClassifier:
    """
    Loads the classifier cached at ``path``, or trains one with
    :func:`train_classifier` and caches it there (written atomically).

    The cache is retrained and overwritten when the cached classifier was
    trained for another ``data_shape`` or ``num_classes`` than ``train``'s;
    training arguments are not compared, so delete the file to retrain with
    different ones. A file that is corrupt, or a pyprobvae checkpoint of
    something other than a sample classifier, is never overwritten: it raises
    :class:`~pyprobvae.infer.checkpoint.CheckpointError`.

    :param str path: the cache file.
    :param Dataset train: the training split; must have labels.
    :param kwargs: keyword arguments of :func:`train_classifier` (``config``).
    :raises CheckpointError: when ``path`` exists but holds no sample classifier.
    :rtype: SampleClassifier
    """
    cached = _load_cached(path, train.x.device)
    if cached is not None and (cached.data_shape, cached.num_classes) == (tuple(train.data_shape), train.num_classes):
        return cached
    classifier = train_classifier(train, **kwargs)
    save_checkpoint(
        {
            "kind": CHECKPOINT_KIND,
            "data_shape": list(classifier.data_shape),
            "num_classes": classifier.num_classes,
            "hidden": list(classifier.hidden),
            "state_dict": classifier.state_dict(),
        },
        path,
    )
    return classifier


CLASSIFIER_CHECKPOINT = {"data_shape": list, "num_classes": int, "hidden": list, "state_dict": dict}
"""The entries of a sample classifier's checkpoint beside its ``kind``."""


def _load_cached(path, device):
    if not os.path.exists(path):
        return None
    state = load_checkpoint(path, map_location=device, schema={"kind": str})
    if state["kind"] != CHECKPOINT_KIND:
        raise CheckpointError(f"{path} is a pyprobvae checkpoint but not of a sample classifier; refusing to overwrite it")
    check_schema(state, CLASSIFIER_CHECKPOINT, path)
    check_weights(state["state_dict"], path)
    try:
        classifier = SampleClassifier(state["data_shape"], state["num_classes"], state["hidden"]).to(device)
        classifier.load_state_dict(state["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} does not hold a classifier this version can build ({str(e).splitlines()[0]})") from e
    return classifier.eval()


@torch.no_grad()
def sample_scores(
    classifier: SampleClassifier,
    samples: torch.Tensor,
    real: Optional[torch.Tensor] = None,
    labels: Optional[torch.Tensor] = None,
    confidence: float = 0.9,
) -> dict:
    r"""
    Scores generated images with a trained :class:`SampleClassifier`. With
    :math:`p(y \mid x)` the classifier's softmax and
    :math:`\hat y(x) = \operatorname*{arg\,max}_y p(y \mid x)`:

    * ``"confident_share"``: the share of samples with
      :math:`\max_y p(y \mid x) \ge` ``confidence``; samples that look like
      some class score high (the sharpness term of the Inception score,
      Salimans et al. 2016).
    * ``"class_entropy"``: the entropy in nats, :math:`-\sum_k h_k \log h_k`,
      of the histogram :math:`h` of :math:`\hat y` over the samples; samples
      covering all classes evenly reach ``"class_entropy_max"`` =
      :math:`\log C` for :math:`C` = ``num_classes`` (the diversity term of
      Salimans et al. 2016).
    * ``"conditional_accuracy"``, only when ``labels`` are given: the share of
      samples with :math:`\hat y(x)` = ``label``, for class-conditional
      generators.
    * ``"frechet_distance"``, only when ``real`` is given: the Frechet
      distance (Heusel et al. 2017) between Gaussians fitted to the classifier features of the
      samples and of the real images; see :func:`frechet_distance`.

    :param SampleClassifier classifier: the judge, trained on the training split.
    :param torch.Tensor samples: generated images of shape ``(N, *data_shape)``
        with values in ``[0, 1]``.
    :param torch.Tensor real: optional real images of shape ``(M, *data_shape)``.
    :param torch.Tensor labels: optional int64 intended class of each sample,
        shape ``(N,)``.
    :param float confidence: threshold in :math:`(0, 1]` on :math:`\max_y p(y \mid x)`.
    :raises ValueError: on images of the wrong shape or none, labels not matching the
        samples, or a threshold outside ``(0, 1]``.
    :return: a dict of floats.
    """
    _check_images(classifier, samples, "samples")
    if not 0.0 < confidence <= 1.0:
        raise ValueError(f"confidence must be in (0, 1], got {confidence}")
    probs = classifier(samples).softmax(-1)
    predicted = probs.argmax(-1)
    histogram = torch.bincount(predicted, minlength=classifier.num_classes).double() / len(samples)
    scores = {
        "confident_share": (probs.max(-1).values >= confidence).double().mean().item(),
        "class_entropy": torch.special.entr(histogram).sum().item(),
        "class_entropy_max": math.log(classifier.num_classes),
    }
    if labels is not None:
        if tuple(labels.shape) != (len(samples),):
            raise ValueError(f"labels have shape {tuple(labels.shape)}; expected ({len(samples)},), one per sample")
        scores["conditional_accuracy"] = (predicted == labels.to(predicted.device)).double().mean().item()
    if real is not None:
        _check_images(classifier, real, "real")
        scores["frechet_distance"] = frechet_distance(classifier.features(samples), classifier.features(real))
    return scores


def _check_images(classifier, images, what):
    expected = classifier.data_shape
    if images.dim() != len(expected) + 1 or tuple(images.shape[1:]) != expected or len(images) == 0:
        raise ValueError(
            f"{what} have shape {tuple(images.shape)}; expected (N, {', '.join(map(str, expected))}), "
            f"i.e. N >= 1 images of data_shape {expected}"
        )


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    r"""
    The Frechet (2-Wasserstein) distance (Dowson & Landau 1982) between the
    Gaussians :math:`\mathcal{N}(\mu_1, S_1)` and :math:`\mathcal{N}(\mu_2, S_2)`
    fitted to two sets of features by their sample means and unbiased
    covariances, as in the FID (Heusel et al. 2017):

    .. math::

        d^2 = \lVert \mu_1 - \mu_2 \rVert^2
            + \operatorname{Tr}\bigl(S_1 + S_2 - 2 (S_1 S_2)^{1/2}\bigr).

    Computed in float64 without a non-symmetric matrix square root: since
    :math:`S_1 S_2` is similar to the positive semi-definite
    :math:`S_1^{1/2} S_2 S_1^{1/2}`, :math:`\operatorname{Tr} (S_1 S_2)^{1/2}`
    is the sum of the square roots of that matrix's eigenvalues, with
    round-off negatives clamped to zero. The result is symmetric and clamped
    to be non-negative.

    :param torch.Tensor features_a: shape ``(N, F)``, :math:`N \ge 2`.
    :param torch.Tensor features_b: shape ``(M, F)``, :math:`M \ge 2`.
    :raises ValueError: on inputs that are not two-dimensional, have fewer
        than two rows, or differ in :math:`F`.
    :rtype: float
    """
    mu_a, cov_a = _gaussian_fit(features_a, "features_a")
    mu_b, cov_b = _gaussian_fit(features_b, "features_b")
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"features_a has {len(mu_a)} features but features_b has {len(mu_b)}")
    sqrt_a = _psd_sqrt(cov_a)
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return max(distance.item(), 0.0)


def _gaussian_fit(features, what) -> Tuple[torch.Tensor, torch.Tensor]:
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"{what} has shape {tuple(features.shape)}; expected (N, F) with N >= 2")
    features = features.double()
    return features.mean(0), torch.atleast_2d(torch.cov(features.T))


def _psd_sqrt(matrix):
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T
