"""
Inference: the per-example ELBO and its estimators, the one training loop,
training by SVI, fitting a prior over codes, and checkpoints.
"""

from .checkpoint import CheckpointError, check_weights, load_checkpoint, save_checkpoint
from .elbo import ELBOTerms, Estimate, elbo_estimate, elbo_terms, log_importance_weights, stratified_estimate
from .estimators import ELBO, GRADIENTS, IWAE, OBJECTIVES, Estimator, StratifiedELBO, make_estimator
from .iwae import iwae_estimate, particle_weights
from .loop import LoopConfig, Monitor, NonFiniteLossError, RandomState, Trainer
from .prior_training import PriorTrainConfig, train_prior
from .training import ELBOLoss, ELBOObjective, TrainConfig, dataset_elbo, evaluation_data, fit

__all__ = [
    "CheckpointError", "ELBO", "ELBOLoss", "ELBOObjective", "ELBOTerms", "Estimate", "Estimator", "GRADIENTS", "IWAE", "LoopConfig",
    "Monitor", "NonFiniteLossError", "OBJECTIVES", "PriorTrainConfig", "RandomState", "StratifiedELBO", "TrainConfig",
    "Trainer", "check_weights", "dataset_elbo", "elbo_estimate", "elbo_terms", "evaluation_data", "fit", "iwae_estimate",
    "load_checkpoint", "log_importance_weights", "make_estimator", "particle_weights", "save_checkpoint", "stratified_estimate",
    "train_prior",
]
