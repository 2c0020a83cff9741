"""What decides a host GPU's settings each interval: a trained checkpoint or a rule policy.

A :class:`Decider` takes the interval's :class:`HostState` (the GPU reading, each engine's
metrics window, the shares in force) and returns a :class:`~festgym.control.actions.GpuControl`.

* :class:`CheckpointDecider` runs a checkpoint's numpy export on ``LocalGPU-v0``'s observation
  (:mod:`festgym.deploy.observation`): numpy alone.
* :class:`festgym.policies.on_host.RuleDecider` runs a festgym rule policy (Festina, ...) on views of
  the host; it needs the profiles (the full install).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from festgym.control.actions import GpuControl
from festgym.control.checkpoint import LocalController
from festgym.control.decoder import LevelDecoder
from festgym.deploy.engine_metrics import EngineWindow
from festgym.deploy.observation import EngineSpec, host_observation
from festgym.devices.device import GpuDevice, GpuReading
from festgym.errors import FestgymError


@dataclass(frozen=True)
class HostState:
    """One interval of a host, as a decider sees it."""

    now: float
    interval_s: float
    reading: GpuReading
    windows: Mapping[str, EngineWindow | None]
    """Each engine's metrics since the last interval (None: it did not answer)."""
    shares: Mapping[str, float]
    """The SM shares in force (or advised)."""
    since_last_s: Mapping[str, float]
    """Seconds since each engine last had new work (-1: never)."""
    time_of_day_s: float


class Decider(Protocol):
    name: str
    sha256: str | None
    """The controller's pinned hash (None for rule policies)."""

    def decide(self, state: HostState) -> tuple[GpuControl | None, list[int] | None]:
        """The settings (None: keep them) and, for a checkpoint, the action's levels."""


class CheckpointDecider:
    """A trained local controller: observation -> levels -> control."""

    def __init__(self, controller: LocalController, engines: Sequence[EngineSpec], supported_mhz: Sequence[int],
                 tdp_w: float):
        face = controller.interface
        if face.residual_steps:
            raise FestgymError(f"deploy: {controller.name} is a residual controller (it adjusts Festina's clock "
                               "decisions); deploying one needs Festina on the host beside it, which deploy does "
                               "not do yet: --policy festina, or a checkpoint that sets the clock itself")
        if len(engines) > face.slots:
            raise FestgymError(f"deploy: {len(engines)} engines, but {controller.name} controls at most "
                               f"{face.slots} models per GPU")
        self.controller, self.name, self.sha256 = controller, controller.name, controller.sha256
        self.models = tuple(e.model for e in engines)
        self.slots: list[EngineSpec | None] = list(engines) + [None] * (face.slots - len(engines))
        self.decoder = LevelDecoder({"host": supported_mhz}, face.clock_levels, face.share_levels, face.batch_caps)
        self.clock_hi, self.tdp_w = max(supported_mhz), tdp_w

    @classmethod
    def for_gpu(cls, controller: LocalController, engines: Sequence[EngineSpec], gpu: GpuDevice) -> CheckpointDecider:
        """For ``gpu``: its supported clocks make the levels, its default power limit the TDP."""
        return cls(controller, engines, gpu.supported_sm_clocks_mhz(), gpu.default_power_limit_mw() / 1e3)

    def decide(self, state: HostState) -> tuple[GpuControl, list[int]]:
        face = self.controller.interface
        obs = host_observation(self.slots, state.windows, state.shares, state.since_last_s, state.reading,
                               self.tdp_w, self.decoder.clock_lo["host"], self.clock_hi, state.time_of_day_s,
                               face.period_s)
        levels = self.controller.levels(obs)
        m = face.slots
        return self.decoder.control("host", self.models, self.models, levels[0], levels[1:1 + m],
                                    levels[1 + m:]), levels


__all__ = ["CheckpointDecider", "Decider", "HostState"]
