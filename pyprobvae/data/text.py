"""
Character-level text data: a fixed character vocabulary, encoding text to
int64 token ids and back, a built-in corpus, and the loader behind
``load_dataset("text")`` and ``load_dataset("text:PATH")``.

The vocabulary :data:`VOCABULARY` is fixed, so models trained on different
files share it: ``"\\n"`` (id 0) followed by the 95 printable ASCII
characters ``" "`` to ``"~"`` (ids 1 to 95). Encoding normalizes text
character by character and keeps runs of whitespace (indentation and blank
lines carry structure):

* line endings ``"\\r\\n"`` and ``"\\r"`` become ``"\\n"``;
* any other whitespace outside the vocabulary (tabs, form feeds, no-break
  spaces, ...) becomes a space;
* any other character outside the vocabulary becomes :data:`REPLACEMENT`,
  ``"?"``.
"""

import importlib
import inspect
import os
from typing import List, Optional, Set, Union

import numpy.typing as npt
import torch

from .dataset import DataError, Dataset, check_split, fixed_split_indices

VOCABULARY = "\n" + "".join(chr(code) for code in range(32, 127))
REPLACEMENT = "?"

# Standard-library modules (platform-independent, none deprecated) whose docstrings make the default corpus.
CORPUS_MODULES = (
    "string",
    "textwrap",
    "json",
    "collections",
    "functools",
    "argparse",
    "difflib",
    "fractions",
    "statistics",
    "heapq",
    "bisect",
    "random",
    "pathlib",
    "enum",
    "dataclasses",
    "shlex",
    "calendar",
    "csv",
    "email.message",
    "ipaddress",
    "logging",
    "inspect",
    "tarfile",
    "zipfile",
    "configparser",
    "optparse",
    "pprint",
    "queue",
    "urllib.parse",
    "uuid",
    "contextlib",
    "copy",
    "abc",
    "numbers",
    "unittest.case",
    "smtplib",
    "threading",
    # added in 0.3.0, for about 3x the text
    "builtins",
    "doctest",
    "pdb",
    "decimal",
    "http.cookiejar",
    "ast",
    "unittest.mock",
    "http.server",
    "imaplib",
    "codecs",
    "email.policy",
    "re",
    "io",
    "xml.etree.ElementTree",
    "urllib.request",
    "subprocess",
    "socketserver",
    "shutil",
    "http.client",
    "xmlrpc.server",
    "ftplib",
    "traceback",
    "pickletools",
    "importlib.metadata",
    "bdb",
    "tempfile",
    "pkgutil",
    "wave",
    "pydoc",
    "base64",
    "math",
    "itertools",
    "timeit",
    "fileinput",
    "mimetypes",
    "sqlite3",
    "cmd",
    "poplib",
    "code",
    "shelve",
    "gzip",
    "datetime",
    "bz2",
    "lzma",
    "weakref",
    "py_compile",
    "tokenize",
    "mailbox",
    "zipimport",
    "locale",
    "sched",
    "selectors",
    "hashlib",
    "hmac",
    "secrets",
    "operator",
    "glob",
    "fnmatch",
    "filecmp",
    "netrc",
    "plistlib",
    "quopri",
    "html.parser",
    "http.cookies",
    "email.utils",
    "email.parser",
    "email.headerregistry",
    "xml.dom.minidom",
    "xml.sax",
    "concurrent.futures",
    "importlib.resources",
    "asyncio",
    "pickle",
    "struct",
    "zlib",
    "tomllib",
    "graphlib",
    "contextvars",
    "reprlib",
    "linecache",
    "types",
    "warnings",
    "getopt",
    "gettext",
    "stat",
    "trace",
    "tracemalloc",
    "zoneinfo",
    "wsgiref.util",
    "xmlrpc.client",
    "modulefinder",
    "runpy",
    "symtable",
    "dis",
    "compileall",
    "profile",
    "pstats",
    "sysconfig",
    "copyreg",
    "codeop",
    "array",
    "gc",
    "time",
)
# Upper bound on the length of the default corpus, in characters.
CORPUS_MAX_CHARS = 1_000_000

DEFAULT_SEQ_LEN = 128
"""Characters per sequence when none is given (64 before 0.3.0)."""

# Share of the sequences in the train split, in percent.
TRAIN_PERCENT = 90


def default_corpus() -> str:
    """
    The built-in corpus, built offline from the docstrings
    (``inspect.getdoc``) of the modules in :data:`CORPUS_MODULES`: each
    module's docstring, then those of its public functions and classes (in
    name order, skipping names it imports from elsewhere) and of their
    public methods and properties. Repeated docstrings are kept once, and
    docstrings are joined by blank lines, stopping before the first one that
    would take the corpus past :data:`CORPUS_MAX_CHARS` characters.

    The text is the same on every call and every run of the same Python
    version (about 800,000 characters on Python 3.11); other versions ship
    other docstrings.

    :rtype: str
    """
    docs: List[str] = []
    seen: Set[str] = set()
    size = 0
    for module_name in CORPUS_MODULES:
        for doc in _docstrings(importlib.import_module(module_name)):
            if doc in seen:
                continue
            size += len(doc) + 2 * bool(docs)
            if size > CORPUS_MAX_CHARS:
                return "\n\n".join(docs)
            seen.add(doc)
            docs.append(doc)
    return "\n\n".join(docs)


def _docstrings(module):
    yield from filter(None, [inspect.getdoc(module)])
    for obj in _public_members(module):
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        members = _public_members(obj) if inspect.isclass(obj) else []
        yield from filter(None, [inspect.getdoc(member) for member in [obj, *members]])


def _public_members(namespace):
    """The public functions, classes, methods and properties of a module or class, by name."""
    members = []
    for name, obj in sorted(vars(namespace).items()):
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if not name.startswith("_") and (inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, property)):
            members.append(obj)
    return members


def encode_text(text: str, vocabulary: str = VOCABULARY) -> torch.Tensor:
    """
    Token ids of ``text``, normalized as described in this module's
    docstring: id ``i`` stands for ``vocabulary[i]``.

    :param str text: the text.
    :param str vocabulary: distinct characters, including
        :data:`REPLACEMENT`.
    :returns: int64 ids of shape ``(len(normalized text),)``.
    :rtype: torch.LongTensor
    """
    index = _index(vocabulary)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for char in set(text) - index.keys():
        index[char] = index[" "] if char.isspace() and " " in index else index[REPLACEMENT]
    return torch.tensor([index[char] for char in text], dtype=torch.int64)


def _index(vocabulary):
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError(f"the vocabulary {vocabulary!r} repeats characters; token ids need distinct characters")
    if REPLACEMENT not in vocabulary:
        raise ValueError(
            f"the vocabulary {vocabulary!r} lacks {REPLACEMENT!r}, which stands in for characters outside it"
        )
    return {char: i for i, char in enumerate(vocabulary)}


def decode_text(ids: Union[torch.Tensor, npt.ArrayLike], vocabulary: str = VOCABULARY) -> Union[str, List[str]]:
    """
    The text of token ids: ``"".join(vocabulary[i] for i in ids)``.

    :param ids: integer ids (tensor on any device, array or list) of shape
        ``(seq_len,)``, or ``(batch, seq_len)`` for a batch.
    :param str vocabulary: the characters of the ids.
    :returns: a string, or a list of ``batch`` strings.
    :rtype: str or list of str
    """
    ids = torch.as_tensor(ids)
    if ids.dim() not in (1, 2) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(
            f"token ids must be integers of shape (seq_len,) or (batch, seq_len), got {ids.dtype} "
            f"of shape {tuple(ids.shape)}"
        )
    if ids.numel() and (ids.min() < 0 or ids.max() >= len(vocabulary)):
        raise ValueError(
            f"token ids must lie in [0, {len(vocabulary) - 1}] for a vocabulary of {len(vocabulary)} "
            f"characters, got ids in [{int(ids.min())}, {int(ids.max())}]"
        )
    rows = [ids.tolist()] if ids.dim() == 1 else ids.tolist()
    texts = ["".join(vocabulary[i] for i in row) for row in rows]
    return texts[0] if ids.dim() == 1 else texts


def read_text_file(path: str) -> str:
    """
    The content of a UTF-8 text file (a leading byte order mark is dropped).

    :param str path: path of the file.
    :raises DataError: naming the file when it does not exist, cannot be read
        or is not valid UTF-8.
    :rtype: str
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"text file {path!r} is a directory")
    if not os.path.isfile(path):
        raise DataError(f"text file {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise DataError(f"cannot read text file {path!r}: {e}") from e
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"text file {path!r} is not valid UTF-8: byte {content[e.start:e.start + 1]!r} at "
            f"offset {e.start} ({e.reason}); re-encode it as UTF-8"
        ) from e


def load_text(path: Optional[str], split: str, seq_len: int = DEFAULT_SEQ_LEN) -> Dataset:
    """
    Loads one split of character sequences from the default corpus or a
    UTF-8 text file.

    The text is encoded with :data:`VOCABULARY` (see :func:`encode_text`) and
    cut into ``floor(len / seq_len)`` consecutive, non-overlapping sequences
    of ``seq_len`` characters (a shorter tail is dropped). The split is fixed:
    :func:`~pyprobvae.data.fixed_split_indices` with ``train_percent=90``, so
    the first 90% of a ``SPLIT_SEED`` permutation of the sequences is the
    train split and the rest the test split.

    :param path: path of a UTF-8 text file, or None for
        :func:`default_corpus`.
    :type path: str or None
    :param str split: ``"train"`` or ``"test"``.
    :param int seq_len: characters per sequence, at least 1.
    :returns: a data set named ``"text"`` or ``path``, with ``x`` the int64
        ids of shape ``(N, seq_len)``, ``data_shape`` ``(seq_len,)``,
        ``num_levels`` the vocabulary size, no labels.
    :raises DataError: naming the file when it is missing, not UTF-8, or too
        short for one train and one test sequence.
    :rtype: Dataset
    """
    check_split(split)
    if seq_len < 1:
        raise DataError(f"seq_len must be at least 1, got {seq_len}")
    name = "text" if path is None else os.fspath(path)
    ids = encode_text(default_corpus() if path is None else read_text_file(name))
    count = len(ids) // seq_len
    if count < 2:
        raise DataError(
            f"text file {name!r} has {len(ids)} characters, too few for one train and one test "
            f"sequence of seq_len={seq_len}: it needs at least {2 * seq_len}"
        )
    sequences = ids[: count * seq_len].reshape(count, seq_len)
    idx = torch.from_numpy(fixed_split_indices(count, split, train_percent=TRAIN_PERCENT))
    return Dataset(
        name=name,
        x=sequences[idx],
        y=None,
        data_shape=(seq_len,),
        num_levels=len(VOCABULARY),
        num_classes=None,
        vocabulary=VOCABULARY,
    )
