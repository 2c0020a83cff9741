"""Fit errors against the public measurements (skipped without ../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest

from festgym.profiles.calibration import fit, sources
from festgym.profiles.calibration.check import check_profile
from festgym.profiles.models import ModelSpec
from festgym.profiles.profile import load_profile
from festgym.profiles.specs import GpuSpec
from festgym.resources import PROFILES

CALIBRATED = ("Llama-3.1-8B", "Qwen3-8B", "Qwen3-14B")


@pytest.mark.parametrize("model", CALIBRATED)
def test_mlenergy_rows_within_10_percent_mape(model, reference_data):
    rows = check_profile(load_profile(f"H100-SXM-80GB/{model}"), reference_data)
    by_metric = {r["metric"]: r for r in rows if r["source"] == "mlenergy-v3"}
    assert set(by_metric) == {"median_itl_ms", "avg_power_w"}
    for _metric, row in by_metric.items():
        assert row["n"] >= 4
        assert row["mape_pct"] < 10.0, row


def test_all_sources_report_errors(reference_data):
    h100 = GpuSpec.load(PROFILES.shipped / "H100-SXM-80GB" / "gpu.yaml")
    a100 = GpuSpec.load(PROFILES.shipped / "A100-SXM-80GB" / "gpu.yaml")
    models = {m: ModelSpec.load(PROFILES.shipped / "model-configs" / m / "config.json") for m in CALIBRATED}
    h_rows = sources.summaries(sources.all_comparisons(h100, models, reference_data))
    a_rows = sources.summaries(sources.all_comparisons(a100, models, reference_data))
    got = {(r["source"], r["metric"]): r for r in h_rows + a_rows}
    assert got[("mlenergy-v3", "median_itl_ms")]["n"] == 38
    assert got[("mlenergy-v3", "median_itl_ms")]["mape_pct"] < 10
    assert got[("mlenergy-v3", "avg_power_w")]["mape_pct"] < 10
    assert got[("vidur-h100", "layer_time_ms")]["mape_pct"] < 10
    assert got[("perseus-a100", "rel_time")]["mape_pct"] < 5
    assert got[("perseus-a100", "rel_power")]["mape_pct"] < 5


def test_refit_reproduces_the_committed_constants(reference_data):
    pytest.importorskip("scipy")
    h100 = GpuSpec.load(PROFILES.shipped / "H100-SXM-80GB" / "gpu.yaml")
    a100 = GpuSpec.load(PROFILES.shipped / "A100-SXM-80GB" / "gpu.yaml")
    models = {p.parent.name: ModelSpec.load(p) for p in (PROFILES.shipped / "model-configs").glob("*/config.json")}
    new_h, new_a, _ = fit.calibrate(h100, a100, models, reference_data)
    for old, new in ((h100, new_h), (a100, new_a)):
        committed = {**old.latency.to_dict(), **old.power.to_dict()}
        refit = {**new.latency.to_dict(), **new.power.to_dict()}
        for name, value in committed.items():
            assert refit[name] == pytest.approx(value, rel=1e-3, abs=1e-9), name


def test_steady_state_median_is_pure_decode_at_low_batch(h100_llama8b):
    # With few arrivals per iteration the median iteration has no prefill in it.
    t, p = sources.steady_state(h100_llama8b.model, h100_llama8b.gpu, 8, 400, "lm-arena-chat")
    decode_only = h100_llama8b.decode_time(8, 220 + 400)
    assert t == pytest.approx(float(decode_only), rel=0.05)
    assert h100_llama8b.gpu.idle_w < p < h100_llama8b.gpu.tdp_w
    assert np.isfinite(p)
