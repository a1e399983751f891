"""
Priors :math:`p(z)`: modules mapping a batch size (and, for conditional models, label
vectors) to a distribution over latent codes with batch shape ``(batch,)``;
and for the VQ-VAE the distribution over codebook grids and the learned
autoregressive prior over code indices.
"""

from .codebook import CodebookPrior
from .gaussian import LabelConditionalNormal, StandardNormal
from .sampling import SamplingConfig
from .transformer import TransformerPrior, TransformerPriorConfig

__all__ = ["CodebookPrior", "LabelConditionalNormal", "SamplingConfig", "StandardNormal", "TransformerPrior", "TransformerPriorConfig"]
