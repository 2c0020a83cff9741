"""A connection to Ray for the jobs that scale out on it (``--ray [ADDRESS]``): compare, evaluate,
sensitivity, benchmark and RLlib training. Ray itself is imported only when asked for (the ray extra).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from festgym.errors import FestgymError

LOCAL_RAY = "local"
"""``--ray`` without an address: a Ray started in this process, on this machine's CPUs."""


@contextmanager
def ray_session(address: str, cpus: int | None = None) -> Iterator[Any]:
    """The ``ray`` module, connected: to a Ray started here (``address`` ``local``, with at least
    ``cpus`` CPUs: more than the machine has oversubscribes it rather than waiting forever) or to
    the cluster at ``address``; a Ray this starts is shut down on leaving. One already connected
    in this process is used as it is."""
    try:
        import ray
    except ImportError:
        raise FestgymError("--ray needs Ray: pip install 'festgym[ray]' (in a checkout: pip install -e '.[ray]')") \
            from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address == LOCAL_RAY:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                         num_cpus=None if cpus is None else max(cpus, os.cpu_count() or 1))
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FestgymError(f"--ray {address}: cannot reach a Ray cluster there ({exc}); give its address "
                               f"(auto, or ray://HOST:10001), or --ray alone for a Ray started here") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


__all__ = ["LOCAL_RAY", "ray_session"]
