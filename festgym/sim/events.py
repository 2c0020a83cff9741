"""The simulator's pending events: what entities schedule, and the only thing of the loop they hold.

Events are ``(time, insertion number, callback, argument)`` in one heap, so that ties in time run
in the order they were scheduled and a run is deterministic: the same trace and policy give
bit-identical results. A callback is ``callback(argument, now)``; instances and GPUs schedule
their own (an iteration's end, a clock change taking effect) and never see the loop itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from heapq import heappush
from typing import Any

Callback = Callable[[Any, float], None]
"""``callback(argument, now)``: each kind of event takes its own argument (a version number, ``None``)."""
Event = tuple[float, int, Callback, object]


def copy_callback(callback: Callback, memo: dict[int, Any]) -> Callback:
    """``callback`` bound to the copy of its owner in ``memo`` (copied now if it is not there yet).
    ``copy.deepcopy`` takes a compiled class's bound method for an atomic built-in and would leave
    it bound to the original object."""
    owner = getattr(callback, "__self__", None)
    if owner is None or isinstance(owner, type(copy)):  # a plain function, or a module's
        return callback
    name: str = callback.__name__
    bound: Callback = getattr(copy.deepcopy(owner, memo), name)
    return bound


class EventQueue:
    """Pending events, earliest first (the loop pops ``heap``; everyone else :meth:`schedule`\\ s)."""

    __slots__ = ("heap", "scheduled")

    def __init__(self) -> None:
        self.heap: list[Event] = []
        self.scheduled = 0
        """Events scheduled so far (the tie-breaking insertion number of the last one)."""

    def schedule(self, t: float, callback: Callback, arg: object) -> None:
        """Run ``callback(arg, t)`` at time ``t``, after every event already scheduled for ``t``."""
        self.scheduled += 1
        heappush(self.heap, (t, self.scheduled, callback, arg))

    def __deepcopy__(self, memo: dict[int, Any]) -> EventQueue:
        """A copy whose events call the copies of their owners (a forked run's, :meth:`Simulator.fork`)."""
        twin = EventQueue()
        memo[id(self)] = twin
        twin.scheduled = self.scheduled
        twin.heap = [(t, n, copy_callback(fn, memo), copy.deepcopy(arg, memo)) for t, n, fn, arg in self.heap]
        return twin
