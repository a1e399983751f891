"""
The interface every model implements, so that training, evaluation, run
folders and the command line work with any model without asking its type.

A model is a :class:`LatentVariableModel`: an ``nn.Module`` built from its
:class:`ModelConfig` (the only record needed to rebuild it, stored in
checkpoints), holding a Pyro ``model``/``guide`` pair that stock
``SVI(model.model, model.guide, optim, Trace_ELBO())`` trains, and the verbs
that work in data space (``encode``, ``decode``, ``reconstruct``, ``sample``,
``evaluate``, ...). What a model can do is stated by three class attributes
(:attr:`~LatentVariableModel.generative`,
:attr:`~LatentVariableModel.conditional`,
:attr:`~LatentVariableModel.discrete_codes`) and acted on inside the model's
own methods: a verb a model cannot do raises ``ValueError`` with the reason,
which the command line prints in one line. The hooks follow Pyro's
``AutoContinuous`` (subclasses fill ``get_posterior``; callers never ask the
type).

Adding a model is one file (its config dataclass and its class) plus one
line registering it in :mod:`pyprobvae.models.registry`.
"""

import abc
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, NamedTuple, Optional, Sequence, Tuple, Type, TypeVar

import torch
from torch import nn

from ..config import Config, ConfigError, setting
from ..data import Dataset
from ..evaluation import EvaluationConfig
from ..likelihoods import LIKELIHOODS, Likelihood, default_likelihood
from ..priors import TransformerPrior, TransformerPriorConfig

NETWORKS = ("mlp", "conv")
"""The encoder and decoder networks, ``ModelConfig.network`` (and ``--network``)."""


@dataclass
class ModelConfig(Config):
    """Settings every model shares: its kind, the shape of its data, and the likelihood p(x|z)."""

    model: str = ""
    """The model: vae, ae (the deterministic autoencoder baseline), cvae (the label-conditional VAE) or vqvae (discrete codes)."""
    data_shape: Tuple[int, ...] = setting((), minimum=1, derived=True)
    """Shape of one example, e.g. (1, 8, 8); taken from the data set."""
    num_levels: Optional[int] = setting(None, minimum=2, derived=True)
    """Intensity levels of quantized pixels (17 for digits), or the vocabulary size of text; taken from the data set."""
    likelihood: Optional[str] = setting(None, choices=LIKELIHOODS)
    """p(x|z): bernoulli, gaussian, categorical (over pixel levels) or tokens (text); by default the data set's own: categorical for digits, bernoulli for other images, gaussian for real values, tokens for text."""
    gaussian_scale: float = setting(0.1, above=0)
    """Scale of the gaussian likelihood (its initial value with learn_scale)."""
    learn_scale: bool = False
    """Learn the gaussian likelihood's scale."""
    network: str = setting("mlp", choices=NETWORKS, since="0.3.0")
    """The encoder and decoder: mlp (MLPs of the hidden widths, for data of any shape) or conv (residual convolutional stacks; for vae, ae and cvae grey or colour images (C, H, W), C = 1 or 3, with even sides of at least 8, e.g. 8x8, 28x28, 32x32; for vqvae, whose default is conv, images or text)."""
    hidden: Tuple[int, ...] = setting((256,), minimum=1, maximum=65536)
    """Hidden widths of the mlp networks, e.g. 400 or 512,256 (the decoder reverses them)."""

    def for_data(self: "_ModelConfigT", dataset: Dataset) -> "_ModelConfigT":
        """
        This config completed for a data set (:meth:`data_settings`).

        :param dataset: a :class:`~pyprobvae.data.Dataset`.
        """
        return self.replace(**self.data_settings(dataset))

    def data_settings(self, dataset: Dataset) -> dict:
        """
        The settings a data set decides: its shape and levels, and its
        default likelihood unless one was chosen
        (:func:`~pyprobvae.likelihoods.default_likelihood`).
        """
        return dict(
            data_shape=tuple(dataset.data_shape),
            num_levels=dataset.num_levels,
            likelihood=self.likelihood or default_likelihood(dataset),
        )


_T = TypeVar("_T")
_ModelConfigT = TypeVar("_ModelConfigT", bound=ModelConfig)


def _derived(value: Optional[_T], name: str) -> _T:
    """
    ``value``, the derived setting ``name`` of a config completed for its
    data (:meth:`ModelConfig.for_data`), which a model is built from.

    :raises ConfigError: when it is None: the config was not completed.
    """
    if value is None:
        raise ConfigError(f"{name} is not set: complete the config for the data (ModelConfig.for_data) before building the model")
    return value


class Exhibit(NamedTuple):
    """
    One thing a run folder shows of a model (what to show; the run folder
    decides how to draw it).

    :ivar str name: the file's stem, e.g. ``"samples"``.
    :ivar str kind: ``"images"`` (a grid of examples, ``data = (examples,)``),
        ``"reconstructions"`` (``data = (inputs, reconstructions)``),
        ``"paths"`` (rows of examples, ``data = (strips,)``) or ``"latent"``
        (``data = (codes, labels)``).
    :ivar tuple data: the tensors.
    :ivar str title: the caption.
    :ivar nrow: examples per row of an ``"images"`` grid.
    """

    name: str
    kind: str
    data: tuple
    title: str
    nrow: Optional[int] = None


class SamplingPlan(NamedTuple):
    """
    How to draw the samples a user asked for: how many, in rows of how many,
    and the keyword arguments of :meth:`LatentVariableModel.sample`.
    """

    num_samples: int
    nrow: Optional[int]
    given: dict


class SamplingOptions(NamedTuple):
    """
    A user's sampling options (``pyprobvae sample``'s), each None when not
    given; a model takes some and refuses the others
    (:meth:`LatentVariableModel.sampling_plan`).
    """

    label: Optional[int] = None
    """The class to sample (conditional models)."""
    codes: Optional[str] = None
    """Where an autoencoder's codes come from."""
    top_k: Optional[int] = None
    """Sample discrete codes from the k most likely only."""
    top_p: Optional[float] = None
    """Sample discrete codes from the nucleus of probability p only."""


class LatentVariableModel(nn.Module, metaclass=abc.ABCMeta):
    r"""
    Base class of the models: a latent-variable model
    :math:`p(x, z) = p(z)\, p(x \mid z)` with an amortized guide
    :math:`q(z \mid x)`, built from a :class:`ModelConfig`.

    Subclasses set :attr:`Config` and implement :meth:`model`,
    :meth:`guide`, :meth:`encode`, :meth:`decode` and :meth:`sample`; the
    other verbs have defaults built on those, or raise ``ValueError`` saying
    why the model cannot do them.

    :param ModelConfig config: the architecture (complete for the data, see
        :meth:`ModelConfig.for_data`).
    """

    Config: ClassVar[Type[ModelConfig]] = ModelConfig
    """The model's settings dataclass."""
    description: ClassVar[str] = "a latent-variable model"
    """How messages name the model, e.g. ``"the conditional VAE"``."""
    generative: ClassVar[bool] = True
    r"""Whether :math:`p(z)` is a real prior, so that the ELBO and the IWAE estimate bound :math:`\log p(x)`."""
    conditional: ClassVar[bool] = False
    """Whether the networks and the prior take labels ``y``."""
    discrete_codes: ClassVar[bool] = False
    """Whether the codes are indices into a codebook (no paths between them, no dimensions to traverse)."""
    unused_training_settings: ClassVar[Tuple[str, ...]] = ()
    """Training settings (of :class:`~pyprobvae.infer.training.TrainConfig`) that mean nothing for this model."""
    inapplicable: ClassVar[Dict[str, str]] = {}
    """Why settings of other models do not apply to this one, by setting name, for the error messages."""
    summary_keys: ClassVar[Tuple[str, ...]] = ("test_elbo", "test_nll", "iwae_samples", "kl", "active_units")
    """The numbers the command line prints after training."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    # ---------------------------------------------------------------- Pyro

    @abc.abstractmethod
    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True) -> None:
        """
        The generative model :math:`p(x, z)` for a batch ``x`` of shape ``(batch,
        *data_shape)``, every site inside the plate ``"data"``.

        :param y: labels, for conditional models only.
        :param bool register: register the parameters in Pyro's param store,
            as :class:`pyro.infer.SVI` needs; pyprobvae's own loop optimizes
            the module's parameters directly and passes False.
        """

    @abc.abstractmethod
    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, register: bool = True) -> None:
        r"""The guide :math:`q(z \mid x)` for a batch ``x`` (see :meth:`model`)."""

    # --------------------------------------------------------------- verbs

    @property
    @abc.abstractmethod
    def likelihood(self) -> Likelihood:
        """The :class:`~pyprobvae.likelihoods.Likelihood` ending the decoder."""

    @property
    def data_shape(self) -> Tuple[int, ...]:
        return self.likelihood.data_shape

    @abc.abstractmethod
    def encode(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The codes of ``x``: posterior means of a continuous latent, or code indices."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The data that codes ``z`` decode to, shape ``(batch, *data_shape)``."""

    def reconstruct(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``decode(encode(x))``, shape ``(batch, *data_shape)``."""
        return self.decode(self.encode(x, y), y)

    @abc.abstractmethod
    def sample(self, num_samples: int, *, temperature: float = 1.0, **given: Any) -> torch.Tensor:
        """
        Decoded draws from the prior, shape ``(num_samples, *data_shape)``.

        :param int num_samples: how many.
        :param float temperature: how far from typical the draws may be (1:
            the model's own distribution).
        :param given: what the draws are conditioned on, by model (labels
            ``y``, the data ``fitted_to`` of a fitted code distribution,
            ``top_k``); see :meth:`sampling_plan`.
        """

    def complete(self, x: torch.Tensor, kept_positions: int, **sampling: Any) -> torch.Tensor:
        """Decoded draws of the codes after the first ``kept_positions`` of ``x``'s, given those (models with ordered discrete codes)."""
        raise ValueError(f"{self.description} has no sequence of discrete codes to complete; that takes a VQ-VAE run")

    def prefix_positions(self, tokens: Optional[int] = None) -> int:
        """How many codes :meth:`complete` keeps for the top half of an image, or the first ``tokens`` tokens."""
        raise ValueError(f"{self.description} has no sequence of discrete codes to complete; that takes a VQ-VAE run")

    def interpolate(
        self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8, method: str = "linear",
        y0: Optional[torch.Tensor] = None, y1: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Decoded paths between the codes of ``x0`` and ``x1``, shape ``(batch, steps, *data_shape)``."""
        raise ValueError(f"{self.description} has no path between its codes to interpolate")

    def interpolate_classes(self, y0: int, y1: int, num_paths: int, steps: int = 8) -> torch.Tensor:
        """Decoded paths from class ``y0`` to class ``y1`` with the style held (conditional models)."""
        raise ValueError(
            f"--classes needs a conditional run (--model cvae); this run is {self.config.model}: "
            f"{self.description} takes no labels"
        )

    def traverse(
        self, x: torch.Tensor, dims: Sequence[int], values: torch.Tensor, y: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Latent traversals of one input (see :meth:`pyprobvae.models.VAE.traverse`)."""
        raise ValueError(f"{self.description} has no latent dimensions to traverse")

    def traversal_order(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> List[int]:
        """The latent dimensions in the order to show them, most informative first."""
        raise ValueError(f"{self.description} has no latent dimensions to traverse")

    @abc.abstractmethod
    def evaluate(
        self, x: torch.Tensor, y: Optional[torch.Tensor] = None, *, iwae_samples: int = EvaluationConfig.iwae_samples,
        analytic_kl: bool = True,
    ) -> dict:
        """Every held-out number of the model on ``x`` (as the model sees it), in nats per example."""

    def tracked(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> dict:
        """
        The held-out numbers worth following while the model trains, cheap
        to compute on ``x`` (as the model sees it; about one pass of the
        encoder), by name: a number or a list of numbers, as :meth:`evaluate`
        reports them. None by default (an empty dict).
        """
        return {}

    # ------------------------------------------------------ policy for runs

    def labels(self, dataset: Dataset) -> Optional[torch.Tensor]:
        """
        The labels the model takes with ``dataset``: None for an
        unconditional model (which ignores the data set's labels).
        """
        return None

    def sampling_plan(
        self, num_samples: int, options: SamplingOptions = SamplingOptions(), training_data: Optional[Callable[[], torch.Tensor]] = None
    ) -> SamplingPlan:
        """
        Turn a user's sampling options into a :class:`SamplingPlan`,
        refusing the options this model does not take.

        :param int num_samples: how many samples were asked for.
        :param SamplingOptions options: the user's options.
        :param training_data: returns the training data, for models that
            sample from a distribution fitted to it.
        """
        self._refuse(options)
        return SamplingPlan(num_samples, None, {})

    def _refuse(self, options: SamplingOptions, *taken: str) -> None:
        """Raise ValueError for the options given (not None) that are not among ``taken``, the names this model takes."""
        label, codes, top_k, top_p = options._replace(**dict.fromkeys(taken))
        if label is not None:
            raise ValueError(
                f"this {self.config.model} run is unconditional and takes no label; "
                "train with --model cvae to sample a chosen class"
            )
        if codes is not None:
            raise ValueError(f"--codes applies to autoencoder runs; {self.description} samples its codes from its prior")
        if top_k is not None or top_p is not None:
            raise ValueError(f"{'top-k' if top_k is not None else 'top-p'} sampling applies to the discrete codes of VQ-VAE runs")

    def scored_samples(self, num_samples: int, training_data: Callable[[], torch.Tensor]) -> Dict[str, SamplingPlan]:
        """
        The samples that a run's evaluation scores, by name: by default
        ``{"prior": ...}``, ``num_samples`` draws from the prior.
        """
        return {"prior": SamplingPlan(num_samples, None, {})}

    def exhibits(self, x: torch.Tensor, y: Optional[torch.Tensor], labels: Optional[torch.Tensor]) -> List[Exhibit]:
        """
        What a run folder shows of the model on test data ``x`` (labels ``y``
        as the model takes them, ``labels`` the data set's for colouring).
        """
        return []

    def sampling_note(self) -> Optional[str]:
        """A note for the user about how samples are drawn now (e.g. before a prior is trained), or None."""
        return None

    def attach_code_prior(self, config: TransformerPriorConfig) -> TransformerPrior:
        """
        Give the model a learned prior over its discrete codes (stage 2 of a
        VQ-VAE), described by ``config``, and return it for training.

        :raises ValueError: for a model without discrete codes.
        """
        raise ValueError(
            f"train-prior fits a prior over discrete codes: it needs a VQ-VAE run, not {self.config.model}"
        )

    def prior_training_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The codes of ``x`` that a prior over codes is fitted to."""
        raise ValueError(
            f"train-prior fits a prior over discrete codes: it needs a VQ-VAE run, not {self.config.model}"
        )
