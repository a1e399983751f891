"""train --config FILE: a run's config.json reruns it exactly; options override the file; bad files stop with one line."""

import json

import pytest

from pyprobvae.cli import main

SMALL = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--iwae-samples", "5", "--quiet"]


def _read(path):
    with open(path) as f:
        return json.load(f)


def test_a_runs_config_json_reruns_it_exactly_and_options_override_it(tmp_path, capsys):
    assert main(["train", *SMALL, "--beta", "0.5", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--quiet", "--out", str(tmp_path / "b")]) == 0
    assert _read(tmp_path / "b" / "config.json") == _read(tmp_path / "a" / "config.json")
    first, again = (_read(tmp_path / run / "metrics.json") for run in "ab")
    assert again["test_elbo"] == first["test_elbo"] and again["test_nll"] == first["test_nll"]  # same seed, same numbers
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--epochs", "1", "--quiet", "--out", str(tmp_path / "c")]) == 0
    changed = _read(tmp_path / "c" / "config.json")
    assert changed["train"]["epochs"] == 1 and changed["train"]["beta"] == 0.5


def test_a_partial_toml_file_takes_the_defaults_for_the_rest(tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text('[model]\nlatent_dim = 2\nhidden = [16]\n\n[train]\nepochs = 1\nbeta = 2.0\n\n[evaluation]\niwae_samples = 5\n')
    assert main(["train", "--config", str(config), "--quiet", "--out", str(tmp_path / "run")]) == 0
    written = _read(tmp_path / "run" / "config.json")
    assert (written["model"]["latent_dim"], written["model"]["hidden"], written["train"]["beta"]) == (2, [16], 2.0)
    assert written["train"]["lr"] == 1e-3 and written["model"]["family"] == "diagonal"


@pytest.mark.parametrize("content, message", [
    ('{"trian": {}}', "unknown part 'trian'"),
    ("{", "is not valid JSON"),
    ('[1, 2]', "expected an object of parts"),
    ('{"train": {"epochs": "x"}}', "epochs must be an integer"),
    ('{"model": {"famly": "mixture"}}', "has no setting 'famly'"),
    ('{"train": {"particles": 5}}', "the elbo takes one draw per example"),
])
def test_a_config_file_that_cannot_be_used_stops_with_one_line(content, message, tmp_path, capsys):
    config = tmp_path / "settings.json"
    config.write_text(content)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_config_is_for_a_new_run_and_a_missing_file_is_named(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.json"), "--out", str(tmp_path / "run")]) == 2
    assert "none.json: No such file or directory" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.json"), "--resume", "--out", str(tmp_path / "run")]) == 2
    assert "--resume continues a run with its own settings" in capsys.readouterr().err
