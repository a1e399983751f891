"""
The fuzzing harness: running one command line in-process under guards, the
properties every run must have, and the option table read from the parser.

**Running a case** (:func:`run_cli`): ``pyprobvae.cli.main(argv)`` in the
case's own temporary folder (the working directory, so that relative paths
land there), with stdout and stderr captured as the real streams would encode
them (UTF-8; stdout strict, stderr ``backslashreplace``), under

* a time limit (:data:`TIME_LIMIT_S`, SIGALRM raising :class:`CaseTimeout`):
  every accepted case is tiny and takes about a second, so a case that runs
  past the limit accepted an absurd size;
* an address-space cap (:data:`MEMORY_CAP_BYTES` above what the process uses,
  ``RLIMIT_AS``): an absurd size that reaches the allocator fails there
  instead of taking the machine's memory, and is reported as such.

**The properties** (:func:`violations`), for every case:

1. the exit status is 0 or 2; 1 only with stderr exactly one line starting
   ``pyprobvae: training diverged:``;
2. nothing escapes: no exception out of ``main`` (``--help`` and
   ``--version`` excepted, by design), no ``Traceback`` and no line
   ``pyprobvae: internal error`` on stderr (status 3 is a bug);
3. with status 2, stderr is exactly one line ``pyprobvae: error: MESSAGE``
   (the parser's errors too: its ``error`` raises, so no usage text precedes
   the line), and no message advises loading pickles (``allow_pickle``,
   ``weights_only=False``) or carries terminal escape codes;
4. no file of the user's is changed or lost unless the command's job is to
   write it (:class:`Case`: snapshots of the case folder, path -> sha256):
   after status 2 nothing at all differs (nothing added either); whatever
   the status, the inputs (data files) are unchanged, and after a read-only
   verb whose ``--out`` lies outside the run folder the run folder is
   byte-identical; after status 0 or 1 nothing outside the command's
   targets changed or was lost (and after status 1 the targets that existed
   are whole, a run being resumed excepted);
5. a run folder whose checkpoint or ``config.json`` is damaged yields no
   numbers: status 2 and nothing on stdout (``Case.damaged``);

and absurd sizes are refused before they cost anything: no case runs past
the time limit, grows the peak memory by more than :data:`PEAK_GROWTH_BYTES`
or has an allocation fail under the cap.

/dev/null is never named on a command line (the package writes atomically
by renaming over the destination: as root, a rename over /dev/null would
replace the device); the cases that write "to /dev/null" name a symlink to
it inside the case folder. Should the package follow that symlink, the
sandbox (:func:`_sandbox`) refuses, as for a user who is not root, every
change :mod:`os` would make under /dev, /proc or /sys; and every case checks
afterwards that /dev/null is still a character device.
"""

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import stat
import tempfile
import time
import traceback
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence

import pyprobvae
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from pyprobvae.cli import main, make_parser

# ------------------------------------------------------------------ profiles

PROFILE = os.environ.get("PYPROBVAE_FUZZ", "default") or "default"
SURVEY = os.environ.get("PYPROBVAE_FUZZ_SURVEY")
LOG = os.environ.get("PYPROBVAE_FUZZ_LOG")
SCALE = {"default": 1, "deep": 25}

_COMMON = dict(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)
settings.register_profile("pyprobvae-fuzz-default", phases=[Phase.explicit, Phase.generate], **_COMMON)
settings.register_profile("pyprobvae-fuzz-deep", phases=[Phase.explicit, Phase.generate, Phase.shrink], **_COMMON)
if PROFILE not in SCALE:
    raise ValueError(f"PYPROBVAE_FUZZ={PROFILE!r}: use default or deep")


def fuzz_settings(max_examples: int) -> settings:
    """The settings of one fuzz test: ``max_examples`` in the default profile, :data:`SCALE` times more in deep."""
    return settings(settings.get_profile(f"pyprobvae-fuzz-{PROFILE}"), max_examples=max_examples * SCALE[PROFILE])


# ------------------------------------------------------------------ guards

TIME_LIMIT_S = 10.0
"""Wall-clock limit of one command line (an accepted case takes about a second)."""
MEMORY_CAP_BYTES = 4 << 30
"""Address space a command line may add to the process (RLIMIT_AS)."""
PEAK_GROWTH_BYTES = 768 << 20
"""Growth of the process's peak resident memory that counts as a big allocation."""

ALLOCATOR_FAILURES = ("can't allocate memory", "Unable to allocate", "MemoryError", "bad_alloc", "Cannot allocate memory")


class CaseTimeout(BaseException):
    """Raised in the main thread when a command line runs past :data:`TIME_LIMIT_S`."""


def _alarm(signum, frame):
    raise CaseTimeout(f"ran past the {TIME_LIMIT_S:g} s limit")


def _vm_size() -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


PROTECTED_ROOTS = ("/dev", "/proc", "/sys")
"""System trees no case may change: the sandbox gives them a non-root user's permissions."""


def _protected(path) -> bool:
    path = os.path.abspath(path)
    return any(path == root or path.startswith(root + os.sep) for root in PROTECTED_ROOTS)


def _entry(path, dir_fd=None) -> str:
    """The directory entry ``path`` names (its folder resolved, its last component not: what rename and unlink act on)."""
    path = os.fsdecode(path) if not isinstance(path, int) else f"/proc/self/fd/{path}"
    if dir_fd is not None and not os.path.isabs(path):
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(folder), name)


@contextlib.contextmanager
def _sandbox():
    """
    Refuse, with EACCES as for a user who is not root, every change to an
    entry under /dev, /proc or /sys made through :mod:`os` (rename, replace,
    unlink, mkdir, rmdir, chmod, truncate, link, symlink, creating a file):
    a package that renamed its output over /dev/null would otherwise replace
    the device when the tests run as root.
    """
    import errno

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied (fuzz sandbox: no changes under /dev, /proc, /sys)", path)

    original = {name: getattr(os, name) for name in
                ("replace", "rename", "remove", "unlink", "rmdir", "mkdir", "chmod", "truncate", "link", "symlink", "open")}

    def entries(name, *paths_and_fds):
        def guarded(*args, **kwargs):
            for index, fd_name in paths_and_fds:
                if index < len(args) and not isinstance(args[index], int) and _protected(_entry(args[index], kwargs.get(fd_name))):
                    refuse(args[index])
            return original[name](*args, **kwargs)
        return guarded

    def followed(name):
        def guarded(path, *args, **kwargs):
            if not isinstance(path, int) and _protected(os.path.realpath(path)):
                refuse(path)
            return original[name](path, *args, **kwargs)
        return guarded

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and not isinstance(path, int):
            target = path if kwargs.get("dir_fd") is None else _entry(path, kwargs.get("dir_fd"))
            real = os.path.realpath(target)
            if _protected(real) and not os.path.exists(real):
                refuse(path)
        return original["open"](path, flags, *args, **kwargs)

    patched = {
        "replace": entries("replace", (0, "src_dir_fd"), (1, "dst_dir_fd")),
        "rename": entries("rename", (0, "src_dir_fd"), (1, "dst_dir_fd")),
        "remove": entries("remove", (0, "dir_fd")),
        "unlink": entries("unlink", (0, "dir_fd")),
        "rmdir": entries("rmdir", (0, "dir_fd")),
        "mkdir": entries("mkdir", (0, "dir_fd")),
        "link": entries("link", (1, "dst_dir_fd")),
        "symlink": entries("symlink", (1, "dir_fd")),
        "chmod": followed("chmod"),
        "truncate": followed("truncate"),
        "open": open_,
    }
    for name, function in patched.items():
        setattr(os, name, function)
    try:
        yield
    finally:
        for name, function in original.items():
            setattr(os, name, function)


@contextlib.contextmanager
def _guarded():
    previous = signal.signal(signal.SIGALRM, _alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = _vm_size()
    capped = vm is not None
    if capped:
        cap = vm + MEMORY_CAP_BYTES
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if capped:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _check_dev_null():
    mode = os.lstat("/dev/null").st_mode
    if not stat.S_ISCHR(mode):  # never happens unless a case wrote over it: stop everything
        pytest.exit("/dev/null is no longer a character device: a fuzz case replaced it (restore it with "
                    "`rm -f /dev/null; mknod -m 666 /dev/null c 1 3`)", returncode=3)


# ------------------------------------------------------------------ counting

CASES: Counter = Counter()
"""Command lines run, by test."""


def _current_test() -> str:
    name = os.environ.get("PYTEST_CURRENT_TEST", "?")
    if name.endswith("(setup)"):
        return "session fixtures (tiny runs)"
    return name.split(" ")[0].split("::")[-1].split("[")[0]


# ------------------------------------------------------------------ running

@dataclasses.dataclass
class Result:
    argv: List[str]
    status: Optional[int]
    stdout: str
    stderr: str
    exception: Optional[str]
    seconds: float
    peak_growth: int

    def describe(self) -> str:
        lines = [f"argv: {self.argv!r}", f"status: {self.status}", f"seconds: {self.seconds:.2f}"]
        if self.exception:
            lines.append(f"exception: {self.exception}")
        lines.append("stdout: " + _tail(self.stdout))
        lines.append("stderr: " + _tail(self.stderr))
        return "\n".join(lines)


def _tail(text: str, limit: int = 1500) -> str:
    return repr(text if len(text) <= limit else "..." + text[-limit:])


_PACKAGE = os.path.dirname(os.path.abspath(pyprobvae.__file__))


def _escape_location(error: BaseException) -> str:
    """The exception and the last frame of the package it passed through."""
    frames = traceback.extract_tb(error.__traceback__)
    inside = [f for f in frames if os.path.abspath(f.filename).startswith(_PACKAGE + os.sep)]
    frame = (inside or frames or [None])[-1]
    where = ""
    if frame:
        where = f" (at {os.path.relpath(frame.filename, os.path.dirname(_PACKAGE))}:{frame.lineno} in {frame.name})"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}{where}"


def run_cli(argv: Sequence[str], cwd: str) -> Result:
    """Run ``main(argv)`` in ``cwd`` under the guards, capturing what it prints."""
    argv = [str(a) for a in argv]
    for arg in argv:  # the package renames over its destination: never name a device
        if arg.startswith("/dev") or "=/dev" in arg:
            raise AssertionError(f"harness bug: a command line names {arg!r}; use a symlink in the case folder")
    CASES[_current_test()] += 1
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", newline="\n", write_through=True)
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="backslashreplace", newline="\n", write_through=True)
    status, exception = None, None
    here = os.getcwd()
    peak = _peak_rss()
    start = time.monotonic()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _sandbox(), _guarded():
            status = main(list(argv))
    except SystemExit as e:  # only --help and --version may exit; the test decides
        exception = f"SystemExit({e.code!r})"
        status = e.code if isinstance(e.code, int) else None
    except BaseException as e:  # noqa: B036 - everything that escapes main is a finding (KeyboardInterrupt excepted)
        if isinstance(e, KeyboardInterrupt):
            raise
        exception = _escape_location(e)
    finally:
        seconds = time.monotonic() - start
        os.chdir(here)
        for stream in (out, err):
            with contextlib.suppress(Exception):
                stream.flush()
        _check_dev_null()
    return Result(argv, status, out_bytes.getvalue().decode("utf-8", "replace"),
                  err_bytes.getvalue().decode("utf-8", "replace"), exception, seconds, _peak_rss() - peak)


# ------------------------------------------------------------------ snapshots

def snapshot(root: str) -> Dict[str, str]:
    """Every entry under ``root`` (relative path -> sha256 of a file, ``dir``, ``link -> target`` or the file type)."""
    entries = {}
    if not os.path.lexists(root):
        return entries
    if not os.path.isdir(root) or os.path.islink(root):
        entries["."] = _describe_entry(root)
        return entries
    entries["."] = "dir"
    for directory, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = os.path.join(directory, name)
            entries[os.path.relpath(path, root)] = _describe_entry(path)
    return entries


def _describe_entry(path: str) -> str:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "link -> " + os.readlink(path)
    if stat.S_ISDIR(mode):
        return "dir"
    if not stat.S_ISREG(mode):
        return f"special {stat.S_IFMT(mode):o}"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    return digest.hexdigest()


def differences(before: Dict[str, str], after: Dict[str, str], keep=lambda path: True, additions=True) -> List[str]:
    """What changed between two snapshots, for the paths ``keep`` selects: changed, lost (and added)."""
    found = []
    for path in sorted(before):
        if not keep(path):
            continue
        if path not in after:
            found.append(f"lost {path}")
        elif after[path] != before[path]:
            found.append(f"changed {path}")
    if additions:
        found += [f"added {path}" for path in sorted(set(after) - set(before)) if keep(path)]
    return found


def _under(path: str, prefix: str) -> bool:
    return prefix == "." or path == prefix or path.startswith(prefix.rstrip(os.sep) + os.sep)


# ------------------------------------------------------------------ cases

class Case:
    """
    One command line's world: a fresh folder (the working directory) holding
    its inputs, run folders and output paths, snapshotted before the run.

    :param str base: where case folders are made.
    :param str directory: an existing folder to use instead (not removed by :meth:`cleanup`).
    """

    def __init__(self, base: str, directory: Optional[str] = None):
        self.dir = directory or tempfile.mkdtemp(prefix="case-", dir=base)
        self._owned = directory is None
        self.inputs: List[str] = []  # never written, whatever the status
        self.run_folder: Optional[str] = None  # byte-identical after a read-only verb with --out outside it
        self.targets: List[str] = []  # what the command's job is to write
        self.read_only = False
        self.resume = False
        self.damaged: Optional[str] = None  # a damage of the checkpoint or config.json: status 2, no stdout
        self.forbidden: List[str] = []  # paths whose existence proves that pickled code ran
        self._before: Dict[str, str] = {}
        self._external: Dict[str, Dict[str, str]] = {}

    def path(self, *names: str) -> str:
        return os.path.join(self.dir, *names)

    def rel(self, path: str) -> Optional[str]:
        """``path`` relative to the case folder, or None when it lies outside."""
        full = os.path.abspath(os.path.join(self.dir, path))
        inside = os.path.relpath(full, self.dir)
        return None if inside == os.pardir or inside.startswith(os.pardir + os.sep) else inside

    def guard_external(self, *paths: str) -> None:
        """Inputs outside the case folder (the session's data) that no case may change."""
        for path in paths:
            self._external[path] = snapshot(path)

    def freeze(self) -> None:
        """Take the snapshot the run is compared with (call it right before the run)."""
        self._before = snapshot(self.dir)

    def run(self, argv: Sequence[str]) -> Result:
        self.freeze()
        self.result = run_cli(argv, self.dir)
        return self.result

    def file_violations(self, result: Result) -> List[str]:
        after = snapshot(self.dir)
        found = [f"code in a pickle ran: it made {p}" for p in self.forbidden if os.path.lexists(p)]
        for path, entries in self._external.items():
            found += [f"{d} (session input {path})" for d in differences(entries, snapshot(path))]
        if result.status == 2:
            found += [f"refused, yet {d}" for d in differences(self._before, after)]
            return found
        inputs = [p for p in (self.rel(i) for i in self.inputs) if p is not None]
        targets = [p for p in (self.rel(t) for t in self.targets) if p is not None]
        found += [f"input {d}" for d in differences(self._before, after, keep=lambda p: any(_under(p, i) for i in inputs))]
        if self.read_only and self.run_folder is not None:
            folder = self.rel(self.run_folder)
            out_inside = [t for t in targets if folder is not None and _under(t, folder)]
            if folder is not None:
                found += [f"read-only verb: run folder {d}" for d in differences(
                    self._before, after, keep=lambda p: _under(p, folder) and not any(_under(p, t) for t in out_inside))]
        outside = lambda p: p != "." and not any(_under(p, t) for t in targets) and not any(_under(p, i) for i in inputs)
        found += [f"{d} (not the command's to write)" for d in differences(self._before, after, keep=outside, additions=False)]
        if result.status == 1 and not self.resume:
            found += [f"diverged, yet {d}" for d in differences(
                self._before, after, keep=lambda p: p != "." and any(_under(p, t) for t in targets), additions=False)]
        return found

    def cleanup(self) -> None:
        if not self._owned:
            return
        for directory, dirs, _ in os.walk(self.dir):  # read-only folders made by a case
            for name in dirs:
                path = os.path.join(directory, name)
                if not os.path.islink(path):
                    with contextlib.suppress(OSError):
                        os.chmod(path, 0o755)
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ properties

ERROR_PREFIX = "pyprobvae: error: "
DIVERGED_PREFIX = "pyprobvae: training diverged:"
INTERNAL_PREFIX = "pyprobvae: internal error"
PICKLE_ADVICE = ("allow_pickle", "weights_only=False", "can still be loaded")


def _one_line(text: str) -> Optional[str]:
    """The line, when ``text`` is exactly one newline-terminated line."""
    if text.endswith("\n") and "\n" not in text[:-1] and "\r" not in text:
        return text[:-1]
    return None


def violations(result: Result, case: Optional[Case] = None, allow_exit: bool = False) -> List[str]:
    """Every property of the module docstring that ``result`` (run in ``case``) violates."""
    found = []
    if result.exception and not (allow_exit and result.exception.startswith("SystemExit")):
        if "CaseTimeout" in result.exception:
            hint = " (it holds a number >= 10**7: an absurd size was accepted)" if absurd(result.argv) else ""
            found.append(f"not refused quickly: {result.exception}{hint}")
        else:
            found.append(f"exception escaped main: {result.exception}")
    if "Traceback" in result.stderr:
        found.append("a traceback on stderr")
    if any(line.startswith(INTERNAL_PREFIX) for line in result.stderr.splitlines()):
        found.append("internal error (a bug): " + next(l for l in result.stderr.splitlines() if l.startswith(INTERNAL_PREFIX))[:300])
    status = result.status
    if result.exception is None and status not in (0, 1, 2):
        found.append(f"exit status {status!r}")
    if status == 1 and result.exception is None:
        line = _one_line(result.stderr)
        if line is None or not line.startswith(DIVERGED_PREFIX):
            found.append("status 1 without exactly one line 'pyprobvae: training diverged: ...' on stderr")
    if status == 2 and result.exception is None:
        line = _one_line(result.stderr)
        if line is None:
            found.append(f"status 2 with {len(result.stderr.splitlines())} lines on stderr, not exactly one")
        elif not line.startswith(ERROR_PREFIX) or not line[len(ERROR_PREFIX):].strip():
            found.append("status 2 without a 'pyprobvae: error: MESSAGE' line")
    if any(advice in result.stderr for advice in PICKLE_ADVICE):
        found.append("the message advises loading pickles (allow_pickle / weights_only=False)")
    if "\x1b" in result.stderr:
        found.append("terminal escape codes on stderr")
    if any(failure in result.stderr for failure in ALLOCATOR_FAILURES):
        found.append(f"not refused before allocating: an allocation failed under the test's {MEMORY_CAP_BYTES >> 30} GiB cap")
    if result.peak_growth > PEAK_GROWTH_BYTES:
        found.append(f"not refused before allocating: peak memory grew by {result.peak_growth >> 20} MiB")
    if case is not None:
        found += case.file_violations(result)
        if case.damaged is not None:
            if status != 2 or result.exception:
                found.append(f"damaged run ({case.damaged}) not refused: status {status}")
            if result.stdout:
                found.append(f"damaged run ({case.damaged}) printed on stdout: {_tail(result.stdout, 200)}")
    return found


def expect(result: Result, case: Optional[Case] = None, allow_exit: bool = False, context: str = "") -> None:
    """Fail (or, in survey mode, record) when ``result`` violates a property."""
    found = violations(result, case, allow_exit)
    if LOG:
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(test=_current_test(), argv=result.argv, status=result.status, exception=result.exception,
                                    stderr=result.stderr[-300:], seconds=round(result.seconds, 3), violations=len(found),
                                    context=context), ensure_ascii=True) + "\n")
    if not found:
        return
    if SURVEY:
        record = dict(test=_current_test(), argv=result.argv, status=result.status, exception=result.exception,
                      stdout=result.stdout[-500:], stderr=result.stderr[-1500:], violations=found, context=context,
                      seconds=round(result.seconds, 2))
        with open(SURVEY, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=True) + "\n")
        return
    details = "\n".join(f"  - {v}" for v in found)
    notes = f"\n{context}" if context else ""
    raise AssertionError(f"{len(found)} propert{'y' if len(found) == 1 else 'ies'} violated:\n{details}\n{result.describe()}{notes}")


# ------------------------------------------------------------------ the parser

@dataclasses.dataclass(frozen=True)
class Option:
    """One argument of one verb, as the parser declares it."""

    verb: str
    flags: tuple  # option strings; () for a positional
    dest: str
    takes_value: bool
    choices: Optional[tuple]
    default: Optional[str]  # as the help shows it, or the action's default
    convert: Optional[Callable]
    required: bool

    @property
    def name(self) -> str:
        return self.flags[0] if self.flags else self.dest

    def __repr__(self) -> str:  # short, for Hypothesis's reports of the drawn options
        return f"Option({self.verb} {self.name})"


NOT_FUZZED = {"help", "version", "debug"}
"""Actions not fuzzed: --help and --version exit by design, --debug re-raises by design (each has its own test)."""


def verb_parsers(parser: Optional[argparse.ArgumentParser] = None) -> Dict[str, argparse.ArgumentParser]:
    """The verbs of the command and their parsers."""
    parser = parser or make_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the parser has no verbs")


def _shown_default(action: argparse.Action) -> Optional[str]:
    match = re.search(r"\(default: ([^()]*)\)", action.help or "")
    if match:
        return match.group(1)
    if action.default not in (None, argparse.SUPPRESS) and not isinstance(action.default, bool):
        return str(action.default)
    return None


def verb_options(verb: str) -> List[Option]:
    """Every fuzzed argument of ``verb`` (the positional run folder included)."""
    options = []
    for action in verb_parsers()[verb]._actions:
        if action.dest in NOT_FUZZED or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        takes_value = action.nargs != 0
        choices = tuple(str(c) for c in action.choices) if action.choices is not None else None
        options.append(Option(verb, tuple(action.option_strings), action.dest, takes_value, choices, _shown_default(action),
                              action.type if callable(action.type) else None, bool(action.required or not action.option_strings)))
    return options


def accepts(option: Option, text: str) -> bool:
    """Whether the option's own conversion takes ``text`` (its choices, its type)."""
    if option.choices is not None and text not in option.choices:
        return False
    if option.convert is None:
        return True
    try:
        option.convert(text)
    except Exception:
        return False
    return True


# ------------------------------------------------------------------ values

HOSTILE = (
    "0", "-1", "10000000", "1000000000000", "100000000000000000000", str(2**64), "1e300", "-1e300", "inf", "-inf", "nan",
    "1e-300", "", "abc", "1e12", "0x10", "é", "日本語", "😀", "\u202e", "\udcff", "none", "1,2,-3", "x" * 300, "9" * 5000,
    "1_0", " 1", "-0", "1e7", "2,0",
)
"""Values tried for every option: zero, negative, absurd, non-finite, malformed, unicode (``\\udcff``: a
non-UTF-8 byte of a real argv), very long."""

SMALL = ("1", "2", "3", "0.5", "0.1", "0,1", "4,4", "4", "none")
"""Small values that keep an accepted case at about a second, where the option takes them."""

ABSURD = 10**7


def small_values(option: Option) -> List[str]:
    """Valid small values of an option: its choices, its default when small, and the small values it accepts."""
    values = list(option.choices or ())
    if option.default is not None:
        try:
            small = all(abs(float(part)) <= 64 for part in option.default.split(","))
        except ValueError:
            small = True
        if small and option.default not in values and (option.choices is None or option.default in option.choices):
            values.append(option.default)
    values += [v for v in SMALL if v not in values and accepts(option, v)]
    return values


DEVICES = ("cpu", "cpu:1", "cuda", "cuda:7", "meta", "mps", "xla", "ipu", "", "gpu", "cuda:-1", "cpu:0", "CPU", "cuda:0",
           "cpu:-1", "vulkan", "hpu", "privateuseone", "cpu,cuda")


class Token(str):
    """A symbolic value resolved in the case's folder (a path kind); its text is its name, for the reports."""


def value_strategy(option: Option, special: Dict[str, Sequence] = None) -> st.SearchStrategy:
    """Values for ``option``: its special pool (paths, devices), else a mix of small valid values and hostile ones."""
    special = special or {}
    if option.dest in special:
        return st.sampled_from(list(special[option.dest]) + list(HOSTILE))
    if option.dest == "device":
        return st.sampled_from(DEVICES)
    small = small_values(option)
    return st.one_of(st.sampled_from(small), st.sampled_from(HOSTILE)) if small else st.sampled_from(HOSTILE)


def option_fragment(draw, option: Option, special=None) -> list:
    """One argv fragment setting ``option``: ``[flag]`` for a switch, ``[flag, value]`` or ``[flag=value]``."""
    if not option.takes_value:
        return [draw(st.sampled_from(option.flags))]
    value = draw(value_strategy(option, special))
    if not option.flags:
        return [value]
    flag = draw(st.sampled_from(option.flags))
    if isinstance(value, Token) or not draw(st.booleans()):
        return [flag, value]
    return [f"{flag}={value}"]


def with_options(base: list, fragments: Dict[Option, list]) -> list:
    """``base`` (a verb and its tiny settings) with the fuzzed options put in place of any setting of the same option."""
    argv = list(base)
    for option, fragment in fragments.items():
        if not option.flags:  # a positional: replaces the base's
            argv = [fragment[0] if a == POSITIONAL else a for a in argv]
            continue
        if option.takes_value:
            for flag in option.flags:
                while flag in argv:
                    i = argv.index(flag)
                    del argv[i:i + 2]
        argv += fragment
    return argv


POSITIONAL = Token("<run>")


def absurd(values: Sequence[str]) -> bool:
    """Whether a command line holds a number of at least :data:`ABSURD` (for the reports)."""
    for value in values:
        try:
            if abs(float(value)) >= ABSURD:
                return True
        except (ValueError, OverflowError, TypeError):
            pass
    return False
