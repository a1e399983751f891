"""The command line end to end: ``--network`` for the Gaussian-latent models."""

import json
import math

import pytest

from pyprobvae.cli import main, make_parser


def test_cli_trains_a_conv_vae(tmp_path, capsys):
    out = str(tmp_path / "conv")
    assert main(["train", "--network", "conv", "--epochs", "1", "--latent-dim", "2", "--iwae-samples", "5", "--quiet",
                 "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert math.isfinite(summary["test_nll"])
    with open(tmp_path / "conv" / "config.json") as f:
        assert json.load(f)["model"]["network"] == "conv"
    assert main(["reconstruct", out, "--n", "4", "--out", str(tmp_path / "r.npy")]) == 0


def test_network_is_one_option_of_every_model(capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    every_model = text.split("every model:")[1].split("\n\n")[0]
    assert text.count("  --network {mlp,conv}") == 1 and "  --network {mlp,conv}" in every_model
