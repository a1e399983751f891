"""
Variational families q(z|x): modules mapping an encoder's features to a
distribution over the latent code with batch shape ``(batch,)`` and event
shape ``(latent_dim,)``.
"""

from .diagonal import DiagonalNormal

FAMILIES = ("diagonal",)


def make_family(name: str, in_features: int, latent_dim: int):
    """
    Build a variational family by name.

    :param str name: ``"diagonal"``.
    :param int in_features: width of the encoder features it reads.
    :param int latent_dim: dimension of z.
    """
    if name == "diagonal":
        return DiagonalNormal(in_features, latent_dim)
    raise ValueError(f"unknown guide {name!r}; choose one of {', '.join(FAMILIES)}")


__all__ = ["DiagonalNormal", "FAMILIES", "make_family"]
