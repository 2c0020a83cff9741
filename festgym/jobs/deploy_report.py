"""``festgym deploy report``: a deploy log's summary table and plots (pandas and matplotlib: the
reporting side, run wherever the log is read, not part of the numpy-only deploy path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from festgym.errors import FestgymError
from festgym.plots import figure


def read_log(path: str | Path) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """The log's records, and its interval records as a frame (one column per model figure)."""
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise FestgymError(f"{path}: line {n}: not JSON ({exc.msg})") from None
    intervals = [r for r in records if r.get("event") == "interval"]
    if not intervals:
        raise FestgymError(f"{path}: no interval records (is it a festgym deploy log?)")
    return records, pd.json_normalize(intervals, sep=".")


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column of the interval frame, all-missing when no record has the figure (a log of one
    unprimed interval has no energy; a model never ready has no latencies)."""
    return frame[name] if name in frame else pd.Series(np.nan, index=frame.index, dtype=object)


def _simulator(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A simulated host's own account (energy in kJ, SLO attainment), prefixed ``simulator_``."""
    out: dict[str, Any] = {}
    for record in (r for r in records if r.get("event") == "simulator"):
        out["simulator_energy_kj"] = round(record["energy_j"] / 1e3, 3)
        out.update((f"simulator_{k}", v) for k, v in record.items() if k not in ("event", "energy_j"))
    return out


def summarize(path: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """The run's figures (energy, power, clocks, decision latency, actions, how it stopped) and
    one row per model (readiness, SLO figures)."""
    records, frame = read_log(path)
    stops = [r for r in records if r.get("event") == "stop"]
    start = next((r for r in records if r.get("event") == "start"), {})
    energy = _column(frame, "energy_j").fillna(0).sum() + sum(r.get("energy_j", 0.0) for r in stops)
    span = _column(frame, "dt_s").fillna(0).sum() + sum(r.get("dt_s", 0.0) for r in stops)
    calls = frame["calls"].map(len)
    base = {"controller": start.get("controller"), "apply": start.get("apply"), "intervals": len(frame),
            "seconds": round(span, 1), "energy_kj": round(energy / 1e3, 3),
            "mean_power_w": round(energy / span, 1) if span else np.nan,
            "mean_clock_mhz": round(frame["sm_clock_mhz"].mean(), 0),
            "decision_ms_p50": round(frame["decision_ms"].quantile(0.5), 3),
            "decision_ms_p99": round(frame["decision_ms"].quantile(0.99), 3),
            "decision_ms_max": round(frame["decision_ms"].max(), 3),
            "calls": int(calls.sum()), "watchdog_intervals": int(frame["watchdog"].sum()),
            "engine_errors": sum(r.get("event") == "engine_error" for r in records),
            "stop": stops[-1].get("reason") if stops else "none (killed?)",
            **_simulator(records),
            "still_changed": ",".join(stops[-1].get("still_changed", [])) if stops else "unknown"}
    rows = []
    for model in start.get("models", []):
        prefix = f"engines.{model}."
        ready = _column(frame, prefix + "ready").fillna(False).astype(bool)
        row = {"model": model, "ready_frac": round(ready.mean(), 3)}
        for kind in ("ttft_s", "itl_s"):
            count = _column(frame, f"{prefix}{kind}.count").fillna(0)
            over = _column(frame, f"{prefix}{kind}.over_slo").fillna(0)
            p99 = _column(frame, f"{prefix}{kind}.p99")
            total = count.sum()
            row[f"{kind[:-2]}_over_slo"] = round(float((count * over).sum() / total), 4) if total else np.nan
            row[f"{kind[:-2]}_p99_median_s"] = round(float(p99.median()), 4) if p99.notna().any() else np.nan
        rows.append(row)
    return base, pd.DataFrame(rows)


def plot_log(path: str | Path, out: str | Path) -> Path:
    """Power, clock and per-model p99 latencies over time, into a PNG."""
    records, frame = read_log(path)
    models = next((r for r in records if r.get("event") == "start"), {}).get("models", [])
    fig, grid = figure(9, 8, 3, 1, sharex=True)
    axes = grid[:, 0]
    axes[0].plot(frame["t_s"], frame["avg_power_w"], label="power (energy counter)")
    axes[0].set_ylabel("W")
    axes[1].step(frame["t_s"], frame["sm_clock_mhz"], where="post", label="SM clock")
    axes[1].step(frame["t_s"], frame["target_clock_mhz"], where="post", linestyle=":", label="controller's target")
    axes[1].set_ylabel("MHz")
    for model in models:
        for kind, style in (("ttft_s", "-"), ("itl_s", "--")):
            column = f"engines.{model}.{kind}.p99"
            if column in frame:
                axes[2].plot(frame["t_s"], frame[column], style, label=f"{model} {kind[:-2]} p99")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("s")
    axes[2].set_xlabel("time (s)")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


__all__ = ["plot_log", "read_log", "summarize"]
