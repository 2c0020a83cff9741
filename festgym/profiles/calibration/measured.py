"""A measured profile's raw points (``measurements.csv``, written by ``festgym profile``) against
the generated model of the same (GPU, model) pair: the ``measured-vs-generated`` rows of the fit
report, and the ratios :mod:`festgym.profiles.profiler.assemble` corrects the generated grids by.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from festgym.profiles import roofline
from festgym.profiles.calibration.sources import Comparison
from festgym.profiles.models import ModelSpec
from festgym.profiles.specs import GpuSpec

MEASUREMENTS = "measurements.csv"
"""The raw points of a measured profile, in its folder."""


def predict(frame: pd.DataFrame, gpu: GpuSpec, model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """The generated model's time and power at each measured point (rows of ``measure``; a
    missing clock is the GPU's default)."""
    time_s, power_w = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    clock = frame["clock_mhz"].fillna(gpu.default_sm_clock_mhz).to_numpy(float)
    share = frame["share"].to_numpy(float)
    for phase in ("prefill", "decode"):
        rows = (frame["phase"] == phase).to_numpy()
        if not rows.any():
            continue
        if phase == "prefill":
            work = roofline.iteration_work(model, prefill_tokens=frame.loc[rows, "tokens"].to_numpy(float)[:, None])
        else:
            work = roofline.iteration_work(model, decode_batch=frame.loc[rows, "batch"].to_numpy(float)[:, None],
                                           decode_ctx=frame.loc[rows, "ctx"].to_numpy(float)[:, None])
        clocks = np.unique(clock[rows])
        it = roofline.evaluate(work, gpu, share[rows][:, None], clocks)
        pick = np.searchsorted(clocks, clock[rows])
        time_s[rows] = it.time_s[np.arange(rows.sum()), pick]
        power_w[rows] = it.power_w[np.arange(rows.sum()), pick]
    return time_s, power_w


def with_predictions(rows: list[dict], gpu: GpuSpec, model: ModelSpec) -> pd.DataFrame:
    """The raw rows as a frame, with the generated figures and the ratios beside them."""
    frame = pd.DataFrame(rows)
    for column in ("tokens", "batch", "ctx", "skipped", "energy_j", "power_w"):
        if column not in frame:
            frame[column] = np.nan
    frame["model_time_s"], frame["model_power_w"] = predict(frame, gpu, model)
    frame["log_time_ratio"] = np.log(frame["time_s"] / frame["model_time_s"])
    frame["power_dyn_ratio"] = ((frame["power_w"] - gpu.idle_w) / (frame["model_power_w"] - gpu.idle_w)).clip(lower=0)
    return frame


def comparisons(frame: pd.DataFrame) -> list[dict]:
    """Measured against generated, per phase and figure: the fit-error rows of a measured profile."""
    ok = frame[frame["skipped"].isna()]
    rows = []
    for phase in ("prefill", "decode"):
        part = ok[ok["phase"] == phase]
        labels = tuple(f"tokens={t:.0f}" if phase == "prefill" else f"batch={b:.0f} ctx={c:.0f}"
                       for t, b, c in zip(part["tokens"], part["batch"], part["ctx"]))
        labels = tuple(f"{label} share={s:g} clock={'running' if pd.isna(c) else f'{c:g}'}"
                       for label, s, c in zip(labels, part["share"], part["clock_mhz"]))
        for metric in ("time_s", "power_w"):
            if len(part) and part[metric].notna().all():
                rows.append(Comparison("measured-vs-generated", MEASUREMENTS, f"{phase}_{metric}", labels,
                                       part[metric].to_numpy(float), part[f"model_{metric}"].to_numpy(float)).summary())
    return rows
