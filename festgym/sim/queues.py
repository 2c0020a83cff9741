"""Waiting-queue disciplines: the order in which an instance admits its waiting requests.

A policy names one (``Policy.queue_order``) and every instance of the run gets a queue of that
kind, as vLLM's scheduler takes its request queue as a strategy object:

* ``fcfs`` (:class:`FcfsQueue`): first come, first served (vLLM's default);
* ``llf`` (:class:`LeastLaxityQueue`): least laxity first, laxity being the TTFT deadline minus
  the prompt's prefill time at the instance's share and clock when it arrives (an estimate; the
  order is fixed on arrival, as a priority queue's is).

Admission is head-of-line in both: the head waits for KV space. A preempted request goes back to
the head (:meth:`WaitingQueue.push_front`), whatever the discipline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.instance import Instance, Seq


@mypyc_attr(allow_interpreted_subclasses=True)
class WaitingQueue:
    """The requests of one instance waiting for admission, head first."""

    __slots__ = ("seqs",)

    def __init__(self) -> None:
        self.seqs: deque[Seq] = deque()

    def push(self, seq: Seq, inst: Instance) -> None:
        """Queue an arriving (or migrated) request of ``inst``, in this discipline's order."""
        raise NotImplementedError

    def push_front(self, seq: Seq) -> None:
        """Put a preempted request back at the head: it is admitted first."""
        self.seqs.appendleft(seq)

    def head(self) -> Seq:
        return self.seqs[0]

    def pop(self) -> Seq:
        """Take the head (admitted)."""
        return self.seqs.popleft()

    def clear(self) -> None:
        self.seqs.clear()

    def __len__(self) -> int:
        return len(self.seqs)

    def __bool__(self) -> bool:
        return len(self.seqs) > 0

    def __iter__(self) -> Iterator[Seq]:
        return iter(self.seqs)


@mypyc_attr(allow_interpreted_subclasses=True)
class FcfsQueue(WaitingQueue):
    """First come, first served."""

    __slots__ = ()

    def push(self, seq: Seq, inst: Instance) -> None:
        self.seqs.append(seq)


@mypyc_attr(allow_interpreted_subclasses=True)
class LeastLaxityQueue(WaitingQueue):
    """Least laxity first: TTFT deadline minus the prompt's estimated prefill time."""

    __slots__ = ()

    def push(self, seq: Seq, inst: Instance) -> None:
        seq.key = seq.deadline_s - inst.prefill_time_s(seq.todo)
        seqs = self.seqs
        i = len(seqs)
        while i > 0 and seqs[i - 1].key > seq.key:  # arrivals come roughly in key order: scan from the back
            i -= 1
        seqs.insert(i, seq)


QUEUE_ORDERS: dict[str, type[WaitingQueue]] = {"fcfs": FcfsQueue, "llf": LeastLaxityQueue}
"""Queue disciplines by the name a policy's ``queue_order`` gives."""

