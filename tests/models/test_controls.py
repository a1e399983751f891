"""Controlled sampling: temperature and latent traversals."""

import pytest
import torch

import pyprobvae as ppv
from tests.common import tiny_model


def _vae(kind="vae"):
    return tiny_model(kind)


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_temperature_zero_decodes_the_mean_and_scales_the_spread(kind, monkeypatch):
    model = _vae(kind)
    zero = model.sample(5, temperature=0.0)
    torch.testing.assert_close(zero, model.decode(torch.zeros(5, 3)).expand_as(zero))
    monkeypatch.setattr(model, "_decode", lambda z, condition: z)
    torch.manual_seed(0)
    codes = model.sample(20000, temperature=0.5)
    # z_T = 0.5 z with z ~ N(0, I): standard deviation 0.5 (standard error ~0.0025)
    assert torch.allclose(codes.std(0), torch.full((3,), 0.5), atol=0.0125)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.sample(2, temperature=-0.1)


def test_traverse_varies_one_dimension_at_a_time(monkeypatch):
    model = _vae()
    x = ppv.load_dataset("digits", "test").x[:1]
    code = model.encode(x)[0]
    # a "decoder" that writes the code into the first pixels, so the output shows the codes it got
    monkeypatch.setattr(model, "_decode", lambda z, condition: torch.nn.functional.pad(z, (0, 61)).reshape(-1, 1, 8, 8))
    values = torch.linspace(-2, 2, 5)
    codes = model.traverse(x, [2, 0], values).reshape(2, 5, 64)[..., :3]
    for row, d in enumerate([2, 0]):
        torch.testing.assert_close(codes[row, :, d], values)
        others = [j for j in range(3) if j != d]
        torch.testing.assert_close(codes[row][:, others], code[others].expand(5, 2))
    with pytest.raises(ValueError, match="one input"):
        model.traverse(ppv.load_dataset("digits", "test").x[:2], [0], values)
    with pytest.raises(ValueError, match=r"latent dimensions must lie in \[0, 3\)"):
        model.traverse(x, [3], values)


