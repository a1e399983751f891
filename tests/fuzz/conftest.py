"""Fixtures of the fuzz suite: the tiny data, one trained run of each kind (once per session), and the case count."""

import os
import shutil

import pytest
import torch

from . import harness
from .harness import Case, expect
from .world import KINDS, PRIOR_KIND, TINY_PRIOR, make_data, train_base


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny networks: torch threads only add contention (the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fuzz_base(tmp_path_factory):
    """Where the cases' folders are made."""
    return str(tmp_path_factory.mktemp("fuzz-cases"))


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """The session's tiny inputs (see :func:`tests.fuzz.world.make_data`); cases work on copies."""
    return make_data(str(tmp_path_factory.mktemp("fuzz-data")))


@pytest.fixture(scope="session")
def runs(tmp_path_factory, inputs):
    """One tiny trained run of each kind in :data:`~tests.fuzz.world.KINDS`, and ``vqvae-prior`` (train-prior on vqvae)."""
    base = str(tmp_path_factory.mktemp("fuzz-runs"))
    for name in ("npz", "idx", "text"):  # the runs read their data from here (config.json holds absolute paths)
        source = os.path.join(inputs["dir"], inputs[name])
        (shutil.copytree if os.path.isdir(source) else shutil.copyfile)(source, os.path.join(base, inputs[name]))
    folders = {}
    for kind in KINDS:
        argv = [str(a) for a in train_base(kind, out=kind)]
        result = Case(base, directory=base).run(argv)
        expect(result, None)
        assert result.status == 0, f"the tiny {kind} run does not train:\n{result.describe()}"
        folders[kind] = os.path.join(base, kind)
    shutil.copytree(folders["vqvae"], os.path.join(base, PRIOR_KIND), symlinks=True)
    result = Case(base, directory=base).run(["train-prior", PRIOR_KIND, *TINY_PRIOR])
    expect(result, None)
    assert result.status == 0, f"the tiny prior does not train:\n{result.describe()}"
    folders[PRIOR_KIND] = os.path.join(base, PRIOR_KIND)
    return folders


def pytest_terminal_summary(terminalreporter):
    if not harness.CASES:
        return
    total = sum(harness.CASES.values())
    terminalreporter.write_sep("-", f"pyprobvae fuzz ({harness.PROFILE} profile): {total} command lines run")
    for test, count in sorted(harness.CASES.items()):
        terminalreporter.write_line(f"{count:6d}  {test}")
    if harness.SURVEY:
        terminalreporter.write_line(f"violations recorded in {harness.SURVEY}")
