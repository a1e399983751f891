import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: torch threads only add contention, so use one for the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
