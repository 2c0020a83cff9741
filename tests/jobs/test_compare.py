"""``festgym compare``: tables, reference, determinism across processes, files, CLI and errors.

Runs are two simulated minutes so the file stays fast; one comparison is shared by most tests.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from festgym.cli.main import main
from festgym.control.states import STATES
from festgym.errors import FestgymError
from festgym.jobs.compare import (
    ABLATION,
    REFERENCE,
    SAVINGS_COLUMNS,
    TABLE_COLUMNS,
    ci95,
    compare,
    parse_seeds,
    plan,
    report_lines,
)
from festgym.policies import RULE_POLICIES

SHORT = dict(scenario="default", policies=["festina", "least-loaded"], duration_s=120.0, progress=False)
ABLATION_LABELS = ["festina[dvfs]", "festina[dvfs+partition]", "festina[dvfs+partition+placement]", "festina"]
WALL = ["wall_s", "requests_per_wall_s"]
"""Wall-clock columns: the only ones allowed to differ between two runs of the same job."""


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return compare(**SHORT, seeds=(0,), jobs=1, out=tmp_path_factory.mktemp("cmp1"))


def test_tables_have_every_column_and_finite_numbers(in_process):
    table = in_process.summary
    assert list(table.columns) == list(TABLE_COLUMNS)
    expected = ["festina", "least-loaded"] + ([REFERENCE] if REFERENCE in RULE_POLICIES else [])
    assert table.policy.tolist() == expected
    numbers = table.drop(columns=["policy", "energy_kwh_ci95", "slo_pct_ci95", "savings_pct", "slo_diff_pp"])
    assert np.isfinite(numbers.to_numpy(float)).all()
    assert table.energy_kwh_ci95.isna().all()  # one seed: no interval
    assert ((table.slo_pct >= 0) & (table.slo_pct <= 100)).all()


def test_savings_reference(in_process):
    table = in_process.summary.set_index("policy")
    if REFERENCE in RULE_POLICIES:
        assert table.loc[REFERENCE, "savings_pct"] == 0.0
        assert table.loc[REFERENCE, "slo_diff_pp"] == 0.0
        ref = table.loc[REFERENCE, "energy_kwh"]
        festina = table.loc["festina"]
        assert festina["savings_pct"] == pytest.approx(100 * (1 - festina["energy_kwh"] / ref))
        assert not any(REFERENCE in note for note in in_process.notes)
    else:
        assert table.savings_pct.isna().all() and table.slo_diff_pp.isna().all()
        assert any(REFERENCE in note for note in in_process.notes)


def test_ablation_rows(in_process):
    assert [label for label, _ in ABLATION] == ABLATION_LABELS[:-1]
    assert in_process.ablation.policy.tolist() == ABLATION_LABELS
    full = in_process.ablation.set_index("policy").loc["festina"]
    main_row = in_process.summary.set_index("policy").loc["festina"]
    assert full.energy_kwh == main_row.energy_kwh  # the main run, reused
    assert (in_process.runs.policy == "festina").sum() == 1
    # the variants really differ from one another (the switches reach the policy)
    assert in_process.ablation.energy_kwh.nunique() > 1


def test_files_written(in_process):
    out = in_process.out
    for name in ("summary.csv", "runs.csv", "ablation.csv"):
        assert (out / name).stat().st_size > 0
        assert in_process.files[name] == out / name
    for name in ("energy_vs_slo.png", "power_over_time.png", "gpu_state_time.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    runs = pd.read_csv(out / "runs.csv")
    assert {"policy", "seed", "energy_kwh", "slo_attainment", "savings_pct", "slo_diff_pp"} <= set(runs.columns)
    assert len(runs) == len(in_process.runs)
    assert set(in_process.power.columns) == set(in_process.runs.policy)
    assert list(in_process.state_hours.columns) == list(STATES)
    # state time covers every GPU over the whole horizon
    horizon_h = in_process.runs.horizon_s.iloc[0] / 3600
    assert in_process.state_hours.sum(axis=1).to_numpy() == pytest.approx(8 * horizon_h, rel=1e-6)


def test_energy_per_model_is_a_table_of_its_own_and_adds_up_to_each_runs_gpus(in_process):
    models = in_process.models
    assert list(models.columns[:3]) == ["policy", "seed", "model"]
    assert {"static_j", "dynamic_j", "loading_j", "energy_j", "requests_j", "output_tokens", "j_per_token"} \
        <= set(models.columns)
    assert len(models) == len(in_process.runs) * models.model.nunique()
    runs = in_process.runs.set_index(["policy", "seed"])
    by_run = models.groupby(["policy", "seed"])
    unattributed_kwh = runs.unattributed_gpu_energy_kwh
    total_kwh = by_run.energy_j.sum() / 3.6e6 + unattributed_kwh.reindex(by_run.energy_j.sum().index)
    np.testing.assert_allclose(total_kwh.to_numpy(), runs.gpu_energy_kwh.reindex(total_kwh.index).to_numpy(),
                               rtol=1e-9)
    np.testing.assert_array_equal(by_run.output_tokens.sum().to_numpy(),
                                  runs.output_tokens.reindex(by_run.output_tokens.sum().index).to_numpy())
    for row in models.itertuples():  # the per-model figure in each run's summary row is the table's
        assert runs.loc[(row.policy, row.seed), f"j_per_token[{row.model}]"] == pytest.approx(row.j_per_token,
                                                                                             nan_ok=True)


def test_tables_are_written_as_parquet_too_with_their_types(in_process):
    pytest.importorskip("pyarrow")
    for name in ("summary", "runs", "models", "savings", "ablation"):
        assert in_process.files[f"{name}.parquet"] == in_process.out / f"{name}.parquet"
    models = pd.read_parquet(in_process.out / "models.parquet")
    pd.testing.assert_frame_equal(models, in_process.models, check_exact=True)
    assert models.output_tokens.dtype == np.int64
    assert not any("Parquet" in note for note in in_process.notes)


def test_without_pyarrow_the_csvs_are_written_alone_and_a_note_says_why(tmp_path, monkeypatch):
    from festgym.jobs import compare as compare_module
    from festgym.jobs import tables

    monkeypatch.setattr(tables, "parquet_available", lambda: False)
    monkeypatch.setattr(compare_module, "parquet_available", lambda: False)
    result = compare(**{**SHORT, "policies": ["festina"]}, seeds=(0,), jobs=1, ablation=False, out=tmp_path)
    assert not list(tmp_path.glob("*.parquet")) and (tmp_path / "models.csv").is_file()
    assert tables.PARQUET_NOTE in result.notes and "festgym[parquet]" in tables.PARQUET_NOTE


def test_savings_of_festina_against_every_other_policy(in_process):
    savings = in_process.savings
    assert list(savings.columns) == list(SAVINGS_COLUMNS)
    assert savings.against.tolist() == [p for p in in_process.summary.policy if p != "festina"]
    assert (savings.policy == "festina").all() and (savings.seeds == 1).all()
    table = in_process.summary.set_index("policy")
    for row in savings.itertuples():  # one seed: the paired saving is the ratio of the means
        assert row.saving_pct == pytest.approx(100 * (1 - table.loc["festina", "energy_kwh"] / table.loc[row.against,
                                                                                                       "energy_kwh"]))
        assert row.gpu_saving_pct == pytest.approx(100 * (1 - table.loc["festina", "gpu_kwh"] / table.loc[row.against,
                                                                                                        "gpu_kwh"]))
    if REFERENCE in RULE_POLICIES:
        assert savings.set_index("against").loc[REFERENCE, "saving_pct"] == pytest.approx(table.loc["festina",
                                                                                                    "savings_pct"])
    assert (table.gpu_kwh < table.energy_kwh).all()  # wall-plug adds the hosts
    saved = pd.read_csv(in_process.files["savings.csv"])
    assert saved.against.tolist() == savings.against.tolist()
    text = "\n".join(report_lines(in_process))
    assert "festina against each policy" in text and all(f"vs {p}" in text for p in savings.against)


def test_worker_processes_give_the_same_numbers(in_process, tmp_path):
    pooled = compare(**SHORT, seeds=(0, 1), jobs=2, out=tmp_path)
    first = pooled.runs[pooled.runs.seed == 0].drop(columns=WALL).reset_index(drop=True)
    pd.testing.assert_frame_equal(first, in_process.runs.drop(columns=WALL))
    pd.testing.assert_frame_equal(pooled.power, in_process.power)
    assert (pooled.summary.seeds == 2).all()
    assert np.isfinite(pooled.summary.energy_kwh_ci95).all()


def test_ci95_uses_t_quantiles():
    assert math.isnan(ci95([1.0]))
    x = [1.0, 2.0, 4.0]
    assert ci95(x) == pytest.approx(4.303 * np.std(x, ddof=1) / math.sqrt(3))
    assert ci95(range(40)) == pytest.approx(1.96 * np.std(range(40), ddof=1) / math.sqrt(40))
    stats = pytest.importorskip("scipy.stats")
    for n in range(2, 30):
        assert ci95(range(n)) == pytest.approx(stats.t.ppf(0.975, n - 1) * np.std(range(n), ddof=1) / math.sqrt(n),
                                               rel=1e-3)


def test_cli_json(tmp_path, capsys):
    assert main(["compare", "--policies", "least-loaded", "--duration", "60", "--seeds", "3", "--no-ablation",
                 "--jobs", "1", "--out", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["seeds"] == [3] and doc["out"] == str(tmp_path) and doc["ablation"] == []
    assert doc["summary"][0]["policy"] == "least-loaded"
    assert {r["seed"] for r in doc["runs"]} == {3}
    assert "ablation.csv" not in doc["files"] and (tmp_path / "summary.csv").is_file()


def test_cli_text_table(tmp_path, capsys):
    assert main(["compare", "--policies", "least-loaded", "--duration", "60", "--seeds", "0-1", "--no-ablation",
                 "--jobs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "least-loaded" in out and "±" in out and "savings_pct" in out and str(tmp_path) in out


def test_unknown_policy(tmp_path, capsys):
    assert main(["compare", "--policies", "festina,nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and all(name in err for name in RULE_POLICIES)
    assert "Traceback" not in err


def test_unknown_scenario(tmp_path, capsys):
    assert main(["compare", "--scenario", "no-such-scenario", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no-such-scenario" in err and "default" in err
    assert main(["compare", "--scenario", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "missing.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("text, words", [("a,b", "whole numbers"), ("3-1", "backwards"), ("-1,2", "whole numbers"),
                                         ("1,1", "repeat"), (",", "no seed")])
def test_bad_seeds(text, words, capsys):
    assert main(["compare", f"--seeds={text}"]) == 2
    assert words in capsys.readouterr().err


def test_parse_seeds():
    assert parse_seeds("3") == (3,)
    assert parse_seeds("0,5, 7") == (0, 5, 7)
    assert parse_seeds("0-2,7") == (0, 1, 2, 7)
    with pytest.raises(FestgymError):
        compare(**{**SHORT, "policies": []}, out=None)


def test_without_reference_savings_are_nan(monkeypatch, tmp_path, capsys):
    monkeypatch.delitem(RULE_POLICIES, REFERENCE, raising=False)  # in-process jobs see the patched registry
    assert main(["compare", "--policies", "least-loaded", "--duration", "60", "--no-ablation", "--jobs", "1",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"note: {REFERENCE} is not a registered policy" in out
    table = pd.read_csv(tmp_path / "summary.csv")
    assert table.policy.tolist() == ["least-loaded"] and table.savings_pct.isna().all()


def test_plan_runs_festina_for_the_ablation_only_when_needed():
    labels, runs, _ = plan(["least-loaded"], ablation=True)
    assert "festina" not in labels
    assert [r[0] for r in runs if r[1] == "festina"] == ABLATION_LABELS
    labels, runs, _ = plan(["festina"], ablation=True)
    assert [r[0] for r in runs].count("festina") == 1
    assert [r for r in plan(["festina"], ablation=False)[1] if r[0] != r[1]] == []


def test_default_policies_are_festina_the_baselines_and_shipped_checkpoints():
    from festgym.control.checkpoint import find_checkpoints
    from festgym.jobs.compare import check_policies
    from festgym.policies import COMPARED

    assert check_policies(None) == [*COMPARED, *find_checkpoints()] and "least-loaded" not in COMPARED


def test_paired_difference_cancels_the_workload():
    from festgym.jobs.compare import paired_difference

    runs = pd.DataFrame({"policy": ["a", "b"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                         "energy_kwh": [1.1, 1.0, 2.2, 2.0, 3.3, 3.0], "gpu_energy_kwh": [0.8, 1.0, 1.6, 2.0, 2.4, 3.0],
                         "slo_attainment": [0.9, 0.95] * 3})
    d = paired_difference(runs, "a", "b")
    assert d["energy_pct"] == pytest.approx(10.0) and d["energy_pct_ci95"] == pytest.approx(0.0, abs=1e-9)
    assert d["gpu_energy_pct"] == pytest.approx(-20.0) and d["gpu_energy_pct_ci95"] == pytest.approx(0.0, abs=1e-9)
    assert d["slo_pp"] == pytest.approx(-5.0) and d["seeds"] == 3


def test_references_run_beside_the_policies_when_asked(tmp_path):
    pytest.importorskip("scipy")
    result = compare(**{**SHORT, "policies": ["festina"]}, seeds=(0,), jobs=1, ablation=False, references=True,
                     out=tmp_path)
    # then max-clock, the savings reference
    assert list(result.summary.policy)[:3] == ["festina", "clairvoyant", "offline-optimal"]
    assert result.summary["energy_kwh"].gt(0).all()
