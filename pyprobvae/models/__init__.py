from .vae import VAE, build_vae

MODELS = ("vae",)

__all__ = ["MODELS", "VAE", "build_vae"]
