"""The simulator's reference rule policy: least-loaded placement, default clock, even SM shares.

Tests, benchmarks and ``serve-bench`` use it; the published baselines live in
:mod:`festgym.policies.baselines`.
"""

from __future__ import annotations

from festgym.control.actions import GpuControl
from festgym.sim.policy import BasePolicy
from festgym.sim.views import ClusterView, GpuView, InstanceView, Request


def load_score(inst: InstanceView) -> float:
    """Outstanding work of an instance, in sequences (queued + running), over its batch limit."""
    return (inst.queue_len + inst.running + inst.prefilling) / inst.max_num_seqs


class LeastLoaded(BasePolicy):
    """Route to the least-loaded instance of the model; when every instance is over ``spawn_at``
    of its batch limit (or none exists), cold-start one on the emptiest GPU that can host it.
    Default clock, SM shares split evenly among resident models every control interval.

    It is the simulator's reference rule policy (tests, benchmarks, ``serve-bench``); the
    published baselines live in :mod:`festgym.policies`.
    """

    name = "least-loaded"

    def __init__(self, spawn_at: float = 0.75, clock_mhz: float | None = None):
        self.spawn_at = spawn_at
        self.clock_mhz = clock_mhz

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        best, best_score = None, float("inf")
        for inst in cluster.instances_of(request.model):
            score = load_score(inst)
            if score < best_score:
                best, best_score = inst.gpu, score
        if best is not None and best_score < self.spawn_at:
            return best
        spare = [g for g in cluster.gpus if g.instance(request.model) is None
                 and cluster.can_host(g.index, request.model)]
        if spare:
            return min(spare, key=lambda g: (len(g.instances), g.parked, g.index)).index
        return best

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        instances = gpu.instances
        share = 1.0 / max(len(instances), 1)
        shares = {i.model: share for i in instances if i.share != share}
        clock = self.clock_mhz or gpu.spec.default_sm_clock_mhz
        if not shares and clock == gpu.clock_mhz:
            return None
        return GpuControl(clock_mhz=clock, shares={i.model: share for i in instances} if shares else None)
