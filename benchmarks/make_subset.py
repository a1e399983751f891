#!/usr/bin/env python
"""
Write the first N training and M test images (and labels) of a folder of
MNIST-format IDX files (MNIST, Fashion-MNIST) as an ``.npz`` data set, for
runs that the full set makes too slow on a CPU.

The archive holds ``x_train``, ``y_train``, ``x_test`` and ``y_test``: the
raw uint8 images of shape ``(count, rows, cols)`` and the labels, so that
``--dataset OUT.npz`` sees exactly what ``--dataset mnist --data-dir DIR``
sees on those examples (:func:`pyprobvae.data.from_arrays` divides uint8 by
255 with 256 levels and adds the channel axis, as
:func:`pyprobvae.data.load_mnist` does).

Usage::

    python benchmarks/make_subset.py /work/data/fashion-mnist /work/data/fmnist10k.npz --train 10000 --test 2000
"""

import argparse
import os

import numpy as np

from pyprobvae.data import read_idx

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def subset(idx_dir: str, counts: dict) -> dict:
    """``{"x_train": ..., "y_train": ..., "x_test": ..., "y_test": ...}``: the first ``counts[split]`` examples of each split."""
    arrays = {}
    for split, (images, labels) in FILES.items():
        x, y = (read_idx(os.path.join(idx_dir, name)) for name in (images, labels))
        if counts[split] > len(x):
            raise SystemExit(f"{idx_dir} has {len(x)} {split} images; asked for {counts[split]}")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[: counts[split]], y[: counts[split]].astype(np.int64)
    return arrays


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("idx_dir", help="folder of the four IDX files (.gz allowed)")
    parser.add_argument("out", help="the .npz to write")
    parser.add_argument("--train", type=int, default=10000, help="training examples (default 10000)")
    parser.add_argument("--test", type=int, default=2000, help="test examples (default 2000)")
    args = parser.parse_args(argv)
    arrays = subset(args.idx_dir, {"train": args.train, "test": args.test})
    np.savez_compressed(args.out, **arrays)
    print(args.out, {key: value.shape for key, value in arrays.items()})


if __name__ == "__main__":
    main()
