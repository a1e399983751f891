"""
Tests of the shared flow-layer builder and Latin-hypercube initializer
(pyprobvae.families.layers).

Every layer's log-determinant is checked against log|det| of the autograd
Jacobian in float64, conditional and not, in one and three dimensions; the
VAE family and the autoguide are checked to build the same layers for the
same name and to refuse iaf at D = 1 with the same error; and each column of
the Latin hypercube is checked to be a permutation of the N(0, 1) quantiles,
a function of the generator alone.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import AffineAutoregressive, Permute, SplineAutoregressive
from pyro.distributions.transforms.spline import ConditionedSpline
from torch import nn
from torch.autograd.functional import jacobian
from torch.special import ndtri

from pyprobvae.autoguides import AutoFlowNormal
from pyprobvae.families.flow import NormalizingFlow
from pyprobvae.families.layers import (
    FLOWS,
    SPLINE_BINS,
    SPLINE_BOUND,
    SPLINE_ORDER,
    ConditionalPermute,
    flow_layers,
    latin_hypercube_normal,
)

CONTEXT = 5
# (flow, dim): iaf has no 1-dimensional version.
CASES = [(flow, dim) for flow in FLOWS for dim in (1, 3) if (flow, dim) != ("iaf", 1)]

pytestmark = pytest.mark.usefixtures("one_thread")


def _transforms(flow, dim, conditional, flow_depth=2):
    """The layers of a float64 stack, conditioned on a random context if ``conditional``."""
    layers = flow_layers(flow, dim, flow_depth, context_dim=CONTEXT if conditional else None)
    for layer in layers:
        if isinstance(layer, nn.Module):
            layer.double()
    if not conditional:
        return layers
    context = torch.randn(1, CONTEXT, dtype=torch.float64)
    return [layer.condition(context) for layer in layers]


def _exact_log_det(transform, x):
    sign, log_det = torch.linalg.slogdet(jacobian(transform, x).reshape(x.numel(), x.numel()))
    assert sign != 0
    return log_det


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("flow,dim", CASES)
def test_every_layer_log_det_matches_autograd_jacobian(flow, dim, conditional):
    torch.manual_seed(0)
    transforms = _transforms(flow, dim, conditional, flow_depth=3)
    assert any(isinstance(t, Permute) for t in transforms) == (flow in ("iaf", "spline") and dim > 1)
    # each layer at its own points, in the bulk of N(0, 1.5^2) where the
    # splines are not the identity (chained points are the next test's)
    for t in transforms:
        for point in range(3):
            x = 1.5 * torch.randn(1, dim, dtype=torch.float64)
            y = t(x)
            log_det = t.log_abs_det_jacobian(x, y).sum()
            exact = _exact_log_det(t, x)
            torch.testing.assert_close(log_det, exact, rtol=1e-9, atol=1e-9)
            if not isinstance(t, Permute):
                assert abs(exact) > 1e-4, (t, point)  # the layer is not the identity there


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("flow,dim", CASES)
def test_stack_log_det_matches_autograd_jacobian(flow, dim, conditional):
    torch.manual_seed(1)
    transforms = _transforms(flow, dim, conditional, flow_depth=3)
    x0 = torch.randn(1, dim, dtype=torch.float64)

    def push(x):
        for t in transforms:
            x = t(x)
        return x

    x, log_det = x0, 0.0
    for t in transforms:
        y = t(x)
        log_det = log_det + t.log_abs_det_jacobian(x, y).sum()
        x = y
    exact = _exact_log_det(push, x0)
    assert abs(exact) > 1e-3  # the stack is not the identity
    torch.testing.assert_close(log_det, exact, rtol=1e-9, atol=1e-9)


def test_permutations_reverse_and_conditional_ones_are_new_per_distribution():
    layers = flow_layers("spline", 4, 3, context_dim=CONTEXT)
    reversals = [layer for layer in layers if isinstance(layer, ConditionalPermute)]
    assert len(reversals) == 2 and reversals[0] is not reversals[1]
    h = torch.randn(2, CONTEXT)
    first, second = reversals[0].condition(h), reversals[0].condition(h)
    assert isinstance(first, Permute) and first is not second
    assert first.permutation.tolist() == [3, 2, 1, 0]
    unconditional = [layer for layer in flow_layers("iaf", 4, 3) if isinstance(layer, Permute)]
    assert len(unconditional) == 2 and unconditional[0] is not unconditional[1]
    assert all(p.permutation.tolist() == [3, 2, 1, 0] for p in unconditional)


def _spline_settings(transform):
    """(order, bins, bound) of a spline layer, conditioned or not."""
    if isinstance(transform, SplineAutoregressive):
        spline = transform.spline
        return spline.order, spline.count_bins, spline.bound
    assert isinstance(transform, ConditionedSpline)
    widths = transform._params()[0] if callable(transform._params) else transform._params[0]
    return transform.order, widths.shape[-1], transform.bound


def _model(dim):
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(dim), 1.0).to_event(1))

    return model


def _autoguide_parts(flow, dim):
    pyro.clear_param_store()
    guide = AutoFlowNormal(_model(dim), flow=flow, flow_depth=2)
    guide()
    return list(guide.flow.parts)


def _family_parts(flow, dim):
    family = NormalizingFlow(CONTEXT, dim, flow, flow_depth=2)
    return list(family(torch.randn(3, CONTEXT)).transforms)


@pytest.mark.parametrize("flow,dim", CASES)
def test_family_and_autoguide_build_the_same_layers(flow, dim):
    torch.manual_seed(2)
    conditioned, free = _family_parts(flow, dim), _autoguide_parts(flow, dim)
    assert len(conditioned) == len(free)
    for a, b in zip(conditioned, free):
        # Pyro's unconditional layers subclass the conditioned ones (Planar of ConditionedPlanar, ...)
        assert isinstance(b, type(a)), (a, b)
    if flow == "spline":
        splines = [t for t in conditioned + free if not isinstance(t, Permute)]
        assert len(splines) == 4
        assert {_spline_settings(t) for t in splines} == {(SPLINE_ORDER, SPLINE_BINS, SPLINE_BOUND)}
        assert SPLINE_ORDER == "quadratic"
    if flow == "iaf":
        assert all(isinstance(t, (AffineAutoregressive, Permute)) for t in conditioned + free)


def test_iaf_in_one_dimension_is_refused_with_the_same_error_by_both():
    with pytest.raises(ValueError, match="1-dimensional") as family_error:
        NormalizingFlow(CONTEXT, 1, "iaf", 2)
    pyro.clear_param_store()
    guide = AutoFlowNormal(_model(1), flow="iaf")
    with pytest.raises(ValueError, match="1-dimensional") as guide_error:
        guide()
    assert str(family_error.value) == str(guide_error.value)
    assert "affine map of a Gaussian" in str(guide_error.value)
    # the guide is left unset, and fails the same way again
    with pytest.raises(ValueError, match="1-dimensional"):
        guide()
    assert not hasattr(guide, "flow")
    with pytest.raises(ValueError, match="1-dimensional"):
        flow_layers("iaf", 1, 2)


def test_builder_refuses_unknown_flow_and_bad_depth():
    with pytest.raises(ValueError, match="planar, radial, iaf, spline"):
        flow_layers("maf", 2, 2)
    with pytest.raises(ValueError, match="depth >= 1"):
        flow_layers("planar", 2, 0)


# ---------------------------------------------------------------- Latin hypercube


@pytest.mark.parametrize("count,dim", [(1, 3), (2, 1), (5, 7), (10, 4)])
def test_latin_hypercube_columns_are_permutations_of_the_quantiles(count, dim):
    sample = latin_hypercube_normal(count, dim, torch.Generator().manual_seed(3), dtype=torch.float64)
    assert sample.shape == (count, dim) and sample.dtype == torch.float64
    quantiles = ndtri((torch.arange(count, dtype=torch.float64) + 0.5) / count)
    torch.testing.assert_close(sample.sort(0).values, quantiles[:, None].expand(count, dim), rtol=0, atol=0)


def test_latin_hypercube_depends_on_the_generator_seed_alone():
    state = torch.get_rng_state()
    a = latin_hypercube_normal(6, 20, torch.Generator().manual_seed(4))
    torch.manual_seed(123)  # the global state does not matter
    b = latin_hypercube_normal(6, 20, torch.Generator().manual_seed(4))
    c = latin_hypercube_normal(6, 20, torch.Generator().manual_seed(5))
    assert a.dtype == torch.get_default_dtype()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the columns are not all in one order
    assert len({tuple(column.tolist()) for column in a.argsort(0).T}) > 1
    torch.set_rng_state(state)


def test_latin_hypercube_leaves_the_global_generator_alone():
    torch.manual_seed(6)
    expected = torch.rand(3)
    torch.manual_seed(6)
    latin_hypercube_normal(4, 5, torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)
