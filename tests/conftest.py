"""Fixtures shared by the whole suite: threads and the digits (helpers are in tests/common.py)."""

import os

import pytest
import torch

from pyprobvae.data import load_dataset

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # pytest -n N: the cores shared among the N workers, not all to each
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: torch threads only add contention, so use one for the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits():
    """The bundled 8x8 digits: ``(train, test)``, 1437 and 360 images with labels."""
    return load_dataset("digits", "train"), load_dataset("digits", "test")
