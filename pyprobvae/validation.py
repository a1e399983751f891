"""
The switch for value checks that cost a host synchronisation.

Checking a tensor's values (are the encoder's outputs finite? do the codes
lie in the codebook?) means reading a result back from the device, which
stalls an accelerator on every training step. Like Pyro's
``pyro.enable_validation``, such checks run only while validation is
enabled; checks of shapes and dtypes, which read no values, always run.
Entry points that read user data (the command line, loading a data set,
evaluation) check the data themselves, once, whatever the switch says.
"""

import contextlib
from typing import Iterator

_enabled = False


def enable_validation(is_validate: bool = True) -> None:
    """
    Turn the value checks of the hot path on or off (off by default).

    :param bool is_validate: whether to check.
    """
    global _enabled
    _enabled = bool(is_validate)


def is_validation_enabled() -> bool:
    """Whether value checks that synchronise with the device run."""
    return _enabled


@contextlib.contextmanager
def validation_enabled(is_validate: bool = True) -> Iterator[None]:
    """Context manager that enables (or disables) the value checks inside it."""
    previous = _enabled
    enable_validation(is_validate)
    try:
        yield
    finally:
        enable_validation(previous)
