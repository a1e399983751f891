"""
The VQ-VAE (van den Oord et al. 2017) as a Pyro model/guide pair: a
deterministic guide with a straight-through codebook, a prior over code
indices (uniform in stage 1, a learned transformer in stage 2), and the
codebook and commitment terms as guide factors.
"""

import math
from dataclasses import dataclass
from typing import Any, Callable, List, NoReturn, Optional, Tuple, cast

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..config import ConfigError, setting
from ..data import Dataset
from ..evaluation.metrics import EvaluationConfig, code_usage, codes_used, perplexity
from ..families.quantizer import VectorQuantizer
from ..infer.training import dataset_elbo
from ..likelihoods import Likelihood, make_likelihood
from ..networks import MLP, ConvDecoder1d, ConvDecoder2d, ConvEncoder1d, ConvEncoder2d
from ..priors import CodebookPrior, TransformerPrior, TransformerPriorConfig
from .base import NETWORKS, Exhibit, LatentVariableModel, ModelConfig, SamplingOptions, SamplingPlan, _derived

TOKENS_PER_CODE_CHOICES = (1, 2, 4, 8)
CODEBOOK_SIZE = 64
"""Codes K when the config leaves it to the data: images."""
TEXT_CODEBOOK_SIZE = 128
"""Codes K when the config leaves it to the data: text (the ``tokens`` likelihood)."""


@dataclass
class VQVAEConfig(ModelConfig):
    """
    The architecture of a :class:`VQVAE`. With ``network="conv"`` images
    (``data_shape = (C, H, W)``) get the convolutional encoder and decoder of
    :mod:`pyprobvae.networks.conv`, with a grid of codes per image (4x4 for
    8x8 digits, 7x7 for 28x28 MNIST), and token sequences
    (``likelihood="tokens"``, ``data_shape = (L,)``) the 1-D ones, with one
    code per ``tokens_per_code`` tokens. With ``network="mlp"`` an MLP
    maps the flattened example to ``num_positions`` codes and back.
    """

    # 0.2.0 called the commitment weight beta, the name the beta-VAE's KL weight has now
    retired = {"beta": lambda value: {"commitment_weight": value}}

    model: str = setting("vqvae", choices=("vqvae",))
    network: str = setting("conv", choices=NETWORKS)
    """Encoder and decoder: conv (the default here; 2-D for images, 1-D for text) or mlp."""
    codebook_size: Optional[int] = setting(None, minimum=1, maximum=65536)
    """Number of codes K; none: the data's default, 64, or 128 for text (one code per character needs more codes than its 96 characters)."""
    code_dim: int = setting(16, minimum=1, maximum=4096)
    """Dimension D of the codes."""
    commitment_weight: float = setting(0.25, minimum=0)
    """Weight beta of the commitment term (0.25 in van den Oord et al. 2017)."""
    ema: bool = False
    """Learn the codebook by exponential moving averages instead of the codebook term."""
    decay: float = setting(0.99, above=0, below=1)
    """Decay of the codebook's moving averages (with ema)."""
    min_usage: float = setting(0.5, minimum=0, below=1)
    """Restart a code whose moving-average usage falls below this fraction of an even share (0: never)."""
    usage_decay: float = setting(0.9, above=0, below=1)
    """Decay of the usage's moving average."""
    num_positions: int = setting(16, minimum=1, maximum=4096)
    """Codes per example of the mlp network (the conv networks take it from the data's shape)."""
    tokens_per_code: int = setting(1, choices=TOKENS_PER_CODE_CHOICES, since="0.3.0", before=2)
    """Characters per code of the conv network for text, 1, 2, 4 or 8 (the sequence length must be a multiple): fewer reconstruct text more exactly, more give the prior shorter code sequences (2 before 0.3.0)."""
    code_prior: Optional[TransformerPriorConfig] = setting(None, derived=True)
    """The learned prior over the codes, once train-prior has fitted one (stage 2); None: uniform."""

    def data_settings(self, dataset: Dataset) -> dict:
        """The data's settings (:meth:`ModelConfig.data_settings`) and, unless chosen, its codebook size."""
        settings = super().data_settings(dataset)
        return {**settings, "codebook_size": self.codebook_size or default_codebook_size(settings["likelihood"])}

    def check(self) -> None:
        if self.likelihood == "tokens" and self.network == "conv" and len(self.data_shape) == 1:
            (length,) = self.data_shape
            if length % self.tokens_per_code:
                raise ConfigError(
                    f"sequences of {length} characters do not split into codes of tokens_per_code={self.tokens_per_code}: "
                    f"choose a sequence length that is a multiple of {self.tokens_per_code}"
                )


class VQVAE(LatentVariableModel):
    r"""
    A VQ-VAE with :math:`P` code positions per example and a codebook of
    :math:`K` codes in :math:`\mathbb{R}^D`. As a Pyro model/guide pair::

        model(x):  k_n ~ p(k),  z_n = e_{k_n},  x_n ~ p(x | z_n)
        guide(x):  z_n = Delta(z_q(x_n)),  z_q = z_e + sg[e_k(z_e) - z_e],  z_e = f(x_n)
                   factor("codebook",   ||sg[z_e] - e_k||^2)
                   factor("commitment", beta ||z_e - sg[e_k]||^2)

    The guide is deterministic: the encoder output ``z_e`` snaps to its
    nearest codes (:class:`~pyprobvae.families.quantizer.VectorQuantizer`), and the
    straight-through value passes the decoder's gradient to the encoder
    unchanged. Since :math:`q` is a point mass on the codes, the ELBO is

    .. math::

        \log p(x) \ge \log p(x \mid z_q(x)) + \log p(k(x)),

    a true bound on :math:`\log p(x)` for any prior over codes: for the
    uniform prior :math:`\log p(k) = -P \log K` is a constant and training needs the
    reconstruction term only. The codebook and commitment terms are not part
    of the bound; they are the guide's ``pyro.factor`` penalties, summed over
    positions per example, which pyprobvae's loop subtracts from the
    objective as ``penalty`` (:class:`~pyprobvae.infer.elbo.ELBOTerms`) and
    Pyro's ``Trace_ELBO`` as part of :math:`\log q`, so both descend on

    .. math::

        -\log p(x \mid z_q) + \lVert \operatorname{sg}[z_e] - e \rVert^2
            + \beta \lVert z_e - \operatorname{sg}[e] \rVert^2
        \quad \text{(nats per example)}.

    Stage 2 fits ``code_prior`` (a :class:`~pyprobvae.priors.transformer.TransformerPrior`)
    to the codes of the training set; the same bound then uses it.

    The encoder maps ``x`` to ``z_e`` of shape ``(batch, P, D)``; the decoder
    maps codes to :math:`p(x \mid z)`, its last module a
    :class:`~pyprobvae.likelihoods.Likelihood`; ``code_prior`` is the
    learned prior over code sequences (None: uniform).

    :param VQVAEConfig config: the architecture.
    """

    Config = VQVAEConfig
    description = "a VQ-VAE"
    config: VQVAEConfig
    discrete_codes = True
    unused_training_settings = ("kl_warmup_epochs", "beta", "free_bits", "objective", "particles", "gradient")
    summary_keys = ("test_nll", "bits_per_dim", "prior", "recon_mse", "recon_accuracy", "codebook_perplexity", "codes_used")

    def __init__(self, config: VQVAEConfig) -> None:
        if config.codebook_size is None:
            config = config.replace(codebook_size=default_codebook_size(config.likelihood))
        super().__init__(config)
        likelihood = make_likelihood(
            _derived(config.likelihood, "likelihood"), config.data_shape, config.num_levels, config.gaussian_scale,
            config.learn_scale,
        )
        self.encoder, decoder_net, self.num_positions = _networks(config, likelihood)
        self.decoder = nn.Sequential(decoder_net, likelihood)
        self.quantizer = VectorQuantizer(
            _derived(config.codebook_size, "codebook_size"), config.code_dim, ema=config.ema, decay=config.decay,
            min_usage=config.min_usage, usage_decay=config.usage_decay,
        )
        self.code_prior = None if config.code_prior is None else TransformerPrior(config.code_prior)

    @property
    def likelihood(self) -> Likelihood:
        """The :class:`~pyprobvae.likelihoods.Likelihood` ending the decoder."""
        return cast(Likelihood, self.decoder[-1])

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook.shape[0]

    def condition(self, y: Optional[torch.Tensor], batch_size: int) -> tuple:
        """The VQ-VAE takes no labels: ``()``, or a ValueError when labels are given."""
        if y is not None:
            raise ValueError("the VQ-VAE is unconditional and takes no labels")
        return ()

    def prior(self, batch_size: int) -> CodebookPrior:
        """:math:`p(z)`: the codebook grids under the current prior over codes."""
        return CodebookPrior(self.quantizer, self.code_prior, batch_size, self.num_positions)

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True) -> None:
        r"""
        :math:`p(x, k) = p(k)\, p(x \mid e_k)` for a batch ``x`` of shape ``(batch, *data_shape)``.

        :param y: must be None.
        :param bool register: register the decoder (and a learned prior) with
            Pyro's param store, as :class:`pyro.infer.SVI` needs.
        """
        if register:
            pyro.module("decoder", self.decoder)
            if self.code_prior is not None:
                pyro.module("code_prior", self.code_prior)
        self.condition(y, x.shape[0])
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x.shape[0]))
            pyro.sample("x", self.decoder(z), obs=x)

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True) -> None:
        """
        The deterministic guide: quantize the encoder's output, and add the
        codebook and commitment terms as factors.

        :param y: must be None.
        :param bool register: register the encoder and the codebook with Pyro.
        """
        if register:
            pyro.module("encoder", self.encoder)
            pyro.module("quantizer", self.quantizer)
        self.condition(y, x.shape[0])
        quantized = self.quantizer(self.encoder(x))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(quantized.z_q, event_dim=2))
            pyro.factor("codebook", quantized.codebook_loss, has_rsample=True)
            pyro.factor("commitment", self.config.commitment_weight * quantized.commitment_loss, has_rsample=True)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        :param torch.Tensor x: data, shape ``(batch, *data_shape)``.
        :param y: must be None.
        :return: the code indices :math:`k(x)`, shape ``(batch, P)``.
        """
        self.condition(y, x.shape[0])
        return self.quantizer.nearest(self.encoder(x))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        :param torch.Tensor codes: code indices, shape ``(batch, P)``.
        :param y: must be None.
        :return: the decoded data (pixel means, or the most likely tokens),
            shape ``(batch, *data_shape)``.
        """
        self.condition(y, codes.shape[0])
        return self.likelihood.decoded(self.decoder(self.quantizer.lookup(codes)))

    @torch.no_grad()
    def sample(  # type: ignore[override]  # the draws are given what this model takes: top_k, top_p
        self, num_samples: int, *, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None
    ) -> torch.Tensor:
        r"""
        Draw code sequences from the prior and decode them. With the uniform
        prior of stage 1 every code is independent and equally likely
        (temperature, top-k and top-p do not apply); with a trained
        ``code_prior`` they are drawn one position at a time by the rules of
        :mod:`~pyprobvae.priors.sampling`: from
        :math:`\mathrm{softmax}(\mathrm{logits} / T)` at temperature
        :math:`T`, restricted to the ``top_k`` most likely codes or to the
        nucleus of probability ``top_p`` if given.

        :return: decoded data, shape ``(num_samples, *data_shape)``.
        """
        return self.decode(self.prior(num_samples).sample_codes(num_samples, temperature, top_k, top_p))

    @torch.no_grad()
    def complete(  # type: ignore[override]  # the draws are given what this model takes: its sampling options
        self, x: torch.Tensor, kept_positions: int, *, temperature: float = 1.0, top_k: Optional[int] = None,
        top_p: Optional[float] = None,
    ) -> torch.Tensor:
        r"""
        Keep the first ``kept_positions`` codes of each example of ``x`` and
        draw the rest from the prior given them,
        :math:`c_{\ge n} \sim p(c_{\ge n} \mid c_{<n}(x))`, then decode:
        image completion (with :meth:`prefix_positions` for the top half) or
        text continuation. The sampling options are those of :meth:`sample`.

        :param torch.Tensor x: data, shape ``(batch, *data_shape)``.
        :param int kept_positions: :math:`0 \le n < P` codes kept.
        :return: decoded data, shape ``(batch, *data_shape)``.
        """
        if not 0 <= kept_positions < self.num_positions:
            raise ValueError(f"the kept codes must number 0 to {self.num_positions - 1} of {self.num_positions}, got {kept_positions}")
        prefix = self.encode(x)[:, :kept_positions]
        return self.decode(self.prior(len(x)).sample_codes(len(x), temperature, top_k, top_p, prefix))

    def prefix_positions(self, tokens: Optional[int] = None) -> int:
        """
        The codes that cover the top half of an image (the upper half of the
        rows of the code grid; half the positions of the mlp network), or,
        for token sequences, the first ``tokens`` tokens (the codes whose
        tokens all lie within them).

        :raises ValueError: for ``tokens`` with image data, or too few
            (under one code) or too many (a whole sequence) of them.
        """
        if tokens is not None:
            if self.config.likelihood != "tokens":
                raise ValueError("a prompt applies to text runs; image runs complete the top half of test images")
            (length,) = self.data_shape
            per_code = self.config.tokens_per_code
            if not per_code <= tokens < length:
                raise ValueError(
                    f"the prompt has {tokens} characters; this run's sequences hold {length}, so a prompt takes "
                    f"{per_code} to {length - 1} (one code covers {per_code})"
                )
            return tokens // per_code
        grid = getattr(self.encoder, "grid_shape", (self.num_positions,))
        return (grid[0] // 2) * math.prod(grid[1:])

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, *, iwae_samples: int = EvaluationConfig.iwae_samples,
                 analytic_kl: bool = True, batch_size: int = 500) -> dict:
        r"""
        Every held-out number (the bound is exact for a point guide, so
        ``iwae_samples`` and ``analytic_kl`` do not apply):

        * ``test_nll``: the bound
          :math:`-\log p(x) \le -\log p(x \mid z_q(x)) - \log p(k(x))`
          in nats per example, under the current prior over codes (``prior``:
          ``"uniform"``, where :math:`-\log p(k) = P \log K`, or
          ``"transformer"`` once stage 2 has trained one), and the same in
          ``bits_per_dim``, ``test_nll`` :math:`/ (\mathrm{dims} \cdot \log 2)`;
        * ``recon_nll``: :math:`-\log p(x \mid z_q(x))`; ``code_nll``:
          :math:`-\log p(k(x))`;
        * ``recon_mse`` per dimension for pixel data, or ``recon_accuracy``, the
          share of tokens reconstructed exactly, for token data;
        * ``codebook_perplexity``: :math:`\exp(H)` of the code usage histogram
          over the whole evaluation set
          (:func:`~pyprobvae.evaluation.metrics.code_usage`), between 1 and
          :math:`K`; ``codes_used``: how many of the :math:`K` codes are used
          at all.

        :param torch.Tensor x: held-out data as the model sees it.
        :param y: must be None.
        :param int batch_size: examples per pass.
        """
        self.eval()
        self.condition(y, len(x))
        self.likelihood.check_data(x, "evaluation data")
        terms = dataset_elbo(self, x, batch_size=batch_size)
        counts = code_usage(self, x, batch_size)
        tokens = not torch.is_floating_point(x)
        reconstruction_error = 0.0
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            decoded = self.reconstruct(batch)
            reconstruction_error += float((decoded == batch).sum() if tokens else (decoded - batch).double().pow(2).sum())
        nll = float(-terms.elbo.double().mean())
        result = {
            "test_nll": nll,
            "bits_per_dim": nll / (x[0].numel() * math.log(2)),
            "prior": "uniform" if self.code_prior is None else "transformer",
            "recon_nll": float(-terms.log_likelihood.double().mean()),
            "code_nll": float(terms.kl.double().mean()),
            "codebook_perplexity": perplexity(counts),
            "codes_used": codes_used(counts),
            "codebook_size": self.codebook_size,
            "num_positions": self.num_positions,
            "num_examples": len(x),
        }
        result["recon_accuracy" if tokens else "recon_mse"] = reconstruction_error / x.numel()
        return result

    @torch.no_grad()
    def tracked(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, batch_size: int = 500) -> dict:
        """``codebook_perplexity`` and ``codes_used`` of ``x``, as :meth:`evaluate` has them."""
        self.condition(y, len(x))
        counts = code_usage(self, x, batch_size)
        return {"codebook_perplexity": perplexity(counts), "codes_used": codes_used(counts)}

    def sampling_plan(
        self, num_samples: int, options: SamplingOptions = SamplingOptions(), training_data: Optional[Callable[[], torch.Tensor]] = None
    ) -> SamplingPlan:
        """``top_k`` and ``top_p`` restrict each code to the most likely under a trained prior."""
        self._refuse(options, "top_k", "top_p")
        given = {name: value for name, value in (("top_k", options.top_k), ("top_p", options.top_p)) if value is not None}
        return SamplingPlan(num_samples, None, given)

    def sampling_note(self) -> Optional[str]:
        if self.code_prior is None:
            return "no prior trained yet (pyprobvae train-prior RUN): sampling codes from the uniform prior, which ignores --temperature, --top-k and --top-p"
        return None

    def interpolate(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ValueError("a VQ-VAE's codes are discrete: there is no path between them to interpolate")

    def traverse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ValueError("a VQ-VAE's codes are discrete: there are no latent dimensions to traverse")

    traversal_order = traverse

    def exhibits(self, x: torch.Tensor, y: Optional[torch.Tensor], labels: Optional[torch.Tensor]) -> List[Exhibit]:
        """
        Reconstructions of test data and decoded codes drawn from the current
        prior: 32 and 64 for images, 8 and 16 for text.
        """
        tokens = not torch.is_floating_point(x)
        if len(self.data_shape) != 3 and not tokens:
            return []
        shown, drawn = (8, 16) if tokens else (32, 64)
        prior = "the uniform prior" if self.code_prior is None else "the transformer prior"
        return [
            Exhibit("reconstructions", "reconstructions", (x[:shown], self.reconstruct(x[:shown])), "test inputs and reconstructions"),
            Exhibit("samples", "images", (self.sample(drawn),), f"decoded codes drawn from {prior}", 8),
        ]

    def attach_code_prior(self, config: TransformerPriorConfig) -> TransformerPrior:
        """
        Replace the prior over codes by a new :class:`~pyprobvae.priors.TransformerPrior`
        (its codebook size and positions set to the model's, its codes
        embedded through the model's codebook vectors), recorded in the
        model's config so that the checkpoint rebuilds it.
        """
        config = config.replace(codebook_size=self.codebook_size, num_positions=self.num_positions, code_dim=self.config.code_dim)
        codebook = self.quantizer.codebook
        self.code_prior = TransformerPrior(config).to(codebook.device)
        self.code_prior.set_code_vectors(codebook)
        self.config = self.config.replace(code_prior=config)
        return self.code_prior

    def prior_training_codes(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The code indices of ``x``, in batches: what stage 2 fits a prior to."""
        return torch.cat([self.encode(x[start : start + batch_size]) for start in range(0, len(x), batch_size)])


def default_codebook_size(likelihood: Optional[str]) -> int:
    """The codebook size for data with ``likelihood`` when the config leaves it open: :data:`TEXT_CODEBOOK_SIZE` for text, else :data:`CODEBOOK_SIZE`."""
    return TEXT_CODEBOOK_SIZE if likelihood == "tokens" else CODEBOOK_SIZE


def _networks(config: VQVAEConfig, likelihood: Likelihood) -> Tuple[nn.Module, nn.Module, int]:
    """``(encoder, decoder network, P)`` of the config's network for its data."""
    data_shape = config.data_shape
    if config.network == "mlp":
        if config.likelihood == "tokens":
            raise ConfigError("the mlp network takes real-valued data; use network='conv' for token sequences")
        encoder = nn.Sequential(
            MLP(data_shape, config.hidden, config.num_positions * config.code_dim),
            nn.Unflatten(-1, (config.num_positions, config.code_dim)),
        )
        return encoder, MLP((config.num_positions, config.code_dim), config.hidden[::-1], likelihood.num_outputs), config.num_positions
    if config.likelihood == "tokens":
        if len(data_shape) != 1:
            raise ConfigError(f"token sequences have data_shape (length,), got {data_shape}")
        halvings = config.tokens_per_code.bit_length() - 1
        vocab_size = _derived(config.num_levels, "num_levels")
        tokens = ConvEncoder1d(data_shape[0], vocab_size, config.code_dim, downsamplings=halvings)
        return tokens, ConvDecoder1d(data_shape[0], config.code_dim, vocab_size, upsamplings=halvings), tokens.num_positions
    if len(data_shape) != 3:
        raise ConfigError(f"the conv network takes images of shape (channels, height, width), got {data_shape}")
    images = ConvEncoder2d(data_shape, config.code_dim)
    return images, ConvDecoder2d(data_shape, config.code_dim, likelihood.outputs_per_dim), images.num_positions
