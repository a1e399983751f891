from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .elbo import ELBOTerms, elbo_terms, log_importance_weights, stratified_elbo_terms
from .training import ELBOLoss, NonFiniteLossError, TrainConfig, dataset_elbo, evaluation_data, fit, train_step

__all__ = [
    "CheckpointError",
    "ELBOLoss",
    "ELBOTerms",
    "NonFiniteLossError",
    "TrainConfig",
    "dataset_elbo",
    "elbo_terms",
    "evaluation_data",
    "fit",
    "load_checkpoint",
    "log_importance_weights",
    "save_checkpoint",
    "stratified_elbo_terms",
    "train_step",
]
