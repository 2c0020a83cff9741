"""Queue disciplines as strategy objects (festgym.sim.queues): the order instances admit in."""

from __future__ import annotations

import numpy as np
import pytest

from festgym.policies.least_loaded import LeastLoaded
from festgym.sim.instance import Instance, Seq
from festgym.sim.queues import QUEUE_ORDERS, FcfsQueue, LeastLaxityQueue, WaitingQueue
from festgym.sim.simulator import Simulator
from festgym.sim.workload import Trace


@pytest.fixture(scope="module")
def inst() -> Instance:
    """An instance to queue for (its prefill times set the laxities)."""
    sim = Simulator(["H100-SXM-80GB"], ["Llama-3.2-1B"])
    sim.start(Trace.build(np.zeros(0), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64),
                          np.zeros(0, dtype=np.int64), ("Llama-3.2-1B",), 10.0), LeastLoaded())
    found = sim.cold_start(sim.gpus[0], 0, 0.0)
    assert found is not None
    return found


def seq(rid: int, prompt: int, deadline_s: float) -> Seq:
    return Seq(rid, prompt, 10, deadline_s, 1.0)


def test_fcfs_admits_in_arrival_order_and_a_preempted_request_first(inst):
    queue = FcfsQueue()
    for k in range(3):
        queue.push(seq(k, 100, 5.0 - k), inst)
    queue.push_front(seq(9, 100, 9.0))
    assert [s.rid for s in queue] == [9, 0, 1, 2] and len(queue) == 4 and queue
    assert queue.head().rid == 9 and queue.pop().rid == 9 and queue.head().rid == 0


def test_least_laxity_first_orders_by_deadline_minus_prefill(inst):
    long, short = inst.prefill_time_s(16000), inst.prefill_time_s(100)
    queue = LeastLaxityQueue()
    queue.push(seq(0, 100, 1.0), inst)  # laxity 1 - short
    queue.push(seq(1, 16000, 0.4 + long), inst)  # laxity 0.4: urgent, though due after request 2
    queue.push(seq(2, 100, 0.5), inst)  # laxity 0.5 - short
    assert 0.4 + long > 0.5 and short < 0.1
    assert [s.rid for s in queue] == [1, 2, 0]
    assert [s.key for s in queue] == sorted(s.key for s in queue)
    queue.push_front(seq(7, 100, 50.0))  # preempted: back to the head, whatever its laxity
    assert queue.pop().rid == 7


def test_equal_laxity_keeps_arrival_order(inst):
    queue = LeastLaxityQueue()
    for k in range(4):
        queue.push(seq(k, 100, 1.0), inst)
    assert [s.rid for s in queue] == [0, 1, 2, 3]


def test_the_registry_names_every_discipline(inst):
    assert {"fcfs": FcfsQueue, "llf": LeastLaxityQueue} == QUEUE_ORDERS
    with pytest.raises(NotImplementedError):
        WaitingQueue().push(seq(0, 1, 1.0), inst)
    assert not FcfsQueue() and len(FcfsQueue()) == 0
