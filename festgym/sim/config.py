"""Simulator settings (a plain module: the simulator itself may be compiled, its settings are
ordinary, picklable dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass

from festgym.config import check_ranges
from festgym.sim.lifecycle import SOURCES

SHARE_MECHANISMS = ("green-contexts", "mps")
"""How SM shares are enforced: CUDA green contexts (a share changes between iterations, free) or
MPS (an active-thread percentage applies to clients that connect afterwards, so a change restarts
the engine: its weights reload from host DRAM and it initialises again, its running requests are
recomputed)."""


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings (times in seconds)."""

    control_interval_s: float = 1.0
    """How often ``Policy.control`` is called for each awake GPU."""
    consolidate_interval_s: float = 30.0
    """How often ``Policy.consolidate`` is called."""
    clock_change_s: float = 0.05
    """Delay before a requested SM clock takes effect."""
    share_mechanism: str = "green-contexts"
    """``green-contexts`` or ``mps`` (:data:`SHARE_MECHANISMS`)."""
    keep_alive_s: float = 300.0
    """An instance with nothing to do is unloaded after this long (unless its policy's mechanisms
    say otherwise, :class:`festgym.sim.lifecycle.Mechanisms`; ``inf``: never)."""
    weights_from: str = "dram"
    """Where cold starts read weights: ``dram`` (host page cache) or ``disk`` (local NVMe)."""
    init_s: float = 14.0
    """Engine initialisation after the weights are in (vLLM: 14 s for an 8B model, 39 s with
    torch.compile), unless a model's ``engine.init_s`` says otherwise."""
    node_off_after_s: float = 600.0
    """A node whose GPUs are all released (parked) and empty this long is powered off (``inf``: never)."""
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
                            "clock_change_s": self.clock_change_s >= 0,
                            "share_mechanism": self.share_mechanism in SHARE_MECHANISMS,
                            "keep_alive_s": self.keep_alive_s >= 0, "drain_s": self.drain_s >= 0,
                            "weights_from": self.weights_from in SOURCES, "init_s": 0 <= self.init_s < 1e6,
                            "node_off_after_s": self.node_off_after_s >= 0,
                            "gpu_memory_utilization": 0 < self.gpu_memory_utilization <= 1,
                            "contention_tol": self.contention_tol >= 0},
                     {"control_interval_s": "> 0 s",
                      "consolidate_interval_s": f"≥ control_interval_s ({self.control_interval_s:g} s)",
                      "clock_change_s": "≥ 0 s", "share_mechanism": f"one of {', '.join(SHARE_MECHANISMS)}",
                      "keep_alive_s": "≥ 0 s", "drain_s": "≥ 0 s", "weights_from": f"one of {', '.join(SOURCES)}",
                      "init_s": "≥ 0 s", "node_off_after_s": "≥ 0 s",
                      "gpu_memory_utilization": "in (0, 1]", "contention_tol": "≥ 0"})
