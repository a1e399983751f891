"""
Evaluation of trained models on held-out data: likelihood bounds and latent
statistics (:mod:`~pyprobvae.evaluation.metrics`), and the quality of
generated samples judged by a classifier (:mod:`~pyprobvae.evaluation.scores`)
and, for text, by their words (:mod:`~pyprobvae.evaluation.text`).
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
from .text import real_word_scores, vocabulary_of

__all__ = [
    "ACTIVE_UNIT_THRESHOLD", "ClassifierConfig", "EvaluationConfig", "SampleClassifier", "active_units", "code_usage",
    "evaluate",
    "frechet_distance", "iwae_log_likelihood", "kl_per_dimension", "load_or_train_classifier", "reconstruction_mse",
    "real_word_scores", "sample_scores", "train_classifier", "vocabulary_of",
]
