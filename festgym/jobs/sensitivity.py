"""``festgym sensitivity``: how far festgym's savings move over its named physics assumptions.

Festgym's numbers rest on constants that no public measurement pins down (:data:`ASSUMPTIONS`: the
H100's V-f curve, HBM energy per bit, idle-state powers, host power, node boot and engine start
times, the SM-share mechanism). Each has a plausible band, written in its spec file's provenance.
This job serves the same seeded workloads on the base scenario and on a low and a high variant of
each assumption (the rest left at the base), with every policy, and reports each policy's mean
paired saving against each baseline (:func:`~festgym.jobs.compare.paired_difference`, wall-plug
energy, and GPU-only beside it) per variant, its band (min..max over the base and every variant)
and the assumption that moves it most.

A variant is the scenario with section overrides (``physics``, ``cluster.node``, ``sim``,
``models.<m>.engine``), so it runs exactly as ``festgym compare --set ...`` would. Relative bands
apply to each GPU type of the cluster relative to its own value (the scenario's ``physics`` where it
sets one, else the shipped spec's), and to the node's own figures.

Outputs (into ``out``): ``sensitivity.csv`` (a row per variant × policy × baseline), ``bands.csv``
(a row per policy × baseline), ``runs.csv`` (each run's summary) and ``tornado.png`` (Festina
against max-clock, or the first pair: the saving at each assumption's low and high side).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from festgym.errors import FestgymError
from festgym.jobs.compare import (
    FULL,
    REFERENCE,
    Job,
    JobResult,
    SeededRuns,
    check_policies,
    check_seeds,
    default_jobs,
    default_out,
    execute_jobs,
    frame_records,
    paired_difference,
    policy_label,
)
from festgym.jobs.tables import PARQUET_NOTE, parquet_available, write_tables
from festgym.plots import figure
from festgym.policies import COMPARED
from festgym.profiles.specs import GpuSpec, NodeSpec
from festgym.scenario import Scenario, load_scenario

Overrides = dict[str, Any]
"""Section overrides for :func:`~festgym.scenario.load_scenario` (``{"sim": {"init_s": 5}}``)."""
SIDES = ("low", "high")
BASE = "base"
"""The ``assumption`` and ``side`` of the base scenario's rows."""
DIGITS = 9
"""Significant digits of a relative band's values, in the scenario and in the text alike."""
DEFAULT_NODE = "dgx-h100"
"""The node spec of a scenario that names none (as :meth:`~festgym.scenario.Scenario.simulator`)."""

SENSITIVITY_COLUMNS = ("assumption", "side", "overrides", "policy", "baseline", "saving_pct", "saving_pct_ci95",
                       "gpu_saving_pct", "gpu_saving_pct_ci95", "slo_diff_pp", "slo_diff_pp_ci95", "seeds")
"""Columns of ``sensitivity.csv``. ``saving_pct``: mean paired wall-plug (GPU + host) energy saving of
``policy`` against ``baseline`` over seeds; ``gpu_saving_pct`` the same for GPU energy alone;
``slo_diff_pp``: joint SLO attainment of ``policy`` minus ``baseline``; ``*_ci95``: half-width of the
95% interval over seeds (NaN with one seed); ``overrides``: the variant in ``--set`` form."""
BAND_COLUMNS = ("policy", "baseline", "base_saving_pct", "base_saving_pct_ci95", "low_pct", "high_pct", "driver",
                "driver_swing_pp", "base_gpu_saving_pct", "gpu_low_pct", "gpu_high_pct", "base_slo_diff_pp")
"""Columns of ``bands.csv``: the base saving, the band (``low_pct``..``high_pct``: min..max over the base
and every variant), the assumption whose two sides and the base span the widest range (``driver``)
and that range, and the same band for GPU energy alone."""
TORNADO_COLUMNS = ("assumption", "low_pct", "high_pct", "swing_pp")


# --- the assumptions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Assumption:
    """One named modelling assumption and its plausible band: ``low`` and ``high`` build the
    scenario overrides of each side for a given scenario (relative bands from its own values)."""

    name: str
    what: str
    """What is varied, and how."""
    source: str
    """Where the band comes from."""
    low: Callable[[Scenario], Overrides]
    high: Callable[[Scenario], Overrides]

    def overrides(self, scenario: Scenario, side: str) -> Overrides:
        return (self.low if side == "low" else self.high)(scenario)


def _own(scenario: Scenario, gpu_type: str, section: str, name: str) -> float:
    """A GPU constant as ``scenario`` runs it: its ``physics`` value where it sets one, else the spec's."""
    given = scenario.physics.get(gpu_type, {}).get(section, {})
    return float(given[name]) if name in given else float(getattr(getattr(GpuSpec.load(gpu_type), section), name))


def _per_gpu(section: str, change: Callable[[Scenario, str], dict[str, float]]) -> Callable[[Scenario], Overrides]:
    """Overrides of one ``physics`` section, ``change(scenario, type)``, for every GPU type of the cluster
    (rounded to :data:`DIGITS`, so that the variant's text, :func:`describe`, is exactly what ran)."""
    return lambda s: {"physics": {t: {section: {k: _rounded(v) for k, v in change(s, t).items()}}
                                  for t in dict.fromkeys(s.gpus)}}


def _rounded(value: float) -> float:
    return float(f"{value:.{DIGITS}g}")


def _scaled(section: str, name: str, factor: float) -> Callable[[Scenario], Overrides]:
    return _per_gpu(section, lambda s, t: {name: _own(s, t, section, name) * factor})


def _fixed(section: str, **values: float) -> Callable[[Scenario], Overrides]:
    return _per_gpu(section, lambda s, t: dict(values))


def _resident_extra(factor: float) -> Callable[[Scenario], Overrides]:
    """Resident idle power's extra over an empty GPU ``factor``-fold."""
    def change(s: Scenario, t: str) -> dict[str, float]:
        empty_w = _own(s, t, "states", "empty_w")
        return {"resident_w": empty_w + (_own(s, t, "states", "resident_w") - empty_w) * factor}
    return _per_gpu("states", change)


def _empty_floor(factor: float) -> Callable[[Scenario], Overrides]:
    """Empty-GPU power ``factor``-fold, resident power shifted by the same watts (it sits on top)."""
    def change(s: Scenario, t: str) -> dict[str, float]:
        empty_w = _own(s, t, "states", "empty_w")
        return {"empty_w": empty_w * factor, "resident_w": _own(s, t, "states", "resident_w") + empty_w * (factor - 1)}
    return _per_gpu("states", change)


def _loading(factor: float) -> Callable[[Scenario], Overrides]:
    """Loading power ``factor``-fold, never below resident idle (a spec needs resident_w ≤ loading_w)."""
    return _per_gpu("states", lambda s, t: {"loading_w": max(_own(s, t, "states", "loading_w") * factor,
                                                             _own(s, t, "states", "resident_w"))})


def _node(name: str, value: Callable[[NodeSpec], float]) -> Callable[[Scenario], Overrides]:
    """``cluster.node.<name>`` set to ``value(the scenario's node spec)``, on the spec it names."""
    def overrides(s: Scenario) -> Overrides:
        named = s.raw.get("cluster", {}).get("node")
        spec = named if isinstance(named, str) else (named or {}).get("spec", DEFAULT_NODE)
        return {"cluster": {"node": {"spec": spec, name: _rounded(value(s.node or NodeSpec.load(DEFAULT_NODE)))}}}
    return overrides


def _init(init_s: float) -> Callable[[Scenario], Overrides]:
    """Engine start ``init_s``: the scenario's, and each model's that sets its own (it would win)."""
    def overrides(s: Scenario) -> Overrides:
        own = {m: {"engine": {"init_s": init_s}} for m, serve in s.models.items() if serve.engine.init_s is not None}
        return {"sim": {"init_s": init_s}, **({"models": own} if own else {})}
    return overrides


def _share(mechanism: str) -> Callable[[Scenario], Overrides]:
    return lambda s: {"sim": {"share_mechanism": mechanism}}


HOST_W_BAND = (900.0, 2500.0)
"""dgx-h100's host power band (its spec's provenance); another node gets the same band relative to its own
``host_w``."""


def _host_w(bound_w: float) -> Callable[[Scenario], Overrides]:
    return _node("host_w", lambda n: n.host_w * bound_w / NodeSpec.load(DEFAULT_NODE).host_w)


ASSUMPTIONS: tuple[Assumption, ...] = (
    Assumption("vf_curve", "V-f curve: power.v_slope 0.5 / v_floor 0.9 (flatter) .. v_slope 1.0 / v_floor 0.7 "
               "(steeper), every GPU type",
               "the H100's curve is fitted to A100 data (perseus-a100-freq), applied in relative clock f/f_max; "
               "no public H100 V-f measurement",
               _fixed("power", v_slope=0.5, v_floor=0.9), _fixed("power", v_slope=1.0, v_floor=0.7)),
    Assumption("hbm_power", "HBM and fabric power power.memory_w ×95/150 .. ×190/150",
               "assumption: HBM3 plus on-chip fabric at 5.6 pJ/bit (150 W at 3.35 TB/s on an H100); band 3.5-7 pJ/bit",
               _scaled("power", "memory_w", 95 / 150), _scaled("power", "memory_w", 190 / 150)),
    Assumption("resident_idle", "resident idle extra states.resident_w − empty_w ×0.65 .. ×1.2",
               "measured: an idle H100 with a resident engine reads ~116 W, an idle H200 vLLM EngineCore 122 W; "
               "band 100-125 W",
               _resident_extra(0.65), _resident_extra(1.2)),
    Assumption("empty_floor", "empty-GPU power states.empty_w ×0.96 .. ×1.13 (resident_w shifted by the same watts)",
               "measured: public nvidia-smi readings of empty H100 SXM GPUs, 67-79 W (70 W taken)",
               _empty_floor(0.96), _empty_floor(1.13)),
    Assumption("resident_clock_floor", "clock-independent part of the resident extra states.resident_floor_frac "
               "0 .. 0.4",
               "assumption from V100 readings (a loaded idle GPU locked low falls back near empty power); 0.15 taken",
               _fixed("states", resident_floor_frac=0.0), _fixed("states", resident_floor_frac=0.4)),
    Assumption("loading_power", "power while loading states.loading_w ×0.77 .. ×1.67 (never below resident_w)",
               "assumption: weight copies and engine start between resident idle and light decode; H100 band "
               "116-250 W (150 W taken)",
               _loading(0.77), _loading(1.67)),
    Assumption("host_power", "node host power host_w ×900/1400 .. ×2500/1400 (900-2500 W on dgx-h100)",
               "assumption summed from a DGX H100's parts (CPUs, DRAM, NICs, NVSwitches, fans, losses); no public "
               "measurement apart from its GPUs; band 900-2500 W",
               _host_w(HOST_W_BAND[0]), _host_w(HOST_W_BAND[1])),
    Assumption("node_boot", "node boot time boot_s 180 .. 600 s",
               "assumption: POST with memory training, OS, driver, fabric manager, container start: minutes on "
               "DGX-class servers; band 180-600 s",
               _node("boot_s", lambda n: 180.0), _node("boot_s", lambda n: 600.0)),
    Assumption("cold_start", "engine start after the weights are in sim.init_s 5 .. 39 s (and each model's own "
               "engine.init_s)",
               "vLLM: 14 s for an 8B model, 39 s with torch.compile; low side 5 s (assumption: a start without "
               "compile, a small model)",
               _init(5.0), _init(39.0)),
    Assumption("share_change", "SM-share mechanism sim.share_mechanism green-contexts (low) vs mps (high)",
               "green contexts change a share between iterations; MPS restarts the engine on a change",
               _share("green-contexts"), _share("mps")),
)
"""The assumptions :func:`sensitivity` varies (docs/sensitivity.md gives the reasoning)."""
NAMES = tuple(a.name for a in ASSUMPTIONS)


def check_assumptions(names: Sequence[str] | None) -> tuple[Assumption, ...]:
    """The assumptions named (all by default), in :data:`ASSUMPTIONS` order; an unknown name is an
    error listing the known."""
    if names is None:
        return ASSUMPTIONS
    if isinstance(names, str):
        names = names.split(",")
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise FestgymError(f"{'unknown assumption ' + ', '.join(unknown) if unknown else 'no assumption named'}; "
                           f"known: {', '.join(NAMES)}")
    return tuple(a for a in ASSUMPTIONS if a.name in names)


def describe(overrides: Mapping[str, Any], prefix: str = "") -> str:
    """Overrides in ``--set`` form: ``physics.H100-SXM-80GB.power.v_slope=0.5; ...``."""
    parts = [describe(v, f"{prefix}{k}.") if isinstance(v, Mapping) else
             f"{prefix}{k}={f'{v:.{DIGITS}g}' if isinstance(v, float) else v}" for k, v in overrides.items()]
    return "; ".join(p for p in parts if p)


@dataclass(frozen=True)
class Variant:
    """The base scenario, or one side of one assumption."""

    assumption: str
    side: str
    overrides: Overrides
    scenario: Scenario


def variants(base: Scenario, assumptions: Sequence[Assumption]) -> list[Variant]:
    """The base, then each assumption's low and high side (a setting the scenario refuses fails here, before
    any run; a refused GPU constant, when the first run builds its simulator)."""
    out = [Variant(BASE, BASE, {}, base)]
    for a in assumptions:
        for side in SIDES:
            overrides = a.overrides(base, side)
            out.append(Variant(a.name, side, overrides, load_scenario(base, **overrides)))
    return out


# --- the job ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensitivityConfig(SeededRuns):
    """What :func:`sensitivity` runs, beside the scenario (``festgym sensitivity`` takes one option per field)."""

    policies: tuple[str, ...] | None = field(default=None, metadata={"metavar": "POLICY,..."})
    """Rule policies, checkpoint names or checkpoint folders (default: Festina and the baselines it is compared
    with)."""
    against: tuple[str, ...] | None = field(default=None, metadata={"metavar": "POLICY,..."})
    """Baselines the savings of the other policies are reported against (default: every policy but Festina)."""
    assumptions: tuple[str, ...] | None = field(default=None, metadata={"metavar": "NAME,..."})
    """Assumptions to vary, by name (default: all)."""
    out: Path | None = None
    """Output folder (default: results/sensitivity-<YYYYmmdd-HHMMSS>/)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_assumptions(self.assumptions)


@dataclass
class SensitivityResult:
    """Tables, files written and notes."""

    scenario: str
    seeds: tuple[int, ...]
    duration_s: float
    table: pd.DataFrame
    """A row per variant × policy × baseline (:data:`SENSITIVITY_COLUMNS`)."""
    bands: pd.DataFrame
    """A row per policy × baseline (:data:`BAND_COLUMNS`)."""
    tornado: pd.DataFrame
    """The plotted pair's saving at each assumption's two sides, widest swing first (:data:`TORNADO_COLUMNS`)."""
    pair: tuple[str, str]
    """(policy, baseline) of the tornado."""
    runs: pd.DataFrame
    """A row per run: ``assumption``, ``side``, ``policy``, ``seed`` and the simulator's summary."""
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document (NaN becomes null)."""
        return {"scenario": self.scenario, "seeds": list(self.seeds), "duration_s": self.duration_s,
                "out": str(self.out) if self.out else None, "wall_s": self.wall_s, "pair": list(self.pair),
                "bands": frame_records(self.bands), "tornado": frame_records(self.tornado),
                "sensitivity": frame_records(self.table),
                "runs": frame_records(self.runs), "files": {k: str(v) for k, v in self.files.items()},
                "notes": list(self.notes)}


def pairs_of(labels: Sequence[str], against: Sequence[str]) -> list[tuple[str, str]]:
    """(policy, baseline) for every policy that is not a baseline, against every baseline."""
    pairs = [(p, b) for p in labels if p not in against for b in against]
    if not pairs:
        raise FestgymError(f"nothing to compare: every policy run ({', '.join(labels)}) is a baseline "
                           "(against); leave at least one out of against")
    return pairs


def sensitivity(scenario: str | Path | Scenario = "default", config: SensitivityConfig | None = None, *,
                progress: bool = True, **settings: Any) -> SensitivityResult:
    """Run every policy on every seed under the base scenario and both sides of each assumption (in
    one pool of ``config.jobs`` workers), tabulate the paired savings, and write the CSVs and the
    tornado plot into ``config.out`` (default: ``results/sensitivity-<timestamp>/``).

    ``settings`` override fields of ``config`` (:class:`SensitivityConfig`), e.g.
    ``sensitivity("default", assumptions=("host_power",), duration_s=120, jobs=1)``.
    """
    started = time.perf_counter()
    config = dataclasses.replace(config or SensitivityConfig(), **settings)
    base = load_scenario(scenario if isinstance(scenario, Scenario) else str(scenario))
    names = check_policies(config.policies if config.policies is not None else COMPARED)
    against = check_policies(config.against) if config.against is not None else [p for p in names if p != FULL]
    names = list(dict.fromkeys([*names, *against]))
    against_labels = [policy_label(p) for p in against]
    pairs = pairs_of([policy_label(p) for p in names], against_labels)
    seeds = check_seeds(config.seeds)
    planned = variants(base, check_assumptions(config.assumptions))
    jobs = [Job(f"{policy_label(p)} @ {v.assumption}{'' if v.side == BASE else ':' + v.side}", p, (), v.scenario,
                seed, config.duration_s, False) for v in planned for p in names for seed in seeds]
    results = execute_jobs(jobs, min(config.jobs or default_jobs(), len(jobs)), progress, desc="sensitivity",
                           ray=config.ray)
    runs = _runs(planned, [policy_label(p) for p in names], seeds, results)
    table = _table(planned, runs, pairs)
    pair = (FULL, REFERENCE) if (FULL, REFERENCE) in pairs else pairs[0]
    result = SensitivityResult(scenario=base.name, seeds=seeds, duration_s=max(r.trace_s for r in results),
                               table=table, bands=_bands(table, pairs), tornado=_tornado(table, pair), pair=pair,
                               runs=runs)
    default = default_out()
    result.out = Path(config.out) if config.out is not None else default.with_name(f"sensitivity-{default.name}")
    result.files = write_outputs(result, result.out)
    if not parquet_available():
        result.notes.append(PARQUET_NOTE)
    result.wall_s = time.perf_counter() - started
    return result


def _runs(planned: Sequence[Variant], labels: Sequence[str], seeds: Sequence[int],
          results: Sequence[JobResult]) -> pd.DataFrame:
    """A row per run, from the results in job order (variant, then policy, then seed)."""
    keys = [(v, label) for v in planned for label in labels for _ in seeds]
    return pd.DataFrame([{"assumption": v.assumption, "side": v.side, "policy": label, "seed": r.seed,
                          **{k: x for k, x in r.summary.items() if k != "policy"}}
                         for (v, label), r in zip(keys, results, strict=True)])


def _table(planned: Sequence[Variant], runs: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Paired savings per variant and pair, wall-plug and GPU-only."""
    rows = []
    for v in planned:
        mine = runs[(runs.assumption == v.assumption) & (runs.side == v.side)]
        gpu_only = mine.assign(energy_kwh=mine.gpu_energy_kwh)
        for policy, baseline in pairs:
            wall, gpu = (paired_difference(frame, policy, baseline) for frame in (mine, gpu_only))
            rows.append({"assumption": v.assumption, "side": v.side, "overrides": describe(v.overrides),
                         "policy": policy, "baseline": baseline, "saving_pct": -wall["energy_pct"],
                         "saving_pct_ci95": wall["energy_pct_ci95"], "gpu_saving_pct": -gpu["energy_pct"],
                         "gpu_saving_pct_ci95": gpu["energy_pct_ci95"], "slo_diff_pp": wall["slo_pp"],
                         "slo_diff_pp_ci95": wall["slo_pp_ci95"], "seeds": wall["seeds"]})
    return pd.DataFrame(rows, columns=list(SENSITIVITY_COLUMNS))


def _pair_rows(table: pd.DataFrame, pair: tuple[str, str]) -> pd.DataFrame:
    return table[(table.policy == pair[0]) & (table.baseline == pair[1])]


def _base_saving(table: pd.DataFrame, pair: tuple[str, str]) -> float:
    rows = _pair_rows(table, pair)
    return float(rows[rows.side == BASE].saving_pct.iloc[0])


def _tornado(table: pd.DataFrame, pair: tuple[str, str]) -> pd.DataFrame:
    """Each assumption's low- and high-side saving for ``pair``; swing: the range its two sides and
    the base span (both sides may move the same way), widest first."""
    rows, base = _pair_rows(table, pair), _base_saving(table, pair)
    out = []
    for name, mine in rows[rows.side != BASE].groupby("assumption", sort=False):
        low, high = (float(mine[mine.side == side].saving_pct.iloc[0]) for side in SIDES)
        out.append({"assumption": name, "low_pct": low, "high_pct": high,
                    "swing_pp": max(low, high, base) - min(low, high, base)})
    frame = pd.DataFrame(out, columns=list(TORNADO_COLUMNS))
    return frame.sort_values("swing_pp", ascending=False, kind="stable").reset_index(drop=True)


def _bands(table: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    rows = []
    for pair in pairs:
        mine = _pair_rows(table, pair)
        base = mine[mine.side == BASE].iloc[0]
        swings = _tornado(table, pair)
        rows.append({"policy": pair[0], "baseline": pair[1], "base_saving_pct": base.saving_pct,
                     "base_saving_pct_ci95": base.saving_pct_ci95, "low_pct": mine.saving_pct.min(),
                     "high_pct": mine.saving_pct.max(), "driver": swings.assumption.iloc[0],
                     "driver_swing_pp": swings.swing_pp.iloc[0], "base_gpu_saving_pct": base.gpu_saving_pct,
                     "gpu_low_pct": mine.gpu_saving_pct.min(), "gpu_high_pct": mine.gpu_saving_pct.max(),
                     "base_slo_diff_pp": base.slo_diff_pp})
    return pd.DataFrame(rows, columns=list(BAND_COLUMNS))


# --- files, plot and text -----------------------------------------------------------------------


def write_outputs(result: SensitivityResult, out: str | Path) -> dict[str, Path]:
    """The CSVs and the tornado plot into ``out`` (created); returns name -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = write_tables(out, {"sensitivity": result.table, "bands": result.bands, "runs": result.runs})
    files["tornado.png"] = out / "tornado.png"
    plot_tornado(result).savefig(files["tornado.png"], dpi=100)
    return files


def plot_tornado(result: SensitivityResult):
    """A bar per assumption from the base saving to its low side and to its high side, widest swing
    on top, and the base as a vertical line."""
    tornado = result.tornado
    base = _base_saving(result.table, result.pair)
    fig, ax = figure(8, 1.2 + 0.45 * max(1, len(tornado)))
    y = np.arange(len(tornado))[::-1]  # widest on top
    for column, colour, label in (("low_pct", "tab:blue", "low side"), ("high_pct", "tab:orange", "high side")):
        ax.barh(y, tornado[column] - base, left=base, height=0.6, color=colour, alpha=0.75, label=label)
    ax.axvline(base, color="black", lw=1)
    ax.set_yticks(y, tornado.assumption)
    ax.set_xlabel(f"energy saving of {result.pair[0]} against {result.pair[1]} (%, wall-plug; base {base:.1f}%)")
    seeds = f"seed {result.seeds[0]}" if len(result.seeds) == 1 else f"mean of {len(result.seeds)} seeds"
    ax.set_title(f"Sensitivity: {result.scenario}, {result.duration_s:g} s simulated, {seeds}", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8)
    return fig


def _pct(value: float, ci: float) -> str:
    return f"{value:.1f}%" + (f" ± {ci:.1f}" if math.isfinite(ci) else "")


def report_lines(result: SensitivityResult) -> Iterator[str]:
    """What ``festgym sensitivity`` prints: each pair's saving and band, the tornado pair by assumption,
    notes, and where the files are."""
    seeds = ", ".join(map(str, result.seeds))
    variants_run = result.table.groupby(["assumption", "side"], sort=False).ngroups
    yield (f"scenario {result.scenario}, {result.duration_s:g} s simulated, seed{'s' if len(result.seeds) > 1 else ''} "
           f"{seeds}: {len(result.runs)} runs ({variants_run} variants) in {result.wall_s:.1f} s")
    yield ""
    for row in result.bands.itertuples():
        yield (f"{row.policy} vs {row.baseline}: {_pct(row.base_saving_pct, row.base_saving_pct_ci95)} "
               f"(band {row.low_pct:.1f}–{row.high_pct:.1f}%, driven most by {row.driver}); GPU only "
               f"{row.base_gpu_saving_pct:.1f}% (band {row.gpu_low_pct:.1f}–{row.gpu_high_pct:.1f}%)")
    yield ""
    yield f"{result.pair[0]} vs {result.pair[1]}, saving (%) at each assumption's sides, widest swing first:"
    yield result.tornado.round(1).to_string(index=False)
    for note in result.notes:
        yield f"note: {note}"
    if result.out is not None:
        yield ""
        yield f"wrote {result.out}/: {', '.join(result.files)}"
