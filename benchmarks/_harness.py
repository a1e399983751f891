"""
What every benchmark script shares: the common options, the report of the
environment, interleaved timing with its statistics, and the JSON output.

A script builds its own parser and adds the common options::

    parser = argparse.ArgumentParser(...)
    harness.add_common_arguments(parser)          # --threads --seed --device --json [--quick]
    args = parser.parse_args(argv)
    with harness.report_stream(args.json):        # with --json -, the report goes to stderr
        env = harness.start(args)                 # threads set, device checked, environment printed
        ...
        harness.settle()                          # gc.freeze() before timing
        timing = harness.interleaved({"A": step_a, "B": step_b}, rounds=21, steps=20, warmup=30, reference="A")
        harness.print_timing(timing)
        harness.finish(args, {"environment": env, "timing": timing, ...})

**Interleaved timing.** :func:`interleaved` runs the candidates (callables
doing one step each) in rounds: in every round each candidate runs one block
of ``steps`` steps on the same inputs, and the candidate that goes first
rotates from round to round (A B C, B C A, C A B, ...). A change of machine
load over the run therefore hits every candidate about equally, and the
per-round ratio candidate / reference, taken between blocks that ran
seconds apart, cancels most of it. The reported ratio is the median of the
per-round ratios with a distribution-free confidence interval for that
median (order statistics of the binomial, :func:`median_ci`); its achieved
coverage is reported with it, since with few rounds the nominal level may be
out of reach.
"""

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from importlib import metadata
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Environment variables that change how many threads the math libraries use.
_THREAD_VARIABLES = re.compile(r"^(OPENBLAS_|GOTO_|OMP_|KMP_|MKL_|VECLIB_|NUMEXPR_|BLIS_|TORCH_NUM_)")


# --------------------------------------------------------------------------
# options


def add_common_arguments(parser: argparse.ArgumentParser, *, threads: int = 1, seed: int = 0, device: str = "cpu",
                         quick: Optional[str] = None) -> argparse.ArgumentParser:
    """
    Add ``--threads``, ``--seed``, ``--device``, ``--json`` and, when
    ``quick`` (its help text) is given, ``--quick``.

    :return: the parser.
    """
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"torch.set_num_threads (default {threads}); the report shows the value torch took")
    parser.add_argument("--seed", type=int, default=seed, help=f"seed of the weights, the data order and the noise (default {seed})")
    parser.add_argument("--device", default=device, help=f"torch device: cpu, cuda, cuda:1, ... (default {device})")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON to PATH ('-': stdout, the report then goes to stderr)")
    if quick:
        parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def resolve_device(name: str) -> torch.device:
    """The torch device ``name``; exits with a message if it is unknown or absent."""
    from pyprobvae.infer.loop import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError as e:
        raise SystemExit(f"--device: {e}") from None


# --------------------------------------------------------------------------
# environment


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def _git(*args) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", REPO_ROOT, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _torch_blas() -> Optional[str]:
    try:
        found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    except Exception:  # the build config is informative only
        return None
    return found.group(1) if found else None


def _device_report(device: torch.device) -> dict:
    report = {"name": str(device), "type": device.type}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        report.update(model=props.name, capability=f"{props.major}.{props.minor}",
                      memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                      cudnn=torch.backends.cudnn.version())
    elif device.type == "cpu":
        report["model"] = _cpu_model()
    return report


def environment(args: Optional[argparse.Namespace] = None, device: Optional[torch.device] = None,
                extra_versions: Sequence[str] = ()) -> dict:
    """
    The report of where and how a benchmark ran, as a JSON-ready dict:
    date, command, versions (Python, torch, pyro, numpy, pyprobvae and
    ``extra_versions``, distribution names), CPU model, core counts, torch's
    threads, the device, the thread variables of the math libraries
    (``OPENBLAS_*``, ``OMP_*``, ``MKL_*``, ...), load average and git commit.
    """
    import numpy
    import pyro

    import pyprobvae

    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": numpy.__version__,
        "pyprobvae": pyprobvae.__version__,
    }
    versions.update({name: _version(name) for name in extra_versions})
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python"] + [shlex.quote(a) for a in sys.argv]),
        "mode": ("quick" if getattr(args, "quick", False) else "full") if args is not None else None,
        "seed": getattr(args, "seed", None),
        "versions": versions,
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_blas": _torch_blas(),
        "thread_variables": {k: v for k, v in sorted(os.environ.items()) if _THREAD_VARIABLES.match(k)},
        "device": _device_report(device if device is not None else torch.device("cpu")),
        "git_commit": commit,
        "git_dirty": bool(dirty) if commit else None,
    }


def print_environment(env: dict, file=None) -> None:
    """Print the report of :func:`environment` in a few lines."""
    file = file or sys.stdout
    v = env["versions"]
    print(f"command: {env['command']}  ({env['date']}, {env['mode'] or ''} mode, seed {env['seed']})", file=file)
    print(" | ".join(f"{name} {version}" for name, version in v.items() if version) + f" | {env['platform']}", file=file)
    la = env["load_average"]
    print(
        f"CPU {env['cpu_model']}: {env['cpu_count']} cores ({env['usable_cores']} usable); torch threads "
        f"{env['torch_threads']}, interop {env['torch_interop_threads']}, BLAS {env['torch_blas']}"
        + (f"; load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}" if la else ""),
        file=file,
    )
    d = env["device"]
    print(f"device {d['name']}" + (f" ({d['model']})" if d.get("model") and d["type"] != "cpu" else "")
          + "; thread variables: " + (" ".join(f"{k}={v}" for k, v in env["thread_variables"].items()) or "none set")
          + f"; git {env['git_commit'] or 'unknown'}" + (" (uncommitted changes)" if env["git_dirty"] else ""),
          file=file)


# --------------------------------------------------------------------------
# the run


_JSON_STREAM = None


@contextlib.contextmanager
def report_stream(json_path: Optional[str]):
    """
    Within it, ``print`` goes to stdout, or to stderr when ``json_path`` is
    ``"-"`` so that stdout holds only the JSON that :func:`finish` writes.
    """
    global _JSON_STREAM
    _JSON_STREAM = sys.stdout
    if json_path == "-":
        with contextlib.redirect_stdout(sys.stderr):
            yield
    else:
        yield


def start(args: argparse.Namespace, extra_versions: Sequence[str] = ()) -> dict:
    """
    Set torch's threads from ``args.threads``, check ``args.device`` (the
    resolved :class:`torch.device` is stored back as ``args.torch_device``),
    print the environment and return it. Call it first, so that the clock of
    ``total_seconds`` starts here.
    """
    args._started = time.perf_counter()
    torch.set_num_threads(args.threads)
    args.torch_device = resolve_device(args.device)
    env = environment(args, args.torch_device, extra_versions)
    print_environment(env)
    return env


def settle() -> None:
    """
    Collect garbage and move everything allocated so far (modules, data)
    out of the collector's reach, so that the ``gc.collect()`` before each
    timed block is cheap and the same for every candidate.
    """
    gc.collect()
    gc.freeze()


def synchronize(device: Optional[torch.device]) -> None:
    """Wait for the work queued on ``device`` (CUDA, MPS); nothing on the CPU."""
    if device is None:
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, torch.device):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def write_json(path: str, results: Mapping[str, Any]) -> None:
    """Write ``results`` as JSON to ``path`` (``"-"``: the stdout of :func:`report_stream`)."""
    if path == "-":
        stream = _JSON_STREAM or sys.stdout
        json.dump(results, stream, indent=2, default=_jsonable)
        stream.write("\n")
        stream.flush()
        return
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=_jsonable)
        f.write("\n")
    print(f"wrote {path}")


def print_tables(tables: str, markdown_path: Optional[str]) -> None:
    """Print the Markdown ``tables`` after a blank line, and write them to ``markdown_path`` if given (``--markdown``)."""
    print()
    print(tables)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(tables + "\n")


def finish(args: argparse.Namespace, results: Dict[str, Any]) -> Dict[str, Any]:
    """Add ``total_seconds`` (since :func:`start`), print it, and write the JSON if ``--json``."""
    total = time.perf_counter() - getattr(args, "_started", time.perf_counter())
    results["total_seconds"] = total
    print()
    print(f"total {total:.1f} s")
    if args.json:
        write_json(args.json, results)
    return results


def header(title: str) -> None:
    print()
    print(title)
    print("=" * len(title))


# --------------------------------------------------------------------------
# statistics


def median_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """
    The median of ``values`` and a distribution-free confidence interval for
    the population median: the order statistics ``(x_(j+1), x_(n-j))`` with
    the largest ``j`` whose coverage ``1 - 2 P(Binomial(n, 1/2) <= j)`` is
    at least ``confidence``. With too few values for that level the
    interval is ``(min, max)`` and ``coverage`` says what it achieves.

    :return: ``{"median", "ci_low", "ci_high", "coverage", "n"}``.
    """
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_ci needs at least one value")
    j, coverage = 0, 1 - 2 * 0.5**n  # (min, max)
    tail = 0.0
    for k in range((n - 1) // 2 + 1):  # x_(k+1) <= x_(n-k)
        tail += math.comb(n, k) * 0.5**n  # P(Binomial(n, 1/2) <= k)
        if 1 - 2 * tail < confidence:
            break
        j, coverage = k, 1 - 2 * tail
    return {"median": statistics.median(xs), "ci_low": xs[j], "ci_high": xs[n - 1 - j], "coverage": coverage, "n": n}


def summarize(seconds: Sequence[float], scale: float = 1e3) -> dict:
    """
    Median, quartiles, range and relative spread of per-step times (in
    seconds), reported times ``scale`` (milliseconds by default).
    """
    xs = sorted(s * scale for s in seconds)
    q1, q3 = (statistics.quantiles(xs, n=4, method="inclusive")[i] for i in (0, 2)) if len(xs) > 1 else (xs[0], xs[0])
    median = statistics.median(xs)
    return {"median": median, "q1": q1, "q3": q3, "min": xs[0], "max": xs[-1], "relative_iqr": (q3 - q1) / median if median else None,
            "n": len(xs)}


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float], confidence: float = 0.95) -> dict:
    """
    The median of the ratios ``numerator[i] / denominator[i]`` of paired
    measurements (the same round, or the same batch) with its
    :func:`median_ci`, and their range.
    """
    if len(numerator) != len(denominator):
        raise ValueError(f"paired_ratio needs as many numerators as denominators, got {len(numerator)} and {len(denominator)}")
    ratios = [a / b for a, b in zip(numerator, denominator)]
    result = median_ci(ratios, confidence)
    result.update(min=min(ratios), max=max(ratios))
    return result


def rotated(names: Sequence[str], by: int) -> List[str]:
    """``names`` rotated left by ``by`` (the order of round ``by``)."""
    names = list(names)
    k = by % len(names)
    return names[k:] + names[:k]


# --------------------------------------------------------------------------
# interleaved timing


def _block(step, start, steps, device, before, after, name):
    if before is not None:
        before(name)
    gc.collect()
    synchronize(device)
    t0 = time.perf_counter()
    for i in range(start, start + steps):
        step(i)
    synchronize(device)
    seconds = time.perf_counter() - t0
    if after is not None:
        after(name)
    return seconds


def interleaved(
    candidates: Mapping[str, Callable[[int], Any]],
    *,
    rounds: int,
    steps: int,
    warmup: int,
    reference: Optional[str] = None,
    before: Optional[Callable[[str], Any]] = None,
    after: Optional[Callable[[str], Any]] = None,
    device: Optional[torch.device] = None,
    confidence: float = 0.95,
) -> dict:
    """
    Time ``candidates`` in interleaved rounds.

    :param candidates: name -> ``step(i)``, a callable doing one step on the
        ``i``-th input (e.g. ``batches[i % len(batches)]``). In a round every
        candidate gets the same ``i``.
    :param int rounds: timed rounds; each candidate runs one block per round.
    :param int steps: steps per block.
    :param int warmup: untimed steps per candidate first, in two interleaved
        halves (A B ... A B ...).
    :param reference: the candidate the ratios divide by (default: the first).
    :param before: ``before(name)`` before each block, outside the clock
        (e.g. clear Pyro's param store, swap in the candidate's RNG state).
    :param after: ``after(name)`` after each block, outside the clock (e.g.
        read back a loss window, save the RNG state).
    :param device: synchronized before the clock starts and before it stops,
        so that each block is charged for the work it queued.
    :param float confidence: level of the ratio's interval.
    :return: a JSON-ready dict: ``rounds``, ``steps_per_round``,
        ``warmup_steps``, ``reference``, ``order``; ``ms_per_step``: name ->
        :func:`summarize` of the per-round times; ``ms_per_step_rounds``:
        name -> the per-round ms/step in round order; ``ratios``: name ->
        :func:`paired_ratio` of its per-round time over the reference's.
    """
    names = list(candidates)
    if not names:
        raise ValueError("interleaved needs at least one candidate")
    reference = names[0] if reference is None else reference
    if reference not in candidates:
        raise ValueError(f"the reference {reference!r} is not a candidate ({', '.join(names)})")
    if rounds < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1, steps >= 1 and warmup >= 0, got {rounds}, {steps}, {warmup}")
    half = (warmup + 1) // 2
    if half:
        for _ in range(2):
            for name in names:
                _block(candidates[name], 0, half, device, before, after, name)
    seconds: Dict[str, List[float]] = {name: [] for name in names}
    position = 0
    for r in range(rounds):
        for name in rotated(names, r):
            seconds[name].append(_block(candidates[name], position, steps, device, before, after, name) / steps)
        position += steps
    return {
        "rounds": rounds,
        "steps_per_round": steps,
        "warmup_steps": 2 * half,
        "reference": reference,
        "order": "interleaved blocks, the first candidate rotating every round",
        "confidence": confidence,
        "ms_per_step": {name: summarize(s) for name, s in seconds.items()},
        "ms_per_step_rounds": {name: [round(1e3 * t, 5) for t in s] for name, s in seconds.items()},
        "ratios": {name: paired_ratio(seconds[name], seconds[reference], confidence) for name in names},
    }


def print_timing(timing: dict, title: Optional[str] = None, names: Optional[Iterable[str]] = None, width: int = 28) -> None:
    """Print a table of an :func:`interleaved` result: ms/step and the ratio to the reference with its interval."""
    if title:
        header(title)
    ref = timing["reference"]
    print(
        f"{timing['rounds']} rounds x {timing['steps_per_round']} steps per candidate after {timing['warmup_steps']} "
        f"warm-up steps each ({timing['order']}); ratio = median of the per-round ratios to {ref!r}, with a "
        f"distribution-free interval for it"
    )
    cols = f"{'candidate':<{width}}{'median ms':>10}{'q1-q3 ms':>17}{'min ms':>9}{'ratio':>8}{'interval':>17}{'cover':>7}"
    print(cols)
    print("-" * len(cols))
    for name in names or timing["ms_per_step"]:
        s, r = timing["ms_per_step"][name], timing["ratios"][name]
        print(
            f"{name:<{width}}{s['median']:>10.3f}{s['q1']:>8.3f}-{s['q3']:<8.3f}{s['min']:>9.3f}{r['median']:>7.3f}x"
            f"{r['ci_low']:>8.3f}-{r['ci_high']:<8.3f}{100 * r['coverage']:>6.0f}%"
        )
