"""
Paths between two latent codes.
"""

import torch

INTERPOLATIONS = ("linear", "spherical")


def linear(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""
    Straight-line path :math:`z(t) = (1 - t)\, z_0 + t\, z_1` from
    :math:`z_0` = ``z0`` to :math:`z_1` = ``z1``.

    :param torch.Tensor z0: start codes, shape ``(batch, latent_dim)``.
    :param torch.Tensor z1: end codes, same shape.
    :param torch.Tensor t: positions in ``[0, 1]``, shape ``(steps,)``.
    :return: codes of shape ``(batch, steps, latent_dim)``.
    """
    t = t.reshape(1, -1, 1)
    return (1 - t) * z0.unsqueeze(1) + t * z1.unsqueeze(1)


def spherical(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""
    Spherical linear interpolation (slerp; Shoemake 1985, advocated for
    Gaussian latents by White 2016):

    .. math::

        z(t) = \frac{\sin((1 - t)\, \omega)}{\sin \omega}\, z_0
             + \frac{\sin(t\, \omega)}{\sin \omega}\, z_1,

    where :math:`\omega` is the angle between :math:`z_0` = ``z0`` and
    :math:`z_1` = ``z1``. Under a standard normal prior most mass lies near
    the sphere of radius :math:`\sqrt{d}`; the straight line cuts through the
    low-density interior, while slerp with :math:`\lvert z_0 \rvert = \lvert z_1 \rvert`
    keeps :math:`\lvert z(t) \rvert` constant. Falls back to the straight line when the codes
    are (anti)parallel.

    :param torch.Tensor z0: start codes, shape ``(batch, latent_dim)``.
    :param torch.Tensor z1: end codes, same shape.
    :param torch.Tensor t: positions in ``[0, 1]``, shape ``(steps,)``.
    :return: codes of shape ``(batch, steps, latent_dim)``.
    """
    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=-1).clamp(-1, 1)
    omega = torch.acos(cos).reshape(-1, 1, 1)
    sin = torch.sin(omega)
    t = t.reshape(1, -1, 1)
    degenerate = sin.abs() < 1e-6
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    w0 = torch.where(degenerate, 1 - t, torch.sin((1 - t) * omega) / safe_sin)
    w1 = torch.where(degenerate, t, torch.sin(t * omega) / safe_sin)
    return w0 * z0.unsqueeze(1) + w1 * z1.unsqueeze(1)
