"""Results of a simulation run: per-request, per-GPU and timeline DataFrames and a summary.

Every request of the trace appears exactly once with a status: ``finished``, ``unfinished`` (still
queued or running at the horizon), or ``rejected_policy`` / ``rejected_memory`` /
``rejected_too_long`` (its context exceeds the KV cache). None is lost silently.

Built from the run's :class:`~festgym.sim.ledger.Ledger`. Token-level latency: each decode run is
logged as (start, first gap, gap increment, steps, batch), so the run-wide inter-token gap
distribution is exact without a record per token; percentiles are found by bisection on its
closed-form CDF.

Energy by model and by request (the rule: :mod:`festgym.sim.gpu`): ``attribution`` gives the energy
each model drew on each GPU in parts (static, dynamic, loading); ``models`` each model's in all, what
its requests were charged, its output tokens and joules per token; ``requests.energy_j`` each
request's share of the iterations it ran in (the one in flight at the end as if it ended then). Each GPU's
energy is its models' plus its ``gpus.unattributed_j`` (empty and booting), exactly; host energy
is in ``nodes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from festgym.control.attribution import ENERGY_PARTS
from festgym.control.states import PHASE_DECODE, PHASE_PREFILL, STATES
from festgym.sim.ledger import FINISHED, RUN_COLUMNS, STATUS_NAMES
from festgym.sim.node import NODE_STATES

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.simulator import Simulator
    from festgym.sim.workload import Trace

def gap_quantiles(g0: np.ndarray, dg: np.ndarray, n: np.ndarray, weight: np.ndarray,
                  qs: tuple[float, ...]) -> list[float]:
    """Quantiles of the gaps g0 + dg·j (j < n), each counted ``weight`` times (nearest rank)."""
    if len(g0) == 0 or (n * weight).sum() == 0:
        return [float("nan")] * len(qs)
    total = float((n * weight).sum())
    last = g0 + dg * (n - 1)
    lo0, hi0 = float(np.minimum(g0, last).min()), float(np.maximum(g0, last).max())
    safe_dg = np.where(dg > 0, dg, 1.0)
    out = []
    for q in qs:
        target = q * total
        lo, hi = lo0, hi0
        for _ in range(60):
            mid = (lo + hi) / 2
            below = np.where(dg > 0, np.clip(np.floor((mid - g0) / safe_dg) + 1, 0, n), np.where(g0 <= mid, n, 0))
            if (below * weight).sum() >= target:
                hi = mid
            else:
                lo = mid
            if hi - lo <= 1e-9 * hi:
                break
        out.append(hi)
    return out


@dataclass
class Result:
    """What one run produced. ``requests``, ``gpus`` and ``timeline`` are DataFrames."""

    policy: str
    requests: pd.DataFrame
    gpus: pd.DataFrame
    timeline: pd.DataFrame
    runs: pd.DataFrame
    nodes: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per node: host energy and time per node state (on, booting, shutting_down, off), boots."""
    attribution: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per (GPU, model) that ever shared: the energy parts (``ENERGY_PARTS``, ``*_j``) and ``energy_j``."""
    models: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per model: GPU energy in parts and in all, what its requests were charged (``requests_j``),
    output tokens and joules per output token."""
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, sim: Simulator, trace: Trace, policy: str, wall_s: float) -> Result:
        requests = _request_frame(sim, trace)
        gpus = _gpu_frame(sim)
        attribution = _attribution_frame(sim)
        models = _model_frame(sim, requests, attribution)
        timeline = pd.DataFrame({k: np.frombuffer(v, dtype=float) for k, v in sim.timeline.items()})
        if len(timeline):
            timeline = timeline.astype({"gpu": int, "state": int, "instances": int})
            timeline["state"] = pd.Categorical.from_codes(timeline["state"], STATES)
        runs = pd.DataFrame(sim.ledger.run_rows(), columns=list(RUN_COLUMNS))
        runs["model"] = runs["model"].astype(int)
        result = cls(policy, requests, gpus, timeline, runs, _node_frame(sim), attribution, models)
        result.summary = _summary(sim, result, wall_s)
        return result

    def tbt_quantiles(self, qs=(0.5, 0.9, 0.99), start_s: float = 0.0, end_s: float = np.inf,
                      model: int | None = None) -> list[float]:
        """Token-weighted inter-token gap quantiles (s) of decode runs started in [start_s, end_s)."""
        runs = self.runs
        mask = (runs.t0 >= start_s) & (runs.t0 < end_s)
        if model is not None:
            mask &= runs.model == model
        r = runs[mask]
        return gap_quantiles(r.g0.to_numpy(), r.dg.to_numpy(), r.n.to_numpy(), r.batch.to_numpy(), qs)

    def energy_by_state(self) -> pd.Series:
        """Energy (J) per GPU state, summed over GPUs (host energy: :attr:`nodes`)."""
        return self.gpus[[f"energy_{s}_j" for s in STATES]].sum().rename(lambda c: c[7:-2])

    def standby_excess_j(self) -> float:
        """GPU energy (J) drawn above the GPUs' empty floor (``empty_w``, the least a GPU on a
        powered node draws) while their engines served nothing: idle and asleep engines, and cold
        starts loading. Placement, keep-alive and consolidation act on this part: an engine moved
        away or never started leaves its GPU at the floor at best. It is not a bound on everything
        they can save: packing busy engines onto fewer GPUs also saves the busy floor's excess
        over the empty one while they run together (up to ``resident_w − empty_w``, 46 W on an
        H100 at its top clock), and powering a node off saves its host power (:attr:`nodes`)."""
        gpus = self.gpus
        spent_j = gpus.energy_idle_j + gpus.energy_asleep_j + gpus.energy_loading_j
        floor_j = gpus.empty_w * (gpus.time_idle_s + gpus.time_asleep_s + gpus.time_loading_s)
        return float((spent_j - floor_j).sum())


def _unfinished(sim: Simulator) -> tuple[np.ndarray, np.ndarray]:
    """Tokens generated and energy charged so far of the requests still in an instance at the end,
    read without changing the run: a decoding one's stint since it joined, and the iteration (or
    decode run) in flight at the end charged as if it ended then (its tokens are not yet out)."""
    n = len(sim.ledger.log.energy_j)
    tokens, energy = np.zeros(n, dtype=np.int64), np.zeros(n)
    for instances in sim.by_model.values():
        for inst in instances:
            for seq in [*inst.waiting, *inst.prefilling]:
                tokens[seq.rid], energy[seq.rid] = seq.gen, seq.energy_j
            running = inst.phase == PHASE_DECODE or inst.phase == PHASE_PREFILL
            flight = inst.energy_at(sim.now) - inst.energy_mark if running else 0.0
            per_token = flight / (len(inst.decoding) + sum(take for _, take in inst.chunk)) if running else 0.0
            for seq, take in inst.chunk if inst.phase == PHASE_PREFILL else ():
                energy[seq.rid] += take * per_token
            for seq in inst.decoding.values():
                tokens[seq.rid] = seq.gen + inst.tok - seq.join_tok
                energy[seq.rid] = seq.energy_j + inst.cum_energy - seq.e0 + per_token
    return tokens, energy


def _request_frame(sim: Simulator, trace: Trace) -> pd.DataFrame:
    log = sim.ledger.log
    tokens, energy = _unfinished(sim)
    names = np.asarray(sim.model_names)
    model = np.where(log.model >= 0, log.model, sim.trace_model[trace.model])
    slo_ttft = np.array([sim.serving[m].slo.ttft_s for m in names])[model]
    slo_per_1k = np.array([sim.serving[m].slo.ttft_per_1k_tokens_s for m in names])[model]
    quantile = np.array([sim.serving[m].slo.tbt_quantile for m in names])[model]
    finished = log.status == FINISHED
    ttft = log.first_s - log.arrival_s
    gaps = np.maximum(trace.output_tokens - 1, 0)
    ttft_ok = ttft <= slo_ttft + slo_per_1k * trace.prompt_tokens / 1000
    tbt_ok = finished & (log.gap_over <= np.floor((1 - quantile) * gaps + 1e-9))
    with np.errstate(invalid="ignore", divide="ignore"):
        tbt_mean = np.where(finished & (gaps > 0), log.gap_sum / np.maximum(gaps, 1), np.nan)
        over_frac = np.where(finished & (gaps > 0), log.gap_over / np.maximum(gaps, 1), np.nan)
    return pd.DataFrame({
        "rid": np.arange(len(trace)),
        "model": pd.Categorical.from_codes(model, sim.model_names),
        "arrival_s": log.arrival_s,
        "prompt_tokens": trace.prompt_tokens,
        "output_tokens": trace.output_tokens,
        "gpu": log.gpu,
        "status": pd.Categorical.from_codes(log.status, STATUS_NAMES),
        "cold_start": log.cold,
        "ttft_s": ttft,
        "e2e_s": log.finish_s - log.arrival_s,
        "tbt_mean_s": tbt_mean,
        "tbt_over_frac": over_frac,
        "preemptions": log.preemptions,
        "generated_tokens": np.where(finished, trace.output_tokens, tokens),
        "energy_j": np.where(finished, log.energy_j, energy),
        "ttft_ok": finished & ttft_ok,
        "tbt_ok": tbt_ok,
        "slo_ok": finished & ttft_ok & tbt_ok,
    })


def _gpu_frame(sim: Simulator) -> pd.DataFrame:
    rows = []
    for gpu in sim.gpus:
        row = {"gpu": gpu.index, "type": gpu.spec.name}
        row.update({f"energy_{s}_j": e for s, e in zip(STATES, gpu.energy_j)})
        row.update({f"time_{s}_s": t for s, t in zip(STATES, gpu.state_s)})
        row["energy_kwh"] = gpu.energy_total_j / 3.6e6
        row["mean_power_w"] = gpu.energy_total_j / max(sum(gpu.state_s), 1e-12)
        row["capped_s"] = gpu.capped_s
        row["cold_starts"] = gpu.cold_starts
        row["unattributed_j"] = gpu.unattributed_j
        row["empty_w"] = gpu.empty_w
        rows.append(row)
    return pd.DataFrame(rows)


PART_COLUMNS = [f"{p}_j" for p in ENERGY_PARTS]


def _attribution_frame(sim: Simulator) -> pd.DataFrame:
    parts = len(ENERGY_PARTS)
    energy = {key: list(v) for key, v in sim.ledger.energy_gone_j.items()}
    for model, instances in sim.by_model.items():
        for inst in instances:  # every GPU was brought up to the end: their energy is integrated to it
            drawn = inst.energy_parts()
            for k, gpu in enumerate(inst.group):
                total = energy.setdefault((gpu.index, model), [0.0] * parts)
                for i in range(parts):
                    total[i] += drawn[k * parts + i]
    keys = sorted(energy)
    frame = pd.DataFrame([energy[k] for k in keys], columns=PART_COLUMNS, dtype=float)
    frame.insert(0, "gpu", np.array([k[0] for k in keys], dtype=np.int64))
    frame.insert(1, "model", pd.Categorical.from_codes([k[1] for k in keys], sim.model_names))
    frame["energy_j"] = frame[PART_COLUMNS].sum(axis=1)
    return frame


def _model_frame(sim: Simulator, requests: pd.DataFrame, attribution: pd.DataFrame) -> pd.DataFrame:
    names = sim.model_names
    drawn = attribution.groupby("model", observed=False)[[*PART_COLUMNS, "energy_j"]].sum()
    drawn = drawn.reindex(names, fill_value=0.0)
    by_model = requests.groupby("model", observed=False)
    tokens = by_model.generated_tokens.sum().reindex(names).to_numpy()
    frame = drawn.reset_index(names="model")
    frame["model"] = list(names)
    frame["requests_j"] = by_model.energy_j.sum().reindex(names).to_numpy()
    frame["output_tokens"] = tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["j_per_token"] = np.where(tokens > 0, frame.energy_j / np.maximum(tokens, 1), np.nan)
    return frame


def _node_frame(sim: Simulator) -> pd.DataFrame:
    rows = []
    for node in sim.nodes:
        row: dict[str, Any] = {"node": node.index, "gpus": [g.index for g in node.gpus]}
        row.update({f"energy_{s}_j": e for s, e in zip(NODE_STATES, node.energy_j)})
        row.update({f"time_{s}_s": t for s, t in zip(NODE_STATES, node.state_s)})
        row["energy_kwh"] = node.energy_total_j / 3.6e6
        row["boots"] = node.boots
        rows.append(row)
    return pd.DataFrame(rows)


def _summary(sim: Simulator, result: Result, wall_s: float) -> dict[str, Any]:
    ledger = sim.ledger
    req, gpus, nodes = result.requests, result.gpus, result.nodes
    gpu_j = float(gpus[[f"energy_{s}_j" for s in STATES]].to_numpy().sum())
    host_j = float(nodes[[f"energy_{s}_j" for s in NODE_STATES]].to_numpy().sum())
    energy_j = gpu_j + host_j
    finished = req.status == "finished"
    p50, p90, p99 = result.tbt_quantiles()
    ttft = req.ttft_s[finished]
    n = len(req)
    out = {
        "policy": result.policy,
        "requests": n,
        "finished": int(finished.sum()),
        **{s: int((req.status == s).sum()) for s in STATUS_NAMES if s != "finished"},
        "slo_attainment": float(req.slo_ok.mean()) if n else float("nan"),
        "ttft_attainment": float(req.ttft_ok.mean()) if n else float("nan"),
        "tbt_attainment": float(req.tbt_ok.mean()) if n else float("nan"),
        "energy_kwh": energy_j / 3.6e6,
        "gpu_energy_kwh": gpu_j / 3.6e6,
        "host_energy_kwh": host_j / 3.6e6,
        "energy_j_per_token": energy_j / max(ledger.tokens_out, 1),
        "output_tokens": int(ledger.tokens_out),
        "mean_power_w": energy_j / max(sim.end, 1e-12),
        "gpu_mean_power_w": gpu_j / max(sim.end, 1e-12),
        "gpu_busy_hours": float(gpus.time_busy_s.sum() / 3600),
        "gpu_awake_hours": float((gpus[[f"time_{s}_s" for s in STATES if s != "off"]].to_numpy().sum()) / 3600),
        "gpu_empty_hours": float(gpus.time_empty_s.sum() / 3600),
        "node_off_hours": float(nodes.time_off_s.sum() / 3600),
        "node_boots": int(nodes.boots.sum()),
        "cold_starts": int(gpus.cold_starts.sum()),
        "sleeps": sim.sleeps,
        "wakes": sim.wakes,
        "migrations": ledger.migrations,
        "preemptions": ledger.preemptions,
        "recomputed_tokens": ledger.recomputed_tokens,
        "rejected_actions": ledger.rejected_actions,
        "unattributed_gpu_energy_kwh": float(gpus.unattributed_j.sum()) / 3.6e6,
        **{f"j_per_token[{row.model}]": float(row.j_per_token) for row in result.models.itertuples()},
        "power_capped_s": float(gpus.capped_s.sum()),
        "tbt_p50_ms": p50 * 1e3, "tbt_p90_ms": p90 * 1e3, "tbt_p99_ms": p99 * 1e3,
        "ttft_p50_ms": float(np.median(ttft)) * 1e3 if len(ttft) else float("nan"),
        "ttft_p90_ms": float(np.quantile(ttft, 0.9)) * 1e3 if len(ttft) else float("nan"),
        "horizon_s": sim.end,
        "wall_s": wall_s,
        "requests_per_wall_s": n / wall_s if wall_s > 0 else float("nan"),
    }
    return out
