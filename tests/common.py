"""Helpers shared by the tests (as Pyro's ``tests/common.py``)."""

import pyro

from pyprobvae.models import build_model, model_config

DIGITS_SHAPE = (1, 8, 8)


def tiny_model(model: str = "vae", seed: int = 0, **settings):
    """
    A small model of any registered kind on 8x8 digits (categorical
    likelihood over 17 levels, latent dimension 3, one hidden layer of 16),
    initialized under ``seed``; ``settings`` override any of the model's
    config fields.
    """
    defaults = dict(data_shape=DIGITS_SHAPE, likelihood="categorical", num_levels=17, hidden=(16,))
    if model in ("vae", "ae", "cvae"):
        defaults["latent_dim"] = 3
    if model == "cvae":
        defaults["num_classes"] = 10
    if settings.get("likelihood") not in (None, "categorical", "tokens"):
        defaults["num_levels"] = None
    pyro.set_rng_seed(seed)
    return build_model(model_config(model, **{**defaults, **settings}))
