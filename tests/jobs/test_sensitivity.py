"""``festgym sensitivity``: the variants change what they claim, the savings move as the physics
says, the files have their columns, and the command line runs it.

Runs are one simulated minute on one seed with two assumptions, in-process; one analysis is
shared by most tests.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from festgym.cli.fields import flag_of
from festgym.cli.main import main
from festgym.errors import FestgymError
from festgym.jobs.sensitivity import (
    ASSUMPTIONS,
    BAND_COLUMNS,
    NAMES,
    SENSITIVITY_COLUMNS,
    TORNADO_COLUMNS,
    SensitivityConfig,
    check_assumptions,
    describe,
    pairs_of,
    report_lines,
    sensitivity,
    variants,
)
from festgym.jobs.tables import parquet_available
from festgym.profiles.specs import GpuSpec, NodeSpec
from festgym.scenario import load_scenario, parse_overrides

MIXED = "mixed-a100-h100"
"""Two GPU types: relative bands must follow each type's own constants."""
TYPES = ("A100-SXM-80GB", "H100-SXM-80GB")


def observed(name: str, sim, gpu_type: str) -> tuple[float | str, ...]:
    """What assumption ``name`` claims to change, as a built simulator runs it."""
    spec = sim.specs[gpu_type]
    st, power = spec.states, spec.power
    return {"vf_curve": (power.v_slope, power.v_floor), "hbm_power": (power.memory_w,),
            "resident_idle": (st.resident_w - st.empty_w, st.empty_w),
            "empty_floor": (st.empty_w, st.resident_w - st.empty_w),
            "resident_clock_floor": (st.resident_floor_frac,), "loading_power": (st.loading_w,),
            "host_power": (sim.node_spec.host_w,), "node_boot": (sim.node_spec.boot_s,),
            "cold_start": (sim.config.init_s,), "share_change": (sim.config.share_mechanism,)}[name]


NODE_W = NodeSpec.load("dgx-a100").host_w
"""Host power of the node the variants are checked on (mixed-a100-h100's)."""


def expected(name: str, side: str, shipped: GpuSpec) -> tuple[float | str, ...]:
    """The documented band, from the GPU type's shipped spec and the scenario's node (300 s boot)."""
    low = side == "low"
    st = shipped.states
    extra_w = st.resident_w - st.empty_w
    return {"vf_curve": (0.5, 0.9) if low else (1.0, 0.7),
            "hbm_power": (shipped.power.memory_w * (95 if low else 190) / 150,),
            "resident_idle": (extra_w * (0.65 if low else 1.2), st.empty_w),
            "empty_floor": (st.empty_w * (0.96 if low else 1.13), extra_w),
            "resident_clock_floor": (0.0 if low else 0.4,),
            "loading_power": (max(st.loading_w * 0.77, st.resident_w) if low else st.loading_w * 1.67,),
            # relative to the scenario's node (mixed-a100-h100 runs dgx-a100's 1100 W): 900-2500 W on dgx-h100
            "host_power": (NODE_W * (900.0 if low else 2500.0) / 1400.0,), "node_boot": (180.0 if low else 600.0,),
            "cold_start": (5.0 if low else 39.0,),
            "share_change": ("green-contexts" if low else "mps",)}[name]


@pytest.fixture(scope="module")
def mixed_variants():
    base = load_scenario(MIXED)
    return base, {(v.assumption, v.side): v for v in variants(base, ASSUMPTIONS)}


@pytest.mark.parametrize("name", NAMES)
def test_each_variant_changes_what_it_claims_and_nothing_else(mixed_variants, name):
    base, found = mixed_variants
    base_sim = base.simulator()
    for side in ("low", "high"):
        sim = found[(name, side)].scenario.simulator()
        for gpu_type in TYPES:
            assert observed(name, sim, gpu_type) == pytest.approx(
                expected(name, side, GpuSpec.load(gpu_type))), (name, side, gpu_type)
        for other in set(NAMES) - {name}:  # the others stay at the base (empty_floor shifts resident_w with it)
            if {name, other} != {"empty_floor", "resident_idle"}:
                for gpu_type in TYPES:
                    assert observed(other, sim, gpu_type) == observed(other, base_sim, gpu_type), (name, other)


def test_cold_start_also_sets_a_models_own_init_time():
    base = load_scenario(MIXED, models={"Qwen3-8B": {"engine": {"init_s": 20.0}}})
    high = next(v for v in variants(base, check_assumptions(["cold_start"])) if v.side == "high")
    assert high.scenario.sim.init_s == 39.0
    assert high.scenario.models["Qwen3-8B"].engine.init_s == 39.0
    assert high.scenario.models["Llama-3.1-8B"].engine.init_s is None  # takes sim.init_s


def test_relative_bands_start_from_the_scenarios_own_physics():
    base = load_scenario(MIXED, physics={"H100-SXM-80GB": {"power": {"memory_w": 100.0}}})
    high = next(v for v in variants(base, check_assumptions(["hbm_power"])) if v.side == "high")
    assert high.scenario.simulator().specs["H100-SXM-80GB"].power.memory_w == pytest.approx(100.0 * 190 / 150)


def test_the_override_text_is_set_form_that_reads_back():
    base = load_scenario(MIXED)
    for v in variants(base, ASSUMPTIONS)[1:]:
        text = describe(v.overrides)
        again = load_scenario(base, **parse_overrides(text.split("; "), base.raw))
        for part in ("physics", "sim", "node", "models"):
            assert getattr(again, part) == getattr(v.scenario, part), (v.assumption, part)


def test_unknown_assumption_is_an_error_listing_the_known(capsys):
    with pytest.raises(FestgymError, match="unknown assumption nope; known: " + ", ".join(NAMES)):
        SensitivityConfig(assumptions=("host_power", "nope"))
    with pytest.raises(FestgymError, match="no assumption named"):
        check_assumptions(())
    assert main(["sensitivity", "--assumptions", "nope", "--duration", "60"]) == 2
    assert "unknown assumption nope" in capsys.readouterr().err


def test_pairs_leave_the_baselines_out():
    assert pairs_of(["festina", "dvfs-only", "max-clock"], ["max-clock"]) == [("festina", "max-clock"),
                                                                              ("dvfs-only", "max-clock")]
    with pytest.raises(FestgymError, match="every policy run"):
        pairs_of(["festina", "max-clock"], ["festina", "max-clock"])


# --- one small analysis ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    return sensitivity("default", policies=("festina", "max-clock"), assumptions=("host_power", "node_boot"),
                       duration_s=60.0, seeds=(0,), jobs=1, out=tmp_path_factory.mktemp("sens"), progress=False)


def test_host_power_raises_every_policys_energy_and_brackets_the_saving(analysis):
    runs = analysis.runs.set_index(["assumption", "side", "policy"])
    for policy in ("festina", "max-clock"):
        low, base, high = (runs.loc[key + (policy,)] for key in (("host_power", "low"), ("base", "base"),
                                                                  ("host_power", "high")))
        assert low.energy_kwh < base.energy_kwh < high.energy_kwh
        assert low.gpu_energy_kwh == base.gpu_energy_kwh == high.gpu_energy_kwh  # only the host changed
    rows = analysis.table.set_index(["assumption", "side"]).saving_pct
    lo, hi = rows[("host_power", "low")], rows[("host_power", "high")]
    assert lo != hi and min(lo, hi) <= rows[("base", "base")] <= max(lo, hi)
    gpu = analysis.table.set_index(["assumption", "side"]).gpu_saving_pct
    assert gpu[("host_power", "low")] == gpu[("host_power", "high")] == gpu[("base", "base")]


def test_tables(analysis):
    table, bands = analysis.table, analysis.bands
    assert list(table.columns) == list(SENSITIVITY_COLUMNS) and list(bands.columns) == list(BAND_COLUMNS)
    assert table[["assumption", "side"]].values.tolist() == [["base", "base"], ["host_power", "low"],
                                                             ["host_power", "high"], ["node_boot", "low"],
                                                             ["node_boot", "high"]]
    assert (table.policy == "festina").all() and (table.baseline == "max-clock").all()
    assert table.overrides.iloc[1] == "cluster.node.spec=dgx-h100; cluster.node.host_w=900"
    assert np.isfinite(table[["saving_pct", "gpu_saving_pct", "slo_diff_pp"]].to_numpy(float)).all()
    assert table.saving_pct_ci95.isna().all()  # one seed: no interval
    band = bands.iloc[0]
    assert band.low_pct == table.saving_pct.min() and band.high_pct == table.saving_pct.max()
    assert band.base_saving_pct == table.saving_pct.iloc[0]
    assert band.driver == "host_power" and band.driver_swing_pp == analysis.tornado.swing_pp.iloc[0]
    assert list(analysis.tornado.columns) == list(TORNADO_COLUMNS)
    assert analysis.tornado.swing_pp.is_monotonic_decreasing
    assert analysis.pair == ("festina", "max-clock")


def test_files_written(analysis):
    out = analysis.out
    tables = {"sensitivity", "bands", "runs"}
    copies = {f"{t}.parquet" for t in tables} if parquet_available() else set()
    assert set(analysis.files) == {f"{t}.csv" for t in tables} | copies | {"tornado.png"}
    frames = {"sensitivity.parquet": analysis.table, "bands.parquet": analysis.bands, "runs.parquet": analysis.runs}
    for name in copies:  # the table as it was, its types and empty strings kept (a CSV reads "" back as NaN)
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), frames[name].reset_index(drop=True))
    assert list(pd.read_csv(out / "sensitivity.csv").columns) == list(SENSITIVITY_COLUMNS)
    assert list(pd.read_csv(out / "bands.csv").columns) == list(BAND_COLUMNS)
    assert len(pd.read_csv(out / "runs.csv")) == 5 * 2
    assert (out / "tornado.png").read_bytes()[:4] == b"\x89PNG"


def test_report_names_the_band_and_its_driver(analysis):
    lines = list(report_lines(analysis))
    band = analysis.bands.iloc[0]
    assert (f"festina vs max-clock: {band.base_saving_pct:.1f}% (band {band.low_pct:.1f}–{band.high_pct:.1f}%, "
            "driven most by host_power)") in "\n".join(lines)
    assert lines[-1].startswith(f"wrote {analysis.out}/")


# --- the command line -----------------------------------------------------------------------------


def test_cli_help_has_an_option_per_config_field(capsys):
    assert main(["sensitivity", "--help"]) == 0
    text = capsys.readouterr().out
    assert "usage: festgym sensitivity" in text
    for f in dataclasses.fields(SensitivityConfig):
        assert flag_of(f) in text


def test_cli_run_writes_its_files(tmp_path, capsys):
    args = ["sensitivity", "--policies", "festina,max-clock", "--assumptions", "node_boot", "--duration", "60",
            "--jobs", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "festina vs max-clock:" in capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["out"] == str(tmp_path) and doc["pair"] == ["festina", "max-clock"]
    assert [r["side"] for r in doc["sensitivity"]] == ["base", "low", "high"]
    for name in ("sensitivity.csv", "bands.csv", "runs.csv", "tornado.png"):
        assert (tmp_path / name).stat().st_size > 0
