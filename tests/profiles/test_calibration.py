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


def shipped(name: str) -> GpuSpec:
    return GpuSpec.load(PROFILES.shipped / name / "gpu.yaml")


def all_models() -> dict[str, ModelSpec]:
    return {p.parent.name: ModelSpec.load(p) for p in (PROFILES.shipped / "model-configs").glob("*/config.json")}


def test_all_sources_report_errors(reference_data):
    h100, a100 = shipped("H100-SXM-80GB"), shipped("A100-SXM-80GB")
    models = {m: ModelSpec.load(PROFILES.shipped / "model-configs" / m / "config.json") for m in CALIBRATED}
    h_rows = sources.summaries(sources.all_comparisons(h100, models, reference_data))
    a_rows = sources.summaries(sources.all_comparisons(a100, models, reference_data))
    fitted = [r for r in h_rows if r["source"] == "mlenergy-v3"]
    assert sum(r["n"] for r in fitted if r["metric"] == "median_itl_ms") == 38  # the 1-GPU dense rows
    assert all(r["mape_pct"] < 10 for r in fitted), fitted
    vidur = {(r["file"], r["metric"]): r for r in h_rows if r["source"] == "vidur-h100"}
    assert len(vidur) == 8  # 7B and 70B layers, TP 1-8
    assert vidur[(sources.VIDUR_FILE, "layer_time_ms tp1")]["mape_pct"] < 10  # what the fit sees
    got = {(r["source"], r["metric"]): r for r in a_rows}
    assert got[("perseus-a100", "rel_time")]["mape_pct"] < 5
    assert got[("perseus-a100", "rel_power")]["mape_pct"] < 5


def test_every_b200_and_h100_moe_tp_fp8_row_is_reported_per_model(reference_data):
    """The issue's check: every row of those tables is compared, by model and plan, for both figures."""
    models = all_models()
    for gpu, files in (("B200-SXM-180GB", ("mlenergy-v3/b200_llm_configs.csv",)),
                       ("H100-SXM-80GB", ("mlenergy-v3/h100_moe_fp8_configs.csv", sources.MLENERGY_FILE))):
        comparisons = sources.mlenergy_comparisons(shipped(gpu), models, reference_data, files=files)
        for metric in ("median_itl_ms", "avg_power_w"):
            rows = sum(c.measured.size for c in comparisons if c.metric == metric)
            want = sum(len(sources.read_csv(reference_data, f)) for f in files)
            assert rows == want, (gpu, metric)
        assert {c.model for c in comparisons} >= ({"Llama-3.1-70B-tp2", "Qwen3-30B-A3B", "gpt-oss-20b"}
                                                  if gpu.startswith("B200") else
                                                  {"Llama-3.1-70B-tp4", "Llama-3.1-405B-FP8-tp8", "Qwen3-30B-A3B",
                                                   "Qwen3-30B-A3B-ep2", "gpt-oss-20b"})


def test_refit_reproduces_the_committed_constants(reference_data):
    pytest.importorskip("scipy")
    specs = {n: shipped(n) for n in (fit.H100, fit.A100, fit.H200, fit.B200)}
    calibration = fit.calibrate(specs, all_models(), reference_data)
    for name, old in specs.items():
        new = calibration.specs[name]
        committed = {**old.latency.to_dict(), **old.power.to_dict()}
        refit = {**new.latency.to_dict(), **new.power.to_dict()}
        for constant, value in committed.items():
            assert refit[constant] == pytest.approx(value, rel=1e-3, abs=1e-9), (name, constant)


def test_steady_state_median_is_pure_decode_at_low_batch(h100_llama8b):
    # With few arrivals per iteration the median iteration has no prefill in it.
    t, p = sources.steady_state(h100_llama8b.model, h100_llama8b.gpu, 8, 400, "lm-arena-chat")
    decode_only = h100_llama8b.decode_time(8, 220 + 400)
    assert t == pytest.approx(float(decode_only), rel=0.05)
    assert h100_llama8b.gpu.idle_w < p < h100_llama8b.gpu.tdp_w
    assert np.isfinite(p)


def test_prompt_mix_keeps_each_counts_probability_and_spreads_its_tokens():
    k = np.arange(6)
    pmf = np.array([0.4, 0.3, 0.15, 0.1, 0.04, 0.01])
    tokens, weight = sources._prompt_mix(k, pmf, 220.0, 1.5)
    nodes = sources.PROMPT_NODES
    assert weight.sum() == pytest.approx(1.0) and tokens.shape == weight.shape == (k.size * nodes,)
    per_count = tokens.reshape(k.size, nodes)
    assert (per_count[0] == 0).all() and (per_count[1:] > 0).all()
    assert (np.diff(per_count[1:], axis=1) > 0).all()  # quantiles, in order
    # Each count's nodes straddle its mean total, and more prompts spread less relative to it.
    rel = per_count[1:] / (k[1:, None] * 220.0)
    assert (rel[:, 0] < 1).all() and (rel[:, -1] > 1).all()
    assert np.all(np.diff(rel[:, -1] - rel[:, 0]) < 0)
    # Without spread every node is the fixed-length total.
    fixed, _ = sources._prompt_mix(k, pmf, 220.0, 0.0)
    np.testing.assert_allclose(fixed.reshape(k.size, nodes), np.repeat(k[:, None] * 220.0, nodes, axis=1))


def test_skewed_prompts_keep_a_whole_prefill_out_of_the_median_step(h100_llama8b, monkeypatch):
    # At 0.8 new prompts per step most steps (55%) admit one: with fixed-length prompts the median
    # step carries a whole mean prefill, with skewed ones (most short) it carries a short one.
    args = (h100_llama8b.model, h100_llama8b.gpu, 320, 400, "lm-arena-chat")
    skewed, _ = sources.steady_state(*args)
    monkeypatch.setitem(sources.PROMPT_CV, "lm-arena-chat", 0.0)
    fixed, _ = sources.steady_state(*args)
    decode_only = float(h100_llama8b.decode_time(320, 220 + 400))
    assert skewed == pytest.approx(decode_only, rel=0.03)
    assert fixed > 1.1 * skewed
