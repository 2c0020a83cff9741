"""Signals around GPU changes: the process must not die with a GPU changed.

* :func:`raising_on` turns every catchable signal whose default action ends the process
  (:data:`STOPPING`) into an exception, so that ``finally`` clauses restore the GPU.
* :func:`deferred` ignores them while a restore runs, so that a second signal cannot cut it short.

Signal handlers belong to the main thread; elsewhere both are no-ops. A signal whose handler was
installed by C code (``signal.getsignal`` gives None) is left to that code: Python could not put
its handler back afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

_TERMINATING = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF",
                "SIGXCPU", "SIGIO", "SIGPOLL", "SIGPWR", "SIGSTKFLT", "SIGEMT", "SIGLOST")
"""Signals whose default action terminates the process (with or without a core dump), by name:
those this platform lacks are skipped. Left out, with why:

* SIGKILL and SIGSTOP cannot be caught, blocked or ignored (the kernel acts on them): SIGKILL
  leaves the GPU as it was unless a privileged actuator (:mod:`festgym.deploy.actuator`) made the
  writes; it restores when the killed client's socket closes.
* SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS and SIGTRAP report a fault in the process itself
  (or ``abort()``): Python runs a handler only between bytecodes, which a faulting instruction never
  reaches (it would fault again and hang instead of dying), and ``faulthandler`` owns them.
* SIGPIPE and SIGXFSZ: Python ignores them at startup, so that a write to a closed pipe or past the
  file-size limit raises ``OSError`` (EPIPE, EFBIG), which unwinds through the restore like any
  error; :func:`raising_on` keeps them ignored (:data:`IGNORED`) rather than stopping on them.
"""


def _available(names: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(sorted({int(getattr(signal, n)) for n in names if hasattr(signal, n)}))


_REALTIME = tuple(range(signal.SIGRTMIN, signal.SIGRTMAX + 1)) if hasattr(signal, "SIGRTMIN") else ()
STOPPING: tuple[int, ...] = _available(_TERMINATING) + _REALTIME
"""Every catchable signal whose default action ends the process (the real-time ones too: their
default is to terminate)."""
IGNORED: tuple[int, ...] = _available(("SIGPIPE", "SIGXFSZ"))
"""Signals kept ignored, so that the failed write surfaces as an ``OSError`` instead."""

_deferring = False
"""Whether :func:`deferred` is in force: :func:`raising_on`'s handlers then raise nothing. Set before
its handlers are swapped in one by one, so that a signal landing mid-swap cannot cut a restore short."""


def name(signum: int) -> str:
    """``SIGTERM``, ..., ``SIGRTMIN+3`` (the real-time signals between the ends have no member)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}" if signum in _REALTIME else f"signal {signum}"


@contextmanager
def _handlers(handlers: dict[int, Callable | int]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, h) for s, h in handlers.items() if signal.getsignal(s) is not None}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def raising_on(make: Callable[[int], BaseException]) -> AbstractContextManager[None]:
    """Within the block, each signal of :data:`STOPPING` raises ``make(signum)``."""

    def handler(signum, frame) -> None:
        if not _deferring:
            raise make(signum)

    return _handlers({**dict.fromkeys(STOPPING, handler), **dict.fromkeys(IGNORED, signal.SIG_IGN)})


@contextmanager
def deferred() -> Iterator[None]:
    """Within the block, the signals of :data:`STOPPING` are ignored."""
    global _deferring
    outer = _deferring
    if threading.current_thread() is threading.main_thread():
        _deferring = True
    try:
        with _handlers(dict.fromkeys(STOPPING, signal.SIG_IGN)):
            yield
    finally:
        _deferring = outer


__all__ = ["IGNORED", "STOPPING", "deferred", "name", "raising_on"]
