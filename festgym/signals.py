"""Signals around GPU changes: the process must not die with a GPU changed.

* :func:`raising_on` turns SIGTERM and SIGHUP (a service manager stopping the process, a closed
  terminal) into an exception, as Python already does for SIGINT, so that ``finally`` clauses
  restore the GPU.
* :func:`deferred` ignores SIGTERM, SIGINT and SIGHUP while a restore runs, so that a second
  signal cannot cut it short.

Signal handlers belong to the main thread; elsewhere both are no-ops.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

STOPPING = (signal.SIGTERM, signal.SIGHUP)
"""Signals that ask a process to stop (SIGINT raises KeyboardInterrupt by default)."""


@contextmanager
def _handlers(handler, signums) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def raising_on(make: Callable[[int], BaseException]) -> AbstractContextManager[None]:
    """Within the block, SIGTERM and SIGHUP raise ``make(signum)``."""

    def handler(signum, frame) -> None:
        raise make(signum)

    return _handlers(handler, STOPPING)


def deferred() -> AbstractContextManager[None]:
    """Within the block, SIGTERM, SIGINT and SIGHUP are ignored."""
    return _handlers(signal.SIG_IGN, (*STOPPING, signal.SIGINT))


__all__ = ["STOPPING", "deferred", "raising_on"]
