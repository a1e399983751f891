"""
Estimators of a bound on :math:`\\log p(x)` and of its gradient, as objects:
the training loss takes one (:class:`~pyprobvae.infer.training.ELBOLoss`),
and a new bound is one new subclass plus its entry in :data:`OBJECTIVES`, as
Pyro's ``TraceMeanField_ELBO`` is a few lines over ``Trace_ELBO``. Each
refuses, on construction, the settings it cannot honour, so that a
:class:`~pyprobvae.infer.training.TrainConfig` that builds is one that trains.
"""

import abc
from typing import Any, Callable, Dict

from .elbo import Estimate, elbo_estimate, stratified_estimate
from .iwae import iwae_estimate

GRADIENTS = ("auto", "pathwise", "stl", "dreg")
"""The gradient estimators by the name ``TrainConfig.gradient`` takes; ``auto`` is each bound's default."""


class Estimator(abc.ABC):
    """An estimator of a bound of a Pyro model/guide pair on a batch, and of its gradient."""

    @abc.abstractmethod
    def __call__(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, kl_weight: float = 1.0, **kwargs: Any
    ) -> Estimate:
        """The :class:`~pyprobvae.infer.elbo.Estimate` of ``model`` and ``guide`` on the batch in ``args``, the KL weighted by ``kl_weight``."""


def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise ValueError(message)


class ELBO(Estimator):
    """
    The single-sample ELBO (:func:`~pyprobvae.infer.elbo.elbo_estimate`):
    Pyro's ``Trace_ELBO``, or ``TraceMeanField_ELBO`` where the KL has a
    closed form, with the gradient ``pathwise`` or ``stl``, and free bits.
    ``auto`` takes ``stl`` for a mixture guide (whose KL is sampled),
    ``pathwise`` elsewhere.

    :param int particles: must be 1 (the bound of several draws is :class:`IWAE`).
    :param str gradient: ``"auto"``, ``"pathwise"`` or ``"stl"``.
    :param bool analytic_kl: closed-form KL where torch has it.
    :param float free_bits: nats per latent dimension (0: none).
    """

    def __init__(self, particles: int = 1, gradient: str = "auto", analytic_kl: bool = True, free_bits: float = 0.0) -> None:
        _refuse(particles != 1, f"the elbo takes one draw per example (particles 1, got {particles}); "
                                "several draws give the tighter iwae bound (objective iwae)")
        _refuse(gradient not in ("auto", "pathwise", "stl"), f"the elbo's gradient is auto, pathwise or stl, not {gradient!r} "
                                                             "(dreg is the iwae bound's: for one draw it is stl)")
        _refuse(free_bits < 0, f"free bits must be >= 0 nats, got {free_bits}")
        _refuse(bool(free_bits) and gradient == "stl", "free bits floor the closed-form KL of each dimension, "
                                                         "which the stl gradient does not use: give one of the two")
        self.gradient, self.analytic_kl, self.free_bits = gradient, analytic_kl, free_bits

    def __call__(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, kl_weight: float = 1.0, **kwargs: Any
    ) -> Estimate:
        return elbo_estimate(
            model, guide, *args, analytic_kl=self.analytic_kl, gradient=self.gradient, free_bits=self.free_bits,
            kl_weight=kl_weight, **kwargs,
        )


class IWAE(Estimator):
    """
    The importance-weighted bound of ``particles`` draws per example
    (:func:`~pyprobvae.infer.iwae.iwae_estimate`), with the gradient
    ``pathwise`` (also for ``auto``), ``stl`` or ``dreg``. Its KL is
    sampled, so ``analytic_kl`` does not apply, and free bits (a floor on
    closed-form KLs) do not either.
    """

    def __init__(self, particles: int = 1, gradient: str = "auto", analytic_kl: bool = True, free_bits: float = 0.0) -> None:
        _refuse(particles < 1, f"the iwae bound needs particles >= 1, got {particles}")
        _refuse(gradient not in GRADIENTS, f"unknown gradient {gradient!r}; choose one of {', '.join(GRADIENTS)}")
        _refuse(bool(free_bits), "free bits floor the ELBO's KL per dimension; the iwae bound has no KL term to floor")
        del analytic_kl
        self.particles, self.gradient = particles, "pathwise" if gradient == "auto" else gradient

    def __call__(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, kl_weight: float = 1.0, **kwargs: Any
    ) -> Estimate:
        return iwae_estimate(model, guide, *args, particles=self.particles, gradient=self.gradient, kl_weight=kl_weight, **kwargs)


class StratifiedELBO(Estimator):
    """
    The stratified bound of a mixture guide, one draw per component
    (:func:`~pyprobvae.infer.elbo.stratified_estimate`; Morningstar et al.
    2021), never looser than the ELBO. Its KL is sampled, so ``analytic_kl``
    does not apply; its draws are fixed (one per component) and its
    gradient is its own.
    """

    def __init__(self, particles: int = 1, gradient: str = "auto", analytic_kl: bool = True, free_bits: float = 0.0) -> None:
        _refuse(particles != 1, f"the stratified bound draws once from each component; particles must be 1, got {particles}")
        _refuse(gradient not in ("auto", "pathwise"), f"the stratified bound has its own gradient (pathwise), not {gradient!r}")
        _refuse(bool(free_bits), "free bits floor the ELBO's KL per dimension; the stratified bound has no KL term to floor")
        del analytic_kl

    def __call__(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, kl_weight: float = 1.0, **kwargs: Any
    ) -> Estimate:
        return stratified_estimate(model, guide, *args, kl_weight=kl_weight, **kwargs)


OBJECTIVES: Dict[str, type] = {"elbo": ELBO, "iwae": IWAE, "stratified": StratifiedELBO}
"""The estimators by the name ``TrainConfig.objective`` takes."""


def make_estimator(
    objective: str = "elbo", *, particles: int = 1, gradient: str = "auto", analytic_kl: bool = True, free_bits: float = 0.0,
) -> Estimator:
    """
    The estimator of ``objective`` with these settings (those of
    :class:`~pyprobvae.infer.training.TrainConfig`).

    :raises ValueError: for an unknown objective or settings it cannot honour.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[objective](particles, gradient, analytic_kl, free_bits)
