"""A stop request (SIGINT / SIGTERM) that cannot be lost.

The CLI's handler raises `Stopped` wherever the signal lands. CPython drops an exception raised inside some C-level
calls instead of propagating it: seen here, a SIGINT landing in `copy.deepcopy`'s `copyreg._slotnames` (the
backbone copied for a fine-tune) vanished, the handler had already set further signals to be ignored, and the run
trained to the end and exited 0 (`tests/test_signals.py`, about 1 start in 10 under load). So the handler also
records the request here, and the long loops call `check()` at safe points (every training step, every cell) to
raise it again.
"""
from __future__ import annotations


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM: a KeyboardInterrupt, so the paths that already let an interrupt through (cells, atomic
    writes, claims released in `finally`, DataLoader workers that exit quietly on it) treat both the same."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_requested: int | None = None  # the first stop signal received by this process's CLI, if any


def request(signum: int) -> None:
    global _requested
    if _requested is None:
        _requested = signum


def clear() -> None:
    """A new CLI invocation in the same process (tests, notebooks) starts unstopped."""
    global _requested
    _requested = None


def check() -> None:
    """Raise the pending stop, if a signal asked for one (a no-op attribute read otherwise)."""
    if _requested is not None:
        raise Stopped(_requested)
