"""Deploy logs and ``festgym deploy report`` (festgym.jobs.deploy_report, festgym.cli.deploy): logs of
short simulated deploys made through the CLI (apply and dry run), read_log and summarize figures checked
against the records, the report's JSON and plot outputs, and its errors on malformed logs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from festgym.cli.main import main
from festgym.errors import FestgymError
from festgym.jobs.deploy_report import read_log, summarize
from festgym.scenario import load_scenario

MODELS = list(load_scenario("default").local.models)
DEFAULT_MHZ = 1980


def deploy(folder: Path, *extra: str) -> Path:
    log = folder / "deploy.jsonl"
    assert main(["deploy", "--simulate", "default", "--policy", "ppo-local", "--duration", "20", "--log", str(log),
                 *extra]) == 0
    return log


@pytest.fixture(scope="module")
def applied(tmp_path_factory) -> Path:
    return deploy(tmp_path_factory.mktemp("apply"), "--apply")


@pytest.fixture(scope="module")
def dry(tmp_path_factory) -> Path:
    return deploy(tmp_path_factory.mktemp("dry"))


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def intervals(log: Path) -> list[dict]:
    return [r for r in records(log) if r["event"] == "interval"]


def agent_records(log: Path) -> list[dict]:
    """The agent's records: without the ``simulator`` record the CLI appends on a simulated host."""
    return [r for r in records(log) if r["event"] != "simulator"]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def strict_json(text: str):
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON."""
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


# --- the log ---------------------------------------------------------------------------------------

def test_models_of_default_scenario():
    assert len(MODELS) == 2


def test_log_starts_and_stops_restored(applied):
    assert records(applied)[-1]["event"] == "simulator"
    log = agent_records(applied)
    assert log[0]["event"] == "start"
    assert log[0]["apply"] is True and log[0]["models"] == MODELS and log[0]["controller"] == "ppo-local"
    assert log[-1]["event"] == "stop"
    assert log[-1]["reason"] == "duration" and log[-1]["still_changed"] == []
    assert sorted(log[-1]["shares_reset"]) == sorted(MODELS)
    assert {r["event"] for r in log[1:-1]} == {"interval", "engine_error"}


def test_applied_log_changes_the_clock(applied):
    rows = intervals(applied)
    assert len(rows) == 20
    assert [r["t_s"] for r in rows] == [float(k) for k in range(1, 21)]  # after priming at 0
    assert any(r["applied"] for r in rows)
    locks = [c["args"] for r in rows if r["applied"] for c in r["calls"] if c["call"] == "set_locked_sm_clocks_mhz"]
    assert locks and all(lo == hi for lo, hi in locks)
    assert any(r["sm_clock_mhz"] != DEFAULT_MHZ for r in rows)
    assert all(r["applied"] is bool(r["calls"]) for r in rows)


def test_read_log(applied):
    recs, frame = read_log(applied)
    assert recs == records(applied)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 20
    for column in ("t_s", "energy_j", "sm_clock_mhz", "decision_ms", *(f"engines.{m}.ready" for m in MODELS)):
        assert column in frame.columns
    assert frame["energy_j"].notna().all()  # the agent primes the counter before the first interval
    assert (frame["dt_s"] == 1.0).all()


def test_read_log_skips_blank_lines(applied, tmp_path):
    lines = applied.read_text().splitlines()
    padded = write_lines(tmp_path / "padded.jsonl", ["", *lines[:3], "   ", *lines[3:], ""])
    assert read_log(padded)[0] == records(applied)


# --- summarize -------------------------------------------------------------------------------------

def test_summary_run_figures(applied):
    run, _ = summarize(applied)
    recs, rows = agent_records(applied), intervals(applied)
    energy_j = sum(r.get("energy_j", 0.0) for r in recs)
    assert run["energy_kj"] == pytest.approx(round(energy_j / 1e3, 3), abs=1e-9)
    assert abs(run["energy_kj"] - energy_j / 1e3) <= 5e-4 + 1e-9  # to the rounding
    assert sum(r["energy_j"] for r in rows) == pytest.approx(
        rows[-1]["energy_total_j"] - rows[0]["energy_total_j"] + rows[0]["energy_j"], abs=1e-6)  # the counter
    assert run["intervals"] == 20
    assert run["seconds"] == 20.0
    assert run["mean_power_w"] == round(energy_j / 20.0, 1)
    assert run["controller"] == "ppo-local" and run["apply"] is True
    assert run["stop"] == "duration" and run["still_changed"] == ""
    assert run["calls"] == sum(len(r["calls"]) for r in rows)
    assert run["watchdog_intervals"] == sum(r["watchdog"] for r in rows)
    assert run["engine_errors"] == sum(r["event"] == "engine_error" for r in recs)
    assert run["mean_clock_mhz"] == round(sum(r["sm_clock_mhz"] for r in rows) / 20, 0)


def test_summary_decision_latency(applied):
    run, _ = summarize(applied)
    for key in ("decision_ms_p50", "decision_ms_p99", "decision_ms_max"):
        assert isinstance(run[key], float) and run[key] > 0
    assert run["decision_ms_p50"] <= run["decision_ms_p99"] <= run["decision_ms_max"]
    assert run["decision_ms_max"] == pytest.approx(max(r["decision_ms"] for r in intervals(applied)), abs=1e-3)


def test_summary_model_rows(applied):
    _, models = summarize(applied)
    assert list(models["model"]) == MODELS
    assert list(models.columns) == ["model", "ready_frac", "ttft_over_slo", "ttft_p99_median_s", "itl_over_slo",
                                    "itl_p99_median_s"]
    rows = intervals(applied)
    for _, row in models.iterrows():
        ready = sum(r["engines"][row["model"]]["ready"] for r in rows) / len(rows)
        assert row["ready_frac"] == round(ready, 3)
        assert 0 < row["ready_frac"] < 1  # loading at first, then serving
        assert 0 <= row["ttft_over_slo"] <= 1 and 0 <= row["itl_over_slo"] <= 1
        assert row["ttft_p99_median_s"] > 0 and row["itl_p99_median_s"] > 0


def test_summary_of_killed_run(applied, tmp_path):
    kept = [json.dumps(r) for r in agent_records(applied) if r["event"] != "stop"]
    run, _ = summarize(write_lines(tmp_path / "killed.jsonl", kept))
    assert run["stop"] == "none (killed?)" and run["still_changed"] == "unknown"
    assert run["seconds"] == 20.0 and run["intervals"] == 20


def test_summary_of_single_unprimed_interval(applied, tmp_path):
    recs = agent_records(applied)
    first = next(r for r in recs if r["event"] == "interval")
    unprimed = {k: v for k, v in first.items() if k not in ("dt_s", "energy_j", "avg_power_w")}
    one = write_lines(tmp_path / "one.jsonl", [json.dumps(recs[0]), json.dumps(unprimed)])
    run, _ = summarize(one)
    assert run["intervals"] == 1 and run["energy_kj"] == 0.0 and run["seconds"] == 0.0


def test_summary_simulator_record_not_counted_twice(applied):
    run, _ = summarize(applied)
    simulator = records(applied)[-1]
    assert simulator["event"] == "simulator"
    assert run["simulator_energy_kj"] == round(simulator["energy_j"] / 1e3, 3)
    assert run["energy_kj"] == pytest.approx(run["simulator_energy_kj"], abs=2e-3)  # the agent's own account


# --- festgym deploy report ----------------------------------------------------------------------------

def test_report_json(applied, capsys):
    assert main(["deploy", "report", str(applied), "--json"]) == 0
    out = strict_json(capsys.readouterr().out)
    assert set(out) == {"run", "models"}
    assert out["run"]["intervals"] == 20 and out["run"]["seconds"] == 20.0
    assert out["run"] == json.loads(json.dumps(summarize(applied)[0]))
    assert [m["model"] for m in out["models"]] == MODELS


def test_report_table(applied, capsys):
    assert main(["deploy", "report", str(applied)]) == 0
    out = capsys.readouterr().out
    assert "intervals" in out and "energy_kj" in out
    for model in MODELS:
        assert model in out


def test_report_json_without_ready_intervals_is_strict_json(applied, tmp_path, capsys):
    recs = records(applied)
    third = [k for k, r in enumerate(recs) if r["event"] == "interval"][2]  # the engines are still loading
    early = write_lines(tmp_path / "early.jsonl", [json.dumps(r) for r in recs[:third + 1]])
    assert main(["deploy", "report", str(early), "--json"]) == 0
    out = strict_json(capsys.readouterr().out)
    assert out["models"][0]["ready_frac"] == 0.0 and out["models"][0]["ttft_over_slo"] is None


def test_report_plot(applied, tmp_path, capsys):
    png = tmp_path / "plots" / "deploy.png"
    assert main(["deploy", "report", str(applied), "--plot", str(png)]) == 0
    assert png.is_file() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {png}" in capsys.readouterr().out


def test_report_malformed_line(applied, tmp_path, capsys):
    lines = applied.read_text().splitlines()
    bad = write_lines(tmp_path / "bad.jsonl", [*lines[:4], '{"event": "interval", ', *lines[4:]])
    assert main(["deploy", "report", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("festgym: error: ")
    assert f"{bad}: line 5: not JSON" in err
    with pytest.raises(FestgymError, match="line 5: not JSON"):
        read_log(bad)


@pytest.mark.parametrize("content", ["", "\n\n", '{"event": "start", "models": []}\n{"event": "stop"}\n'])
def test_report_without_intervals(tmp_path, capsys, content):
    log = tmp_path / "empty.jsonl"
    log.write_text(content)
    assert main(["deploy", "report", str(log)]) == 2
    err = capsys.readouterr().err
    assert f"{log}: no interval records" in err
    with pytest.raises(FestgymError, match="no interval records"):
        summarize(log)


def test_report_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["deploy", "report", str(missing)]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


# --- a dry run ---------------------------------------------------------------------------------------------

def test_dry_run_log(dry):
    log = agent_records(dry)
    assert log[0]["event"] == "start" and log[0]["apply"] is False
    rows = intervals(dry)
    assert len(rows) == 20
    assert all(r["applied"] is False for r in rows)
    assert all(r["sm_clock_mhz"] == DEFAULT_MHZ for r in rows)
    assert all(r["power_limit_w"] == 700.0 for r in rows)
    calls = [c for r in rows for c in r["calls"]]
    locks = [c for c in calls if c["call"] == "set_locked_sm_clocks_mhz"]
    assert locks and all(c["nvml"] == "nvmlDeviceSetGpuLockedClocks" for c in locks)
    assert all(len(c["args"]) == 2 and c["args"][0] == c["args"][1] < DEFAULT_MHZ for c in locks)
    shares = [c for c in calls if c["call"] == "set_shares"]
    assert all(c["nvml"].startswith("nvidia-cuda-mps-control") for c in shares)
    stop = log[-1]
    assert stop["event"] == "stop" and stop["reset"] == [] and stop["shares_reset"] == []
    assert stop["still_changed"] == []


def test_dry_run_summary(dry):
    run, models = summarize(dry)
    assert run["apply"] is False
    assert run["mean_clock_mhz"] == DEFAULT_MHZ
    assert run["intervals"] == 20 and run["seconds"] == 20.0
    assert run["calls"] == sum(len(r["calls"]) for r in intervals(dry)) > 0
    assert list(models["model"]) == MODELS
