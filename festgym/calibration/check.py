"""Fit report: every profile against every calibration source present, plus grid fidelity."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from festgym import roofline
from festgym.calibration import sources
from festgym.paths import data_dir as default_data_dir
from festgym.profile import Profile

GRID_PROBES = 2000


def grid_fidelity(profile: Profile, seed: int = 0) -> dict:
    """Worst relative error of grid interpolation against the model at random off-grid points."""
    rng = np.random.default_rng(seed)
    n = GRID_PROBES
    batch = np.exp(rng.uniform(0, np.log(1024), n))
    ctx = np.exp(rng.uniform(np.log(16), np.log(32768), n))
    share = rng.uniform(0.1, 1.0, n)
    clocks = np.asarray(profile.gpu.sm_clocks_mhz, dtype=float)
    clock = rng.choice(clocks[clocks >= profile.decode_grid.axes[3][0]], n)
    got = profile.decode_time(batch, ctx, share, clock)
    work = roofline.iteration_work(profile.model, decode_batch=batch[:, None], decode_ctx=ctx[:, None])
    ladder_pos = np.searchsorted(clocks, clock)
    full = roofline.evaluate(work, profile.gpu, share[:, None], clocks)
    want = full.time_s[np.arange(n), ladder_pos]
    err = np.abs(got / want - 1) * 100
    return {"source": "grid-vs-model", "file": "decode.csv", "metric": "decode_time_s", "n": n,
            "mape_pct": round(float(err.mean()), 2), "max_pct": round(float(err.max()), 2),
            "worst": f"random off-grid points, seed {seed}"}


def check_profile(profile: Profile, data: Path | None = None) -> list[dict]:
    """Fit errors of one profile: each applicable source's metrics, then grid fidelity."""
    data = data if data is not None else default_data_dir()
    rows = []
    if data is not None:
        comparisons = sources.all_comparisons(profile.gpu, {profile.model.name: profile.model}, data)
        rows = sources.summaries(comparisons)
    return rows + [grid_fidelity(profile)]


def check_profiles(profiles: Iterable[Profile], data: Path | None = None) -> pd.DataFrame:
    rows = [{"profile": p.key, **row} for p in profiles for row in check_profile(p, data)]
    return pd.DataFrame(rows)
