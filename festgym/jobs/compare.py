"""``festgym compare`` (and ``evaluate``): policies on the same seeded workloads, side by side.

This is the project's main job. For each seed it draws one workload from the scenario and serves
it with every policy asked for (default: Festina, the baselines,
:data:`festgym.policies.COMPARED`, and every trained controller in the checkpoint folders), so
policies differ only in their decisions, never in their traffic. ``max-clock`` (every GPU at its top
clock) always runs too, when registered: energy savings and SLO differences are reported against
it, per seed (paired), then averaged. The Festina ablation adds its parts one at a time, as the
paper reports it: ``festina[dvfs]``, ``festina[dvfs+partition]``,
``festina[dvfs+partition+placement]``, then the full ``festina`` (the main run, reused).

Each (policy, seed) run is a job. Jobs run in worker processes and are described by small,
picklable :class:`Job` specs: a worker rebuilds the scenario, simulator, trace and policy from
names and the seed, so the numbers do not depend on ``jobs`` or on the order runs finish in.
A worker sends back only what the tables and plots need (the summary, the cluster power per
control tick, GPU-hours per state), not the per-request frames.

Outputs (into ``out``): ``summary.csv`` (per policy, over seeds), ``runs.csv`` (per policy and
seed, the full summary), ``ablation.csv``, and three PNG plots: ``energy_vs_slo.png``,
``power_over_time.png`` and ``gpu_state_time.png`` (the last two for the first seed).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from festgym.config import check_ranges
from festgym.control.checkpoint import find_checkpoints, resolve_checkpoint
from festgym.control.states import STATES
from festgym.errors import FestgymError
from festgym.jobs.ray_session import LOCAL_RAY, ray_session
from festgym.jobs.tables import PARQUET_NOTE, parquet_available, write_tables
from festgym.plots import figure
from festgym.policies import COMPARED, REFERENCES, RULE_POLICIES, make_policy
from festgym.policies.registry import is_entry_point
from festgym.scenario import Scenario, load_scenario

REFERENCE = "max-clock"
"""The policy savings are measured against: vLLM-like serving at default clocks, nothing managed."""
FULL = "festina"
ABLATION: tuple[tuple[str, dict[str, bool]], ...] = tuple(
    (f"festina[{'+'.join(on)}]", {part: part in on for part in ("dvfs", "partition", "placement", "consolidation")})
    for on in (("dvfs",), ("dvfs", "partition"), ("dvfs", "partition", "placement")))
"""Cumulative Festina variants (label, switches); the last step, all four parts, is ``festina`` itself."""
MOVING_AVERAGE_S = 60.0
"""Window of the moving average in the power plot (the raw per-second series is unreadable)."""

T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045)
"""Student t 0.975 quantiles for 1..29 degrees of freedom: scipy is not a run-time dependency."""

TABLE_COLUMNS = ("policy", "seeds", "energy_kwh", "energy_kwh_ci95", "gpu_kwh", "j_per_token", "ttft_p50_ms",
                 "ttft_p90_ms",
                 "tbt_p50_ms", "tbt_p90_ms", "ttft_slo_pct", "tbt_slo_pct", "slo_pct", "slo_pct_ci95",
                 "savings_pct", "slo_diff_pp")
"""Columns of the summary and ablation tables. ``*_ci95``: half-width of the 95% interval of the
mean over seeds (NaN with one seed); ``savings_pct`` and ``slo_diff_pp`` are against max-clock.
``energy_kwh`` is wall-plug (GPUs and hosts), ``gpu_kwh`` the GPUs' alone."""
MEANS = {"energy_kwh": ("energy_kwh", 1.0), "gpu_kwh": ("gpu_energy_kwh", 1.0),
         "j_per_token": ("energy_j_per_token", 1.0),
         "ttft_p50_ms": ("ttft_p50_ms", 1.0), "ttft_p90_ms": ("ttft_p90_ms", 1.0),
         "tbt_p50_ms": ("tbt_p50_ms", 1.0), "tbt_p90_ms": ("tbt_p90_ms", 1.0),
         "ttft_slo_pct": ("ttft_attainment", 100.0), "tbt_slo_pct": ("tbt_attainment", 100.0),
         "slo_pct": ("slo_attainment", 100.0), "savings_pct": ("savings_pct", 1.0),
         "slo_diff_pp": ("slo_diff_pp", 1.0)}
"""Table column -> (per-run column, scale), averaged over seeds."""


# --- jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One run, described by names only, so that it crosses process boundaries cheaply and any
    process rebuilds exactly the same run from it."""

    label: str
    policy: str
    params: tuple[tuple[str, Any], ...]
    scenario: str | Scenario
    seed: int
    duration_s: float | None
    series: bool
    """Send back the per-tick cluster power and the GPU-hours per state (plots use one seed)."""


@dataclass
class JobResult:
    """What a worker sends back: small, whatever the run length."""

    label: str
    seed: int
    summary: dict[str, Any]
    trace_s: float
    """Length of the workload served (a replayed trace may be shorter than the duration asked)."""
    models: pd.DataFrame | None = None
    """The run's energy per model (:attr:`festgym.sim.results.Result.models`)."""
    power: np.ndarray | None = None
    """Rows (tick time s, cluster power W summed over GPUs)."""
    state_hours: dict[str, float] | None = None


def run_job(job: Job) -> JobResult:
    """Build and run one job. Festgym errors come back as plain :class:`FestgymError` naming the
    job: subclasses with their own constructors do not survive pickling between processes."""
    try:
        scenario = load_scenario(job.scenario)
        trace = scenario.trace(job.seed, job.duration_s)
        result = scenario.simulator().run(trace, make_policy(job.policy, **dict(job.params)))
    except FestgymError as exc:
        raise FestgymError(f"{job.label}, seed {job.seed}: {exc}") from None
    out = JobResult(job.label, job.seed, {**result.summary, "policy": job.label}, trace.duration_s, result.models)
    if job.series:
        power = result.timeline.groupby("t_s", sort=True)["power_w"].sum()
        out.power = np.column_stack([power.index.to_numpy(float), power.to_numpy(float)])
        out.state_hours = {s: float(result.gpus[f"time_{s}_s"].sum()) / 3600 for s in STATES}
    return out


def execute_jobs(jobs: Sequence[Job], workers: int, progress: bool, desc: str = "compare",
                 ray: str | None = None) -> list[JobResult]:
    """Run ``jobs`` (in-process with one worker; as Ray tasks with ``ray``, :func:`_execute_ray`)
    behind a progress bar named ``desc``; results in job order."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="run", file=sys.stderr, disable=None if progress else True)
    with bar:
        if ray is not None:
            return _execute_ray(jobs, ray, bar)
        if workers <= 1:
            results = []
            for job in jobs:
                bar.set_postfix_str(f"{job.label} seed {job.seed}")
                results.append(run_job(job))
                bar.update()
            return results
        return _execute_pool(jobs, workers, bar)


def _execute_pool(jobs: Sequence[Job], workers: int, bar) -> list[JobResult]:
    """Worker processes, started fresh ("spawn") rather than forked from a parent that may hold
    threads (the progress bar's) or large objects."""
    done: dict[int, JobResult] = {}
    # Festina's variants are the slowest runs: started first, they do not finish alone at the end.
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].policy != FULL)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures: dict[Future, int] = {pool.submit(run_job, jobs[i]): i for i in order}
        for future in as_completed(futures):
            i = futures[future]
            done[i] = future.result()
            bar.set_postfix_str(f"{jobs[i].label} seed {jobs[i].seed}")
            bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [done[i] for i in range(len(jobs))]


def _execute_ray(jobs: Sequence[Job], address: str, bar) -> list[JobResult]:
    """One Ray task per job, on a Ray started here (``address`` ``local``) or the cluster at
    ``address``. A job carries its whole description (scenario, policy, seed), so a task computes
    exactly what a pool worker would; only the order they finish in differs."""
    with ray_session(address) as ray:
        task = ray.remote(run_job)
        pending = {task.remote(job): i for i, job in enumerate(jobs)}
        done: dict[int, JobResult] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                done[i] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # a festgym error in a job comes back as its cause
                raise exc.as_instanceof_cause() from None
            bar.set_postfix_str(f"{jobs[i].label} seed {jobs[i].seed}")
            bar.update()
    return [done[i] for i in range(len(jobs))]


# --- statistics -------------------------------------------------------------------------------


def ci95(values: Iterable[float]) -> float:
    """Half-width of the 95% confidence interval of the mean (t-distribution; normal from 30
    values on); NaN for fewer than two values."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    n = len(x)
    if n < 2:
        return float("nan")
    t = T_975[n - 2] if n < 30 else 1.96
    return float(t * x.std(ddof=1) / math.sqrt(n))


def _paired(runs: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """Per-run savings and attainment difference against the reference run of the same seed."""
    runs = runs.copy()
    ref = runs[runs.policy == reference].set_index("seed") if reference else runs.iloc[:0].set_index("seed")
    ref_energy = runs.seed.map(ref.energy_kwh).astype(float)
    ref_slo = runs.seed.map(ref.slo_attainment).astype(float)
    runs["savings_pct"] = 100.0 * (1.0 - runs.energy_kwh / ref_energy)
    runs["slo_diff_pp"] = 100.0 * (runs.slo_attainment - ref_slo)
    return runs


def paired_difference(runs: pd.DataFrame, policy: str, against: str) -> dict[str, float]:
    """``policy`` against ``against`` on the same seeds: mean energy difference (%) and joint
    SLO attainment difference (pp), each with the half-width of its 95% interval over seeds.
    Paired per seed, the workload's own variation cancels out of the interval."""
    mine, theirs = (runs[runs.policy == p].set_index("seed") for p in (policy, against))
    seeds = mine.index.intersection(theirs.index)
    energy = 100.0 * (mine.energy_kwh[seeds] / theirs.energy_kwh[seeds] - 1.0)
    gpu = 100.0 * (mine.gpu_energy_kwh[seeds] / theirs.gpu_energy_kwh[seeds] - 1.0)
    slo = 100.0 * (mine.slo_attainment[seeds] - theirs.slo_attainment[seeds])
    return {"energy_pct": float(energy.mean()), "energy_pct_ci95": ci95(energy),
            "gpu_energy_pct": float(gpu.mean()), "gpu_energy_pct_ci95": ci95(gpu),
            "slo_pp": float(slo.mean()), "slo_pp_ci95": ci95(slo), "seeds": len(seeds)}


SAVINGS_COLUMNS = ("policy", "against", "seeds", "saving_pct", "saving_pct_ci95", "gpu_saving_pct",
                   "gpu_saving_pct_ci95", "slo_diff_pp", "slo_diff_pp_ci95")
"""Columns of the savings table: a policy's wall-plug and GPU-only energy saving (%) and joint SLO
difference (pp) against another, paired per seed, with the half-widths of their 95% intervals."""


def savings_against(runs: pd.DataFrame, policy: str, others: Sequence[str]) -> pd.DataFrame:
    """``policy``'s saving against each of ``others`` (:data:`SAVINGS_COLUMNS`)."""
    rows = []
    for other in others:
        d = paired_difference(runs, policy, other)
        rows.append({"policy": policy, "against": other, "seeds": d["seeds"], "saving_pct": -d["energy_pct"],
                     "saving_pct_ci95": d["energy_pct_ci95"], "gpu_saving_pct": -d["gpu_energy_pct"],
                     "gpu_saving_pct_ci95": d["gpu_energy_pct_ci95"], "slo_diff_pp": d["slo_pp"],
                     "slo_diff_pp_ci95": d["slo_pp_ci95"]})
    return pd.DataFrame(rows, columns=list(SAVINGS_COLUMNS))


def aggregate(runs: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """One row per label, in ``labels`` order: means over seeds, and 95% intervals for energy
    and joint SLO attainment."""
    rows = []
    for label in labels:
        mine = runs[runs.policy == label]
        row: dict[str, Any] = {"policy": label, "seeds": len(mine)}
        for column, (source, scale) in MEANS.items():
            row[column] = float(mine[source].mean()) * scale
        row["energy_kwh_ci95"] = ci95(mine.energy_kwh)
        row["slo_pct_ci95"] = 100.0 * ci95(mine.slo_attainment)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


# --- the comparison ---------------------------------------------------------------------------


@dataclass
class CompareResult:
    """Tables, the series behind the plots, and the files written."""

    scenario: str
    seeds: tuple[int, ...]
    duration_s: float
    summary: pd.DataFrame
    """One row per policy (the columns of :data:`TABLE_COLUMNS`)."""
    ablation: pd.DataFrame
    """The Festina ablation, same columns (empty without ablation)."""
    runs: pd.DataFrame
    """One row per (policy, seed): the simulator's summary plus ``savings_pct`` and ``slo_diff_pp``."""
    power: pd.DataFrame
    """Cluster power (W) per control tick for the first seed: index tick time (s), a column per policy."""
    state_hours: pd.DataFrame
    """GPU-hours per state for the first seed: a row per policy, a column per state."""
    models: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per (policy, seed, model): the model's GPU energy in parts and in all, what its requests
    were charged, its output tokens and joules per token (:mod:`festgym.sim.gpu` states the rule)."""
    savings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SAVINGS_COLUMNS)))
    """Festina against every other policy of the summary, paired per seed (:func:`savings_against`)."""
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    paired: dict[str, dict[str, float]] = field(default_factory=dict)
    """``festgym evaluate``: the evaluated policy against each other one, paired per seed
    (:func:`paired_difference`)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document (NaN becomes null)."""
        return {"scenario": self.scenario, "seeds": list(self.seeds), "duration_s": self.duration_s,
                "out": str(self.out) if self.out else None, "wall_s": self.wall_s,
                "summary": frame_records(self.summary), "ablation": frame_records(self.ablation),
                "runs": frame_records(self.runs), "models": frame_records(self.models),
                "savings": frame_records(self.savings),
                "files": {k: str(v) for k, v in self.files.items()}, "notes": list(self.notes),
                "paired": {k: {n: _plain(x) for n, x in d.items()} for k, d in self.paired.items()}}


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    """Python scalars for JSON: numpy numbers unwrapped, NaN and infinities as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_policies(policies: Iterable[str] | None) -> list[str]:
    """The policies to run, in order, without repeats: rule policy names, shipped checkpoint names
    or checkpoint paths. Default: Festina, the baselines and every shipped checkpoint. An unknown
    name is an error listing the known."""
    if isinstance(policies, str):
        policies = policies.split(",")
    names = list(dict.fromkeys([*COMPARED, *find_checkpoints(simulated_only=True)] if policies is None
                               else (p.strip() for p in policies if p.strip())))
    known = f"known: {', '.join(RULE_POLICIES)}, checkpoints: {', '.join(find_checkpoints()) or 'none shipped'}"
    unknown = [p for p in names if p not in RULE_POLICIES and resolve_checkpoint(p) is None and not is_entry_point(p)]
    if unknown:
        raise FestgymError(f"unknown polic{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                           f"(not a rule policy, a shipped checkpoint, a checkpoint folder or a package.module:Class "
                           f"entry point); {known}")
    if not names:
        raise FestgymError(f"no policies to compare; {known}")
    labels = [policy_label(p) for p in names]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise FestgymError(f"two policies would share the label {', '.join(repeated)}: rename a checkpoint folder")
    return names


def policy_label(policy: str) -> str:
    """How a policy is named in tables: a rule policy by its name, a checkpoint by its folder's."""
    if policy in RULE_POLICIES:
        return policy
    folder = resolve_checkpoint(policy)
    return folder.name if folder is not None else policy


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: comma-separated seeds and ranges, e.g. ``0``, ``0,1,2``, ``0-4`` or ``0-2,7``."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise FestgymError(f"--seeds {text!r}: expected whole numbers ≥ 0 or ranges, e.g. 0,1,2 or 0-4") from None
        if last < first:
            raise FestgymError(f"--seeds {text!r}: range {part} runs backwards")
        seeds += range(first, last + 1)
    if not seeds:
        raise FestgymError(f"--seeds {text!r}: no seed given")
    return check_seeds(seeds)


def check_seeds(seeds: Iterable[int]) -> tuple[int, ...]:
    """Seeds must be distinct whole numbers ≥ 0 (numpy's generators take no negative seed)."""
    seeds = tuple(seeds)
    if not seeds:
        raise FestgymError("no seed given")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0]
    if bad:
        raise FestgymError(f"seeds must be whole numbers ≥ 0, got {', '.join(map(repr, bad))}")
    if len(set(seeds)) != len(seeds):
        raise FestgymError(f"seeds repeat: {', '.join(map(str, seeds))}")
    return tuple(int(s) for s in seeds)


def plan(names: Sequence[str], ablation: bool) -> tuple[list[str], list[tuple[str, str, dict]], list[str]]:
    """Which runs to make: (summary-table labels, every (label, policy, params) to run, notes).

    max-clock joins the summary table when registered; the ablation runs Festina itself only
    when the summary table does not already have it.
    """
    notes: list[str] = []
    runs: list[tuple[str, str, dict]] = [(policy_label(name), name, {}) for name in names]
    if REFERENCE in RULE_POLICIES and REFERENCE not in names:
        runs.append((REFERENCE, REFERENCE, {}))
    elif REFERENCE not in RULE_POLICIES:
        notes.append(f"{REFERENCE} is not a registered policy: savings and SLO differences are NaN")
    labels = [label for label, _, _ in runs]
    if ablation and FULL not in RULE_POLICIES:
        notes.append(f"{FULL} is not a registered policy: no ablation")
    elif ablation:
        runs += [(label, FULL, switches) for label, switches in ABLATION]
        if FULL not in labels:
            runs.append((FULL, FULL, {}))
    return labels, runs, notes


def default_out() -> Path:
    """``results/<YYYYmmdd-HHMMSS>/`` under the working directory."""
    return Path("results") / datetime.now().strftime("%Y%m%d-%H%M%S")


def default_jobs() -> int:
    """Two worker processes (or one on a single core): the machines this runs on have few cores."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class SeededRuns:
    """What every job of seeded runs takes beside its own settings (``compare``, ``sensitivity``)."""

    seeds: tuple[int, ...] = field(default=(0,), metadata={"parse": parse_seeds, "metavar": "SEEDS"})
    """Seeds and ranges, e.g. 0,1,2 or 0-4 or 0-2,7."""
    duration_s: float | None = None
    """Simulated seconds (default: the scenario's workload duration)."""
    jobs: int | None = None
    """Worker processes (default: min(2, CPU count); 1: in-process). Only the wall time depends on it."""
    ray: str | None = field(default=None, metadata={"bare": LOCAL_RAY, "metavar": "ADDRESS"})
    """Run the simulations as Ray tasks: alone, on a Ray started here; with an address (auto, or
    ray://HOST:10001), on that cluster; results are the local pool's bit for bit (needs the ray extra)."""

    def __post_init__(self) -> None:
        check_seeds(self.seeds)
        check_ranges(self, {"duration_s": self.duration_s is None or 0 < self.duration_s < math.inf,
                            "jobs": self.jobs is None or self.jobs >= 1},
                     {"duration_s": "a positive number of seconds", "jobs": "≥ 1"})


@dataclass(frozen=True)
class CompareConfig(SeededRuns):
    """What :func:`compare` runs, beside the scenario (``festgym compare`` takes one option per field)."""

    policies: tuple[str, ...] | None = field(default=None, metadata={"metavar": "POLICY,..."})
    """Rule policies, checkpoint names or checkpoint folders (default: Festina, the baselines and every shipped
    checkpoint)."""
    ablation: bool = True
    """Also run the Festina ablation: DVFS, then + SM partitioning, + placement."""
    references: bool = False
    """Also run the references that see the future (clairvoyant: about 20 plain runs' time each)."""
    out: Path | None = None
    """Output folder (default: results/<YYYYmmdd-HHMMSS>/)."""


def compare(scenario: str | Path | Scenario = "default", config: CompareConfig | None = None, *,
            progress: bool = True, **settings: Any) -> CompareResult:
    """Run every policy (default: all registered) and the Festina ablation on each seed's workload,
    tabulate, and write CSVs and plots into ``config.out`` (default: :func:`default_out`).

    ``settings`` override fields of ``config`` (:class:`CompareConfig`; default: its defaults),
    e.g. ``compare("default", seeds=(0, 1), jobs=1)``.
    """
    started = time.perf_counter()
    config = dataclasses.replace(config or CompareConfig(), **settings)
    spec = scenario if isinstance(scenario, Scenario) else str(scenario)
    parsed = load_scenario(spec)  # a bad name or file fails here, before any worker starts
    names, seeds, duration_s = check_policies(config.policies), check_seeds(config.seeds), config.duration_s
    if config.references:
        names += [r for r in REFERENCES if r not in names]
    labels, planned, notes = plan(names, config.ablation)
    job_list = [Job(label, policy, tuple(sorted(params.items())), spec, seed, duration_s, seed == seeds[0])
                for label, policy, params in planned for seed in seeds]
    results = execute_jobs(job_list, min(config.jobs or default_jobs(), len(job_list)), progress, ray=config.ray)
    result = _tabulate(parsed, seeds, labels, planned, results, notes)
    result.out = Path(config.out) if config.out is not None else default_out()
    result.files = write_outputs(result, result.out)
    if not parquet_available():
        result.notes.append(PARQUET_NOTE)
    result.wall_s = time.perf_counter() - started
    return result


def _tabulate(scenario: Scenario, seeds: tuple[int, ...], labels: list[str],
              planned: list[tuple[str, str, dict]], results: list[JobResult], notes: list[str]) -> CompareResult:
    """Tables and plot series from the job results (already in job order)."""
    runs = pd.DataFrame([{"policy": r.label, "seed": r.seed, **{k: v for k, v in r.summary.items() if k != "policy"}}
                         for r in results])
    runs = _paired(runs, REFERENCE if REFERENCE in labels else None)
    ran_ablation = any(label == ABLATION[0][0] for label, _, _ in planned)
    ablation_labels = [label for label, _ in ABLATION] + [FULL] if ran_ablation else []
    series = [(r, r.power) for r in results if r.power is not None]
    power = pd.DataFrame({r.label: pd.Series(p[:, 1], index=p[:, 0]) for r, p in series})
    power.index.name = "t_s"
    state_hours = pd.DataFrame({r.label: r.state_hours for r, _ in series}).T.reindex(columns=list(STATES))
    savings = savings_against(runs, FULL, [x for x in labels if x != FULL]) if FULL in labels else None
    models = pd.concat([r.models.assign(model=r.models.model.astype(str)).assign(policy=r.label, seed=r.seed)
                        for r in results if r.models is not None], ignore_index=True)
    models = models[["policy", "seed", *[c for c in models.columns if c not in ("policy", "seed")]]]
    return CompareResult(scenario=scenario.name, seeds=seeds, models=models,
                         duration_s=max(r.trace_s for r in results),
                         summary=aggregate(runs, labels), ablation=aggregate(runs, ablation_labels), runs=runs,
                         power=power, state_hours=state_hours, notes=notes,
                         **({"savings": savings} if savings is not None else {}))


# --- files and plots ---------------------------------------------------------------------------


def write_outputs(result: CompareResult, out: str | Path) -> dict[str, Path]:
    """CSVs and PNGs into ``out`` (created); returns name -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"summary": result.summary, "runs": result.runs, "models": result.models,
              "savings": result.savings, "ablation": result.ablation}
    files = write_tables(out, {name: frame for name, frame in tables.items() if len(frame)})
    for name, plot in (("energy_vs_slo.png", plot_energy_vs_slo), ("power_over_time.png", plot_power),
                       ("gpu_state_time.png", plot_state_time)):
        fig = plot(result)
        fig.savefig(out / name, dpi=100)
        files[name] = out / name
    return files


def _title(result: CompareResult, what: str, first_seed: bool = False) -> str:
    seeds = f"seed {result.seeds[0]}" if first_seed or len(result.seeds) == 1 else f"mean of {len(result.seeds)} seeds"
    return f"{what}: {result.scenario}, {result.duration_s:g} s simulated, {seeds}"


def plot_energy_vs_slo(result: CompareResult):
    """Energy against joint SLO attainment: the trade-off every policy picks a point on."""
    fig, ax = figure(8, 5.5)
    labels: dict[tuple[float, float], list[str]] = {}  # policies at the same point share one label
    for frame, marker, kind in ((result.summary, "o", "policy"), (result.ablation, "^", "Festina ablation")):
        rows = frame[~frame.policy.isin([p for names in labels.values() for p in names])]
        ax.scatter(rows.slo_pct, rows.energy_kwh, marker=marker, s=60, label=kind, zorder=3)
        for row in rows.itertuples():
            labels.setdefault((round(row.slo_pct, 2), round(row.energy_kwh, 4)), []).append(row.policy)
    for (x, y), names in labels.items():
        ax.annotate(" = ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("joint TTFT+TBT SLO attainment (%)")
    ax.set_ylabel("energy (kWh)")
    ax.set_title(_title(result, "Energy vs SLO"), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_power(result: CompareResult):
    """Cluster power over time, smoothed over :data:`MOVING_AVERAGE_S`; ablation variants dashed."""
    fig, ax = figure(12, 5)
    power = result.power
    if len(power) > 1:
        step = float(np.median(np.diff(power.index.to_numpy())))
        window = max(1, round(MOVING_AVERAGE_S / step)) if step > 0 else 1
        smooth = power.rolling(window, min_periods=1).mean()
        for column in smooth.columns:
            ax.plot(smooth.index / 60, smooth[column] / 1e3, label=column,
                    ls="--" if column in set(result.ablation.policy) - set(result.summary.policy) else "-")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the lines fill the axes
    ax.set_xlabel("time (min)")
    ax.set_ylabel(f"cluster power (kW, {MOVING_AVERAGE_S:g} s moving average)")
    ax.set_title(_title(result, "Cluster power", first_seed=True), fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def plot_state_time(result: CompareResult):
    """GPU-hours per state, stacked per policy: where the energy goes (idle and loading are waste)."""
    fig, ax = figure(max(6, 0.8 * len(result.state_hours) + 2), 5)
    hours = result.state_hours.fillna(0.0)
    bottom = np.zeros(len(hours))
    for state in hours.columns:
        ax.bar(range(len(hours)), hours[state], bottom=bottom, label=state)
        bottom += hours[state].to_numpy()
    ax.set_xticks(range(len(hours)), hours.index, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("GPU-hours")
    ax.set_title(_title(result, "GPU state time", first_seed=True), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig


# --- text output -------------------------------------------------------------------------------


def format_table(table: pd.DataFrame) -> str:
    """The table as text: rounded, with ``± CI`` after energy and attainment when there are
    several seeds (and no CI columns when there is one)."""
    if table.empty:
        return "(none)"
    shown = table.copy()
    several = bool((shown.seeds > 1).any())
    for column, ci, digits in (("energy_kwh", "energy_kwh_ci95", 3), ("slo_pct", "slo_pct_ci95", 1)):
        if several:
            shown[column] = [f"{m:.{digits}f} ± {c:.{digits}f}" for m, c in zip(shown[column], shown[ci])]
    shown = shown.drop(columns=["energy_kwh_ci95", "slo_pct_ci95"] + ([] if several else ["seeds"]))
    rounding = {"energy_kwh": 3, "gpu_kwh": 3, "j_per_token": 3, "slo_diff_pp": 2}
    return shown.round({c: rounding.get(c, 1) for c in shown.columns if shown[c].dtype.kind == "f"}).to_string(
        index=False, na_rep="nan")


def _pm(value: float, ci: float) -> str:
    return f"{value:.1f}%" if not math.isfinite(ci) else f"{value:.1f} ± {ci:.1f}%"


def savings_lines(savings: pd.DataFrame) -> Iterator[str]:
    """One line per row of a savings table: saving (± its 95% interval), GPU-only, SLO difference."""
    width = max(len(str(x)) for x in savings.against)
    for row in savings.itertuples():
        ci = row.slo_diff_pp_ci95
        slo = f"{row.slo_diff_pp:+.2f}" + (f" ± {ci:.2f}" if math.isfinite(ci) else "")
        yield (f"  vs {row.against:<{width}}  saves {_pm(row.saving_pct, row.saving_pct_ci95)} "
               f"[GPU {_pm(row.gpu_saving_pct, row.gpu_saving_pct_ci95)}], SLO {slo} pp")


def report_lines(result: CompareResult) -> Iterator[str]:
    """What ``festgym compare`` prints: the two tables, notes, and where the files are."""
    seeds = ", ".join(map(str, result.seeds))
    yield (f"scenario {result.scenario}, {result.duration_s:g} s simulated, seed{'s' if len(result.seeds) > 1 else ''} "
           f"{seeds}: {len(result.runs)} runs in {result.wall_s:.1f} s")
    yield ""
    yield format_table(result.summary)
    if len(result.savings):
        yield ""
        yield f"{FULL} against each policy (paired per seed; wall-plug, and GPU-only in brackets):"
        yield from savings_lines(result.savings)
    if len(result.ablation):
        yield ""
        yield "Festina ablation (parts added one at a time):"
        yield format_table(result.ablation)
    for note in result.notes:
        yield f"note: {note}"
    if result.out is not None:
        yield ""
        yield f"wrote {result.out}/: {', '.join(result.files)}"
