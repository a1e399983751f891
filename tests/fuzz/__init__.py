"""
Property-based fuzzing of the ``pyprobvae`` command line (Hypothesis).

Every case runs ``pyprobvae.cli.main(argv)`` in-process and checks the
properties of :mod:`tests.fuzz.harness`; what is generated is derived from
``pyprobvae.cli.make_parser()``, so a new verb or option is fuzzed without
any change here.

Profiles (environment variable ``PYPROBVAE_FUZZ``):

* unset or ``default``: a few examples per test, deterministic
  (``derandomize=True``), no shrinking; the folder runs in about a minute::

      OMP_NUM_THREADS=1 python -m pytest -q tests/fuzz

* ``deep``: 25 times as many examples, with shrinking, for local use::

      PYPROBVAE_FUZZ=deep OMP_NUM_THREADS=1 python -m pytest -q tests/fuzz

Triage: with ``PYPROBVAE_FUZZ_SURVEY=FILE.jsonl`` a violated property is
appended to ``FILE.jsonl`` (one JSON object per case: the test, the command
line, the status, the output and the violations) instead of failing the
test, so that one run lists every failing case rather than the first of each
test. With ``PYPROBVAE_FUZZ_LOG=FILE.jsonl`` every case is logged (command line,
status, seconds, number of violations). The number of command lines run is
printed at the end of the session, by test; Hypothesis's own statistics come
with ``--hypothesis-show-statistics``.
"""
