"""The deploy agent's observation: ``LocalGPU-v0``'s features, from NVML and engine metrics.

The feature definitions are the environments' own (:func:`festgym.control.features.slot_vector`,
:func:`~festgym.control.features.gpu_vector`, :func:`~festgym.control.features.time_features`); only
their inputs differ. Where the simulator knows a figure exactly and a host does not, the deploy
agent estimates it from the interval's metrics. **Assumptions:**

* ``ready``: the engine's ``/metrics`` answered this interval.
* ``share``: the share the agent last set or advised (1/n of the slots in use before that).
* ``queue``, ``batch``, ``kv_used``: the engine's gauges (waiting, running / ``max_num_seqs``, KV use).
* ``prefill_mix``: prompt tokens over prompt plus generated tokens in the interval (the simulator
  takes the next iteration's mix: the same ratio, not averaged over the interval).
* ``ttft`` and ``tbt``: the interval's 99th-percentile TTFT and inter-token latency (interpolated
  in the engines' histogram buckets) over the SLO, estimating the simulator's peaks. The TTFT SLO
  grows with the interval's mean prompt (:meth:`EngineSpec.ttft_limit_s`), not each request's;
  waiting requests' age is not seen (the queue feature carries them).
* ``recency``: time since the last interval in which the engine had prompt tokens or waiting requests.
* GPU: instant power over the default power limit, the SM clock, free memory as NVML counts it
  (engines pre-allocate their KV cache), and the state: ``loading`` while an engine is not ready,
  ``busy`` while any runs requests or produced tokens, else ``idle`` (a host has no parked GPUs).
* Time of day: the host's wall clock (seconds since UTC midnight) within the training period.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from festgym.control.features import EMPTY_SLOT, gpu_vector, slot_vector, time_features
from festgym.control.states import GPU_BUSY, GPU_IDLE, GPU_LOADING
from festgym.deploy.engine_metrics import EngineWindow
from festgym.devices.device import GpuReading

PEAK_QUANTILE = 0.99
"""Quantile of an interval's latencies that stands for the simulator's peak."""


@dataclass(frozen=True)
class EngineSpec:
    """One served model: its metrics endpoint and what its features are measured against."""

    model: str
    url: str
    """Metrics URL (``/metrics`` is added to a bare host:port)."""
    max_num_seqs: int
    ttft_slo_s: float
    tbt_slo_s: float
    slo_quantile: float = 0.9
    """A request meets its TBT SLO when this quantile of its gaps is within ``tbt_slo_s``; the
    watchdog applies it to each interval's TTFT and inter-token latencies."""
    ttft_per_1k_tokens_s: float = 0.0
    """TTFT allowance per 1,000 prompt tokens (the scenario's ``Slo``)."""

    def ttft_limit_s(self, window: EngineWindow) -> float:
        """The interval's TTFT SLO: the base plus the allowance for its mean prompt (prompt
        tokens over first tokens; a request's own prompt length is not in the metrics)."""
        firsts, prompt = window.ttft_s.count, window.prompt_tokens
        if not self.ttft_per_1k_tokens_s or not firsts or math.isnan(prompt):
            return self.ttft_slo_s
        return self.ttft_slo_s + self.ttft_per_1k_tokens_s * prompt / firsts / 1000

    def peak_ttft_ratio(self, window: EngineWindow) -> float:
        """The interval's estimate of the largest TTFT over its SLO (0 without first tokens)."""
        return nan_to_zero(window.ttft_s.quantile(PEAK_QUANTILE)) / self.ttft_limit_s(window)


def nan_to_zero(value: float) -> float:
    """A figure the metrics lack (NaN) counts as 0."""
    return 0.0 if math.isnan(value) else value


def peak_gap_s(window: EngineWindow) -> float:
    """The interval's estimate of the longest inter-token gap (0 without gaps)."""
    return nan_to_zero(window.itl_s.quantile(PEAK_QUANTILE))


def engine_slot(spec: EngineSpec, window: EngineWindow | None, share: float, since_last_s: float) -> list[float]:
    """One model's slot (``window`` None: the engine did not answer, so it reads as not ready)."""
    if window is None:
        return slot_vector(False, share, 0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, since_last_s)
    return slot_vector(True, share, int(window.waiting), window.running / spec.max_num_seqs,
                       nan_to_zero(window.prompt_tokens), int(nan_to_zero(window.generation_tokens)),
                       nan_to_zero(window.kv_used), spec.peak_ttft_ratio(window), peak_gap_s(window) / spec.tbt_slo_s,
                       since_last_s)


def host_state(windows: Mapping[str, EngineWindow | None]) -> int:
    """The GPU's state index (:data:`festgym.control.states.STATES`) from its engines' windows."""
    if any(w is None for w in windows.values()):
        return GPU_LOADING
    if any(w.running > 0 or nan_to_zero(w.generation_tokens) > 0 for w in windows.values() if w is not None):
        return GPU_BUSY
    return GPU_IDLE


def host_observation(slots: Sequence[EngineSpec | None], windows: Mapping[str, EngineWindow | None],
                     shares: Mapping[str, float], since_last_s: Mapping[str, float], reading: GpuReading,
                     tdp_w: float, clock_lo_mhz: float, clock_hi_mhz: float, time_of_day_s: float,
                     period_s: float) -> list[float]:
    """``LocalGPU-v0``'s observation of a host: ``slots`` in the controller's slot order (None: empty)."""
    out: list[float] = []
    for spec in slots:
        out += EMPTY_SLOT if spec is None else \
            engine_slot(spec, windows.get(spec.model), shares[spec.model], since_last_s[spec.model])
    mem = reading.memory
    out += gpu_vector(reading.power_mw / 1e3, tdp_w, reading.sm_clock_mhz, clock_lo_mhz, clock_hi_mhz,
                      mem.free_bytes / mem.total_bytes, host_state(windows))
    out += time_features(time_of_day_s, period_s)
    return out


__all__ = ["PEAK_QUANTILE", "EngineSpec", "engine_slot", "host_observation", "host_state", "nan_to_zero", "peak_gap_s"]
