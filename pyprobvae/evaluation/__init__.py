"""
Evaluation of trained models on held-out data: likelihood bounds and latent
statistics (:mod:`~pyprobvae.evaluation.metrics`), and the quality of
generated samples judged by a classifier (:mod:`~pyprobvae.evaluation.scores`).
"""

from .metrics import (
    ACTIVE_UNIT_THRESHOLD,
    EvaluationConfig,
    active_units,
    code_usage,
    evaluate,
    iwae_log_likelihood,
    kl_per_dimension,
    reconstruction_mse,
)
from .scores import (
    ClassifierConfig,
    SampleClassifier,
    frechet_distance,
    load_or_train_classifier,
    sample_scores,
    train_classifier,
)

__all__ = [
    "ACTIVE_UNIT_THRESHOLD", "ClassifierConfig", "EvaluationConfig", "SampleClassifier", "active_units", "code_usage",
    "evaluate",
    "frechet_distance", "iwae_log_likelihood", "kl_per_dimension", "load_or_train_classifier", "reconstruction_mse",
    "sample_scores", "train_classifier",
]
