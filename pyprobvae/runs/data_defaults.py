"""
Training defaults that depend on the data set: what a run uses for a
setting the user did not give, where one default cannot serve every data
set. Everything else takes the default its config declares.

* **Binarization**: a Bernoulli likelihood on non-binary images (MNIST)
  binarizes them dynamically
  (:func:`~pyprobvae.infer.training.default_binarization`).
* **Text** (token sequences): the default corpus holds about 6,000
  sequences of 128 characters, each 128 positions for the prior, against
  1,437 digits of 16 codes: an epoch is dozens of times the work, so text
  trains for fewer epochs (:data:`TEXT_TRAINING`), and its prior, far from
  overfitting in that time, without dropout and with a higher learning
  rate that decays along a cosine (:data:`TEXT_PRIOR`,
  :data:`TEXT_PRIOR_TRAINING`; measured in ``docs/vqvae.rst``).
"""

from typing import Any, Dict, Tuple

from ..data import Dataset
from ..infer.training import default_binarization

TEXT_TRAINING: Dict[str, Any] = {"epochs": 10}
"""Stage 1 on text: the settings of :class:`~pyprobvae.infer.TrainConfig` that differ from its defaults."""

TEXT_PRIOR: Dict[str, Any] = {"dropout": 0.0}
"""Stage 2 on text: the settings of :class:`~pyprobvae.priors.TransformerPriorConfig` that differ from its defaults."""

TEXT_PRIOR_TRAINING: Dict[str, Any] = {"epochs": 30, "lr": 3e-3, "lr_schedule": "cosine"}
"""Stage 2 on text: the settings of :class:`~pyprobvae.infer.PriorTrainConfig` that differ from its defaults."""


def training_defaults(likelihood: str, dataset: Dataset) -> Dict[str, Any]:
    """
    The data-dependent defaults of :class:`~pyprobvae.infer.TrainConfig`
    for a model with ``likelihood`` trained on ``dataset``.

    :rtype: dict
    """
    defaults: Dict[str, Any] = {"binarize": default_binarization(likelihood, dataset)}
    if likelihood == "tokens":
        defaults.update(TEXT_TRAINING)
    return defaults


def prior_defaults(likelihood: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """
    The data-dependent defaults of the prior over the codes of a model with
    ``likelihood``: of its architecture
    (:class:`~pyprobvae.priors.TransformerPriorConfig`) and of its training
    (:class:`~pyprobvae.infer.PriorTrainConfig`).

    :rtype: tuple
    """
    if likelihood == "tokens":
        return dict(TEXT_PRIOR), dict(TEXT_PRIOR_TRAINING)
    return {}, {}
