"""Adjustments of a rule policy's local decision: its clock moved by whole levels.

One mechanism for three users: the clairvoyant reference searches over these adjustments with
foresight (:mod:`festgym.policies.clairvoyant`), the residual environments let an agent choose
them (``env.residual``), and :class:`~festgym.policies.learned.LearnedLocal` applies a trained
residual controller's. The zero adjustment returns the base policy's decision object itself,
so that a residual controller that does nothing is the base policy bit for bit.

Levels are the base's own clock grid (Festina's ``n_clock_levels`` evenly spaced over the
control range, :func:`~festgym.control.levels.clock_levels`); a step moves to the next one up or
down from the clock the base asked for (the GPU's current clock when it kept it), clipped at
the ends of the grid.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import replace

from festgym.control.actions import Action, GpuControl
from festgym.control.levels import clock_levels
from festgym.sim.lifecycle import Mechanisms
from festgym.sim.policy import BasePolicy, Policy
from festgym.sim.views import ClusterView, GpuView, Request

DEFAULT_CLOCK_LEVELS = 10
"""Clock grid of the adjustments when the base policy has none of its own (Festina's default)."""


def base_clock_levels(base: Policy) -> int:
    """The number of clock levels ``base`` decides on (its config's ``n_clock_levels``)."""
    config = getattr(base, "config", None)
    return int(getattr(config, "n_clock_levels", DEFAULT_CLOCK_LEVELS))


class ClockSteps:
    """Moves a :class:`GpuControl`'s clock by whole levels of an ``n``-level grid per GPU type."""

    def __init__(self, n_levels: int):
        self.n_levels = n_levels
        self._grids: dict[str, tuple[float, ...]] = {}

    def grid(self, gpu: GpuView) -> tuple[float, ...]:
        spec = gpu.spec
        found = self._grids.get(spec.name)
        if found is None:
            found = self._grids[spec.name] = clock_levels(spec.sm_clocks_mhz, self.n_levels, spec.name)
        return found

    def shift(self, control: GpuControl | None, gpu: GpuView, steps: int) -> GpuControl | None:
        """``control`` with its clock ``steps`` levels higher (lower when negative); ``control``
        itself when ``steps`` is 0 or the GPU holds no models (nothing to clock for)."""
        if steps == 0 or not gpu.models:
            return control
        grid = self.grid(gpu)
        asked = control.clock_mhz if control is not None and control.clock_mhz is not None else gpu.clock_mhz
        i = min(max(_nearest(grid, asked) + steps, 0), len(grid) - 1)
        return replace(control or GpuControl(), clock_mhz=grid[i])


def _nearest(grid: Sequence[float], clock_mhz: float) -> int:
    """Index of the grid level nearest ``clock_mhz`` (ties go down)."""
    i = bisect_left(grid, clock_mhz)
    if i == len(grid) or (i > 0 and clock_mhz - grid[i - 1] <= grid[i] - clock_mhz):
        i -= 1
    return i


class Residual(BasePolicy):
    """``base`` everywhere, its clock moved by ``steps[gpu]`` levels on the GPUs listed until
    ``until_s`` (set :attr:`steps` between control calls; a GPU not listed, or any GPU after
    ``until_s``, gets the base's decision)."""

    def __init__(self, base: Policy, steps: Mapping[int, int] | None = None, until_s: float = float("inf")):
        self.base = base
        self.name = f"residual+{getattr(base, 'name', 'policy')}"
        self.queue_order = getattr(base, "queue_order", "fcfs")
        self.mechanisms = getattr(base, "mechanisms", Mechanisms())  # its engines live as the base's
        self.clock = ClockSteps(base_clock_levels(base))
        self.steps: dict[int, int] = dict(steps or {})
        self.until_s = until_s

    def reset(self, cluster: ClusterView) -> None:
        self.base.reset(cluster)

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        return self.base.place(request, cluster)

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        control = self.base.control(gpu, now)
        return self.clock.shift(control, gpu, self.steps.get(gpu.index, 0)) if now < self.until_s else control

    def consolidate(self, cluster: ClusterView, now: float) -> Sequence[Action]:
        return self.base.consolidate(cluster, now)


__all__ = ["ClockSteps", "Residual", "base_clock_levels"]
