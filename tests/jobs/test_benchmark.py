"""``festgym benchmark``: submissions read and validated (malformed and non-deterministic ones refused
with the reason), the suite's metric and ranking, and the files it writes."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from festgym.cli.main import main
from festgym.errors import FestgymError
from festgym.jobs.benchmark import (
    LEADERBOARD_COLUMNS,
    SEEDS,
    TASKS,
    Entry,
    Task,
    leaderboard,
    read_submission,
    run_benchmark,
    validate,
)

QUICK = Task("quick", "default", 90.0, what="the default, briefly")


def submission(tmp_path, text: str):
    path = tmp_path / "submission.yaml"
    path.write_text(text)
    return path


def test_the_suite_is_fixed_and_its_seeds_held_out():
    assert [t.name for t in TASKS] == ["default", "default-busy", "saturated", "diurnal-low", "mixed-a100-h100",
                                       "serverless-multinode"]
    assert set(SEEDS).isdisjoint(range(0, 200))  # evaluation (0-4), tuning (100-101) and training seeds


@pytest.mark.parametrize(("text", "problem"), [
    ("name: [", "not YAML"),
    ("- a\n- b\n", "expected a mapping"),
    ("name: x\npolicy: festina\nextra: 1\n", "unknown field extra"),
    ("policy: festina\n", "field 'name' must be a non-empty string"),
    ("name: x\npolicy: no-such-policy\n", "field 'policy': unknown policy no-such-policy"),
    ("name: x\npolicy: '!!python/object:os.system'\n", "field 'policy'"),
])
def test_malformed_submissions_are_refused_naming_the_field(tmp_path, text, problem):
    with pytest.raises(FestgymError, match=problem):
        read_submission(submission(tmp_path, text))


def test_yaml_tags_are_never_executed(tmp_path):
    with pytest.raises(FestgymError, match="not YAML"):
        read_submission(submission(tmp_path, "name: !!python/object/apply:os.system ['true']\npolicy: festina\n"))


def test_a_deterministic_entry_point_passes_and_the_others_are_refused_with_the_reason(tmp_path):
    validate(read_submission(submission(tmp_path, "name: steady\npolicy: benchmark_policies:Steady\n")), QUICK)
    with pytest.raises(FestgymError, match="not deterministic: two runs of task quick, seed 7001 differ"):
        validate(Entry("wobbly", "benchmark_policies:Wobbly", "wobbly.yaml"), QUICK)
    with pytest.raises(FestgymError, match=r"its policy failed .*no GPU for you"):
        validate(Entry("crashing", "benchmark_policies:Crashing", "crashing.yaml"), QUICK)
    with pytest.raises(FestgymError, match="returned has no reset, place, control, consolidate"):
        validate(Entry("odd", "benchmark_policies:not_a_policy", "odd.yaml"), QUICK)
    with pytest.raises(FestgymError, match="cannot import no_such_module"):
        validate(Entry("gone", "no_such_module:Policy", "gone.yaml"), QUICK)


def test_the_metric_pairs_every_entry_with_festina_and_max_clock_and_writes_the_leaderboard(tmp_path):
    entries = [Entry("steady", "benchmark_policies:Steady", "s.yaml"), Entry("festina", "festina"),
               Entry("max-clock", "max-clock")]
    result = run_benchmark(entries, tmp_path, [QUICK], seeds=(7001, 7002), jobs=1, progress=False)
    board = result.leaderboard.set_index("entry")
    assert list(result.leaderboard.columns) == list(LEADERBOARD_COLUMNS)
    assert board.loc["festina", "energy_vs_festina_pct"] == 0.0 and board.loc["festina", "slo_vs_festina_pp"] == 0.0
    assert board.loc["max-clock", "energy_vs_max_clock_pct"] == 0.0
    tasks = result.tasks.set_index("entry")
    assert math.isfinite(tasks.loc["steady", "energy_vs_festina_pct_ci95"])  # two seeds: an interval
    for name in ("leaderboard.md", "leaderboard.csv", "tasks.csv"):
        assert result.files[name].is_file()
    assert pd.read_csv(result.files["leaderboard.csv"]).entry.tolist() == result.leaderboard.entry.tolist()
    text = result.files["leaderboard.md"].read_text()
    assert "| steady |" in text and "7001, 7002" in text


def test_ranking_leaves_out_entries_that_buy_energy_with_slos():
    table = pd.DataFrame([
        {"entry": "frugal-but-late", "task": "t", "energy_vs_festina_pct": -30.0, "slo_vs_festina_pp": -5.0,
         "energy_vs_max_clock_pct": -40.0, "slo_vs_max_clock_pp": -6.0},
        {"entry": "good", "task": "t", "energy_vs_festina_pct": -2.0, "slo_vs_festina_pp": -0.2,
         "energy_vs_max_clock_pct": -15.0, "slo_vs_max_clock_pp": -1.0},
        {"entry": "festina", "task": "t", "energy_vs_festina_pct": 0.0, "slo_vs_festina_pp": 0.0,
         "energy_vs_max_clock_pct": -14.0, "slo_vs_max_clock_pp": -0.8}])
    board = leaderboard(table)
    assert board.entry.tolist() == ["good", "festina", "frugal-but-late"]
    assert board["rank"].tolist() == [1, 2, 0] and board.ranked.tolist() == [True, True, False]


def test_cli_refuses_a_non_deterministic_submission_before_running_the_suite(tmp_path, capsys):
    path = tmp_path / "wobbly.yaml"
    path.write_text("name: wobbly\npolicy: benchmark_policies:Wobbly\n")
    assert main(["benchmark", "--submit", str(path), "--no-shipped", "--tasks", "default", "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "wobbly.yaml: refused: not deterministic" in err
    assert not (tmp_path / "out").exists()


def test_reserved_names_and_unknown_tasks_are_refused(tmp_path):
    with pytest.raises(FestgymError, match="the name 'festina' is the reference's"):
        run_benchmark([Entry("festina", "least-loaded", "mine.yaml")], tmp_path, [QUICK], jobs=1, progress=False)
    assert main(["benchmark", "--tasks", "nope", "--out", str(tmp_path)]) == 2
