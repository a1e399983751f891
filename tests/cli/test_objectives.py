"""The command line end to end: every bound, gradient estimator, KL schedule and prior, and the combinations it refuses."""

import json
import math

import pytest

from pyprobvae.cli import main

SMALL = ["--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--iwae-samples", "5", "--quiet"]


@pytest.mark.parametrize("options", [
    ["--objective", "iwae", "--particles", "3", "--gradient", "dreg", "--prior", "vamp", "--prior-components", "3"],
    ["--guide", "mixture", "--components", "2", "--prior", "mixture", "--prior-components", "3"],
    ["--beta", "0.5", "--free-bits", "0.1", "--kl-warmup-epochs", "1"],
    ["--model", "cvae", "--objective", "iwae", "--particles", "2", "--gradient", "stl", "--prior", "learned"],
    ["--guide", "flow", "--flow", "iaf", "--objective", "iwae", "--particles", "2"],
], ids=["iwae-dreg-vamp", "mixture-guide-mixture-prior", "beta-free-bits", "cvae-iwae-stl", "flow-iwae"])
def test_every_objective_and_prior_trains_through_the_cli(options, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *options, *SMALL, "--out", out]) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert math.isfinite(metrics["test_elbo"]) and math.isfinite(metrics["test_nll"])
    with open(tmp_path / "run" / "config.json") as f:
        train = json.load(f)["train"]
    given = dict(zip(options[::2], options[1::2]))
    for option in ("--objective", "--gradient", "--particles", "--beta", "--free-bits"):
        if option in given:
            assert str(train[option[2:].replace("-", "_")]) == given[option]
    assert main(["sample", out, "--n", "4", "--out", str(tmp_path / "samples.png")]) == 0
    assert (tmp_path / "samples.png").stat().st_size > 0


@pytest.mark.parametrize("options, message", [
    (["--prior", "vamp", "--guide", "flow"], "the VampPrior mixes the guide's posteriors"),
    (["--gradient", "dreg"], "dreg is the iwae bound's"),
    (["--objective", "iwae", "--particles", "2", "--free-bits", "0.5"], "no KL term to floor"),
    (["--free-bits", "0.5", "--prior", "mixture"], "free bits floor the KL of each latent dimension"),
    (["--gradient", "stl", "--guide", "flow"], "need log q(z) at stopped parameters"),
    (["--model", "cvae", "--prior", "vamp"], "prior 'vamp' needs"),
])
def test_combinations_that_cannot_train_stop_with_one_line(options, message, tmp_path, capsys):
    assert main(["train", *options, *SMALL, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
