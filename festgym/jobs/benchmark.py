"""``festgym benchmark``: a fixed, versioned suite of tasks, one metric, and a leaderboard.

Suite :data:`SUITE_VERSION`: the :data:`TASKS` (scenarios × loads, heterogeneous and multi-node
among them), each on the held-out :data:`SEEDS` (used by nothing else in festgym: no policy,
controller or hyper-parameter was tuned or trained on them). Every entry runs every task beside
Festina and max-clock on the same seeded workloads; the metric is wall-plug energy and joint SLO
attainment against each, paired per seed with 95% intervals (:func:`~festgym.jobs.compare.paired_difference`).

The leaderboard ranks the entries whose mean joint SLO attainment is no more than
:data:`SLO_SLACK_PP` below Festina's by their mean energy against Festina (less is better); the
others follow, marked, as energy bought with SLOs is not a saving.

An entry is a rule policy's name, a shipped checkpoint (or a checkpoint folder), or a submission
file (YAML) naming one of those or a policy in Python code::

    name: my-policy                      # its row on the leaderboard
    policy: mypackage.policies:MyPolicy  # an entry point, a checkpoint folder or a rule policy's name

(an entry point is called without arguments: a factory in the module fixes any settings).

Before the suite runs, each submission is validated: the file is read (safe YAML, known fields only),
the policy built, and run twice on the first task's first seed: two runs that differ in anything
but wall time mean a non-deterministic policy, which is refused (the suite's intervals assume a
seed gives one answer). Any failure names the file and what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from festgym.errors import FestgymError
from festgym.jobs.compare import REFERENCE, check_policies, compare, paired_difference, policy_label
from festgym.jobs.ray_session import LOCAL_RAY
from festgym.jobs.tables import write_tables
from festgym.policies import COMPARED
from festgym.policies.registry import make_policy
from festgym.scenario import Scenario, load_scenario

SUITE_VERSION = "2026.12-1"
SEEDS = (7001, 7002, 7003)
"""Held-out seeds: used by no tuning, training or other evaluation in festgym."""
FESTINA = "festina"
SLO_SLACK_PP = 0.5
"""How far below Festina's mean joint SLO attainment (pp) an entry may be and still be ranked."""
CHECK_S = 120.0
"""Simulated seconds of the determinism check (two runs of the first task's first seed)."""


@dataclass(frozen=True)
class Task:
    """One scenario at one load, on :data:`SEEDS`."""

    name: str
    scenario: str
    duration_s: float
    overrides: Mapping[str, Any] = field(default_factory=dict)
    what: str = ""

    def load(self) -> Scenario:
        return load_scenario(self.scenario, **{k: dict(v) for k, v in self.overrides.items()})


TASKS = (
    Task("default", "default", 1200.0, what="8 × H100, 17 models, bursty ~5 req/s (serverless)"),
    Task("default-busy", "default", 1200.0, {"workload": {"rate_rps": 8.0}}, "the default at 8 req/s"),
    Task("saturated", "saturated", 900.0, what="8 × H100, 4 models at ~20 req/s"),
    Task("diurnal-low", "diurnal-low", 1800.0, what="8 × H100, 6 req/s mean, ±80% over the hour"),
    Task("mixed-a100-h100", "mixed-a100-h100", 900.0, what="4 × A100 + 4 × H100 (heterogeneous), ~14 req/s"),
    Task("serverless-multinode", "serverless-multinode", 1800.0, what="4 nodes × 8 H100, node power-off"),
)

LEADERBOARD_COLUMNS = ("rank", "entry", "energy_vs_festina_pct", "slo_vs_festina_pp", "energy_vs_max_clock_pct",
                       "slo_vs_max_clock_pp", "ranked")


@dataclass(frozen=True)
class Entry:
    """A leaderboard row's policy: its name there and what :func:`make_policy` builds it from."""

    name: str
    policy: str
    source: str = ""
    """The submission file it came from ('' for a shipped entry)."""


def shipped_entries() -> list[Entry]:
    """The first entries: Festina, the baselines, ``least-loaded`` and every shipped checkpoint."""
    from festgym.control.checkpoint import find_checkpoints

    names = list(dict.fromkeys([*COMPARED, "least-loaded", *find_checkpoints(simulated_only=True)]))
    return [Entry(policy_label(n), n) for n in names]


SUBMISSION_FIELDS = {"name", "policy"}


def read_submission(path: str | Path) -> Entry:
    """A submission file (YAML), checked field by field; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise FestgymError(f"submission {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise FestgymError(f"submission {path}: not YAML ({exc})") from None
    if not isinstance(data, dict):
        raise FestgymError(f"submission {path}: expected a mapping with {', '.join(sorted(SUBMISSION_FIELDS))}")
    unknown = sorted(set(data) - SUBMISSION_FIELDS)
    if unknown:
        raise FestgymError(f"submission {path}: unknown field {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(SUBMISSION_FIELDS))}")
    for key in ("name", "policy"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise FestgymError(f"submission {path}: field '{key}' must be a non-empty string")
    policy = data["policy"].strip()
    if not policy.startswith("/") and (path.parent / policy).is_dir():  # a checkpoint folder beside the file
        policy = str(path.parent / policy)
    try:
        check_policies([policy])
    except FestgymError as exc:
        raise FestgymError(f"submission {path}: field 'policy': {exc}") from None
    return Entry(data["name"].strip(), policy, str(path))


def validate(entry: Entry, task: Task = TASKS[0]) -> None:
    """Build ``entry``'s policy and run it twice on ``task``'s first seed; refuse it (naming why)
    if it cannot be built or run, or if the two runs differ in anything but wall time."""
    where = entry.source or entry.name
    scenario = task.load()
    trace = scenario.trace(SEEDS[0], CHECK_S)
    summaries = []
    for _ in range(2):
        try:
            result = scenario.simulator().run(trace, make_policy(entry.policy))
        except Exception as exc:  # the submission's code: any failure refuses it
            raise FestgymError(f"submission {where}: refused: its policy failed on task {task.name}, seed "
                               f"{SEEDS[0]}: {exc!r}") from None
        summaries.append({k: v for k, v in result.summary.items() if k not in ("wall_s", "requests_per_wall_s")})
    first, second = summaries
    differ = [k for k in first if not _same(first[k], second[k])]
    if differ:
        shown = ", ".join(f"{k} {first[k]!r} then {second[k]!r}" for k in differ[:3])
        raise FestgymError(f"submission {where}: refused: not deterministic: two runs of task {task.name}, seed "
                           f"{SEEDS[0]} differ ({shown}); draw randomness from a seeded numpy Generator, reset in "
                           f"reset()")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (np.isnan(a) and np.isnan(b))
    return bool(a == b)


@dataclass
class BenchmarkResult:
    """The leaderboard, the per-task table it summarises, and the files written."""

    leaderboard: pd.DataFrame
    tasks: pd.DataFrame
    """One row per (entry, task): energy and SLO against Festina and max-clock, with intervals."""
    files: dict[str, Path] = field(default_factory=dict)


def run_benchmark(entries: Sequence[Entry], out: Path, tasks: Sequence[Task] = TASKS, seeds: Sequence[int] = SEEDS,
                  jobs: int | None = None, ray: str | None = None, progress: bool = True) -> BenchmarkResult:
    """Every entry on every task beside Festina and max-clock; the tables and ``leaderboard.md``."""
    names = [e.name for e in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FestgymError(f"benchmark: two entries named {', '.join(repeated)}: rename one")
    taken = [e for e in entries if e.name in (FESTINA, REFERENCE) and policy_label(e.policy) != e.name]
    if taken:
        raise FestgymError(f"benchmark: {taken[0].source or taken[0].name}: the name {taken[0].name!r} is the "
                           f"reference's; pick another")
    rows = []
    for task in tasks:
        runs = _task_runs(task, entries, seeds, out / "runs" / task.name, jobs, ray, progress)
        for entry in entries:
            row: dict[str, Any] = {"entry": entry.name, "task": task.name}
            for against, key in ((FESTINA, "festina"), (REFERENCE, "max_clock")):
                d = paired_difference(runs, entry.name, against)
                row.update({f"energy_vs_{key}_pct": d["energy_pct"], f"energy_vs_{key}_pct_ci95": d["energy_pct_ci95"],
                            f"slo_vs_{key}_pp": d["slo_pp"], f"slo_vs_{key}_pp_ci95": d["slo_pp_ci95"]})
            rows.append(row)
    table = pd.DataFrame(rows)
    board = leaderboard(table)
    out.mkdir(parents=True, exist_ok=True)
    files = write_tables(out, {"leaderboard": board, "tasks": table})
    files["leaderboard.md"] = out / "leaderboard.md"
    files["leaderboard.md"].write_text(markdown(board, table, tasks, seeds))
    return BenchmarkResult(board, table, files)


def _task_runs(task: Task, entries: Sequence[Entry], seeds: Sequence[int], out: Path, jobs: int | None,
               ray: str | None, progress: bool) -> pd.DataFrame:
    """One task's runs of every entry, Festina and max-clock (one compare), each entry's rows under its
    leaderboard name."""
    policies = tuple(dict.fromkeys([*(e.policy for e in entries), FESTINA, REFERENCE]))
    result = compare(task.load(), policies=policies, seeds=tuple(seeds), duration_s=task.duration_s,
                     ablation=False, jobs=jobs, ray=ray, out=out, progress=progress)
    runs = result.runs
    labelled = [runs[runs.policy == policy_label(e.policy)].assign(policy=e.name) for e in entries]
    references = runs[runs.policy.isin([p for p in (FESTINA, REFERENCE) if p not in {e.name for e in entries}])]
    return pd.concat([*labelled, references], ignore_index=True)


def leaderboard(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over tasks per entry; ranked as the module says."""
    means = table.groupby("entry", sort=False)[["energy_vs_festina_pct", "slo_vs_festina_pp", "energy_vs_max_clock_pct",
                                                "slo_vs_max_clock_pp"]].mean().reset_index()
    means["ranked"] = means.slo_vs_festina_pp >= -SLO_SLACK_PP
    means = means.sort_values(["ranked", "energy_vs_festina_pct"], ascending=[False, True], kind="stable")
    means.insert(0, "rank", np.where(means.ranked, np.arange(1, len(means) + 1), 0))
    return means[list(LEADERBOARD_COLUMNS)].reset_index(drop=True)


def markdown(board: pd.DataFrame, table: pd.DataFrame, tasks: Iterable[Task], seeds: Sequence[int]) -> str:
    """The leaderboard as Markdown: the ranking, then each task's figures with their intervals."""
    tasks = list(tasks)
    lines = [f"# festgym benchmark {SUITE_VERSION}", "",
             f"Tasks: {', '.join(t.name for t in tasks)}; held-out seeds {', '.join(map(str, seeds))}. Energy is "
             f"wall-plug, against Festina and max-clock on the same seeded workloads, paired per seed (mean over "
             f"tasks; per task below with 95% intervals). Ranked: mean joint SLO attainment at most {SLO_SLACK_PP} "
             f"pp below Festina's, by energy against Festina (less is better). `festgym benchmark` writes this file.",
             "", "| rank | entry | energy vs Festina | SLO vs Festina | energy vs max-clock | SLO vs max-clock |",
             "|---|---|---|---|---|---|"]
    for row in board.itertuples():
        lines.append(f"| {row.rank if row.ranked else '—'} | {row.entry} | {row.energy_vs_festina_pct:+.1f}% | "
                     f"{row.slo_vs_festina_pp:+.2f} pp | {row.energy_vs_max_clock_pct:+.1f}% | "
                     f"{row.slo_vs_max_clock_pp:+.2f} pp |")
    lines += ["", "| task | what | simulated |", "|---|---|---|"]
    lines += [f"| {t.name} | {t.what} | {t.duration_s:g} s |" for t in tasks]
    lines += ["", "Per task, energy / joint SLO against Festina (± 95% half-widths over the seeds):", "",
              "| entry | " + " | ".join(t.name for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    cell = table.set_index(["entry", "task"])
    for entry in board.entry:
        parts = []
        for t in tasks:
            r = cell.loc[(entry, t.name)]
            parts.append(f"{r.energy_vs_festina_pct:+.1f} ± {_ci(r.energy_vs_festina_pct_ci95)}% / "
                         f"{r.slo_vs_festina_pp:+.2f} ± {_ci(r.slo_vs_festina_pp_ci95)} pp")
        lines.append(f"| {entry} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def _ci(x: float) -> str:
    return f"{x:.1f}" if np.isfinite(x) else "n/a"


@dataclass(frozen=True)
class BenchmarkConfig:
    """What ``festgym benchmark`` runs (one option per field)."""

    submit: tuple[str, ...] = field(default=(), metadata={"repeat": True, "metavar": "FILE"})
    """A submission file (YAML: name, policy); repeatable. Each is validated before the suite runs."""
    entries: tuple[str, ...] | None = field(default=None, metadata={"metavar": "POLICY,..."})
    """Policies to enter by name (default: Festina, the baselines, least-loaded and the shipped checkpoints)."""
    shipped: bool = True
    """Without --entries, enter the shipped entries (--no-shipped: the submissions alone)."""
    tasks: tuple[str, ...] | None = field(default=None, metadata={"metavar": "TASK,..."})
    """A subset of the suite's tasks (default: all; a subset's leaderboard is not the suite's)."""
    seeds: tuple[int, ...] = field(default=SEEDS, metadata={"cli": False})
    out: Path | None = None
    """Output folder (default: results/benchmark-<YYYYmmdd-HHMMSS>/)."""
    jobs: int | None = None
    """Worker processes (default: min(2, CPU count); 1: in-process)."""
    ray: str | None = field(default=None, metadata={"bare": LOCAL_RAY, "metavar": "ADDRESS"})
    """Run the simulations as Ray tasks (alone: a Ray started here; or a cluster's address)."""

    def chosen_tasks(self) -> list[Task]:
        if self.tasks is None:
            return list(TASKS)
        known = {t.name: t for t in TASKS}
        unknown = [t for t in self.tasks if t not in known]
        if unknown:
            raise FestgymError(f"--tasks: unknown task {', '.join(unknown)}; the suite's: {', '.join(known)}")
        return [known[t] for t in self.tasks]

    def chosen_entries(self) -> list[Entry]:
        entries = shipped_entries() if self.shipped and self.entries is None else []
        if self.entries is not None:
            entries += [Entry(policy_label(p), p) for p in check_policies(list(self.entries))]
        submissions = [read_submission(f) for f in self.submit]
        for entry in submissions:
            validate(entry, self.chosen_tasks()[0])
        entries += submissions
        if not entries:
            raise FestgymError("benchmark: nothing to enter: give --submit FILE or --entries, or drop --no-shipped")
        return entries


__all__ = ["SEEDS", "SUITE_VERSION", "TASKS", "BenchmarkConfig", "BenchmarkResult", "Entry", "Task", "leaderboard",
           "read_submission", "run_benchmark", "shipped_entries", "validate"]
