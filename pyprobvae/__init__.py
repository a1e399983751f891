"""
pyprobvae: variational inference with latent-variable models, written as Pyro
model/guide pairs.
"""

from .data import Dataset, from_arrays, load_dataset
from .infer import TrainConfig, fit
from .metrics import evaluate
from .models import VAE, build_vae

__version__ = "0.1.0"

__all__ = ["Dataset", "TrainConfig", "VAE", "build_vae", "evaluate", "fit", "from_arrays", "load_dataset"]
