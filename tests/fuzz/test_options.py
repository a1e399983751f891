"""
Option values: every option of every verb (read from the parser), set to
small valid values and hostile ones, one to three at a time on the verb's
tiny base command line (the other settings keep their tiny values).
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import expect, fuzz_settings, option_fragment, run_cli, verb_options, verb_parsers, with_options
from .world import (KINDS, PRIOR_KIND, READ_ONLY, RUN_VERBS, SPECIAL, copy_run, fresh_case, resolve, run_base,
                    set_targets, train_base)

RUN_KINDS = [*KINDS, PRIOR_KIND]
DISCRETE_KINDS = ["vqvae", PRIOR_KIND]


def _fragments(draw, options, special):
    chosen = draw(st.lists(st.sampled_from(options), min_size=1, max_size=3, unique_by=lambda o: o.dest))
    return {option: option_fragment(draw, option, special) for option in chosen}


# ------------------------------------------------------------------ the parser itself

def test_every_verb_has_options():
    """The walk finds the verbs and their options (else the fuzzing below would be vacuous)."""
    verbs = verb_parsers()
    assert {"train", "train-prior", "evaluate", "sample", "reconstruct", "interpolate", "traverse", "encode"} <= set(verbs)
    assert len(verb_options("train")) > 20
    for verb in verbs:
        assert verb_options(verb), verb


@pytest.mark.parametrize("verb", [None, *verb_parsers()])
def test_help_exits_zero(verb, tmp_path):
    """``--help`` raises SystemExit(0) by design and prints the usage on stdout, nothing on stderr."""
    argv = ["--help"] if verb is None else [verb, "--help"]
    result = run_cli(argv, str(tmp_path))
    assert result.exception == "SystemExit(0)", result.describe()
    assert result.stdout.startswith("usage: pyprobvae") and not result.stderr, result.describe()


def test_version_exits_zero(tmp_path):
    result = run_cli(["--version"], str(tmp_path))
    assert result.exception == "SystemExit(0)" and result.stdout.startswith("pyprobvae "), result.describe()


@pytest.mark.parametrize("argv", [[], [""], ["bogus"], ["--bogus"], ["-x"], ["train", "--bogus"], ["train", "--epochs"],
                                  ["sample"], ["evaluate", "a", "b"], ["train", "--epochs", "1", "--epochs"],
                                  ["train", "--model"], ["sample", "run", "--out"]])
def test_malformed_command_lines(argv, tmp_path):
    """The parser's own errors: status 2 and one line ``pyprobvae: error: ...`` (its usage text is not printed)."""
    result = run_cli(argv, str(tmp_path))
    expect(result)
    assert result.status == 2, result.describe()


# ------------------------------------------------------------------ the verbs

def test_base_command_lines_work(fuzz_base, inputs, runs):
    """The tiny base command lines the fuzzing starts from succeed: else every case would be a refusal."""
    for kind in KINDS:
        with fresh_case(fuzz_base, inputs) as case:
            argv = resolve(train_base(kind), case, runs)
            set_targets(case, argv)
            result = case.run(argv)
            expect(result, case)
            assert result.status == 0, result.describe()
    for verb in RUN_VERBS():
        kind = "vqvae" if verb == "train-prior" else "vae"
        with fresh_case(fuzz_base, inputs) as case:
            folder = copy_run(runs[kind], case)
            argv = resolve(run_base(verb), case, runs, folder)
            set_targets(case, argv, folder)
            result = case.run(argv)
            expect(result, case)
            assert result.status == 0, result.describe()


@pytest.mark.slow
@fuzz_settings(30)
@given(data=st.data())
def test_train_options(data, fuzz_base, inputs, runs):
    kind = data.draw(st.sampled_from(list(KINDS)), label="kind")
    fragments = _fragments(data.draw, verb_options("train"), SPECIAL["train"])
    with fresh_case(fuzz_base, inputs) as case:
        argv = resolve(with_options(train_base(kind), fragments), case, runs)
        set_targets(case, argv)
        expect(case.run(argv), case)


@fuzz_settings(60)
@given(data=st.data())
def test_run_verb_options(data, fuzz_base, inputs, runs):
    verb = data.draw(st.sampled_from([v for v in RUN_VERBS() if READ_ONLY(v)]), label="verb")
    kind = data.draw(st.sampled_from(RUN_KINDS), label="kind")
    fragments = _fragments(data.draw, verb_options(verb), SPECIAL["verb"])
    with fresh_case(fuzz_base, inputs) as case:
        folder = copy_run(runs[kind], case)
        argv = resolve(with_options(run_base(verb), fragments), case, runs, folder)
        set_targets(case, argv, folder)
        expect(case.run(argv), case)


@pytest.mark.slow
@fuzz_settings(15)
@given(data=st.data())
def test_train_prior_options(data, fuzz_base, inputs, runs):
    kind = data.draw(st.sampled_from(DISCRETE_KINDS * 3 + RUN_KINDS), label="kind")
    fragments = _fragments(data.draw, verb_options("train-prior"), SPECIAL["verb"])
    with fresh_case(fuzz_base, inputs) as case:
        folder = copy_run(runs[kind], case)
        argv = resolve(with_options(run_base("train-prior"), fragments), case, runs, folder)
        set_targets(case, argv, folder)
        expect(case.run(argv), case)
