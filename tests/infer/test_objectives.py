"""The training objectives through TrainConfig: beta, free bits, the choice of bound and gradient, and what each refuses."""

from dataclasses import replace

import pytest
import torch
from torch.distributions import kl_divergence

import pyprobvae as ppv
from pyprobvae.config import ConfigError
from pyprobvae.infer import ELBOLoss, ELBOObjective, TrainConfig, elbo_estimate
from tests.common import tiny_model


@pytest.fixture(scope="module")
def small_digits(digits):
    train, test = digits
    return replace(train, x=train.x[:300], y=train.y[:300]), replace(test, x=test.x[:100], y=test.y[:100])


def _estimate(vae, x, seed=0, **settings):
    torch.manual_seed(seed)
    return elbo_estimate(vae.model, vae.guide, x, register=False, **settings)


def test_beta_weighs_the_kl_of_the_objective_and_not_of_the_report(small_digits):
    vae, x = tiny_model(), small_digits[1].x[:20]
    plain = _estimate(vae, x)
    torch.testing.assert_close(plain.objective, plain.terms.elbo - plain.terms.penalty)
    for beta in (0.0, 0.25, 4.0):
        weighted = _estimate(vae, x, kl_weight=beta)
        torch.testing.assert_close(weighted.terms.elbo, plain.terms.elbo)
        torch.testing.assert_close(weighted.objective, plain.terms.log_likelihood - beta * plain.terms.kl)


def test_free_bits_floor_each_dimensions_kl_per_example(small_digits):
    vae, x = tiny_model(), small_digits[1].x[:20]
    with torch.no_grad():
        per_dimension = kl_divergence(vae.posterior(x).base_dist, vae.prior_distribution(len(x)).base_dist)
    plain = _estimate(vae, x)
    floor = float(per_dimension.median())  # some dimensions of some examples below, some above
    floored = _estimate(vae, x, free_bits=floor)
    torch.testing.assert_close(floored.terms.elbo, plain.terms.elbo)  # the report is the true ELBO
    torch.testing.assert_close(floored.objective, plain.terms.log_likelihood - per_dimension.clamp(min=floor).sum(-1))
    # a floor below every KL changes nothing; one above every KL leaves the encoder no gradient from the KL
    torch.testing.assert_close(_estimate(vae, x, free_bits=1e-12).objective, plain.objective)
    high = _estimate(vae, x, free_bits=float(per_dimension.max()) + 1)
    torch.testing.assert_close(high.objective, plain.terms.log_likelihood - (float(per_dimension.max()) + 1) * 3)


def test_auto_is_stl_for_a_mixture_guide(small_digits):
    x = small_digits[1].x[:20]
    gradients = {}
    for gradient in ("auto", "stl", "pathwise"):
        vae = tiny_model(family="mixture", num_components=3, seed=0)
        (-_estimate(vae, x, gradient=gradient).objective.sum()).backward()
        gradients[gradient] = [p.grad.clone() for p in vae.parameters() if p.grad is not None]
    for auto, stl in zip(gradients["auto"], gradients["stl"]):
        torch.testing.assert_close(auto, stl, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(gradients["auto"], gradients["pathwise"]))


def test_free_bits_need_a_kl_per_dimension(small_digits):
    vae = tiny_model(prior="mixture")
    with pytest.raises(ValueError, match="free bits floor the KL of each latent dimension"):
        _estimate(vae, small_digits[1].x[:4], free_bits=0.1)


def test_the_kl_weight_is_beta_after_the_warmup():
    loss = ELBOLoss(tiny_model())
    objective = ELBOObjective(loss, warmup_steps=10, beta=0.5)
    assert [objective.kl_weight(t) for t in (0, 4, 9, 50)] == [0.05, 0.25, 0.5, 0.5]
    assert ELBOObjective(loss, beta=2.0).kl_weight(0) == 2.0


@pytest.mark.parametrize("settings, message", [
    (dict(particles=5), "the elbo takes one draw per example"),
    (dict(gradient="dreg"), "dreg is the iwae bound's"),
    (dict(objective="iwae", particles=5, free_bits=0.5), "the iwae bound has no KL term to floor"),
    (dict(gradient="stl", free_bits=0.5), "give one of the two"),
    (dict(objective="stratified", particles=3), "draws once from each component"),
    (dict(objective="stratified", gradient="stl"), "has its own gradient"),
])
def test_train_config_refuses_settings_its_estimator_cannot_honour(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_a_record_of_the_retired_estimator_setting_reads_as_its_objective():
    assert TrainConfig.from_record({"estimator": "stratified"}).objective == "stratified"
    assert TrainConfig.from_record({"estimator": "pathwise"}) == TrainConfig(gradient="pathwise")  # as 0.2 trained
    with pytest.raises(ConfigError, match="has no setting 'estimator'"):
        TrainConfig.from_dict({"estimator": "pathwise"})  # a user's settings are this version's


@pytest.mark.parametrize("settings", [
    dict(objective="iwae", particles=4),
    dict(objective="iwae", particles=4, gradient="stl"),
    dict(objective="iwae", particles=4, gradient="dreg"),
    dict(gradient="stl"),
    dict(beta=0.5, free_bits=0.05),
], ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_every_objective_trains_the_vae_and_the_cvae(settings, model, small_digits):
    train, test = small_digits
    vae = tiny_model(model, hidden=(32,))
    history = ppv.fit(vae, train, test, TrainConfig(epochs=3, batch_size=50, lr=3e-3, **settings), progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    assert ("train_bound" in history[-1]) == (settings.get("objective") == "iwae")
    if "train_bound" in history[-1]:  # the IWAE bound of the training draws is at least their ELBO, draw by draw
        assert history[-1]["train_bound"] >= history[-1]["train_elbo"]


def test_stl_and_dreg_refuse_a_flow_guide(small_digits):
    vae = tiny_model(family="flow", flow="iaf")
    with pytest.raises(ValueError, match="need log q\\(z\\) at stopped parameters"):
        ppv.fit(vae, *small_digits, TrainConfig(epochs=1, gradient="stl"), progress=False)

