"""A GPU of the festgym simulator behind the device interface, so that the deploy agent runs end
to end without hardware (``festgym deploy --simulate``, and the tests).

It reads and writes the simulator's live GPU: the energy counter is the simulator's exactly
integrated energy, a clock lock requests that clock (taking effect after the simulator's
``clock_change_s``), a power limit replaces the GPU's power cap. Modelling assumptions, beyond the
simulator's own:

* The memory clock is fixed (the simulator does not model it): ``memory_clock_mhz``.
* Average power is the instantaneous power: the simulator's power is piecewise constant and the
  agent's energy figures come from the counter.
* The settable power-limit range is [max(idle power, 25% of TDP), TDP], the default TDP. As in
  the simulator, the limit caps the power figure and does not slow the GPU down.
* Utilisation: 100% while any instance runs iterations; memory utilisation is the instances'
  HBM-bandwidth demand. Temperature: 30 °C + 45 °C × power / TDP (illustrative only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from festgym.control.actions import GpuControl
from festgym.control.levels import normalize_shares
from festgym.control.states import GPU_ASLEEP, GPU_BUSY, GPU_EMPTY, GPU_IDLE, PHASE_DECODE, PHASE_PREFILL
from festgym.devices.device import (
    GpuDevice,
    InvalidArgument,
    MemoryInfo,
    NoPermission,
    Utilization,
)
from festgym.devices.shares import ShareActuator

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.simulator import Simulator


class SimulatedDevice(GpuDevice):
    """GPU ``index`` of a started :class:`~festgym.sim.simulator.Simulator`.

    ``privileged=False`` makes every write raise :class:`NoPermission`, as an unprivileged
    process meets on a real host.
    """

    def __init__(self, sim: Simulator, index: int = 0, memory_clock_mhz: int = 2619, privileged: bool = True):
        self.sim, self.index = sim, index
        self._gpu = sim.gpus[index]
        self.spec = self._gpu.spec
        self._memory_clock = memory_clock_mhz
        self.privileged = privileged
        self._locked: tuple[int, int] | None = None
        self._default_limit_mw = int(round(self.spec.tdp_w * 1e3))

    def _now(self):
        """The GPU with its energy integrated up to the simulator's present."""
        self._gpu.update(self.sim.now)
        return self._gpu

    # reads
    def name(self) -> str:
        return self.spec.name

    def uuid(self) -> str:
        return f"SIM-{self.spec.name}-{self.index}"

    def sm_count(self) -> int:
        return self.spec.sm_count

    def memory(self) -> MemoryInfo:
        return MemoryInfo(total_bytes=int(self.spec.memory_gb * 1e9), used_bytes=int(self._gpu.mem_used))

    def total_energy_mj(self) -> int:
        return int(round(self._now().energy_total_j * 1e3))

    def power_instant_mw(self) -> int:
        return int(round(self._now().power_w * 1e3))

    power_average_mw = power_instant_mw

    def sm_clock_mhz(self) -> int:
        return int(self._gpu.clock)

    def memory_clock_mhz(self) -> int:
        return self._memory_clock

    def supported_memory_clocks_mhz(self) -> tuple[int, ...]:
        return (self._memory_clock,)

    def supported_sm_clocks_mhz(self, memory_clock_mhz: int | None = None) -> tuple[int, ...]:
        if memory_clock_mhz not in (None, self._memory_clock):
            raise InvalidArgument(f"{self.uuid()}: memory clock {memory_clock_mhz} MHz is not supported "
                                  f"(only {self._memory_clock})")
        return tuple(reversed(self.spec.sm_clocks_mhz))

    def power_limit_mw(self) -> int:
        return int(round(self._gpu.tdp_w * 1e3))

    def power_limit_constraints_mw(self) -> tuple[int, int]:
        return int(round(max(self.spec.idle_w, 0.25 * self.spec.tdp_w) * 1e3)), self._default_limit_mw

    def default_power_limit_mw(self) -> int:
        return self._default_limit_mw

    def utilization(self) -> Utilization:
        gpu = self._now()
        demand = sum(i.hbm for i in gpu.instances if i.phase in (PHASE_PREFILL, PHASE_DECODE)) * gpu.hbm_scale
        return Utilization(gpu_pct=100 if gpu.state == GPU_BUSY else 0, memory_pct=int(round(100 * min(demand, 1.0))))

    def temperature_c(self) -> int:
        return int(round(30 + 45 * self._now().power_w / self.spec.tdp_w))

    def clock_events(self) -> tuple[str, ...]:
        gpu = self._now()
        events: tuple[str, ...] = ("gpu_idle",) if gpu.state in (GPU_IDLE, GPU_ASLEEP, GPU_EMPTY) else ()
        if self._locked is not None:
            events += ("applications_clocks",)
        return events + (("sw_power_cap",) if gpu.uncapped_w > gpu.power_w else ())

    # writes
    def _write(self, what: str) -> None:
        if not self.privileged:
            raise NoPermission(f"{self.uuid()}: {what}: no permission (simulated unprivileged process)")

    def set_locked_sm_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        try:  # the device layer's one rule: off-ladder ends snap to the nearest supported clocks
            min_mhz, max_mhz = self.snap_sm_clocks_mhz(min_mhz, max_mhz)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{self.uuid()}: locked SM clocks {min_mhz}-{max_mhz} MHz: {exc}") from None
        if self._locked == (min_mhz, max_mhz):
            return
        self._write(f"set locked SM clocks {min_mhz}-{max_mhz} MHz")
        self._locked = (min_mhz, max_mhz)  # booked before the change, as NvmlDevice does
        self._clock(max_mhz)  # under load the clock sits at the top of the locked range

    def reset_locked_sm_clocks(self) -> None:
        if self._locked is None:
            return
        self._write("reset locked SM clocks")
        self._clock(self.spec.default_sm_clock_mhz)
        self._locked = None

    def _clock(self, mhz: float) -> None:
        self.sim.apply_control(self._gpu, GpuControl(clock_mhz=mhz), self.sim.now)

    def set_power_limit_mw(self, limit_mw: int) -> None:
        lo, hi = self.power_limit_constraints_mw()
        if not lo <= limit_mw <= hi:
            raise InvalidArgument(f"{self.uuid()}: power limit {limit_mw} mW outside {lo}-{hi} mW")
        if limit_mw == self.power_limit_mw():
            return
        self._write(f"set power limit {limit_mw} mW")
        gpu = self._now()  # integrate at the old limit first
        gpu.tdp_w = limit_mw / 1e3
        gpu.update(self.sim.now)

    def reset_power_limit(self) -> None:
        self.set_power_limit_mw(self._default_limit_mw)  # the simulated GPU starts at its default

    def changed(self) -> tuple[str, ...]:
        return (("locked_sm_clocks",) if self._locked is not None else ()) + \
            (("power_limit",) if self.power_limit_mw() != self._default_limit_mw else ())


class SimulatedShares(ShareActuator):
    """Applies SM shares to the models resident on a simulated GPU (at once: the simulator has
    no MPS restart; a share change re-plans the running iteration, as the simulator models it).
    MPS percentages may sum above 100% (caps that overlap); the simulator partitions the SMs, so
    shares summing above 1 are scaled down to fit (``normalize_shares``)."""

    def __init__(self, gpu: SimulatedDevice):
        super().__init__()
        self.gpu = gpu

    def _apply(self, shares: Mapping[str, float]) -> None:
        sim = self.gpu.sim
        resident = {i.name for i in sim.gpus[self.gpu.index].instances}
        merged = {m: s for m, s in {**self.shares, **shares}.items() if m in resident}
        if merged:  # all at once: the simulator takes one partition
            fitted = dict(zip(merged, normalize_shares(list(merged.values()))))
            sim.apply_control(sim.gpus[self.gpu.index], GpuControl(shares=fitted), sim.now)
        self.shares.update(shares)


__all__ = ["SimulatedDevice", "SimulatedShares"]
