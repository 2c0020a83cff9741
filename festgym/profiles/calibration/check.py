"""Fit report: every profile against every calibration source present, plus grid fidelity."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from festgym.profiles import roofline
from festgym.profiles.calibration import sources
from festgym.profiles.profile import Profile
from festgym.resources import data_dir as default_data_dir

GRID_PROBES = 2000


def grid_fidelity(profile: Profile, seed: int = 0) -> list[dict]:
    """Grid interpolation against the model it samples, at random off-grid points (any supported
    clock, shares from the lowest grid share), for time and power of both phases."""
    rng = np.random.default_rng(seed)
    n = GRID_PROBES
    clocks = np.asarray(profile.gpu.sm_clocks_mhz, dtype=float)
    pos = rng.integers(0, len(clocks), n)
    share = rng.uniform(profile.decode_grid.axes[2][0], 1.0, n)
    tokens = np.exp(rng.uniform(0, np.log(16384), n))
    batch = np.exp(rng.uniform(0, np.log(1024), n))
    ctx = np.exp(rng.uniform(np.log(16), np.log(32768), n))
    where = [f"share={s:.3f} clock={int(c)}" for s, c in zip(share, clocks[pos])]
    cases = (
        ("prefill", profile.prefill(tokens, share, clocks[pos]),
         roofline.iteration_work(profile.model, prefill_tokens=tokens[:, None], prefill_seqs=1.0),
         tuple(f"tokens={t:.0f} {w}" for t, w in zip(tokens, where))),
        ("decode", profile.decode(batch, ctx, share, clocks[pos]),
         roofline.iteration_work(profile.model, decode_batch=batch[:, None], decode_ctx=ctx[:, None]),
         tuple(f"batch={b:.0f} ctx={c:.0f} {w}" for b, c, w in zip(batch, ctx, where))),
    )
    rows = []
    for phase, got, work, labels in cases:
        want = roofline.evaluate(work, profile.gpu, share[:, None], clocks)
        for field in ("time_s", "power_w"):
            exact = getattr(want, field)[np.arange(n), pos]
            rows.append(sources.Comparison("grid-vs-model", f"{phase}.csv", f"{phase}_{field}", labels,
                                           exact, got[field]).summary())
    return rows


def check_profile(profile: Profile, data: Path | None = None) -> list[dict]:
    """Fit errors of one profile: each applicable source's metrics, then grid fidelity."""
    data = data if data is not None else default_data_dir()
    rows = []
    if data is not None:
        comparisons = sources.all_comparisons(profile.gpu, {profile.model.name: profile.model}, data, profile.parallel)
        rows = sources.summaries(comparisons)
    return rows + measured_vs_generated(profile) + grid_fidelity(profile)


def measured_vs_generated(profile: Profile) -> list[dict]:
    """A measured profile's raw points (``festgym profile``) against the generated model of the
    same pair, recomputed with this profile's GPU constants; nothing for a generated profile."""
    from festgym.profiles.calibration.measured import (
        MEASUREMENTS,
        comparisons,
        with_predictions,
    )

    path = profile.path / MEASUREMENTS if profile.path is not None else None
    if path is None or not path.is_file():
        return []
    frame = pd.read_csv(path)
    raw = frame.drop(columns=[c for c in frame if c.startswith("model_") or c.endswith("_ratio")])
    return comparisons(with_predictions(raw.to_dict(orient="records"), profile.gpu, profile.model))


def check_profiles(profiles: Iterable[Profile], data: Path | None = None) -> pd.DataFrame:
    rows = [{"profile": p.key, **row} for p in profiles for row in check_profile(p, data)]
    return pd.DataFrame(rows)
