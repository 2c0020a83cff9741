"""One GPU as the deploy agent sees it: an abstract device with units in every name.

:class:`GpuDevice` is the interface; :class:`festgym.devices.nvml.NvmlDevice` implements it on NVML
(nvidia-ml-py) and :class:`festgym.simhost.device.SimulatedDevice` on a GPU of the festgym
simulator, so that the deploy agent runs end to end without hardware. Units: ``_mw`` milliwatts,
``_mj`` millijoules, ``_mhz`` megahertz, ``_bytes``, ``_c`` degrees Celsius, ``_pct`` percent.

Writes are few and reversible: lock the SM clock range, reset it, set the power limit, reset it.
A device remembers what it changed (``changed()``) so that the agent can restore the original
state on exit; a write that would change nothing is skipped.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol

from festgym.control.levels import nearest_clock
from festgym.errors import FestgymError

# --- errors ----------------------------------------------------------------------------------

class GpuError(FestgymError, RuntimeError):
    """A GPU operation failed; subclasses name the cause."""


class NvmlUnavailable(GpuError):
    """The NVML library, its Python binding or the NVIDIA driver is missing or mismatched."""


class GpuNotFound(GpuError, LookupError):
    """No GPU with the index or UUID asked for (after ``CUDA_VISIBLE_DEVICES``)."""


class NoPermission(GpuError, PermissionError):
    """The operation needs privileges the process lacks (clock and power-limit writes)."""


class NotSupported(GpuError):
    """The GPU or driver does not support the operation."""


class InvalidArgument(GpuError, ValueError):
    """A value out of range for this GPU (a clock it does not support, a limit outside its constraints)."""


class GpuLost(GpuError):
    """The GPU fell off the bus or needs a reset; nothing more can be done with it."""


# --- readings ----------------------------------------------------------------------------------

CLOCK_EVENTS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock",
}
"""NVML clock-event (throttle) reason bits and their names (``nvmlClocksEventReason*``)."""


def clock_event_names(mask: int) -> tuple[str, ...]:
    """The names of the bits set in a clock-event mask (unknown bits as ``0x...``)."""
    names = [name for bit, name in CLOCK_EVENTS.items() if mask & bit]
    rest = mask & ~sum(CLOCK_EVENTS)
    return tuple(names + ([f"0x{rest:x}"] if rest else []))


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    used_bytes: int

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.used_bytes


@dataclass(frozen=True)
class Utilization:
    """Percent of the last sample period in which a kernel ran (gpu) or memory was read or written."""

    gpu_pct: int
    memory_pct: int


@dataclass(frozen=True)
class GpuReading:
    """What the deploy agent reads every interval."""

    energy_mj: int
    power_mw: int
    sm_clock_mhz: int
    memory: MemoryInfo
    power_limit_mw: int
    temperature_c: int
    utilization: Utilization
    clock_events: tuple[str, ...]


WRITE_CALLS = {
    "set_locked_sm_clocks_mhz": "nvmlDeviceSetGpuLockedClocks",
    "reset_locked_sm_clocks": "nvmlDeviceResetGpuLockedClocks",
    "set_power_limit_mw": "nvmlDeviceSetPowerManagementLimit",
    "reset_power_limit": "nvmlDeviceSetPowerManagementLimit (default limit)",
    "set_shares": "nvidia-cuda-mps-control set_active_thread_percentage (or advice only)",
}
"""The NVML (or MPS) call behind each write, as the deploy agent's log names them."""


# --- the interface -------------------------------------------------------------------------------

class GpuWriter(Protocol):
    """The write side of a GPU: a :class:`GpuDevice`, or a remote actuator acting for one."""

    def set_locked_sm_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None: ...

    def reset_locked_sm_clocks(self) -> None: ...

    def set_power_limit_mw(self, limit_mw: int) -> None: ...

    def reset_power_limit(self) -> None: ...

    def changed(self) -> tuple[str, ...]: ...

    def restore(self) -> tuple[str, ...]: ...

    def heartbeat(self) -> None:
        """Say that the writer's user is alive (a remote actuator restores the GPU of a client
        whose heartbeats stop: its lease)."""


class GpuDevice(abc.ABC):
    """One GPU. Reads are cheap and need no privileges; writes may raise :class:`NoPermission`."""

    index: int
    """The GPU's index as festgym numbers it: the i-th of ``CUDA_VISIBLE_DEVICES`` (NVML counts in
    PCI bus order, as CUDA does with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``)."""

    # reads
    @abc.abstractmethod
    def name(self) -> str: ...

    @abc.abstractmethod
    def uuid(self) -> str: ...

    @abc.abstractmethod
    def sm_count(self) -> int: ...

    @abc.abstractmethod
    def memory(self) -> MemoryInfo: ...

    @abc.abstractmethod
    def total_energy_mj(self) -> int:
        """Energy used since the driver loaded (a monotonic counter)."""

    @abc.abstractmethod
    def power_instant_mw(self) -> int: ...

    @abc.abstractmethod
    def power_average_mw(self) -> int:
        """Power averaged over the driver's last sample window (about 1 s on recent GPUs)."""

    @abc.abstractmethod
    def sm_clock_mhz(self) -> int: ...

    @abc.abstractmethod
    def memory_clock_mhz(self) -> int: ...

    @abc.abstractmethod
    def supported_memory_clocks_mhz(self) -> tuple[int, ...]:
        """Supported memory clocks, descending (as NVML lists them)."""

    @abc.abstractmethod
    def supported_sm_clocks_mhz(self, memory_clock_mhz: int | None = None) -> tuple[int, ...]:
        """Supported SM clocks at ``memory_clock_mhz`` (default: the highest one), descending."""

    @abc.abstractmethod
    def power_limit_mw(self) -> int:
        """The enforced power limit."""

    @abc.abstractmethod
    def power_limit_constraints_mw(self) -> tuple[int, int]:
        """(min, max) settable power limit."""

    @abc.abstractmethod
    def default_power_limit_mw(self) -> int: ...

    @abc.abstractmethod
    def utilization(self) -> Utilization: ...

    @abc.abstractmethod
    def temperature_c(self) -> int: ...

    @abc.abstractmethod
    def clock_events(self) -> tuple[str, ...]:
        """Why the clocks are below their maximum now (names from :data:`CLOCK_EVENTS`)."""

    # writes
    @abc.abstractmethod
    def set_locked_sm_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clock into [min_mhz, max_mhz] (root or CAP_SYS_ADMIN)."""

    @abc.abstractmethod
    def reset_locked_sm_clocks(self) -> None:
        """Let the driver choose the SM clock again."""

    @abc.abstractmethod
    def set_power_limit_mw(self, limit_mw: int) -> None: ...

    @abc.abstractmethod
    def reset_power_limit(self) -> None:
        """Back to the limit in force before this object's first change (nothing if it made none):
        an operator's own limit survives festgym."""

    @abc.abstractmethod
    def changed(self) -> tuple[str, ...]:
        """What this object changed and has not reset: ``"locked_sm_clocks"``, ``"power_limit"``."""

    # shared
    def snap_sm_clocks_mhz(self, min_mhz: int, max_mhz: int) -> tuple[int, int]:
        """The supported SM clocks a lock of [min_mhz, max_mhz] runs at: each end moves to the
        nearest supported clock (ties down), which is what drivers run between their steps and what
        festgym's simulator and safety guard assume (``nearest_clock``). One rule for every write
        path: :class:`~festgym.devices.nvml.NvmlDevice` and the privileged actuator both lock the
        snapped range. Raises :class:`InvalidArgument` for an inverted range or one outside the
        supported clocks, :class:`NotSupported` when the GPU lists none (messages name the problem;
        callers prefix the GPU and the operation)."""
        if min_mhz > max_mhz:
            raise InvalidArgument("the minimum exceeds the maximum")
        ladder = sorted(self.supported_sm_clocks_mhz())
        if not ladder:
            raise NotSupported("the GPU lists no supported SM clocks")
        if min_mhz < ladder[0] or max_mhz > ladder[-1]:
            raise InvalidArgument(f"outside the supported SM clock range {ladder[0]}-{ladder[-1]} MHz")
        return nearest_clock(ladder, min_mhz), nearest_clock(ladder, max_mhz)

    def heartbeat(self) -> None:  # noqa: B027 (deliberately nothing: a local device has no lease)
        """Nothing: a local device has no lease (a remote actuator's client renews its lease here)."""

    def read(self) -> GpuReading:
        """The per-interval reading."""
        return GpuReading(energy_mj=self.total_energy_mj(), power_mw=self.power_instant_mw(),
                          sm_clock_mhz=self.sm_clock_mhz(), memory=self.memory(),
                          power_limit_mw=self.power_limit_mw(), temperature_c=self.temperature_c(),
                          utilization=self.utilization(), clock_events=self.clock_events())

    def restore(self) -> tuple[str, ...]:
        """Undo every change this object made; returns what it reset. Each part is tried even
        if the other fails (then the first failure is raised)."""
        undone = self.changed()
        errors = []
        for part, reset in (("locked_sm_clocks", self.reset_locked_sm_clocks), ("power_limit", self.reset_power_limit)):
            if part in undone:
                try:
                    reset()
                except GpuError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
        return undone

    def info(self) -> dict[str, object]:
        """The row ``festgym gpu info`` prints."""
        mem = self.memory()
        lo, hi = self.power_limit_constraints_mw()
        try:
            sm_count: int | str = self.sm_count()
        except NotSupported:  # NVML reads it through an attribute query some GPUs do not answer
            sm_count = "n/a"
        clocks = self.supported_sm_clocks_mhz()
        return {"index": self.index, "name": self.name(), "uuid": self.uuid(), "sm_count": sm_count,
                "memory_total_mib": mem.total_bytes // 2**20, "memory_used_mib": mem.used_bytes // 2**20,
                "power_w": round(self.power_instant_mw() / 1e3, 1),
                "power_limit_w": round(self.power_limit_mw() / 1e3, 1),
                "power_limit_range_w": f"{lo / 1e3:g}-{hi / 1e3:g}",
                "sm_clock_mhz": self.sm_clock_mhz(), "memory_clock_mhz": self.memory_clock_mhz(),
                "sm_clocks_mhz": f"{min(clocks)}-{max(clocks)} ({len(clocks)})" if clocks else "",
                "energy_kj": round(self.total_energy_mj() / 1e6, 3), "temperature_c": self.temperature_c(),
                "utilization_pct": self.utilization().gpu_pct,
                "clock_events": ",".join(self.clock_events()) or "none"}


__all__ = ["CLOCK_EVENTS", "WRITE_CALLS", "GpuDevice", "GpuError", "GpuLost", "GpuNotFound", "GpuReading", "GpuWriter",
           "InvalidArgument",
           "MemoryInfo", "NoPermission", "NotSupported", "NvmlUnavailable", "Utilization", "clock_event_names"]
