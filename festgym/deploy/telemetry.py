"""The deploy agent's log: one JSON object per line, and ``festgym deploy report`` over it.

Records (``event``): ``start`` (controller, its SHA-256, mode, the GPU), ``interval`` (one per
control interval, below), ``engine_error`` (a scrape that failed, with the engine's ``state``:
``unreachable``, nothing listening, so it reads as not ready, or ``unknown``, its metrics refused,
so the default clocks hold), ``stop`` (why, what was restored, the energy since the last interval)
and, on a simulated host, ``simulator`` (the simulator's own energy and SLO attainment). An
interval record holds ``t_s``; ``dt_s`` and ``energy_j`` since the previous interval (from the
GPU's energy counter; absent on the first); ``power_w`` (instant) and ``avg_power_w`` (energy /
dt); ``sm_clock_mhz`` (read) and ``target_clock_mhz`` (the controller's wish); ``shares``; the
action's ``levels``; per model its ``state`` (``ok``, ``unreachable``, ``unknown``), gauges, TTFT
and inter-token latency (p50, p90, p99 over the interval) and the fraction over the SLO; the
``calls`` made (``applied``) or only planned; ``watchdog`` (default clocks held: the SLO watchdog
tripped, or an engine's state is unknown); ``decision_ms`` (observation + controller + decoding).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from festgym.deploy.engine_metrics import EngineWindow, Histogram
from festgym.deploy.observation import EngineSpec
from festgym.devices.device import WRITE_CALLS, GpuReading


def _num(x: float) -> float | None:
    """JSON has no NaN: absent figures are null."""
    return None if x is None or math.isnan(x) else round(float(x), 6)


def _latency(h: Histogram, slo: float) -> dict[str, float | None]:
    return {"count": h.count, "p50": _num(h.quantile(0.5)), "p90": _num(h.quantile(0.9)),
            "p99": _num(h.quantile(0.99)), "over_slo": _num(h.fraction_over(slo))}


def engine_record(spec: EngineSpec, window: EngineWindow | None, state: str = "ok") -> dict[str, Any]:
    if window is None:
        return {"ready": False, "state": state}
    return {"ready": True, "state": state, "running": window.running, "waiting": window.waiting,
            "kv_used": _num(window.kv_used), "prompt_tokens": _num(window.prompt_tokens),
            "generation_tokens": _num(window.generation_tokens),
            "finished": _num(window.finished), "ttft_s": _latency(window.ttft_s, spec.ttft_limit_s(window)),
            "itl_s": _latency(window.itl_s, spec.tbt_slo_s)}


def interval_record(t_s: float, dt_s: float | None, energy_j: float | None, reading: GpuReading,
                    target_clock_mhz: float | None, shares: Mapping[str, float], levels: Sequence[int] | None,
                    windows: Mapping[str, EngineWindow | None], engines: Sequence[EngineSpec],
                    calls: Sequence[tuple[str, tuple]], applied: bool, watchdog: bool,
                    decision_ms: float, states: Mapping[str, str] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"event": "interval", "t_s": round(t_s, 6)}
    if dt_s is not None and energy_j is not None:
        record.update(dt_s=round(dt_s, 6), energy_j=energy_j, avg_power_w=_num(energy_j / dt_s) if dt_s > 0 else None)
    record.update(
        energy_total_j=reading.energy_mj / 1e3, power_w=reading.power_mw / 1e3, sm_clock_mhz=reading.sm_clock_mhz,
        power_limit_w=reading.power_limit_mw / 1e3, temperature_c=reading.temperature_c,
        clock_events=list(reading.clock_events), target_clock_mhz=target_clock_mhz,
        shares={m: round(s, 4) for m, s in shares.items()}, levels=None if levels is None else list(levels),
        engines={e.model: engine_record(e, windows.get(e.model), (states or {}).get(e.model, "ok")) for e in engines},
        calls=[{"call": name, "nvml": WRITE_CALLS[name], "args": list(args)} for name, args in calls],
        applied=applied and bool(calls), watchdog=watchdog, decision_ms=round(decision_ms, 4))
    return record


class Telemetry:
    """Appends records to a JSONL file (or any text stream), flushed per line so that a crash
    loses nothing written."""

    def __init__(self, path: str | Path | None = None, stream: IO[str] | None = None):
        self.path = Path(path) if path is not None else None
        # Open for the agent's whole run (closed by close()): a context manager cannot span it.
        file = open(self.path, "a") if self.path is not None and stream is None else None  # noqa: SIM115
        self._out = stream if stream is not None else file
        self.records = 0

    def write(self, record: Mapping[str, Any]) -> None:
        self.records += 1
        if self._out is not None:
            self._out.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
            self._out.flush()

    def close(self) -> None:
        if self._out is not None and self.path is not None:
            self._out.close()
            self._out = None


__all__ = ["Telemetry", "engine_record", "interval_record"]
