"""The learned mixture prior and the VampPrior: log densities against brute force, samples' moments, tempering, training."""

import math
from dataclasses import replace

import pytest
import torch
from pyro.distributions import Normal

import pyprobvae as ppv
from pyprobvae.config import ConfigError
from pyprobvae.distributions import MixtureOfDiagonalNormals, tempered_sample
from pyprobvae.priors import MixturePrior, VampPrior
from tests.common import tiny_model


def _brute_force_mixture_log_density(z, locs, scales, log_weights):
    """log sum_k pi_k prod_d N(z_d; mu_kd, sigma_kd), one component at a time."""
    per_component = [log_weights[k] + Normal(locs[k], scales[k]).log_prob(z).sum(-1) for k in range(len(locs))]
    return torch.stack(per_component, -1).logsumexp(-1)


def test_mixture_prior_log_density_is_the_brute_force_mixture():
    torch.manual_seed(0)
    prior = MixturePrior(latent_dim=3, num_components=4)
    with torch.no_grad():
        prior.log_scales.normal_(0, 0.3)
        prior.logits.normal_()
    p = prior(5)
    assert p.batch_shape == (5,) and p.event_shape == (3,)
    z = torch.randn(7, 5, 3)  # particles x batch x latent, as the IWAE bound scores them
    expected = _brute_force_mixture_log_density(z, prior.locs, prior.log_scales.exp(), prior.logits.log_softmax(-1))
    torch.testing.assert_close(p.log_prob(z), expected, rtol=1e-6, atol=1e-6)


def test_mixture_prior_starts_with_separated_components_and_unit_scales():
    torch.manual_seed(0)
    prior = MixturePrior(latent_dim=2, num_components=5)
    assert torch.equal(prior.log_scales, torch.zeros(5, 2)) and torch.equal(prior.logits, torch.zeros(5))
    gaps = (prior.locs[:, None] - prior.locs[None]).abs() + torch.eye(5)[..., None] * 10
    assert gaps.min() > 0.2  # Latin hypercube: every pair differs in every coordinate


def test_prior_samples_have_the_mixtures_moments():
    """Mean and variance of 200000 draws within 5 standard errors of the mixture's (var of the sample variance: m4 - s^4)."""
    torch.manual_seed(1)
    prior = MixturePrior(latent_dim=2, num_components=3)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
        prior.log_scales.fill_(-1.0)
    p = prior(200_000)
    z = p.sample()
    se_mean = (p.variance[0] / len(z)).sqrt()
    assert ((z.mean(0) - p.mean[0]).abs() <= 5 * se_mean).all(), (z.mean(0), p.mean[0])
    centred = z - z.mean(0)
    se_var = ((centred**4).mean(0) - centred.var(0) ** 2).sqrt() / math.sqrt(len(z))
    assert ((z.var(0) - p.variance[0]).abs() <= 5 * se_var).all(), (z.var(0), p.variance[0])


def test_tempered_sampling_sharpens_each_component():
    locs, scales = torch.tensor([[-5.0], [5.0]]), torch.tensor([[1.0], [1.0]])
    mixture = MixtureOfDiagonalNormals(locs, scales, torch.zeros(2)).expand((10_000,))
    torch.manual_seed(0)
    cold = tempered_sample(mixture, 0.0)
    assert set(cold.flatten().tolist()) == {-5.0, 5.0}  # each draw at its own component's mean, not at the mixture's 0
    warm = tempered_sample(mixture, 0.5)
    assert abs((warm.abs() - 5).std() - 0.5) < 0.02  # 50 standard errors of the std away from the untempered 1
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        tempered_sample(mixture, -1.0)


@pytest.mark.parametrize("family", ["diagonal", "mixture"])
def test_vamp_prior_is_the_mean_of_the_posteriors_at_the_pseudo_inputs(family):
    vae = tiny_model(family=family, num_components=2, prior="vamp", prior_components=4)
    assert isinstance(vae.prior, VampPrior)
    # the encoder is the model's own: not registered a second time under the prior
    assert not any(name.startswith("prior.") and "encoder" in name for name, _ in vae.named_parameters())
    assert [name for name, _ in vae.prior.named_parameters()] == ["pseudo_inputs"]
    z = torch.randn(3, 6, 3)
    with torch.no_grad():
        log_p = vae.prior_distribution(6).log_prob(z)
        one_at_a_time = torch.stack([vae.posterior(u[None]).log_prob(z[..., None, :]).squeeze(-1)
                                     for u in vae.prior.pseudo_inputs], -1)
    torch.testing.assert_close(log_p, one_at_a_time.logsumexp(-1) - math.log(4), rtol=1e-5, atol=1e-5)


def test_vamp_prior_gradient_reaches_the_encoder_and_the_pseudo_inputs():
    vae = tiny_model(prior="vamp", prior_components=3)
    vae.prior_distribution(2).log_prob(torch.randn(2, 3)).sum().backward()
    assert vae.prior.pseudo_inputs.grad.abs().sum() > 0
    assert all(p.grad is not None for p in vae.encoder.parameters())


def test_vamp_prior_refuses_a_flow_guide_and_the_cvae_refuses_the_vaes_priors():
    with pytest.raises(ConfigError, match="VampPrior mixes the guide's posteriors"):
        tiny_model(family="flow", prior="vamp")
    with pytest.raises(ConfigError, match="prior 'mixture' needs the VAE \\(model 'vae'\\); model 'cvae' takes standard, learned"):
        tiny_model("cvae", prior="mixture")
    with pytest.raises(ConfigError, match="prior 'learned' needs the conditional VAE"):
        tiny_model(prior="learned")


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
@pytest.mark.parametrize("family", ["diagonal", "mixture", "flow"])
def test_every_prior_trains_with_every_family(prior, family, digits):
    if (prior, family) == ("vamp", "flow"):
        pytest.skip("refused: the VampPrior needs the guide's density anywhere (tested above)")
    train, test = digits
    vae = tiny_model(family=family, num_components=2, flow="iaf", prior=prior, prior_components=5, hidden=(32,))
    config = ppv.TrainConfig(epochs=3, batch_size=100, lr=3e-3)
    history = ppv.fit(vae, replace(train, x=train.x[:500], y=train.y[:500]), replace(test, x=test.x[:100], y=test.y[:100]),
                      config, progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    metrics = ppv.evaluate(vae, test.x[:100], iwae_samples=10)
    assert metrics["kl_per_dim"] is None and math.isfinite(metrics["test_nll"])  # no closed-form KL: sampled
    assert metrics["test_nll"] <= -metrics["test_elbo"] + 0.5
    assert vae.sample(4, temperature=0.5).shape == (4, 1, 8, 8)
