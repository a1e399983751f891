"""
Malformed data files: ``--dataset PATH.npz``, ``--dataset text:PATH`` and
``--dataset mnist --data-dir DIR`` given files that are empty, random, of the
wrong kind, of the wrong shapes, dtypes or sizes, or that declare an enormous
shape in a few bytes. Each is given to the tiny ``train`` of a drawn model.
"""

import gzip
import io
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import expect, fuzz_settings
from .world import IDX_FILES, KINDS, fresh_case, resolve, set_targets, tiny_arrays, tiny_text, train_base, write_idx, write_idx_dir

NPZ = "data.npz"


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _npy_header(shape, dtype="|u1") -> bytes:
    """A .npy header declaring ``shape``, followed by a few bytes of data."""
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (dtype, tuple(shape))
    header = header + " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1") + b"\x00" * 64


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def _savez(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# each builder writes its file(s) in the case folder and returns the data arguments of the command line

def _write(content: bytes, name=NPZ):
    def build(case, draw):
        with open(case.path(name), "wb") as f:
            f.write(content)
        return ["--dataset", name]
    return build


def _arrays(**arrays):
    def build(case, draw):
        _savez(case.path(NPZ), **{k: (v() if callable(v) else v) for k, v in arrays.items()})
        return ["--dataset", NPZ]
    return build


def _random_bytes(case, draw):
    size = draw(st.integers(1, 4096), label="bytes")
    seed = draw(st.integers(0, 2**16), label="seed")
    return _write(np.random.default_rng(seed).bytes(size))(case, draw)


def _zip_member(name, content):
    def build(case, draw):
        _zip(case.path(NPZ), {name: content})
        return ["--dataset", NPZ]
    return build


def _huge_header(shape, dtype="|u1"):
    return _zip_member("x.npy", _npy_header(shape, dtype))


def _symlink_loop(case, draw):
    os.symlink(NPZ, case.path(NPZ))
    return ["--dataset", NPZ]


def _directory(name):
    def build(case, draw):
        os.makedirs(case.path(name))
        return ["--dataset", name if not name.endswith(".txt") else "text:" + name]
    return build


def _fifo(case, draw):
    os.mkfifo(case.path(NPZ))
    return ["--dataset", NPZ]


x, y = tiny_arrays()
f = x.astype(np.float32) / 255

NPZ_FILES = {
    "0-byte .npz": _write(b""),
    "random bytes": _random_bytes,
    "text named .npz": _write(b"x,y\n1,2\n3,4\n"),
    "zip with a text member": _zip_member("readme.txt", b"hello"),
    "zip with x.npy not an array": _zip_member("x.npy", b"not an array at all"),
    "zip with x.npy truncated": _zip_member("x.npy", _npy_bytes(x)[:100]),
    "object array (pickle)": _zip_member("x.npy", _npy_bytes(np.array([{"a": 1}] * 20, dtype=object))),
    "object labels (pickle)": lambda case, draw: (_zip(case.path(NPZ), {"x.npy": _npy_bytes(x), "y.npy": _npy_bytes(
        np.array([None] * len(x), dtype=object))}), ["--dataset", NPZ])[1],
    "rank 1": _arrays(x=np.arange(100, dtype=np.uint8)),
    "rank 0": _arrays(x=np.uint8(3)),
    "rank 5": _arrays(x=np.zeros((100, 1, 2, 2, 2), np.uint8), y=y),
    "rank 6": _arrays(x=np.zeros((100, 1, 1, 2, 2, 2), np.uint8)),
    "flat (N, D)": _arrays(x=x.reshape(100, 16), y=y),
    "3 channels": _arrays(x=np.repeat(x[:, None], 3, 1), y=y),
    "1x1 images": _arrays(x=x[:, :1, :1], y=y),
    "1 feature": _arrays(x=x.reshape(100, 16)[:, :1]),
    "1 example": _arrays(x=x[:1], y=y[:1]),
    "2 examples": _arrays(x=x[:2], y=y[:2]),
    "5 examples": _arrays(x=x[:5], y=y[:5]),
    "40 examples": _arrays(x=x[:40], y=y[:40]),
    "0 examples": _arrays(x=x[:0], y=y[:0]),
    "zero features (10, 0)": _arrays(x=np.zeros((10, 0), np.float32)),
    "zero width (10, 4, 0)": _arrays(x=np.zeros((10, 4, 0), np.uint8)),
    "NaN values": _arrays(x=np.where(f > 0.9, np.nan, f)),
    "inf values": _arrays(x=np.where(f > 0.9, np.inf, f)),
    "float64 beyond float32": _arrays(x=f.astype(np.float64) * 1e300),
    "float16": _arrays(x=f.astype(np.float16), y=y),
    "negative ints": _arrays(x=x.astype(np.int16) - 100),
    "huge ints (int64 max)": _arrays(x=np.full((100, 4, 4), np.iinfo(np.int64).max)),
    "ints up to 10**12": _arrays(x=(x.astype(np.int64) * 10**10)),
    "uint64 beyond int64": _arrays(x=np.full((100, 4, 4), np.iinfo(np.uint64).max, np.uint64)),
    "bool": _arrays(x=x > 127, y=y),
    "complex": _arrays(x=x.astype(np.complex64)),
    "strings": _arrays(x=np.full((100, 4), "ab")),
    "datetimes": _arrays(x=np.zeros((100, 4), "datetime64[s]")),
    "structured dtype": _arrays(x=np.zeros((100, 4), [("a", "u1"), ("b", "f4")])),
    "labels too short": _arrays(x=x, y=y[:-1]),
    "labels too long": _arrays(x=x, y=np.concatenate([y, y])),
    "float labels": _arrays(x=x, y=y.astype(np.float32) + 0.5),
    "string labels": _arrays(x=x, y=np.array(["a"] * 100)),
    "2-D labels": _arrays(x=x, y=y.reshape(50, 2)),
    "labels (N, 1)": _arrays(x=x, y=y.reshape(100, 1)),
    "negative labels": _arrays(x=x, y=y - 1),
    "labels up to 10**12": _arrays(x=x, y=y * 10**12),
    "bool labels": _arrays(x=x, y=y > 0),
    "huge header (10**6, 10**7) uint8": _huge_header((10**6, 10**7)),
    "huge header (2**40,) float64": _huge_header((2**40,), "<f8"),
    "huge header (10**9, 4, 4) uint8": _huge_header((10**9, 4, 4)),
    "header with a negative shape": _huge_header((-5, 4)),
    "directory named .npz": _directory(NPZ),
    "symlink loop": _symlink_loop,
    "fifo named .npz": _fifo,
    "no arrays": _arrays(),
    "other keys": _arrays(images=x, labels=y),
    "x_train only": _arrays(x_train=x, y_train=y),
    "x_test only": _arrays(x_test=x, y_test=y),
    "splits of other shapes": _arrays(x_train=x, x_test=x[:, :2]),
    "splits of other dtypes": _arrays(x_train=x, x_test=f),
    "labels for one split only": _arrays(x_train=x[:80], x_test=x[80:], y_train=y[:80]),
    "empty test split": _arrays(x_train=x, x_test=x[:0]),
    "test split of 1": _arrays(x_train=x[:99], x_test=x[99:], y_train=y[:99], y_test=y[99:]),
    "x and x_train both": _arrays(x=x, x_train=x, x_test=x),
    "unicode file name": lambda case, draw: (_savez(case.path("dätä😀.npz"), x=x, y=y), ["--dataset", "dätä😀.npz"])[1],
    "missing file": lambda case, draw: ["--dataset", "absent.npz"],
}


# IDX folders: the tiny valid one, then one file damaged

def _idx(damage):
    def build(case, draw):
        directory = case.path("mnist")
        write_idx_dir(directory)
        split = draw(st.sampled_from(["train", "test"]), label="split")
        which = draw(st.sampled_from([0, 1]), label="images or labels")
        damage(os.path.join(directory, IDX_FILES[split][which]), which == 0, draw)
        dataset = draw(st.sampled_from(["mnist", "fashion-mnist"]), label="dataset")
        return ["--dataset", dataset, "--data-dir", directory]
    return build


def _rewrite(path, transform):
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(transform(content))


def _shape(images):
    return (20, 4, 4) if images else (20,)


IDX_DAMAGES = {
    "bad magic number": lambda p, images, draw: _rewrite(p, lambda c: b"\x12\x34" + c[2:]),
    "unknown type code": lambda p, images, draw: _rewrite(p, lambda c: c[:2] + b"\x07" + c[3:]),
    "float type code": lambda p, images, draw: write_idx(p, np.zeros(_shape(images), np.float32), code=0x0D),
    "int32 type code": lambda p, images, draw: write_idx(p, np.zeros(_shape(images), np.int32), code=0x0C),
    "truncated data": lambda p, images, draw: _rewrite(p, lambda c: c[:len(c) - draw(st.integers(1, 20), label="cut")]),
    "truncated header": lambda p, images, draw: _rewrite(p, lambda c: c[:6]),
    "trailing bytes": lambda p, images, draw: _rewrite(p, lambda c: c + b"\x00" * 7),
    "0 bytes": lambda p, images, draw: _rewrite(p, lambda c: b""),
    "mismatched counts": lambda p, images, draw: write_idx(p, np.zeros((19, 4, 4) if images else (19,), np.uint8)),
    "zero examples": lambda p, images, draw: write_idx(p, np.zeros((0, 4, 4) if images else (0,), np.uint8)),
    "zero-size images": lambda p, images, draw: write_idx(p, np.zeros((20, 0, 4) if images else (20,), np.uint8)),
    "labels out of range": lambda p, images, draw: write_idx(p, np.full(_shape(images), 200, np.uint8)),
    "wrong rank": lambda p, images, draw: write_idx(p, np.zeros((20, 16) if images else (20, 1), np.uint8)),
    "rank 0": lambda p, images, draw: write_idx(p, np.zeros((), np.uint8)),
    "enormous declared shape": lambda p, images, draw: write_idx(
        p, np.zeros(8, np.uint8), dims=(2**32 - 1, 2**32 - 1, 2**32 - 1) if images else (2**32 - 1,)),
    "declared shape overflowing int64": lambda p, images, draw: write_idx(p, np.zeros(8, np.uint8), dims=(2**32 - 1,) * 4),
    "255 dimensions": lambda p, images, draw: _rewrite(p, lambda c: b"\x00\x00\x08\xff" + b"\x00\x00\x00\x01" * 255),
    "gzip, valid": lambda p, images, draw: (_rewrite(p, gzip.compress), os.rename(p, p + ".gz")),
    "gzip, corrupt": lambda p, images, draw: (_rewrite(p, lambda c: gzip.compress(c)[:30]), os.rename(p, p + ".gz")),
    "gzip bomb header": lambda p, images, draw: _rewrite(p, lambda c: gzip.compress(c[:4] + (10**6).to_bytes(4, "big") * 3
                                                                                    + b"\x00" * 10**6)),
    "missing": lambda p, images, draw: os.remove(p),
    "a directory": lambda p, images, draw: (os.remove(p), os.makedirs(p)),
    "random bytes": lambda p, images, draw: _rewrite(p, lambda c: np.random.default_rng(draw(st.integers(0, 99))).bytes(len(c))),
}

IDX_FILES_CASES = {f"idx: {name}": _idx(damage) for name, damage in IDX_DAMAGES.items()}
IDX_FILES_CASES.update({
    "idx: no data dir": lambda case, draw: ["--dataset", "mnist"],
    "idx: data dir missing": lambda case, draw: ["--dataset", "mnist", "--data-dir", "absent"],
    "idx: data dir is a file": lambda case, draw: ["--dataset", "mnist", "--data-dir", "tiny.npz"],
    "idx: data dir empty": lambda case, draw: (os.makedirs(case.path("void")), ["--dataset", "mnist", "--data-dir", "void"])[1],
})


def _text(content: bytes, name="corpus.txt"):
    def build(case, draw):
        with open(case.path(name), "wb") as f:
            f.write(content)
        return ["--dataset", "text:" + name]
    return build


VALID_TEXT = tiny_text().encode()
TEXT_FILES = {
    "text: empty": _text(b""),
    "text: one newline": _text(b"\n"),
    "text: shorter than a sequence": _text(b"def f(): pass\n"),
    "text: exactly one sequence": _text(VALID_TEXT[:64]),
    "text: 10 sequences": _text(VALID_TEXT[:640]),
    "text: random bytes": lambda case, draw: _text(np.random.default_rng(draw(st.integers(0, 99))).bytes(3000))(case, draw),
    "text: latin-1": _text("café naïve über ".encode("latin-1") * 300),
    "text: UTF-16": _text(tiny_text(4000).encode("utf-16")),
    "text: UTF-8 with BOM": _text(b"\xef\xbb\xbf" + VALID_TEXT),
    "text: NUL bytes": _text(VALID_TEXT.replace(b" ", b"\x00")),
    "text: CRLF and tabs": _text(VALID_TEXT.replace(b"\n", b"\r\n").replace(b" ", b"\t")),
    "text: unicode only": _text("😀日本語".encode() * 800),
    "text: a directory": _directory("corpus.txt"),
    "text: missing": lambda case, draw: ["--dataset", "text:absent.txt"],
    "text: empty path": lambda case, draw: ["--dataset", "text:"],
    "text: a .npz file": lambda case, draw: ["--dataset", "text:tiny.npz"],
}

DATA_FILES = {**NPZ_FILES, **IDX_FILES_CASES, **TEXT_FILES}
MODELS = {"vae": KINDS["vae"], "cvae": KINDS["cvae"], "ae": KINDS["ae"], "vqvae": KINDS["vqvae"]}
LIKELIHOODS = [[], [], ["--likelihood", "categorical"], ["--likelihood", "gaussian"], ["--likelihood", "bernoulli"]]


def _train_on(data_args, kind, likelihood):
    argv = [a for a in train_base(kind)]
    i = argv.index("--dataset")
    del argv[i:i + 2]
    return argv + list(data_args) + likelihood


def test_every_data_file_kind_is_drawn():
    assert len(DATA_FILES) > 90


@pytest.mark.slow
@fuzz_settings(40)
@given(data=st.data())
def test_malformed_data_files(data, fuzz_base, inputs, runs):
    name = data.draw(st.sampled_from(sorted(DATA_FILES)), label="data file")
    kind = data.draw(st.sampled_from(sorted(MODELS)), label="model")
    likelihood = data.draw(st.sampled_from(LIKELIHOODS), label="likelihood")
    with fresh_case(fuzz_base, inputs) as case:
        data_args = DATA_FILES[name](case, data.draw)
        case.inputs += [case.path(p) for p in os.listdir(case.dir)]  # what the case made is the user's, like the rest
        argv = resolve(_train_on(data_args, kind, likelihood), case, runs)
        set_targets(case, argv)
        expect(case.run(argv), case, context=f"data file: {name}")
