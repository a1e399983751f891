from .ae import Autoencoder
from .build import MODELS, NETWORKS, PRIORS, build_model, build_vae, build_vqvae
from .cvae import ConditionalVAE
from .vae import VAE
from .vqvae import VQVAE, CodebookPrior

__all__ = [
    "Autoencoder", "CodebookPrior", "ConditionalVAE", "MODELS", "NETWORKS", "PRIORS", "VAE", "VQVAE",
    "build_model", "build_vae", "build_vqvae",
]
