"""Measurements -> a profile in the standard format, marking what was measured.

A profile grid covers tokens (or batch × context) × SM share × SM clock; a run measures a
sub-grid of it (at the running clock and the whole GPU, unless clocks are swept and shares are
partitioned). The profile is the generated one (:mod:`festgym.profiles.generate`: the roofline model with
the GPU's calibrated constants) **corrected by the measurements**: on every measured point the
ratio measured / generated is taken, and its logarithm is interpolated over the grid (log tokens,
log batch, log context, 1/share, 1/clock; held constant beyond the measured range). Along a
dimension measured at one value only, the generated shape is kept (it is modelled, and the
provenance says so).

* time: ``time = generated time × ratio``; bandwidth use scales by 1 / ratio (same bytes).
* power (when an energy meter was used): the dynamic part above idle scales,
  ``power = idle + (generated power − idle) × ratio``, ratio = (measured − idle) / (generated −
  idle) ≥ 0, then kept within [idle, TDP] as every profile is.

``measurements.csv`` in the profile folder keeps every raw point, with the generated figures
beside the measured ones; ``festgym profiles check`` reports their errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from festgym.errors import FestgymError
from festgym.profiles.calibration.measured import MEASUREMENTS
from festgym.profiles.generate import build_profile
from festgym.profiles.grid import Grid
from festgym.profiles.models import ModelSpec
from festgym.profiles.profile import DECODE_AXES, PREFILL_AXES, Profile, make_grid
from festgym.profiles.specs import GpuSpec


def _negative_reciprocal(x: np.ndarray) -> np.ndarray:
    return -1.0 / x


COORDINATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tokens": np.log, "batch": np.log, "ctx": np.log, "sm_share": _negative_reciprocal,
    "sm_clock_mhz": _negative_reciprocal}
"""The coordinate each axis's log-ratio is interpolated in."""


def _sub_grid(frame: pd.DataFrame, axes: tuple[str, ...], column: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The measured axes and ``column`` on their full product (NaN where a point was skipped)."""
    values = [np.sort(frame[a].unique()) for a in axes]
    table = frame.set_index(list(axes))[column]
    index = pd.MultiIndex.from_product(values, names=list(axes))
    return values, table.reindex(index).to_numpy(float).reshape([len(v) for v in values])


def _fill(a: np.ndarray) -> np.ndarray:
    """Skipped points take their nearest measured neighbour, along each axis in turn."""
    for axis in range(a.ndim):
        moved = np.moveaxis(a, axis, 0)
        flat = pd.DataFrame(moved.reshape(moved.shape[0], -1)).ffill().bfill().to_numpy()
        a = np.moveaxis(flat.reshape(moved.shape), 0, axis)
    return a


def _interp_onto(x: np.ndarray, y: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` given at ``x``, linearly interpolated at ``y``."""
    return np.interp(y, x, values)


def _resample(values: np.ndarray, src: list[np.ndarray], dst: tuple[np.ndarray, ...], names: tuple[str, ...]):
    """Interpolate ``values`` from the measured axes onto the grid's, axis by axis."""
    out = values
    for axis, (a, b, name) in enumerate(zip(src, dst, names)):
        if len(a) == 1:
            out = np.repeat(out, len(b), axis=axis)
        else:
            x, y = COORDINATES[name](a.astype(float)), COORDINATES[name](b.astype(float))
            out = np.apply_along_axis(partial(_interp_onto, x, y), axis, out)
    return out


def _corrected(grid: Grid, frame: pd.DataFrame, axes: tuple[str, ...], gpu: GpuSpec, power: bool) -> Grid:
    src, log_time = _sub_grid(frame, axes, "log_time_ratio")
    if np.isnan(log_time).all():
        raise FestgymError(f"no {axes[0]} point was measured (all skipped?)")
    ratio = np.exp(_resample(_fill(log_time), src, grid.axes, axes))
    fields = {"time_s": grid.fields["time_s"] * ratio,
              "hbm_util": np.clip(grid.fields["hbm_util"] / ratio, 0.0, 1.0),
              "power_w": grid.fields["power_w"]}
    if power:
        _, dyn = _sub_grid(frame, axes, "power_dyn_ratio")
        scale = _resample(_fill(dyn), src, grid.axes, axes)
        fields["power_w"] = np.clip(gpu.idle_w + (grid.fields["power_w"] - gpu.idle_w) * scale, gpu.idle_w, gpu.tdp_w)
    return make_grid(grid.names, grid.axes, fields, gpu)


def assemble(frame: pd.DataFrame, gpu: GpuSpec, model: ModelSpec, measurement: Mapping[str, Any]) -> Profile:
    """The measured profile: the generated one corrected by ``frame`` (:func:`with_predictions`)."""
    base = build_profile(gpu, model)
    ok = frame[frame["skipped"].isna()].assign(sm_share=lambda f: f["share"],
                                               sm_clock_mhz=lambda f: f["clock_mhz"].fillna(gpu.default_sm_clock_mhz))
    power = bool(ok["power_w"].notna().all())
    prefill = _corrected(base.prefill_grid, ok[ok["phase"] == "prefill"], PREFILL_AXES, gpu, power)
    decode = _corrected(base.decode_grid, ok[ok["phase"] == "decode"], DECODE_AXES, gpu, power)
    return Profile(gpu, model, prefill, decode, provenance(base.provenance, ok, measurement, power))


def provenance(generated: Mapping[str, Any], ok: pd.DataFrame, measurement: Mapping[str, Any],
               power: bool) -> dict[str, Any]:
    """Per dimension: measured (how, on which points) or modelled (the generated entry, kept)."""
    clocks, shares = sorted(ok["sm_clock_mhz"].unique()), sorted(ok["share"].unique())
    where = f"{MEASUREMENTS}: {len(ok)} points at SM clock(s) {', '.join(f'{c:g}' for c in clocks)} MHz, " \
            f"share(s) {', '.join(f'{s:g}' for s in shares)}"
    how = {"kind": "measured", "points": where,
           "method": "median of repeated steps (CUDA events or synchronised timers) after warm-up; the generated "
                     "profile corrected by measured/generated, interpolated in log space over the grid"}
    out = dict(generated)
    out["prefill_time_vs_tokens"] = {**how, "measured": "one prompt per step, tokens " +
                                     ", ".join(str(int(t)) for t in sorted(ok["tokens"].dropna().unique()))}
    out["decode_time_vs_batch_and_ctx"] = {**how, "measured": "batch " + ", ".join(
        str(int(b)) for b in sorted(ok["batch"].dropna().unique())) + "; context " + ", ".join(
        str(int(c)) for c in sorted(ok["ctx"].dropna().unique())) + " (contiguous KV cache)"}
    if len(clocks) > 1:
        out["time_vs_sm_clock"] = {**how, "measured": "SM clocks locked in turn (--sweep-clocks)"}
    if len(shares) > 1:
        out["time_vs_sm_share"] = {**how, "measured": f"SM shares through {measurement['share_mechanism']}"}
    if power:
        out["power"] = {**how, "method": "energy counter over a window of steps / window time; the generated "
                                         "dynamic power corrected by measured/generated above idle"}
    date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out["measurement"] = {"kind": "measured", **measurement, "date": date}
    return out


__all__ = ["assemble", "provenance"]
