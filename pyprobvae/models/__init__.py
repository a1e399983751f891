"""
The models, each a Pyro model/guide pair behind one interface
(:class:`~pyprobvae.models.base.LatentVariableModel`), registered by name in
:mod:`pyprobvae.models.registry`.
"""

from .ae import AEConfig, Autoencoder
from .base import Exhibit, LatentVariableModel, ModelConfig, SamplingOptions, SamplingPlan
from .cvae import ConditionalVAE, CVAEConfig
from .registry import MODELS, build_model, build_vae, config_from_dict, model_config, register_model
from .vae import VAE, VAEConfig
from .vqvae import VQVAE, VQVAEConfig

__all__ = [
    "AEConfig", "Autoencoder", "CVAEConfig", "ConditionalVAE", "Exhibit", "LatentVariableModel", "MODELS", "ModelConfig",
    "SamplingOptions", "SamplingPlan", "VAE", "VAEConfig", "VQVAE", "VQVAEConfig", "build_model", "build_vae", "config_from_dict",
    "model_config", "register_model",
]
