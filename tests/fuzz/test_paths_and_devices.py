"""
Devices and paths: ``--device`` names torch knows, or not, that this machine
cannot use; output paths that are files, folders, symlinks to /dev/null,
under /proc, under a regular file, read-only, too long; run folders that are
not run folders.
"""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import DEVICES, Token, _sandbox, expect, fuzz_settings, verb_options
from .world import (KINDS, PRIOR_KIND, READ_ONLY, RUN_ARGS, RUN_VERBS, TRAIN_OUTS, VERB_OUTS, copy_run, fresh_case,
                    resolve, run_base, set_targets, train_base)

RUN_KINDS = [*KINDS, PRIOR_KIND]
DEVICE_VERBS = [v for v in ["train", *RUN_VERBS()] if any(o.dest == "device" for o in verb_options(v))]


def _replace(argv, flag, value):
    argv = list(argv)
    while flag in argv:
        i = argv.index(flag)
        del argv[i:i + 2]
    return argv + [flag, value]


def _run_case(case, verb, kind, runs, argv):
    """Resolve and run a command line of ``verb`` on a copy of the ``kind`` run (train: into the case)."""
    folder = None if verb == "train" else copy_run(runs[kind], case)
    argv = resolve(argv, case, runs, folder)
    set_targets(case, argv, folder)
    expect(case.run(argv), case)


def test_sandbox_keeps_dev_safe():
    """The harness's sandbox refuses changes under /dev (tried with a harmless mkdir)."""
    path = "/dev/pyprobvae-fuzz-sandbox-check"
    with _sandbox():
        with pytest.raises(PermissionError):
            os.mkdir(path)
    assert not os.path.exists(path)


@fuzz_settings(30)
@given(data=st.data())
def test_devices(data, fuzz_base, inputs, runs):
    verb = data.draw(st.sampled_from(DEVICE_VERBS), label="verb")
    device = data.draw(st.sampled_from(DEVICES), label="device")
    flag = next(o for o in verb_options(verb) if o.dest == "device").flags[0]
    if verb == "train":
        kind = data.draw(st.sampled_from(list(KINDS)), label="kind")
        argv = _replace(train_base(kind), flag, device)
    else:
        kind = data.draw(st.sampled_from(["vqvae", PRIOR_KIND] if verb == "train-prior" else RUN_KINDS), label="kind")
        argv = _replace(run_base(verb), flag, device)
    with fresh_case(fuzz_base, inputs) as case:
        _run_case(case, verb, kind, runs, argv)


@pytest.mark.slow
@fuzz_settings(20)
@given(data=st.data())
def test_train_out(data, fuzz_base, inputs, runs):
    """``train --out`` at paths that are not fresh folders, with or without --overwrite / --resume."""
    kind = data.draw(st.sampled_from(list(KINDS)), label="kind")
    out = Token(data.draw(st.sampled_from(TRAIN_OUTS), label="out"))
    mode = data.draw(st.sampled_from([[], [], ["--overwrite"], ["--resume"]]), label="mode")
    with fresh_case(fuzz_base, inputs) as case:
        _run_case(case, "train", kind, runs, _replace(train_base(kind), "--out", out) + mode)


@fuzz_settings(40)
@given(data=st.data())
def test_verb_paths(data, fuzz_base, inputs, runs):
    """The read verbs' ``--out`` and every run verb's run folder at paths of every kind."""
    verb = data.draw(st.sampled_from(RUN_VERBS()), label="verb")
    kind = data.draw(st.sampled_from(RUN_KINDS), label="kind")
    argv = run_base(verb)
    if READ_ONLY(verb) and "--out" in argv and data.draw(st.booleans(), label="fuzz --out"):
        argv = _replace(argv, "--out", Token(data.draw(st.sampled_from(VERB_OUTS), label="out")))
    else:
        argv = [Token(data.draw(st.sampled_from(RUN_ARGS), label="run")) if str(a) == "<run>" else a for a in argv]
    with fresh_case(fuzz_base, inputs) as case:
        _run_case(case, verb, kind, runs, argv)
