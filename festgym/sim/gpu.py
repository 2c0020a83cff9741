"""One GPU of the simulated cluster: state, device clock, memory and exactly integrated energy.

A multi-GPU engine is resident on each GPU it spans (it is in each one's ``instances``, holds its
per-GPU memory on each, and each books its per-GPU power).

States (energy is reported per state, :data:`festgym.control.states.STATES`), by priority:

* ``busy``: at least one resident instance is running iterations;
* ``loading``: an engine copies weights in, initialises, restarts (an MPS share change) or wakes
  from sleep, and nothing runs;
* ``idle``: an engine is loaded and nothing runs;
* ``asleep``: the only engines here are asleep (memory freed, CUDA context kept);
* ``empty``: no engine: the floor of a GPU whose node is on (``PowerStates.empty_w``);
* ``booting`` / ``off``: its node boots or shuts down / is off (:mod:`festgym.sim.node`).

Power model (:class:`festgym.profiles.constants.PowerStates`):

* busy: the profiles' busy-power intercept ``idle_w`` plus the sum of each running instance's
  dynamic power (its profile power at its SM share and the device clock, minus the intercept),
  capped at TDP (the limiter), and never below resident idle power at the clock. Assumption:
  co-resident instances' dynamic powers add (each profile power already scales SM activity with
  the share), and an instance loading beside a running one adds nothing;
* loading: ``loading_w``;
* idle and asleep: resident idle power at the device clock (``GpuSpec.resident_idle_w``), so a
  clock locked low on an idle GPU lowers it and one left at default pays;
* empty: ``empty_w``; booting: ``empty_w``; off: 0 (the node's standby is host power).

A released (``Park``) GPU is an empty GPU that may be powered off with its node; releasing saves
nothing by itself.

Memory-bandwidth contention: each running instance's profile gives the fraction of peak HBM
bandwidth it uses alone at its share; kernels reach at most ``LatencyConstants.hbm_frac`` of
peak. Let U be the sum over running instances divided by ``hbm_frac``. When U exceeds 1, every
running instance's step stretches by U (bandwidth is shared in proportion to demand; compute
overlaps) and its dynamic power is divided by U (the same bytes and FLOPs over a longer step).
A change of U by more than ``contention_tol`` re-plans the other instances at their next
iteration boundary.

Power is constant between events, so energy is the exact sum of power × duration.

Attribution (per-model and per-request energy): the GPU's power at every moment is split among the
instances resident on it by one stated rule (:func:`festgym.control.attribution.split_power`): the
resident floor by SM share, busy power above it by what each runs, loading power above it to the
loaders; an empty or booting GPU's power stays the GPU's own (``unattributed_j``). Each instance
integrates what its GPUs allot it (:meth:`Instance.allot`); requests then get their instance's
energy over the iterations they ran in (:mod:`festgym.sim.instance`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

from festgym.control.attribution import split_alone, split_power
from festgym.control.levels import nearest_clock
from festgym.control.states import (
    GPU_ASLEEP,
    GPU_BOOTING,
    GPU_BUSY,
    GPU_EMPTY,
    GPU_IDLE,
    GPU_LOADING,
    GPU_OFF,
    PHASE_ASLEEP,
    PHASE_DECODE,
    PHASE_IDLE,
    PHASE_LOADING,
    PHASE_PREFILL,
    PHASE_RESTARTING,
    STATES,
)
from festgym.profiles.specs import GpuSpec
from festgym.sim.events import EventQueue
from festgym.sim.ledger import Counters
from festgym.sim.node import NODE_OFF, NODE_ON
from festgym.sim.views import GpuView

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.instance import Instance
    from festgym.sim.node import SimNode

NODE_UP, NODE_CHANGING, NODE_DOWN = 0, 1, 2
"""What a GPU sees of its node's state: on; booting or shutting down; off."""


@mypyc_attr(allow_interpreted_subclasses=True)
class SimGpu:
    """A GPU and the instances resident on it."""

    __slots__ = ("events", "index", "spec", "clock", "instances", "state", "power_w", "t_last", "energy_j",
                 "state_s", "parked", "park_when_empty", "mem_used", "mem_bytes", "uncapped_w", "capped_s",
                 "pending_clock", "clock_version", "tol", "view", "cold_starts", "hbm_scale", "retired", "idle_w",
                 "resident_w", "empty_w", "loading_w", "tdp_w", "node", "node_up", "unattributed_w", "unattributed_j")

    def __init__(self, events: EventQueue, index: int, spec: GpuSpec, memory_utilization: float, tol: float):
        self.events = events
        self.index = index
        self.spec = spec
        self.clock = float(spec.default_sm_clock_mhz)
        self.instances: list[Instance] = []
        self.state = GPU_EMPTY
        self.power_w = spec.empty_w
        self.uncapped_w = spec.empty_w
        self.t_last = 0.0
        self.energy_j = [0.0] * len(STATES)
        self.state_s = [0.0] * len(STATES)
        self.capped_s = 0.0
        self.parked = False  # released: may be powered off with its node
        self.park_when_empty = False
        self.mem_used = 0.0
        self.mem_bytes = spec.memory_gb * 1e9 * memory_utilization
        self.pending_clock: float | None = None
        self.clock_version = 0
        self.tol = tol
        self.view = GpuView(self)  # what policies see of it
        self.cold_starts = 0
        self.hbm_scale = 1.0 / spec.latency.hbm_frac  # demand in units of achievable bandwidth
        self.retired = Counters()  # SLO counters of instances unloaded from this GPU
        # read on every event
        self.idle_w, self.tdp_w = spec.idle_w, spec.tdp_w
        self.empty_w, self.loading_w = spec.states.empty_w, spec.states.loading_w
        self.resident_w = spec.resident_idle_w(self.clock)
        self.node: SimNode | None = None  # set by its node
        self.node_up = NODE_UP
        self.unattributed_w = self.power_w  # the part of the power no instance bears
        self.unattributed_j = 0.0

    def counters(self, now: float) -> Counters:
        """Cumulative SLO counters of everything served by engines led from here, with the lateness so far of
        requests still waiting for a first token added to ``ttft_excess``."""
        total = Counters().add(self.retired)
        for inst in self.instances:
            if inst.gpu is self:  # a multi-GPU engine's requests are booked on its lead only
                total.add(inst.counters)
                total.ttft_excess += inst.ttft_overdue(now)
        return total

    @property
    def energy_total_j(self) -> float:
        return sum(self.energy_j)

    def instance_of(self, model: int) -> Instance | None:
        for inst in self.instances:
            if inst.model == model:
                return inst
        return None

    def hbm_demand(self, inst: Instance) -> float:
        """Bandwidth demand of ``inst`` plus every other running instance, in units of the
        achievable bandwidth (above 1, they contend)."""
        total = inst.hbm
        for other in self.instances:
            if other is not inst and (other.phase == PHASE_PREFILL or other.phase == PHASE_DECODE):
                total += other.hbm
        return total * self.hbm_scale

    def update(self, now: float, changed: Instance | None = None) -> None:
        """Integrate energy up to ``now``, then recompute state and power; if ``changed`` just
        started running, re-plan the others whose contention factor moved."""
        dt = now - self.t_last
        if dt > 0:
            self.energy_j[self.state] += self.power_w * dt
            self.state_s[self.state] += dt
            self.unattributed_j += self.unattributed_w * dt
            if self.uncapped_w > self.power_w:
                self.capped_s += dt
            self.t_last = now
        if self.node_up != NODE_UP:
            power = 0.0 if self.node_up == NODE_DOWN else self.empty_w
            self.state = GPU_OFF if self.node_up == NODE_DOWN else GPU_BOOTING
            self.power_w = self.uncapped_w = power
            self._allot(now)
            return
        power = self.idle_w
        demand = 0.0
        state = GPU_EMPTY
        for inst in self.instances:
            phase = inst.phase
            if phase == PHASE_PREFILL or phase == PHASE_DECODE:  # noqa: SIM109 (two compiled comparisons)
                power += inst.dyn_w
                demand += inst.hbm
                state = GPU_BUSY
            elif phase == PHASE_IDLE:
                state = min(state, GPU_IDLE)
            elif phase == PHASE_ASLEEP:
                state = min(state, GPU_ASLEEP)
            else:  # loading, restarting (unloaded instances are no longer listed)
                state = min(state, GPU_LOADING)
        self.state = state
        if state == GPU_BUSY:
            if power < self.resident_w:
                power = self.resident_w
        elif state == GPU_LOADING:
            power = self.loading_w
        elif state == GPU_EMPTY:
            power = self.empty_w
        else:
            power = self.resident_w
        self.uncapped_w = power
        self.power_w = power if power < self.tdp_w else self.tdp_w
        self._allot(now)
        if changed is not None and len(self.instances) > 1:
            demand *= self.hbm_scale
            factor = demand if demand > 1.0 else 1.0
            for inst in self.instances:
                if inst is not changed and inst.phase == PHASE_DECODE and abs(inst.factor - factor) > self.tol * factor:
                    inst.interrupt(now)

    def _allot(self, now: float) -> None:
        """Split the power just set among the resident instances (:func:`split_power`)."""
        instances = self.instances
        if not instances or self.state >= GPU_EMPTY:  # no engine bears an empty or booting GPU's power
            for inst in instances:
                inst.allot(now, self, 0.0, 0.0, 0.0)
            self.unattributed_w = self.power_w
            return
        self.unattributed_w = 0.0
        if len(instances) == 1:  # the common case, without lists
            inst = instances[0]
            phase = inst.phase
            running = loading_ = False
            if phase == PHASE_PREFILL or phase == PHASE_DECODE:  # noqa: SIM109 (two compiled comparisons)
                running = inst.dyn_w > 0.0
            elif phase == PHASE_LOADING or phase == PHASE_RESTARTING:  # noqa: SIM109
                loading_ = True
            static_w, dynamic_w, loading_w = split_alone(self.power_w, self.resident_w, running, loading_)
            inst.allot(now, self, static_w, dynamic_w, loading_w)
            return
        shares: list[float] = []
        dynamic: list[float] = []
        loading: list[bool] = []
        for inst in instances:
            phase = inst.phase
            shares.append(inst.share_on(self))
            dyn = 0.0
            if phase == PHASE_PREFILL or phase == PHASE_DECODE:  # noqa: SIM109 (two compiled comparisons)
                dyn = inst.dyn_w
            dynamic.append(dyn)
            loading.append(phase == PHASE_LOADING or phase == PHASE_RESTARTING)  # noqa: SIM109
        parts = split_power(self.power_w, self.resident_w, shares, dynamic, loading)
        for inst, (static_w, dynamic_w, loading_w) in zip(instances, parts):
            inst.allot(now, self, static_w, dynamic_w, loading_w)

    def set_node_state(self, node_state: int, now: float) -> None:
        """Its node changed state (:mod:`festgym.sim.node`); a node coming up resets the clock."""
        self.update(now)
        if node_state == NODE_ON and self.node_up != NODE_UP:
            self.pending_clock = None
            self.clock_version += 1
            self._set_clock(float(self.spec.default_sm_clock_mhz))
        self.node_up = NODE_UP if node_state == NODE_ON else NODE_DOWN if node_state == NODE_OFF else NODE_CHANGING
        self.update(now)

    # --- clock -------------------------------------------------------------------------------

    def snap_clock(self, clock_mhz: float) -> float:
        """The supported clock nearest to ``clock_mhz``; outside the supported range is an error."""
        ladder = self.spec.sm_clocks_mhz
        if not ladder[0] - 1e-6 <= clock_mhz <= ladder[-1] + 1e-6:
            raise ValueError(f"GPU {self.index} ({self.spec.name}): clock {clock_mhz:g} MHz outside the "
                             f"supported {ladder[0]}..{ladder[-1]} MHz")
        return float(nearest_clock(ladder, clock_mhz))

    def request_clock(self, clock_mhz: float, now: float, latency_s: float) -> None:
        clock = self.snap_clock(clock_mhz)
        if clock == (self.pending_clock if self.pending_clock is not None else self.clock):
            return
        self.pending_clock = clock
        self.clock_version += 1
        if latency_s > 0:
            self.events.schedule(now + latency_s, self.apply_clock, self.clock_version)
        else:
            self.apply_clock(self.clock_version, now)

    def apply_clock(self, version: int, now: float) -> None:
        if version != self.clock_version or self.pending_clock is None:
            return
        clock, self.pending_clock = self.pending_clock, None
        self.update(now)
        self._set_clock(clock)
        self.update(now)
        for inst in self.instances:
            inst.interrupt(now)  # the next iteration runs at the new clock

    def _set_clock(self, clock: float) -> None:
        self.clock = clock
        self.resident_w = self.spec.resident_idle_w(clock)

    # --- release / wake -------------------------------------------------------------------------

    def park(self, now: float) -> None:
        """Release the GPU now if empty, else as soon as the last instance leaves: it may then be
        powered off with its node."""
        if self.instances:
            self.park_when_empty = True
            return
        self.parked, self.park_when_empty = True, False
        if self.node is not None:
            self.node.released(now)

    def wake(self, now: float) -> float:
        """Claim the GPU back; returns when it can start an engine (its node's boot, if off)."""
        self.park_when_empty = False
        self.parked = False
        return self.node.wake(now) if self.node is not None else now
