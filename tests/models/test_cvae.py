"""The conditional VAE: label-conditioned encoder, decoder and prior."""

import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

import pyprobvae as ppv
from pyprobvae.evaluation.metrics import iwae_log_likelihood, kl_per_dimension
from pyprobvae.infer import dataset_elbo, elbo_terms
from tests.common import tiny_model


def _cvae(prior="standard", latent_dim=3, seed=0):
    return tiny_model("cvae", seed=seed, prior=prior, latent_dim=latent_dim, hidden=(32,))


@pytest.fixture(scope="module")
def trained(digits, one_thread):
    """A learned-prior CVAE after a short training (also moves the prior away from N(0, I))."""
    model = _cvae("learned")
    ppv.fit(model, digits[0], None, ppv.TrainConfig(epochs=5, lr=3e-3), progress=False)
    return model


def test_labels_enter_encoder_decoder_and_prior(trained, digits):
    x, y = digits[1].x[:4], digits[1].y[:4]
    other = (y + 1) % 10
    assert not torch.allclose(trained.posterior(x, y).base_dist.loc, trained.posterior(x, other).base_dist.loc)
    z = torch.zeros(4, 3)
    assert not torch.allclose(trained.decode(z, y), trained.decode(z, other))
    prior = trained.prior_distribution(4, y)
    assert not torch.allclose(prior.mean, trained.prior_distribution(4, other).mean)
    # one-hot label vectors are the same as the labels
    one_hot = torch.nn.functional.one_hot(y, 10).float()
    torch.testing.assert_close(trained.decode(z, one_hot), trained.decode(z, y))


@pytest.mark.parametrize("prior", ["standard", "learned"])
def test_analytic_kl_of_the_label_prior_matches_monte_carlo(trained, digits, prior):
    """KL(q(z|x,y) || p(z|y)) in closed form against the sampled log q - log p, averaged over many draws."""
    model = trained if prior == "learned" else _cvae("standard")
    x, y = digits[1].x[:5], digits[1].y[:5]
    draws = 4000
    torch.manual_seed(0)
    sampled = elbo_terms(model.model, model.guide, x.repeat(draws, 1, 1, 1), y.repeat(draws), analytic_kl=False,
                         register=False).kl.reshape(draws, 5)
    analytic = elbo_terms(model.model, model.guide, x, y, register=False).kl
    se = sampled.std(0) / math.sqrt(draws)
    assert ((sampled.mean(0) - analytic).abs() < 5 * se).all()


def test_iwae_bound_of_log_p_x_given_y_tightens_with_k(trained, digits):
    x, y = digits[1].x[:40], digits[1].y[:40]
    torch.manual_seed(0)
    elbo = dataset_elbo(trained, x.repeat(20, 1, 1, 1), y.repeat(20)).elbo.reshape(20, 40).mean(0)
    bounds = [iwae_log_likelihood(trained, x, k, y=y) for k in (1, 50)]
    # E[L_50] >= E[L_1] = ELBO, strictly for an imperfect guide: the mean gap over 40 examples must be
    # positive by more than 3 standard errors
    for gap in (bounds[1] - bounds[0], bounds[1] - elbo):
        assert gap.mean() > 3 * gap.std() / math.sqrt(len(gap))


def test_stock_pyro_svi_trains_the_cvae(digits):
    pyro.clear_param_store()
    model = _cvae()
    x, y = digits[0].x[:256], digits[0].y[:256]
    svi = SVI(model.model, model.guide, Adam({"lr": 3e-3}), Trace_ELBO())
    before = dataset_elbo(model, x, y).elbo.mean()
    for _ in range(30):
        svi.step(x, y)
    assert dataset_elbo(model, x, y).elbo.mean() > before + 10


def test_label_errors(digits):
    model = _cvae()
    x = digits[1].x[:3]
    with pytest.raises(ValueError, match="needs labels"):
        elbo_terms(model.model, model.guide, x, register=False)
    with pytest.raises(ValueError, match="label 10 is outside the model's classes 0 to 9"):
        model.sample(2, y=torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="label -1 is outside"):
        model.encode(x, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match=r"shape \(2,\); expected \(3,\)"):
        model.encode(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="non-negative entries summing to one"):
        model.decode(torch.zeros(1, 3), torch.full((1, 10), 0.2))
    vae = ppv.build_vae((1, 8, 8), latent_dim=3, hidden=[8], likelihood="categorical", num_levels=17)
    with pytest.raises(ValueError, match="unconditional and takes no labels"):
        vae.sample(2, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        elbo_terms(vae.model, vae.guide, x, torch.tensor([0, 1, 2]), register=False)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        ppv.build_vae((1, 8, 8), model="cvae")
    with pytest.raises(ValueError, match="needs the conditional VAE"):
        ppv.build_vae((1, 8, 8), prior="learned")
    with pytest.raises(ValueError, match="unknown prior 'wide'"):
        ppv.build_vae((1, 8, 8), model="cvae", num_classes=10, prior="wide")
    unlabelled = ppv.from_arrays(digits[0].x[:20].numpy())
    with pytest.raises(ValueError, match="needs labelled data"):
        ppv.fit(model, unlabelled, config=ppv.TrainConfig(epochs=1), progress=False)


def test_balanced_labels_give_one_row_per_class():
    model = _cvae()
    assert model.balanced_labels(30).tolist() == [c for c in range(10) for _ in range(3)]
    counts = torch.bincount(model.balanced_labels(1000), minlength=10)
    assert counts.tolist() == [100] * 10
    assert torch.bincount(model.balanced_labels(13), minlength=10).max() == 2


def test_interpolation_endpoints_are_the_reconstructions_with_their_labels(trained, digits):
    x, y = digits[1].x[:8], digits[1].y[:8]
    for method in ("linear", "spherical"):
        path = trained.interpolate(x[:4], x[4:], 5, method, y[:4], y[4:])
        assert path.shape == (4, 5, 1, 8, 8)
        torch.testing.assert_close(path[:, 0], trained.reconstruct(x[:4], y[:4]))
        torch.testing.assert_close(path[:, -1], trained.reconstruct(x[4:], y[4:]))


def test_class_interpolation_holds_the_style_and_moves_the_label(trained):
    torch.manual_seed(0)
    strips = trained.interpolate_classes(2, 7, num_paths=3, steps=6)
    assert strips.shape == (3, 6, 1, 8, 8)
    torch.manual_seed(0)
    eps = torch.randn(3, 1, 3).squeeze(1)
    for label, column in ((2, 0), (7, -1)):
        y = torch.full((3,), label)
        prior = trained.prior_distribution(3, y)
        torch.testing.assert_close(strips[:, column], trained.decode(prior.mean + prior.stddev * eps, y))
    with pytest.raises(ValueError, match="label 12 is outside"):
        trained.interpolate_classes(2, 12, 1)
    with pytest.raises(ValueError, match="steps >= 2"):
        trained.interpolate_classes(2, 3, 1, steps=1)


def test_temperature_zero_decodes_the_class_prior_mean(trained):
    y = torch.tensor([0, 4, 9])
    torch.testing.assert_close(trained.sample(3, temperature=0.0, y=y), trained.decode(trained.prior_distribution(3, y).mean, y))


def test_traverse_holds_the_label(trained, digits):
    x, y = digits[1].x[:1], digits[1].y[:1]
    strips = trained.traverse(x, [0, 2], torch.linspace(-2, 2, 3), y)
    code = trained.encode(x, y)
    expected = code.repeat(3, 1)
    expected[:, 2] = torch.linspace(-2, 2, 3)
    torch.testing.assert_close(strips[1], trained.decode(expected, y.repeat(3)))


def test_kl_per_dimension_is_given_the_labels(trained, digits):
    x, y = digits[1].x, digits[1].y
    per_dim = kl_per_dimension(trained, x, y)
    torch.testing.assert_close(per_dim.sum(), dataset_elbo(trained, x, y).kl.mean(), rtol=1e-4, atol=1e-4)


