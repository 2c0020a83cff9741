"""The simulator's pending events: what entities schedule, and the only thing of the loop they hold.

Events are ``(time, insertion number, callback, argument)`` in one heap, so that ties in time run
in the order they were scheduled and a run is deterministic: the same trace and policy give
bit-identical results. A callback is ``callback(argument, now)``; instances and GPUs schedule
their own (an iteration's end, a clock change taking effect) and never see the loop itself.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush
from typing import Any

Callback = Callable[[Any, float], None]
"""``callback(argument, now)``: each kind of event takes its own argument (a version number, ``None``)."""
Event = tuple[float, int, Callback, object]


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
