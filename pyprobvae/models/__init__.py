from .ae import Autoencoder
from .build import MODELS, build_vae
from .vae import VAE

__all__ = ["Autoencoder", "MODELS", "VAE", "build_vae"]
