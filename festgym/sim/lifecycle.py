"""An engine's life on a GPU: cold start, sleep and wake, keep-alive, scale-to-zero; what each costs.

A **cold start** copies the weights in, then initialises the engine: ``weight_bytes / load rate +
init_s``. The load rate is the loader's from where the weights are (:data:`LOADERS`, a scenario's
``sim.weights_from``), never above the GPU's host link (``GpuSpec.host_to_gpu_gbps``).
``init_s`` (``sim.init_s``, or a model's ``engine.init_s``) is vLLM's engine start after the
weights: memory profiling, KV-cache allocation, CUDA-graph capture, and torch.compile if used.

**Sleep** (vLLM sleep mode) frees the instance's GPU memory but keeps its process and CUDA
context, so the GPU draws resident idle power, not the empty floor: level 1 offloads the weights to
host DRAM (a wake copies them back over the link), level 2 discards them (a wake reloads them with
the loader, from DRAM); neither re-initialises the engine. Sleeping itself is taken as instantaneous
(an offload of 16 GB over a 50 GB/s link takes 0.3 s; named simplification).

**Keep-alive**: an instance with nothing to do sleeps after ``sleep_after_s`` (if its policy sleeps)
and is unloaded after ``keep_alive_s`` (scale-to-zero: the process exits and the GPU falls to its
empty floor); ``always_resident`` keeps a model's last instance loaded whatever the timer.

Each policy says which of these it has (:class:`Mechanisms`, its ``mechanisms`` attribute):
vLLM-style serving reloads with safetensors and never sleeps; ServerlessLLM-style serving has a
fast loader and scales to zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from festgym.config import check_ranges

SOURCES = ("dram", "disk")
"""Where a cold start reads weights from: host DRAM (page cache or a pinned pool) or local NVMe."""

LOADERS: dict[str, dict[str, float]] = {
    "safetensors": {"dram": 4.0, "disk": 1.5},
    "fast": {"dram": 20.0, "disk": 6.0},
}
"""Effective weight-load rate (GB/s) of each loader by source, before the host link's ceiling.

* ``safetensors`` (vLLM's default loader). Assumption from vLLM's logs: an 8B model (16 GB) loads in
  3-5 s from the page cache (about 4 GB/s); from one NVMe drive about 1-2 GB/s. Band ×0.5-×2.
* ``fast`` (ServerlessLLM-style chunked, pinned, parallel loader). ServerlessLLM (OSDI'24) reports its
  loader 3.6-8.2× faster than safetensors and near the storage's bandwidth: taken as 20 GB/s from
  DRAM (PCIe Gen5 sustains ~50) and 6 GB/s from an NVMe Gen4 drive. Band ×0.5-×1.5.
"""

WAKE_FIXED_S = 0.1
"""Time a wake from sleep takes beyond its weight copy (vLLM reports 0.1-6.5 s for a whole wake;
assumption for the fixed part)."""


@dataclass(frozen=True)
class Mechanisms:
    """What a serving system does with an engine between requests (a policy's ``mechanisms``)."""

    loader: str = "safetensors"
    """Weight loader: ``safetensors`` (vLLM reload) or ``fast`` (ServerlessLLM-style)."""
    sleep_level: int = 0
    """vLLM sleep mode when idle: 0 never sleeps, 1 weights to host DRAM, 2 weights discarded."""
    sleep_after_s: float = 30.0
    """Idle time after which an instance sleeps (with ``sleep_level`` > 0)."""
    keep_alive_s: float | None = None
    """Idle time after which an instance is unloaded (None: the scenario's ``sim.keep_alive_s``;
    ``inf``: never)."""
    always_resident: bool = False
    """Never unload a model's last instance (vLLM-style static serving: one engine per model stays)."""

    def __post_init__(self) -> None:
        check_ranges(self, {"loader": self.loader in LOADERS, "sleep_level": self.sleep_level in (0, 1, 2),
                            "sleep_after_s": self.sleep_after_s >= 0,
                            "keep_alive_s": self.keep_alive_s is None or self.keep_alive_s >= 0},
                     {"loader": f"one of {', '.join(LOADERS)}", "sleep_level": "0, 1 or 2", "sleep_after_s": "≥ 0 s",
                      "keep_alive_s": "≥ 0 s, inf, or None (the scenario's)"})

    def keep_alive(self, scenario_s: float) -> float:
        return scenario_s if self.keep_alive_s is None else self.keep_alive_s


def load_gbps(loader: str, source: str, link_gbps: float) -> float:
    """Effective weight-load rate of ``loader`` from ``source``, capped by the host link."""
    return min(LOADERS[loader][source], link_gbps)


def cold_start_s(weight_bytes: float, loader: str, source: str, link_gbps: float, init_s: float) -> float:
    """Weights in with ``loader`` from ``source``, then the engine's initialisation."""
    return weight_bytes / (load_gbps(loader, source, link_gbps) * 1e9) + init_s


def wake_s(weight_bytes: float, level: int, loader: str, link_gbps: float) -> float:
    """A wake from sleep: level 1 copies the weights back from host DRAM over the link; level 2
    reloads them with the loader from DRAM; no engine initialisation either way."""
    rate = link_gbps if level == 1 else load_gbps(loader, "dram", link_gbps)
    return weight_bytes / (rate * 1e9) + WAKE_FIXED_S
