"""
Estimators of the per-example ELBO, as objects: the training loss takes one
(:class:`~pyprobvae.infer.training.ELBOLoss`), and a new estimator is one new
subclass plus its entry in :data:`ESTIMATORS`, as Pyro's
``TraceMeanField_ELBO`` is a few lines over ``Trace_ELBO``.
"""

import abc
from typing import Dict

from .elbo import ELBOTerms, elbo_terms, stratified_elbo_terms


class Estimator(abc.ABC):
    """An estimator of the :class:`~pyprobvae.infer.elbo.ELBOTerms` of a Pyro model/guide pair on a batch."""

    @abc.abstractmethod
    def __call__(self, model, guide, *args, **kwargs) -> ELBOTerms:
        """The per-example terms of ``model`` and ``guide`` on the batch in ``args``."""


class PathwiseELBO(Estimator):
    """
    The single-sample ELBO with reparameterized gradients
    (:func:`~pyprobvae.infer.elbo.elbo_terms`): Pyro's ``Trace_ELBO``, or
    ``TraceMeanField_ELBO`` where the KL has a closed form.

    :param bool analytic_kl: closed-form KL where torch has it.
    """

    def __init__(self, analytic_kl: bool = True):
        self.analytic_kl = analytic_kl

    def __call__(self, model, guide, *args, **kwargs) -> ELBOTerms:
        return elbo_terms(model, guide, *args, analytic_kl=self.analytic_kl, **kwargs)


class StratifiedELBO(Estimator):
    """
    The stratified bound of a mixture guide, one sample per component
    (:func:`~pyprobvae.infer.elbo.stratified_elbo_terms`; Morningstar et al.
    2021), never looser than the ELBO. Its KL is sampled, so ``analytic_kl``
    does not apply.
    """

    def __init__(self, analytic_kl: bool = True):
        del analytic_kl

    def __call__(self, model, guide, *args, **kwargs) -> ELBOTerms:
        return stratified_elbo_terms(model, guide, *args, **kwargs)


ESTIMATORS: Dict[str, type] = {"pathwise": PathwiseELBO, "stratified": StratifiedELBO}
"""The estimators by the name ``TrainConfig.estimator`` takes."""


def make_estimator(name: str, analytic_kl: bool = True) -> Estimator:
    """The estimator registered as ``name``."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name](analytic_kl)
