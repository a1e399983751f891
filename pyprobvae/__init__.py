"""
pyprobvae: variational inference with latent-variable models, written as Pyro
model/guide pairs.
"""

from .data import Dataset, from_arrays, load_dataset
from .evaluation import evaluate
from .infer import TrainConfig, fit
from .models import VAE, build_model, build_vae, model_config

__version__ = "0.3.0"

__all__ = ["Dataset", "TrainConfig", "VAE", "build_model", "build_vae", "evaluate", "fit", "from_arrays", "load_dataset", "model_config"]
