"""Simulator settings (a plain module: the simulator itself may be compiled, its settings are
ordinary, picklable dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass

from festgym.config import check_ranges


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings (times in seconds)."""

    control_interval_s: float = 1.0
    """How often ``Policy.control`` is called for each awake GPU."""
    consolidate_interval_s: float = 30.0
    """How often ``Policy.consolidate`` is called."""
    clock_change_s: float = 0.05
    """Delay before a requested SM clock takes effect."""
    share_change_s: float = 0.0
    """Pause of an instance whose SM share changes (an MPS restart; 0 models green contexts)."""
    keep_alive_s: float = 300.0
    """An instance with nothing to do is unloaded after this long."""
    drain_s: float = 60.0
    """After the trace's last arrival window, keep running this long; requests still unfinished
    then are reported as such. Every policy gets the same horizon, so energies compare."""
    gpu_memory_utilization: float = 0.9
    """Fraction of GPU memory that weights and KV caches may use (vLLM's default)."""
    contention_tol: float = 0.02
    """Relative change of the bandwidth-contention factor that re-plans running instances."""
    stop_when_done: bool = False
    """End the run when the last request is finished or rejected, instead of at the horizon
    (benchmarks; leave off to compare policies' energy over the same horizon)."""

    def __post_init__(self):
        check_ranges(self, {"control_interval_s": self.control_interval_s > 0,
                            # no finer than control: a period far below the clock's resolution never advances it
                            "consolidate_interval_s": self.consolidate_interval_s >= self.control_interval_s,
                            "clock_change_s": self.clock_change_s >= 0, "share_change_s": self.share_change_s >= 0,
                            "keep_alive_s": self.keep_alive_s >= 0, "drain_s": self.drain_s >= 0,
                            "gpu_memory_utilization": 0 < self.gpu_memory_utilization <= 1,
                            "contention_tol": self.contention_tol >= 0},
                     {"control_interval_s": "> 0 s",
                      "consolidate_interval_s": f"≥ control_interval_s ({self.control_interval_s:g} s)",
                      "clock_change_s": "≥ 0 s", "share_change_s": "≥ 0 s", "keep_alive_s": "≥ 0 s", "drain_s": "≥ 0 s",
                      "gpu_memory_utilization": "in (0, 1]", "contention_tol": "≥ 0"})
