"""One node of the simulated cluster: its host's power and its power-off and boot.

The GPUs of a node (``NodeSpec.gpus_per_node`` consecutive GPUs of the cluster) can be powered off
only together, with their host: there is no per-GPU state below the empty floor. A node powers off
when every GPU of it has been released (``Park``) and held no engine for ``SimConfig.node_off_after_s``:
it shuts down (``shutdown_s``, at host power, GPUs at their empty floor), then draws ``off_w`` and
its GPUs nothing. Waking any of its GPUs boots it (``boot_s``; a wake during shutdown boots it as
soon as it is down). Host power is ``host_w`` whenever the node is not off.

Power is constant between events, so host energy is the exact sum of power × duration per state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from festgym.profiles.specs import NodeSpec
from festgym.sim.events import EventQueue

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.gpu import SimGpu

NODE_STATES = ("on", "booting", "shutting_down", "off")
"""Node states, index = number; host energy is reported per state."""
NODE_ON, NODE_BOOTING, NODE_SHUTTING, NODE_OFF = range(4)


class SimNode:
    """A node: its GPUs, its host's energy, and its off/boot cycle."""

    def __init__(self, events: EventQueue, index: int, spec: NodeSpec, gpus: list[SimGpu], off_after_s: float):
        self.events = events
        self.index = index
        self.spec = spec
        self.gpus = gpus
        self.off_after_s = off_after_s
        self.state = NODE_ON
        self.t_last = 0.0
        self.energy_j = [0.0] * len(NODE_STATES)
        self.state_s = [0.0] * len(NODE_STATES)
        self.version = 0  # bumped by every wake: a pending power-off whose version is older is void
        self.until = 0.0  # end of the boot or shutdown under way
        self.boot_after_shutdown = False
        self.boots = 0
        for gpu in gpus:
            gpu.node = self

    @property
    def power_w(self) -> float:
        return self.spec.off_w if self.state == NODE_OFF else self.spec.host_w

    @property
    def energy_total_j(self) -> float:
        return sum(self.energy_j)

    def update(self, now: float) -> None:
        dt = now - self.t_last
        if dt > 0:
            self.energy_j[self.state] += self.power_w * dt
            self.state_s[self.state] += dt
            self.t_last = now

    def _enter(self, state: int, now: float) -> None:
        self.update(now)
        self.state = state
        for gpu in self.gpus:
            gpu.set_node_state(state, now)  # integrates the GPU up to now before its power changes

    # --- power off ---------------------------------------------------------------------------

    def _vacant(self) -> bool:
        return all(g.parked and not g.instances for g in self.gpus)

    def released(self, now: float) -> None:
        """A GPU of this node was released or emptied: start the power-off timer if all are."""
        if self.state == NODE_ON and self._vacant() and math.isfinite(self.off_after_s):
            self.events.schedule(now + self.off_after_s, self._power_off, self.version)

    def _power_off(self, version: int, now: float) -> None:
        if version != self.version or self.state != NODE_ON or not self._vacant():
            return
        self._enter(NODE_SHUTTING, now)
        self.until = now + self.spec.shutdown_s
        self.events.schedule(self.until, self._down, self.version)

    def _down(self, _version: int, now: float) -> None:
        self._enter(NODE_OFF, now)
        wanted, self.boot_after_shutdown = self.boot_after_shutdown, False
        if wanted and not self._vacant():  # a GPU woken during the shutdown is still claimed
            self._boot(now)

    # --- power on ----------------------------------------------------------------------------

    def wake(self, now: float) -> float:
        """Cancel a pending power-off, or boot the node; returns when its GPUs are up."""
        self.version += 1
        if self.state == NODE_ON:
            return now
        if self.state == NODE_SHUTTING:
            self.boot_after_shutdown = True
            return self.until + self.spec.boot_s
        if self.state == NODE_OFF:
            self._boot(now)
        return self.until

    def _boot(self, now: float) -> None:
        self._enter(NODE_BOOTING, now)
        self.boots += 1
        self.until = now + self.spec.boot_s
        self.events.schedule(self.until, self._up, None)

    def _up(self, _arg: object, now: float) -> None:
        self._enter(NODE_ON, now)
        self.released(now)  # nothing claimed it while it booted: the timer starts again
