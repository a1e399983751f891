"""
The tiny world the fuzz cases run in: data files, the trained run of each
model kind, the tiny base command line of each verb, and the path kinds a
case can name (made in the case's folder when the case runs).
"""

import contextlib
import os
import shutil
from typing import Dict, List, Optional

import numpy as np

from .harness import POSITIONAL, Case, Token, verb_options, verb_parsers

# ------------------------------------------------------------------ data

NUM_EXAMPLES = 100
"""Examples of the tiny data set: its test split (20) must hold the 16 examples a run's pictures interpolate between."""
IMAGE_SHAPE = (4, 4)
NUM_CLASSES = 3


def tiny_arrays(n: int = NUM_EXAMPLES, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8), rng.integers(0, NUM_CLASSES, n).astype(np.int64)


def tiny_text(chars: int = 12_000) -> str:
    rng = np.random.default_rng(0)
    words = ["the", "model", "returns", "a", "value", "of", "data", "and", "raise", "error", "list", "sum", "(x)", "=", "1,"]
    text, lines = "", []
    while len(text) < chars:
        line = " ".join(rng.choice(words, size=rng.integers(3, 10)))
        lines.append(line)
        text += line + "\n"
    return text[:chars]


def write_idx(path: str, array: np.ndarray, code: int = 0x08, magic: Optional[bytes] = None, dims=None) -> None:
    """An IDX file (MNIST format), with an optional wrong magic number or declared shape."""
    dims = array.shape if dims is None else dims
    header = (magic if magic is not None else bytes([0, 0, code, len(dims)])) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    with open(path, "wb") as f:
        f.write(header + array.astype(">u1" if code == 0x08 else array.dtype.newbyteorder(">")).tobytes())


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx_dir(directory: str) -> None:
    """MNIST-format files of the tiny data: 80 training and 20 test images of 4x4, labels 0-9."""
    os.makedirs(directory, exist_ok=True)
    x, _ = tiny_arrays()
    y = np.random.default_rng(1).integers(0, 10, len(x)).astype(np.uint8)
    for split, (start, stop) in (("train", (0, 80)), ("test", (80, 100))):
        images, labels = IDX_FILES[split]
        write_idx(os.path.join(directory, images), x[start:stop])
        write_idx(os.path.join(directory, labels), y[start:stop])


def make_data(directory: str) -> Dict[str, str]:
    """The session's inputs: ``tiny.npz`` (100 uint8 4x4 images, 3 classes), an IDX folder and a text file."""
    os.makedirs(directory, exist_ok=True)
    x, y = tiny_arrays()
    np.savez(os.path.join(directory, "tiny.npz"), x=x, y=y)
    write_idx_dir(os.path.join(directory, "idx"))
    with open(os.path.join(directory, "tiny.txt"), "w", encoding="utf-8") as f:
        f.write(tiny_text())
    return {"dir": directory, "npz": "tiny.npz", "idx": "idx", "text": "tiny.txt"}


def copy_inputs(data: Dict[str, str], case: Case) -> None:
    """The tiny inputs, copied into the case (its inputs: no command may change them)."""
    for name in ("npz", "idx", "text"):
        source = os.path.join(data["dir"], data[name])
        target = case.path(data[name])
        if os.path.isdir(source):
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        case.inputs.append(target)
    case.guard_external(data["dir"])


@contextlib.contextmanager
def fresh_case(base: str, data: Dict[str, str]):
    """A case folder with copies of the tiny inputs, removed afterwards."""
    case = Case(base)
    try:
        copy_inputs(data, case)
        yield case
    finally:
        case.cleanup()


# ------------------------------------------------------------------ runs

TINY = ["--epochs", "1", "--iwae-samples", "2", "--quiet"]
KINDS = {
    "vae": ["--model", "vae", "--hidden", "8", "--latent-dim", "2"],
    "vae-mixture": ["--model", "vae", "--family", "mixture", "--hidden", "8", "--latent-dim", "2"],
    "cvae": ["--model", "cvae", "--hidden", "8", "--latent-dim", "2"],
    "ae": ["--model", "ae", "--hidden", "8", "--latent-dim", "2"],
    "vqvae": ["--model", "vqvae", "--hidden", "8", "--codebook-size", "4", "--code-dim", "2"],
    "vqvae-text": ["--model", "vqvae", "--hidden", "8", "--codebook-size", "4", "--code-dim", "2", "--dataset", "text:tiny.txt"],
}
"""The tiny settings of each kind of run the session trains (``vqvae-prior`` is ``vqvae`` with a prior trained on it)."""
PRIOR_KIND = "vqvae-prior"
TINY_PRIOR = ["--d-model", "8", "--num-heads", "1", "--num-layers", "1", "--epochs", "1", "--quiet"]

RUN_BASE = {
    "evaluate": ["--iwae-samples", "2", "--scored-samples", "10"],
    "sample": ["--n", "4"],
    "reconstruct": ["--n", "4"],
    "interpolate": ["--pairs", "2", "--steps", "3"],
    "traverse": ["--steps", "3"],
    "train-prior": TINY_PRIOR,
}
"""Tiny settings of the verbs that work on a run (a verb not named here runs with its defaults)."""


def has_option(verb: str, flag: str) -> bool:
    return any(flag in o.flags for o in verb_options(verb))


def keep_known(verb: str, args: List[str]) -> List[str]:
    """``args`` without the settings the verb's parser does not have (the parser is the reference)."""
    flags = {f for o in verb_options(verb) for f in o.flags}
    switches = {f for o in verb_options(verb) if not o.takes_value for f in o.flags}
    kept, i = [], 0
    while i < len(args):
        arg = args[i]
        takes_value = arg.startswith("--") and arg not in switches and i + 1 < len(args) and not str(args[i + 1]).startswith("--")
        width = 2 if takes_value else 1
        if not arg.startswith("--") or arg in flags:
            kept += args[i:i + width]
        i += width
    return kept


def train_base(kind: str, out=None) -> List[str]:
    """The tiny ``train`` command line of a kind of run, into ``out`` (the fresh run folder by default)."""
    args = ["--dataset", "tiny.npz", *TINY, *KINDS[kind]]
    if "--dataset" in KINDS[kind]:  # the kind's own data
        i = args.index("--dataset")
        del args[i:i + 2]
    return ["train", *keep_known("train", args), "--out", out if out is not None else Token("<fresh-run>")]


def run_base(verb: str) -> List[str]:
    """The tiny command line of a verb that works on a run (the run folder is the positional)."""
    argv = [verb, POSITIONAL, *keep_known(verb, RUN_BASE.get(verb, []))]
    if has_option(verb, "--out"):
        argv += ["--out", Token("<fresh.npy>")]
    return argv


RUN_VERBS = lambda: [v for v in verb_parsers() if v != "train"]  # noqa: E731
READ_ONLY = lambda verb: verb not in ("train", "train-prior")  # noqa: E731


def copy_run(source: str, case: Case, name: str = "run") -> str:
    target = case.path(name)
    shutil.copytree(source, target, symlinks=True)
    return target


# ------------------------------------------------------------------ path kinds

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
"""Root ignores permissions: a read-only folder is no obstacle, so those cases are not generated."""

TRAIN_OUTS = ["<fresh-run>", "<existing-file>", "<dev-null>", "<proc>", "<parent-is-file>", "<empty-dir>", "<user-dir>",
              "<existing-run>", "<long-name>", "<missing-parents>"] + ([] if ROOT else ["<read-only-dir>"])
VERB_OUTS = ["<fresh.npy>", "<fresh.png>", "<fresh.txt>", "<existing-output.npy>", "<dev-null.npy>", "<dev-null.png>",
             "<proc.npy>", "<proc-dir.npy>", "<parent-is-file.npy>", "<empty-dir>", "<dir-named.npy>", "<inside-run.npy>",
             "<run-folder>", "<long-name.npy>", "<missing-parents.npy>", "<fresh.NPY>", "<fresh>"] + \
            ([] if ROOT else ["<read-only-dir.npy>"])
RUN_ARGS = ["<run>", "<missing>", "<existing-file>", "<empty-dir>", "<tiny.npz>", "<run-link>", "<user-dir>"]
DATASETS = ["tiny.npz", "mnist", "fashion-mnist", "text:tiny.txt", "missing.npz", "text:missing.txt", "idx", "tiny.txt",
            "text:", "text:idx", Token("<tiny.npz>")]
DATA_DIRS = ["idx", "missing", "tiny.npz", "<empty-dir>", "<existing-file>"]

SPECIAL = {
    "train": {"out": [Token(t) for t in TRAIN_OUTS], "dataset": DATASETS, "data_dir": DATA_DIRS},
    "verb": {"out": [Token(t) for t in VERB_OUTS], "run": [Token(t) for t in RUN_ARGS]},
}


def _user_file(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("the user's notes, not a run\n")
    return path


def materialize(token: str, case: Case, runs: Dict[str, str], run_folder: Optional[str]) -> str:
    """The path a token names, made in the case's folder as the token says."""
    name = token.strip("<>")
    if name == "fresh-run":
        return case.path("new-run")
    if name == "existing-file":
        return _user_file(case.path("notes.txt"))
    if name.startswith("dev-null"):
        link = case.path("null" + name[len("dev-null"):])
        if not os.path.lexists(link):
            os.symlink(os.devnull, link)
        return link
    if name == "proc":
        return "/proc/pyprobvae-fuzz/run"
    if name == "proc.npy":
        return "/proc/pyprobvae-fuzz.npy"
    if name == "proc-dir.npy":
        return "/proc/pyprobvae-fuzz/x.npy"
    if name.startswith("parent-is-file"):
        return os.path.join(_user_file(case.path("notes.txt")), "x" + name[len("parent-is-file"):])
    if name == "empty-dir":
        os.makedirs(case.path("empty"), exist_ok=True)
        return case.path("empty")
    if name == "dir-named.npy":
        os.makedirs(case.path("d.npy"), exist_ok=True)
        return case.path("d.npy")
    if name == "user-dir":
        _user_file(case.path("mine", "a.txt"))
        _user_file(case.path("mine", "sub", "b.txt"))
        return case.path("mine")
    if name == "existing-run":
        if not os.path.exists(case.path("old-run")):
            shutil.copytree(runs["vae"], case.path("old-run"), symlinks=True)
        return case.path("old-run")
    if name.startswith("read-only-dir"):
        os.makedirs(case.path("ro"), exist_ok=True)
        os.chmod(case.path("ro"), 0o555)
        return case.path("ro", "x" + name[len("read-only-dir"):])
    if name.startswith("long-name"):
        return case.path("r" * 300 + name[len("long-name"):])
    if name.startswith("missing-parents"):
        return case.path("a", "b", "c", "x" + name[len("missing-parents"):])
    if name.startswith("fresh"):
        return case.path("out" + name[len("fresh"):])
    if name == "existing-output.npy":
        path = case.path("old.npy")
        if not os.path.exists(path):
            np.save(path, np.zeros(3))
        return path
    if name == "inside-run.npy":
        return os.path.join(run_folder or case.path("run"), "extra.npy")
    if name in ("run", "run-folder"):
        return run_folder or case.path("run")
    if name == "run-link":
        link = case.path("run-link")
        if not os.path.lexists(link):
            os.symlink(run_folder or case.path("run"), link)
        return link
    if name == "missing":
        return case.path("nothing-here")
    if name == "tiny.npz":
        return case.path("tiny.npz")
    raise AssertionError(f"unknown path kind {token!r}")


def resolve(argv: list, case: Case, runs: Dict[str, str], run_folder: Optional[str] = None) -> List[str]:
    """The command line with every token replaced by its path (``flag=token`` included)."""
    resolved = []
    for arg in argv:
        if isinstance(arg, Token):
            resolved.append(materialize(arg, case, runs, run_folder))
        else:
            resolved.append(arg)
    return resolved


def last_value(argv: List[str], flag: str) -> Optional[str]:
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def set_targets(case: Case, argv: List[str], run_folder: Optional[str] = None) -> None:
    """What the command's job is to write: a train's run folder, a verb's --out, a prior's run."""
    verb = argv[0] if argv else ""
    if verb == "train":
        out = last_value(argv, "--out")
        out = "runs" if out is None else out
        case.targets += [out, out.rstrip(os.sep) + ".pyprobvae-new", out.rstrip(os.sep) + ".pyprobvae-old"]
        case.resume = "--resume" in argv
    elif verb == "train-prior":
        if run_folder is not None:
            case.targets.append(run_folder)
    elif verb in verb_parsers():
        out = last_value(argv, "--out")
        if out is not None:
            case.targets.append(out)
        case.read_only = True
    case.run_folder = run_folder
