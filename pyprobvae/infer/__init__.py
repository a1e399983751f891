"""
Inference: the per-example ELBO and its estimators, the one training loop,
training by SVI, fitting a prior over codes, and checkpoints.
"""

from .checkpoint import CheckpointError, check_weights, load_checkpoint, save_checkpoint
from .elbo import ELBOTerms, elbo_terms, log_importance_weights, stratified_elbo_terms
from .estimators import ESTIMATORS, Estimator, PathwiseELBO, StratifiedELBO, make_estimator
from .loop import LoopConfig, NonFiniteLossError, RandomState, Trainer
from .prior_training import PriorTrainConfig, train_prior
from .training import ELBOLoss, ELBOObjective, TrainConfig, dataset_elbo, evaluation_data, fit

__all__ = [
    "CheckpointError", "ELBOLoss", "ELBOObjective", "ELBOTerms", "ESTIMATORS", "Estimator", "LoopConfig",
    "NonFiniteLossError", "PathwiseELBO", "PriorTrainConfig", "RandomState", "StratifiedELBO", "TrainConfig",
    "Trainer", "check_weights", "dataset_elbo", "elbo_terms", "evaluation_data", "fit", "load_checkpoint", "log_importance_weights",
    "make_estimator", "save_checkpoint", "stratified_elbo_terms", "train_prior",
]
