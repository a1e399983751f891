import dataclasses
import gzip
import io
import os
import zipfile

import numpy as np
import pytest
import torch

from pyprobvae.data import (
    DATASETS,
    DataError,
    Dataset,
    binarize,
    fixed_split_indices,
    from_arrays,
    iterate_minibatches,
    load_dataset,
    load_digits,
    load_mnist,
    load_npz,
    read_idx,
    write_idx,
)

MNIST_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
MNIST_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def make_mnist_dir(root, num_train=20, num_test=10, size=5, gz=False, seed=0):
    """Writes a tiny MNIST-format directory and returns its raw arrays."""
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    raw = {}
    for split, (images_name, labels_name), n in [
        ("train", MNIST_TRAIN, num_train),
        ("test", MNIST_TEST, num_test),
    ]:
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(os.path.join(root, images_name + suffix), images)
        write_idx(os.path.join(root, labels_name + suffix), labels)
        raw[split] = images, labels
    return raw


# ---------------------------------------------------------------- digits


@pytest.mark.parametrize("split,size", [("train", 1437), ("test", 360)])
def test_digits_shapes_range_levels(split, size):
    data = load_digits(split)
    assert data.name == "digits"
    assert len(data) == size
    assert data.x.shape == (size, 1, 8, 8)
    assert data.x.dtype == torch.float32
    assert data.y.shape == (size,) and data.y.dtype == torch.int64
    assert data.data_shape == (1, 8, 8)
    assert data.num_levels == 17 and data.num_classes == 10
    assert data.x.min() == 0 and data.x.max() == 1
    levels = torch.unique(data.x * 16)
    assert torch.equal(levels, levels.round())
    assert set(data.y.tolist()) == set(range(10))


def test_digits_split_fixed_disjoint_deterministic():
    train_idx = fixed_split_indices(1797, "train")
    test_idx = fixed_split_indices(1797, "test")
    assert len(train_idx) == 1437 and len(test_idx) == 360
    assert set(train_idx).isdisjoint(test_idx)
    assert sorted(np.concatenate([train_idx, test_idx])) == list(range(1797))

    torch.manual_seed(123)
    np.random.seed(123)
    first = load_digits("train"), load_digits("test")
    torch.manual_seed(456)
    np.random.seed(456)
    second = load_digits("train"), load_digits("test")
    for a, b in zip(first, second):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)

    # The test split holds exactly the sklearn images at the test indices.
    from sklearn.datasets import load_digits as sklearn_load_digits

    images = sklearn_load_digits().images
    assert torch.equal(first[1].x[:, 0] * 16, torch.from_numpy(images[test_idx]).float())


def test_load_dataset_dispatch(tmp_path):
    assert DATASETS == ("digits", "mnist", "fashion-mnist")
    assert len(load_dataset("digits")) == 1437
    assert len(load_dataset("digits", "test")) == 360
    make_mnist_dir(str(tmp_path))
    assert load_dataset("fashion-mnist", "test", data_dir=str(tmp_path)).name == "fashion-mnist"
    path = str(tmp_path / "d.npz")
    np.savez(path, x=np.zeros((10, 3), dtype=np.float32))
    assert len(load_dataset(path, "test")) == 2


def test_load_dataset_unknown_name_and_split():
    with pytest.raises(DataError, match="unknown dataset 'cifar'") as e:
        load_dataset("cifar")
    for choice in DATASETS + (".npz", "'text'", "'text:PATH'"):
        assert choice in str(e.value)
    with pytest.raises(DataError, match="unknown split 'valid'.*'train' or 'test'"):
        load_dataset("digits", "valid")
    with pytest.raises(DataError, match="unknown split"):
        load_digits("validation")


def test_load_dataset_text(tmp_path):
    corpus = load_dataset("text", "test")
    assert corpus.name == "text" and corpus.data_shape == (128,) and corpus.x.dtype == torch.int64
    assert corpus.vocabulary is not None and corpus.num_levels == len(corpus.vocabulary)
    path = tmp_path / "notes.npz"  # the text: prefix wins over the .npz suffix
    path.write_text("abc" * 400, encoding="utf-8")  # 9 sequences of 128
    train = load_dataset(f"text:{path}")
    assert train.name == str(path) and len(train) == (9 * 9) // 10
    with pytest.raises(DataError, match="text file 'missing.txt' does not exist"):
        load_dataset("text:missing.txt")


def test_fixed_split_train_percent():
    train, test = fixed_split_indices(25, "train", train_percent=90), fixed_split_indices(25, "test", train_percent=90)
    assert len(train) == 22 and len(test) == 3
    assert sorted(np.concatenate([train, test])) == list(range(25))
    assert np.array_equal(fixed_split_indices(1797, "test", train_percent=80), fixed_split_indices(1797, "test"))


# ---------------------------------------------------------------- Dataset


def test_dataset_to_and_invariants():
    data = from_arrays(np.ones((4, 3), dtype=np.float32), np.arange(4))
    moved = data.to("cpu")
    assert moved is not data
    assert torch.equal(moved.x, data.x) and torch.equal(moved.y, data.y)
    assert moved.num_classes == 4 and moved.data_shape == (3,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.name = "other"
    with pytest.raises(DataError, match="does not match data_shape"):
        Dataset("bad", torch.zeros(2, 3), None, (4,), None, None)
    with pytest.raises(DataError, match="y has shape"):
        Dataset("bad", torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), (3,), None, 3)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
)
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = str(tmp_path / ("a.idx" + suffix))
    write_idx(path, array)
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    assert result.shape == (3, 4, 5)
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable


def test_idx_header_layout(tmp_path):
    path = str(tmp_path / "labels")
    write_idx(path, np.array([1, 2, 3], dtype=np.uint8))
    with open(path, "rb") as f:
        assert f.read() == b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"
    write_idx(path + ".gz", np.array([1, 2, 3], dtype=np.uint8))
    with open(path + ".gz", "rb") as f:
        assert f.read()[:2] == b"\x1f\x8b"


def test_read_idx_finds_gz_and_big_endian(tmp_path):
    path = str(tmp_path / "ints")
    write_idx(path + ".gz", np.array([[1, -2], [300, 70000]], dtype=np.int32))
    np.testing.assert_array_equal(read_idx(path), [[1, -2], [300, 70000]])
    with gzip.open(path + ".gz", "rb") as f:
        assert f.read()[12:16] == b"\x00\x00\x00\x01"  # big-endian data


def test_write_idx_unsupported_dtype(tmp_path):
    with pytest.raises(DataError, match="cannot write int64 array to .*/a': IDX supports uint8"):
        write_idx(str(tmp_path / "a"), np.zeros(3, dtype=np.int64))


def write_bytes(path, content):
    with open(path, "wb") as f:
        f.write(content)
    return str(path)


def test_read_idx_missing_file(tmp_path):
    path = str(tmp_path / "nothing")
    with pytest.raises(DataError, match="not found") as e:
        read_idx(path)
    assert repr(path) in str(e.value) and repr(path + ".gz") in str(e.value)


def test_read_idx_too_short(tmp_path):
    path = write_bytes(tmp_path / "short", b"\x00\x00")
    with pytest.raises(DataError, match="'.*short' has 2 bytes, shorter than"):
        read_idx(path)
    path = write_bytes(tmp_path / "short_dims", b"\x00\x00\x08\x03\x00\x00\x00\x02")
    with pytest.raises(DataError, match="short_dims' has 8 bytes, shorter than its 16-byte header"):
        read_idx(path)


def test_read_idx_bad_magic(tmp_path):
    path = write_bytes(tmp_path / "bad_magic", b"\x12\x34\x08\x01\x00\x00\x00\x00")
    with pytest.raises(DataError, match="bad_magic' is not an IDX file") as e:
        read_idx(path)
    assert "0x12340801" in str(e.value) and "expected 0x0000" in str(e.value)


def test_read_idx_unknown_dtype(tmp_path):
    path = write_bytes(tmp_path / "bad_code", b"\x00\x00\x07\x01\x00\x00\x00\x00")
    with pytest.raises(DataError, match="bad_code' has unknown IDX type code 0x07"):
        read_idx(path)


@pytest.mark.parametrize(
    "extra,problem,actual", [(b"\x01", "truncated", 1), (b"\x01\x02\x03", "has trailing bytes", 3)]
)
def test_read_idx_wrong_size(tmp_path, extra, problem, actual):
    path = write_bytes(tmp_path / "sized", b"\x00\x00\x08\x01\x00\x00\x00\x02" + extra)
    with pytest.raises(DataError, match="sized' is " + problem) as e:
        read_idx(path)
    assert f"needs 2 data bytes but the file has {actual}" in str(e.value)


def test_read_idx_corrupt_gzip(tmp_path):
    content = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02")
    path = write_bytes(tmp_path / "broken.gz", content[: len(content) // 2])
    with pytest.raises(DataError, match="broken.gz' is not a valid gzip file"):
        read_idx(path)
    path = write_bytes(tmp_path / "plain.gz", b"\x00\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(DataError, match="plain.gz' is not a valid gzip file"):
        read_idx(path)


# ---------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_mnist(tmp_path, name, gz):
    raw = make_mnist_dir(str(tmp_path), gz=gz)
    for split, size in [("train", 20), ("test", 10)]:
        data = load_dataset(name, split, data_dir=str(tmp_path))
        images, labels = raw[split]
        assert data.name == name and len(data) == size
        assert data.x.shape == (size, 1, 5, 5) and data.x.dtype == torch.float32
        assert data.data_shape == (1, 5, 5)
        assert data.num_levels == 256 and data.num_classes == 10
        assert torch.allclose(data.x[:, 0] * 255, torch.from_numpy(images).float())
        assert torch.equal(data.y, torch.from_numpy(labels).long())
        assert 0 <= data.x.min() and data.x.max() <= 1


def test_load_mnist_requires_data_dir():
    with pytest.raises(DataError, match=r"--data-dir \(data_dir\) is required"):
        load_dataset("mnist")


def test_load_mnist_missing_dir(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError, match="does not exist") as e:
        load_mnist(missing, "train", name="fashion-mnist")
    assert repr(missing) in str(e.value) and "fashion-mnist" in str(e.value)


def test_load_mnist_missing_file(tmp_path):
    make_mnist_dir(str(tmp_path))
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    assert len(load_mnist(str(tmp_path), "train")) == 20
    with pytest.raises(DataError, match="not found") as e:
        load_mnist(str(tmp_path), "test")
    assert "t10k-labels-idx1-ubyte'" in str(e.value)
    assert "t10k-labels-idx1-ubyte.gz'" in str(e.value)


def test_load_mnist_count_mismatch(tmp_path):
    make_mnist_dir(str(tmp_path))
    write_idx(str(tmp_path / MNIST_TRAIN[1]), np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataError) as e:
        load_mnist(str(tmp_path), "train")
    message = str(e.value)
    assert MNIST_TRAIN[0] in message and MNIST_TRAIN[1] in message
    assert "20 images" in message and "19 labels" in message


def test_load_mnist_bad_contents(tmp_path):
    make_mnist_dir(str(tmp_path))
    write_idx(str(tmp_path / MNIST_TRAIN[0]), np.zeros((20, 25), dtype=np.uint8))
    with pytest.raises(DataError, match="train-images-idx3-ubyte' holds a uint8 array of shape"):
        load_mnist(str(tmp_path), "train")
    write_idx(str(tmp_path / MNIST_TEST[1]), np.full(10, 10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte' holds labels in \[10, 10\]"):
        load_mnist(str(tmp_path), "test")


# ---------------------------------------------------------------- arrays


def test_from_arrays_uint8_and_shapes():
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = from_arrays(x, np.array([0, 2]))
    assert data.name == "arrays" and data.data_shape == (1, 3, 4)
    assert data.num_levels == 256 and data.num_classes == 3
    assert torch.allclose(data.x[:, 0], torch.from_numpy(x).float() / 255)
    assert from_arrays(np.zeros((2, 3, 4, 5), dtype=np.uint8)).data_shape == (3, 4, 5)
    flat = from_arrays(torch.zeros(6, 7, dtype=torch.uint8))
    assert flat.data_shape == (7,) and flat.y is None and flat.num_classes is None


def test_from_arrays_scaling_rules():
    ints = from_arrays(np.array([[0, 2], [4, 1]], dtype=np.int64))
    assert ints.num_levels == 5
    assert torch.equal(ints.x, torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    zeros = from_arrays(np.zeros((2, 2), dtype=np.int32))
    assert zeros.num_levels == 1 and torch.equal(zeros.x, torch.zeros(2, 2))
    bools = from_arrays(torch.tensor([[True, False]]))
    assert bools.num_levels == 2 and torch.equal(bools.x, torch.tensor([[1.0, 0.0]]))
    floats = from_arrays(np.array([[-1.5, 2.0]], dtype=np.float64))
    assert floats.num_levels is None and floats.x.dtype == torch.float32
    assert torch.equal(floats.x, torch.tensor([[-1.5, 2.0]]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_from_arrays_nonfinite(bad):
    x = np.zeros((3, 2))
    x[1, 1] = bad
    with pytest.raises(DataError, match="mine: x contains 1 NaN or infinite"):
        from_arrays(x, name="mine")


def test_from_arrays_bad_inputs():
    with pytest.raises(DataError, match="x has negative values"):
        from_arrays(np.array([[1, -1]], dtype=np.int16))
    with pytest.raises(DataError, match="x has shape"):
        from_arrays(np.zeros(5))
    with pytest.raises(DataError, match="unsupported dtype"):
        from_arrays(np.array([["a"]]))
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(DataError, match="y has dtype float64; labels must be integers"):
        from_arrays(x, np.zeros(3))
    with pytest.raises(DataError, match=r"y has shape \(2,\); expected \(3,\)"):
        from_arrays(x, np.zeros(2, dtype=int))
    with pytest.raises(DataError, match=r"y has shape \(3, 1\)"):
        from_arrays(x, np.zeros((3, 1), dtype=int))
    with pytest.raises(DataError, match="y has negative labels"):
        from_arrays(x, np.array([0, -1, 2]))


# ---------------------------------------------------------------- npz


def test_npz_split_keys(tmp_path):
    path = str(tmp_path / "split.npz")
    x_train = np.full((6, 2, 2), 3, dtype=np.int32)
    x_test = np.full((4, 2, 2), 6, dtype=np.int32)
    np.savez(path, x_train=x_train, y_train=np.arange(6) % 3, x_test=x_test, y_test=np.arange(4))
    train, test = load_npz(path, "train"), load_npz(path, "test")
    assert train.name == path and len(train) == 6 and len(test) == 4
    assert train.data_shape == test.data_shape == (1, 2, 2)
    # Scaling and metadata are shared by both splits.
    assert train.num_levels == test.num_levels == 7
    assert train.num_classes == test.num_classes == 4
    assert torch.all(train.x == 0.5) and torch.all(test.x == 1.0)
    assert train.y.tolist() == [0, 1, 2, 0, 1, 2] and test.y.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("channels", [1, 3])
def test_npz_channel_last_and_channel_first_images_are_the_same_dataset(tmp_path, channels):
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, size=(10, channels, 5, 6), dtype=np.uint8)
    datasets = []
    for name, x in (("first", first), ("last", first.transpose(0, 2, 3, 1))):
        path = str(tmp_path / f"{name}.npz")
        np.savez(path, x_train=x[:7], y_train=np.arange(7), x_test=x[7:], y_test=np.arange(3))
        datasets.append([load_npz(path, split) for split in ("train", "test")])
    for a, b in zip(*datasets):
        assert a.data_shape == b.data_shape == (channels, 5, 6)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.x.is_contiguous() and b.x.is_contiguous()
        assert (a.num_levels, a.num_classes) == (b.num_levels, b.num_classes)
    assert torch.equal(datasets[0][0].x, torch.from_numpy(first[:7]).float() / 255)


@pytest.mark.parametrize("shape", [(10, 5, 7, 7), (10, 2, 28, 28), (10, 28, 28, 2)])
def test_npz_images_without_a_channel_axis_of_1_or_3(tmp_path, shape):
    path = str(tmp_path / "odd.npz")
    np.savez(path, x=np.zeros(shape, dtype=np.uint8))
    with pytest.raises(DataError) as error:
        load_npz(path, "train")
    message = str(error.value)
    assert path in message and f"shape {shape}" in message and "\n" not in message
    assert "(N, C, H, W) or (N, H, W, C) with C = 1 (grey) or 3 (colour)" in message and "(N, H, W)" in message


def test_npz_single_x(tmp_path):
    path = str(tmp_path / "single.npz")
    x = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    np.savez(path, x=x, y=np.arange(50))
    train, test = load_npz(path, "train"), load_npz(path, "test")
    assert len(train) == 40 and len(test) == 10
    assert set(train.y.tolist()).isdisjoint(test.y.tolist())
    assert torch.equal(test.y, torch.from_numpy(fixed_split_indices(50, "test")))
    assert torch.equal(test.x, torch.from_numpy(x[test.y.numpy()]))
    assert train.num_classes == test.num_classes == 50
    assert torch.equal(load_npz(path, "test").x, test.x)
    unlabeled = str(tmp_path / "unlabeled.npz")
    np.savez(unlabeled, x=x)
    assert load_npz(unlabeled, "train").y is None


def test_npz_errors(tmp_path):
    missing = str(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="missing.npz' does not exist"):
        load_npz(missing, "train")

    path = str(tmp_path / "wrong.npz")
    np.savez(path, images=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"wrong.npz' has no usable keys: found \['images'\]"):
        load_npz(path, "train")

    np.savez(path, x_train=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"no key 'x_test' for the test split: found \['x_train'\]"):
        load_npz(path, "test")

    np.savez(path, x=np.zeros((3, 2)), y=np.zeros(4, dtype=int))
    with pytest.raises(DataError, match=r"key 'x' has shape \(3, 2\) but key 'y' has shape \(4,\)"):
        load_npz(path, "train")

    np.savez(path, x_train=np.zeros((3, 2)), y_train=np.zeros(2, dtype=int))
    with pytest.raises(DataError, match="wrong.npz': key 'x_train' .* key 'y_train'"):
        load_npz(path, "train")

    np.savez(path, x_train=np.zeros((3, 2)), y_train=np.zeros(3, dtype=int), x_test=np.zeros((1, 2)))
    with pytest.raises(DataError, match=r"has labels \['y_train'\] but not \['y_test'\]"):
        load_npz(path, "train")

    np.savez(path, x_train=np.zeros((3, 2)), x_test=np.zeros((1, 3)))
    with pytest.raises(DataError, match=r"key\(s\) \['x_train', 'x_test'\] cannot be combined"):
        load_npz(path, "train")

    np.savez(path, x=np.array([[0.0, np.nan]]))
    with pytest.raises(DataError, match=r"wrong.npz' key\(s\) \['x'\] contains 1 NaN"):
        load_npz(path, "train")

    corrupt = write_bytes(tmp_path / "corrupt.npz", b"not a zip file")
    with pytest.raises(DataError, match="corrupt.npz' is not an npz archive"):
        load_npz(corrupt, "train")
    empty = write_bytes(tmp_path / "empty.npz", b"")
    with pytest.raises(DataError, match="empty.npz' is not an npz archive"):
        load_npz(empty, "train")

    np.savez(path, x=np.zeros((10, 0)))
    with pytest.raises(DataError, match=r"has shape \(10, 0\); expected at least one example with at least one feature"):
        load_npz(path, "train")
    np.savez(path, x=np.zeros((10, 2)), y=np.array([0] * 9 + [10**12]))
    with pytest.raises(DataError, match="labels up to 1000000000000; labels must be class numbers below 100000"):
        load_npz(path, "train")
    os.makedirs(tmp_path / "folder.npz")
    with pytest.raises(DataError, match="folder.npz' is a directory"):
        load_npz(str(tmp_path / "folder.npz"), "train")


def test_npz_members_are_checked_before_they_are_read(tmp_path):
    path = str(tmp_path / "members.npz")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.txt", "not an array")
    with pytest.raises(DataError, match="member 'x.txt' is not an array"):
        load_npz(path, "train")

    objects = io.BytesIO()
    np.save(objects, np.array([{"a": 1}, 2], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", objects.getvalue())
    with pytest.raises(DataError, match="holds Python objects") as info:
        load_npz(path, "train")
    assert "allow_pickle" not in str(info.value)  # never advise unpickling a user's file

    huge = io.BytesIO()  # a header that declares 25.6 TB, followed by 100 bytes
    np.lib.format.write_array_header_1_0(huge, {"descr": "<f4", "fortran_order": False, "shape": (80_000, 80_000_000)})
    huge.write(bytes(100))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", huge.getvalue())
    with pytest.raises(DataError, match=r"shape \(80000, 80000000\) .* truncated or damaged: it declares 25600000000000 bytes"):
        load_npz(path, "train")


def test_every_split_needs_two_examples(tmp_path):
    path = str(tmp_path / "small.npz")
    np.savez(path, x=np.zeros((5, 2)))
    with pytest.raises(DataError, match="the test split has 1 example"):
        load_dataset(path, "test")
    np.savez(path, x=np.zeros((6, 2)))
    assert len(load_dataset(path, "test")) == 2


# ---------------------------------------------------------------- binarize


def test_binarize_threshold():
    x = torch.tensor([0.0, 0.5, 0.51, 1.0])
    assert torch.equal(binarize(x), torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_binarize_dynamic():
    x = torch.rand(200, 100, generator=torch.Generator().manual_seed(0))
    a = binarize(x, "dynamic", generator=torch.Generator().manual_seed(1))
    b = binarize(x, "dynamic", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert a.dtype == x.dtype and a.device == x.device
    assert abs(a.mean().item() - x.mean().item()) < 0.01
    generator = torch.Generator().manual_seed(2)
    assert not torch.equal(binarize(x, "dynamic", generator), binarize(x, "dynamic", generator))


def test_binarize_unknown_method():
    with pytest.raises(DataError, match="unknown binarization method 'stochastic'.*'threshold' or 'dynamic'"):
        binarize(torch.zeros(3), "stochastic")


# ---------------------------------------------------------------- minibatches


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n,batch_size", [(10, 3), (10, 5), (7, 10), (0, 4)])
def test_iterate_minibatches_covers_once(n, batch_size, shuffle):
    batches = list(iterate_minibatches(n, batch_size, shuffle))
    assert all(b.dtype == torch.int64 and b.device.type == "cpu" for b in batches)
    assert all(len(b) == batch_size for b in batches[:-1])
    assert len(batches) == -(-n // batch_size)
    indices = torch.cat(batches).tolist() if batches else []
    assert sorted(indices) == list(range(n))
    if not shuffle:
        assert indices == list(range(n))


def test_iterate_minibatches_deterministic():
    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return [torch.cat(list(iterate_minibatches(50, 8, True, generator))) for _ in range(2)]

    first, second = run(0), run(0)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[1])  # a fresh permutation per epoch
    assert not torch.equal(first[0], torch.arange(50))


def test_iterate_minibatches_device_and_errors():
    (batch,) = iterate_minibatches(3, 5, False, device=torch.device("cpu"))
    assert batch.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="batch_size must be at least 1, got 0"):
        iterate_minibatches(10, 0, True)
    with pytest.raises(DataError, match="n must be non-negative"):
        iterate_minibatches(-1, 2, False)
