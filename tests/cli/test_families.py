"""The command line end to end: families."""

import json
import math

from pyprobvae.cli import main


def test_cli_trains_each_family(tmp_path, capsys):
    for extra in (["--guide", "mixture", "--components", "2", "--objective", "stratified"],
                  ["--guide", "flow", "--flow", "radial", "--flow-depth", "3"]):
        out = str(tmp_path / extra[1])
        assert main(["train", *extra, "--epochs", "1", "--hidden", "16", "--latent-dim", "2",
                     "--iwae-samples", "10", "--quiet", "--out", out]) == 0
        capsys.readouterr()
        assert main(["evaluate", out, "--iwae-samples", "10"]) == 0
        assert math.isfinite(json.loads(capsys.readouterr().out)["test_nll"])
    with open(tmp_path / "flow" / "config.json") as f:
        spec = json.load(f)["model"]
    assert (spec["family"], spec["flow"], spec["flow_depth"]) == ("flow", "radial", 3)


def test_cli_stratified_with_diagonal_is_an_error(tmp_path, capsys):
    argv = ["train", "--objective", "stratified", "--epochs", "1", "--hidden", "16", "--quiet", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "stratified estimator needs" in capsys.readouterr().err
