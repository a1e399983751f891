from .ae import Autoencoder
from .build import MODELS, PRIORS, build_vae
from .cvae import ConditionalVAE
from .vae import VAE

__all__ = ["Autoencoder", "ConditionalVAE", "MODELS", "PRIORS", "VAE", "build_vae"]
