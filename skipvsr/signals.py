"""SIGTERM for long jobs (a video, a training run): the one place that installs the handler."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def on_sigterm(action: Callable[[int], None]) -> Iterator[None]:
    """Within this block SIGTERM calls ``action(signum)``; the previous handler comes back after.

    Only the main thread can own signal handlers: elsewhere the block runs without one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: action(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_as_interrupt() -> contextlib.AbstractContextManager[None]:
    """Within this block SIGTERM raises ``KeyboardInterrupt``, so cleanup code runs."""
    return on_sigterm(_interrupt)
