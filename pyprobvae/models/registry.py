"""
The models by name: the one place a model is registered, and the functions
that build any registered model from its config (or from the dict a
checkpoint stores).

Adding a model: write its config dataclass (a
:class:`~pyprobvae.models.base.ModelConfig` subclass whose ``model`` field
defaults to the new name) and its :class:`~pyprobvae.models.base.LatentVariableModel`
subclass in one file, then call :func:`register_model` on the class. The
command line, run folders, training and evaluation pick it up from here.
"""

import dataclasses
from typing import Any, Dict, Sequence, Type, TypeVar, Union, cast

from ..config import ConfigError
from .ae import Autoencoder
from .base import LatentVariableModel, ModelConfig
from .cvae import ConditionalVAE
from .vae import VAE
from .vqvae import VQVAE

MODELS: Dict[str, Type[LatentVariableModel]] = {}
"""The registered model classes by name (the ``model`` setting)."""

_ModelT = TypeVar("_ModelT", bound=LatentVariableModel)

DEFAULT_MODEL = "vae"
"""The model trained when none is named."""


def model_name(cls: Type[LatentVariableModel]) -> str:
    """The name a model class is registered under (its config's ``model`` default)."""
    return cast(str, cls.Config.__dataclass_fields__["model"].default)  # ModelConfig.model has a string default


def register_model(cls: Type[_ModelT]) -> Type[_ModelT]:
    """
    Register a :class:`~pyprobvae.models.base.LatentVariableModel` subclass
    under the default of its config's ``model`` field (usable as a class
    decorator).
    """
    name = model_name(cls)
    if not name:
        raise ValueError(f"{cls.__name__}.Config must give its 'model' field the model's name as default")
    MODELS[name] = cls
    return cls


for _cls in (VAE, Autoencoder, ConditionalVAE, VQVAE):
    register_model(_cls)


def model_class(name: str) -> Type[LatentVariableModel]:
    """The model class registered as ``name``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def setting_owners(setting: str) -> list:
    """The registered model classes whose config has the setting ``setting``."""
    return [cls for cls in MODELS.values() if setting in {f.name for f in dataclasses.fields(cls.Config)}]


def inapplicable_reason(cls: Type[LatentVariableModel], setting: str, spelled: str, model_spelled: str = "model {}") -> str:
    """
    Why ``setting`` (spelled ``spelled`` in the caller's terms, e.g.
    ``"--prior"``) does not apply to the model ``cls``, naming the models it
    belongs to; ``model_spelled`` formats a model's name (e.g. ``"--model {}"``).
    """
    if setting in cls.inapplicable:
        return cls.inapplicable[setting]
    here = model_spelled.format(model_name(cls))
    owners = setting_owners(setting)
    if len(owners) == 1:
        return f"{spelled} does not apply to {here}: it needs {owners[0].description} ({model_spelled.format(model_name(owners[0]))})"
    return f"{spelled} does not apply to {here}; it is a setting of {', '.join(o.description for o in owners)}"


def model_config(model: str = DEFAULT_MODEL, **settings: Any) -> ModelConfig:
    """
    The config of the model registered as ``model`` with the given settings
    (the others at their defaults).

    :raises ConfigError: for an unknown model, a setting the model does not
        have (naming the models that have it), or a value it does not allow.
    """
    cls = model_class(model)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    aliases = {
        alias.lstrip("-").replace("-", "_"): f.name
        for registered in MODELS.values() for f in dataclasses.fields(registered.Config) for alias in f.metadata.get("aliases", ())
    }
    settings = {aliases.get(name, name): value for name, value in settings.items()}
    for setting in settings:
        if setting not in names:
            if not setting_owners(setting):
                raise ConfigError(f"{cls.Config.__name__} has no setting {setting!r}; its settings are {', '.join(sorted(names))}")
            raise ConfigError(inapplicable_reason(cls, setting, setting, "model={!r}"))
    return cls.Config(model=model, **settings)


def config_from_dict(data: dict) -> ModelConfig:
    """Rebuild a model's config from the dict a checkpoint stores (``asdict(config)``, possibly of an earlier version: :meth:`~pyprobvae.config.Config.from_record`)."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise ConfigError(f"a model config must be a dict with a 'model' entry, got {data!r}")
    return model_class(data["model"]).Config.from_record(data)


def build_model(config: Union[ModelConfig, dict]) -> LatentVariableModel:
    """
    Build the model a config describes (the config itself, or the dict a
    checkpoint stores), with freshly initialized parameters.
    """
    if isinstance(config, dict):
        config = config_from_dict(config)
    return model_class(config.model)(config)


def build_vae(data_shape: Sequence[int], model: str = DEFAULT_MODEL, **settings: Any) -> LatentVariableModel:
    """
    Shorthand for ``build_model(model_config(model, data_shape=data_shape,
    **settings))``: any registered model (``"vae"`` by default) for examples of
    shape ``data_shape``, e.g.
    ``build_vae((1, 8, 8), latent_dim=8, hidden=[256], likelihood="categorical", num_levels=17)``.

    Its settings are those of the model's config (:class:`~pyprobvae.models.VAEConfig`
    for ``"vae"``); the likelihood defaults to ``"bernoulli"`` here, since
    there is no data set to choose it from.
    """
    settings.setdefault("likelihood", "bernoulli")
    return build_model(model_config(model, data_shape=tuple(data_shape), **settings))
