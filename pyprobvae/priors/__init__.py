"""
Priors :math:`p(z)`: modules mapping a batch size (and, for conditional models, label
vectors) to a distribution over latent codes with batch shape ``(batch,)``
(the standard normal, the label-conditional normal, a learned mixture, the VampPrior);
and for the VQ-VAE the distribution over codebook grids and the learned
autoregressive prior over code indices.
"""

from .codebook import CodebookPrior
from .gaussian import LabelConditionalNormal, StandardNormal
from .mixture import PRIORS, MixturePrior, VampPrior
from .sampling import SamplingConfig
from .transformer import TransformerPrior, TransformerPriorConfig

__all__ = [
    "CodebookPrior", "LabelConditionalNormal", "MixturePrior", "PRIORS", "SamplingConfig", "StandardNormal", "TransformerPrior",
    "TransformerPriorConfig", "VampPrior",
]
