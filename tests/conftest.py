"""Fixtures shared by the whole suite: threads and the digits (helpers are in tests/common.py)."""

import pytest
import torch

from pyprobvae.data import load_dataset


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
