"""The clairvoyant reference: Festina's decisions, adjusted by a planner that sees the future.

It bounds what anticipation can buy a local controller: no online policy knows the arrivals to
come, this one does. Every ``hold_s`` it forks the simulator's state
(:meth:`~festgym.sim.simulator.Simulator.fork`: the copy holds the trace, so the true future
arrivals come in it) once per candidate adjustment, rolls each copy ``horizon_s`` forward, and
commits, per GPU, the adjustment whose rollout cost least on that GPU; it holds until the next
plan (model-predictive control with perfect foresight).

**Search.**

* Candidates: the base policy's (Festina's) own decision with its clock moved by each of
  ``steps`` levels of Festina's clock grid (:mod:`festgym.policies.residual`, the same action
  space as the residual learned controllers); 0, Festina itself, is always among them. Shares,
  placement and consolidation stay Festina's.
* A rollout applies one candidate to every GPU for ``hold_s``, then Festina alone to the end of
  ``horizon_s``. Each GPU's cost is its own energy and its own requests' SLO lateness in that
  rollout (``cost`` below). *Assumption:* GPUs interact only through placement, which Festina
  keeps deciding, so one rollout per candidate scores every GPU (K rollouts a plan instead of
  K^G). With one GPU the search is exact.
* Cost, as the environments' reward: ``E/(TDP·interval) + ttft_weight·TTFT lateness +
  tbt_weight·TBT excess`` (smooth terms, :class:`~festgym.sim.reward.EnergySLOReward`). A
  candidate replaces Festina's decision only if it costs strictly less.

**Guarantee.** With one GPU, ``hold_s`` equal to the control interval and a horizon reaching
the end of the run, this is the rollout algorithm over Festina: each decision is at least as
good as continuing with Festina, so the run costs no more than Festina's (tested).

**Cost.** A plan costs K forks and K·``horizon_s`` of simulation; a run costs about
1 + K·``horizon_s``/``hold_s`` plain runs (:attr:`Clairvoyant.rollout_s` counts the simulated
seconds; tested against that bound).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from festgym.config import build_dataclass, check_ranges
from festgym.control.actions import Action, GpuControl
from festgym.policies.residual import Residual
from festgym.sim.lifecycle import Mechanisms
from festgym.sim.policy import BasePolicy, Policy
from festgym.sim.reward import EnergySLOReward, Meter, RewardConfig
from festgym.sim.views import ClusterView, GpuView, Request

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.simulator import Simulator


@dataclass(frozen=True)
class ClairvoyantConfig:
    """The search of :class:`Clairvoyant` (the shipped ``policies/clairvoyant.yaml`` holds these)."""

    horizon_s: float = 20.0
    """Simulated seconds each candidate is rolled forward from a plan."""
    hold_s: float = 5.0
    """Seconds a plan's adjustments hold (a plan every ``hold_s``; at least the control interval)."""
    steps: tuple[int, ...] = (-2, -1, 0, 1, 2)
    """Candidate clock adjustments, in levels of Festina's clock grid (0 is added if missing)."""
    ttft_weight: float = 1.0
    """Cost weight of TTFT lateness (in TTFT-SLO units), as the default scenario's reward."""
    tbt_weight: float = 0.01
    """Cost weight of TBT excess (per gap, in TBT-SLO units), as the default scenario's reward."""

    def __post_init__(self):
        check_ranges(self, {"horizon_s": self.horizon_s > 0, "hold_s": self.hold_s > 0,
                            "steps": bool(self.steps) and all(isinstance(k, int) for k in self.steps),
                            "ttft_weight": self.ttft_weight >= 0, "tbt_weight": self.tbt_weight >= 0},
                     {"horizon_s": "> 0", "hold_s": "> 0", "steps": "a non-empty list of whole numbers",
                      "ttft_weight": "≥ 0", "tbt_weight": "≥ 0"})

    @property
    def candidates(self) -> tuple[int, ...]:
        """The adjustments tried: 0 first (ties go to Festina), then ``steps`` in order."""
        return tuple(dict.fromkeys((0, *self.steps)))


class Clairvoyant(BasePolicy):
    """``base`` (Festina in the rule registry's ``clairvoyant``) whose clocks a perfect-foresight
    planner adjusts (see the module docstring). ``**params``: :class:`ClairvoyantConfig` fields.
    """

    name = "clairvoyant"

    def __init__(self, base: Policy, **params: Any):
        self.config = build_dataclass(ClairvoyantConfig, params, "clairvoyant")
        self.base = base
        self.queue_order = getattr(base, "queue_order", "fcfs")
        self.mechanisms = getattr(base, "mechanisms", Mechanisms())  # its engines live as the base's
        self.reward = RewardConfig(ttft_weight=self.config.ttft_weight, tbt_weight=self.config.tbt_weight)
        self.adjusted = Residual(self.base)
        self.plans = self.forks = self.changed = 0
        self.rollout_s = 0.0
        self.costs: dict[int, dict[int, float]] = {}
        """The last plan's cost of each candidate (adjustment -> GPU index -> cost): what a
        learner imitating the planner is taught (``benchmarks/predictable_headroom.py``)."""
        self._next_plan = 0.0

    def reset(self, cluster: ClusterView) -> None:
        self.adjusted.reset(cluster)
        self.adjusted.steps = {}
        self.plans = self.forks = self.changed = 0
        self.rollout_s = 0.0
        self.costs = {}
        self._next_plan = 0.0

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        return self.adjusted.place(request, cluster)

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        return self.adjusted.control(gpu, now)

    def consolidate(self, cluster: ClusterView, now: float) -> Sequence[Action]:
        return self.adjusted.consolidate(cluster, now)

    def foresee(self, sim: Simulator, now: float) -> None:
        """The simulator's hook at the start of each control tick: plan when the last plan's hold ends."""
        if now + 1e-9 < self._next_plan:
            return
        self._next_plan = now + max(self.config.hold_s, sim.config.control_interval_s)
        awake = [g.index for g in sim.gpus if not g.parked and g.instances]
        if not awake:
            self.adjusted.steps, self.costs = {}, {}
            return
        self.plans += 1
        self.costs = costs = {k: self._rollout(sim, now, k, awake) for k in self.config.candidates}
        chosen = {}
        for g in awake:
            best = min(costs, key=lambda k: (costs[k][g], abs(k)))
            if costs[best][g] < costs[0][g] - 1e-12 * max(1.0, abs(costs[0][g])):
                chosen[g] = best
        self.changed += len(chosen)
        self.adjusted.steps = chosen

    def _rollout(self, sim: Simulator, now: float, steps: int, gpus: list[int]) -> dict[int, float]:
        """Each GPU's cost over the horizon with every GPU's clock ``steps`` levels off Festina's
        for ``hold_s``, then Festina's."""
        until = now + max(self.config.hold_s, sim.config.control_interval_s)
        twin = sim.fork(Residual(self.base, dict.fromkeys(gpus, steps), until_s=until))
        self.forks += 1
        meters = {g: Meter([twin.gpus[g]]) for g in gpus}
        for meter in meters.values():
            meter.start(now)
        end = min(now + self.config.horizon_s, twin.end)
        twin.advance(end)
        self.rollout_s += end - now
        interval = sim.config.control_interval_s
        return {g: self._cost(meter, twin.gpus[g].spec.tdp_w * interval, twin.now) for g, meter in meters.items()}

    def _cost(self, meter: Meter, reference_j: float, now: float) -> float:
        reward, _ = EnergySLOReward(self.reward, reference_j)(meter.read(now))
        return -reward


__all__ = ["Clairvoyant", "ClairvoyantConfig"]
