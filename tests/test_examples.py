import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args",
    [
        ("vae_digits.py", ["--epochs", "2", "--iwae-samples", "10"]),
        ("vae_objectives.py", ["--epochs", "1", "--particles", "3", "--iwae-samples", "10"]),
        ("vae_distributed.py", ["--epochs", "2"]),
        ("vae_stock_pyro_svi.py", ["--steps", "20"]),
        ("guides_2d.py", ["--steps", "20", "--eval-samples", "5000", "--grid", "101"]),
        ("bimodal_posterior.py", ["--steps", "20"]),
        ("bayesian_regression.py", ["--steps", "20"]),
        ("from_autonormal.py", ["--steps", "20"]),
        ("ae_vae_cvae.py", ["--epochs", "1", "--samples", "50"]),
        ("cvae_digits.py", ["--epochs", "1"]),
        ("vqvae_digits.py", ["--epochs", "1", "--prior-epochs", "1"]),
        ("vqvae_text.py", ["--epochs", "1", "--prior-epochs", "1", "--dataset", "text:CORPUS"]),
    ],
)
def test_example_runs(script, args, tmp_path):
    if script in ("vae_digits.py", "vae_distributed.py", "bimodal_posterior.py", "ae_vae_cvae.py", "cvae_digits.py", "vqvae_digits.py", "vqvae_text.py"):
        args = [*args, "--out", str(tmp_path / "out")]  # a folder of its own (the corpus sits beside it)
    if "text:CORPUS" in args:  # a small file keeps the example fast
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("Return the sum of the arguments; raise ValueError for an empty list.\n" * 40)
        args = [a.replace("CORPUS", str(corpus)) for a in args]
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "nats" in result.stdout or "test_elbo" in result.stdout or "exact posterior" in result.stdout or "frechet_distance" in result.stdout
