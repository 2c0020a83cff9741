"""``festgym serve-bench``: a standard closed-loop serving benchmark, run in the simulator.

One model alone on one GPU (or its tensor/expert-parallel group) at a fixed clock, as in the
ML.ENERGY leaderboard; any Hugging Face config can be benchmarked without a profile on disk
(``--model-config``, built in memory): every request is
submitted at once, so the engine runs at ``max_num_seqs`` (or what the KV cache allows) until the
queue drains. Figures are taken over the steady window. That window opens once the first
``max_num_seqs`` requests have finished, which excludes the cold start and the synchronised first
batch. It closes when the last request gets its first token, after which the batch shrinks.
With too few requests for a steady window (``--requests`` at or below the batch limit, or not much
above it), figures cover the drain instead: from the last first token to the last request's end,
while the batch shrinks (``steady_window`` is then false).

The KV cache gets all GPU memory the weights leave (``gpu_memory_utilization`` 0.9, as vLLM).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from festgym.config import check_ranges
from festgym.errors import FestgymError
from festgym.policies.least_loaded import LeastLoaded
from festgym.profiles.calibration.sources import OUTPUT_CV, PROMPT_CV, PROMPT_TOKENS, mlenergy_rows
from festgym.profiles.generate import build_profile, model_from_config
from festgym.profiles.parallel import NODE_OF, Parallel, Plan, weight_bytes_per_gpu
from festgym.profiles.profile import Profile, load_profile
from festgym.profiles.specs import GpuSpec
from festgym.sim.config import SimConfig
from festgym.sim.serving import EngineConfig, ModelServing, Slo
from festgym.sim.simulator import Simulator
from festgym.sim.workload import LengthDist, Trace


@dataclass(frozen=True)
class BenchConfig:
    """One serve-bench run (``festgym serve-bench`` takes one option per field)."""

    gpu: str = "H100-SXM-80GB"
    """GPU type."""
    model: str = "Llama-3.1-8B"
    """Model: a profile's name on the GPU type (``Llama-3.1-70B-tp4``); ignored with --model-config."""
    model_config: str | None = None
    """A Hugging Face config.json (or a shipped model's name) to benchmark without writing a profile:
    its profile is built in memory from the GPU type's constants."""
    tp: int = 1
    """Tensor-parallel degree, with --model-config."""
    ep: int = 1
    """Expert-parallel degree of a MoE model, with --model-config."""
    kv_format: str | None = None
    """KV-cache format with --model-config (bf16 or fp8; default: the activations')."""
    max_num_seqs: int = 64
    """Engine batch limit."""
    prompt_mean: float = 220.0
    """Mean prompt tokens (lognormal lengths)."""
    prompt_cv: float = PROMPT_CV["lm-arena-chat"]
    """Coefficient of variation of prompt lengths (default: the assumed chat prompts')."""
    output_mean: float = 400.0
    """Mean output tokens (lognormal lengths)."""
    output_cv: float = 1.0
    """Coefficient of variation of output lengths."""
    output_max: int = 65536
    """Longest output, tokens."""
    requests: int = 0
    """Requests submitted (0: enough for a steady window, 8 × max_num_seqs and at least 500)."""
    clock_mhz: float | None = field(default=None, metadata={"aliases": ("--clock",)})
    """SM clock (default: the GPU's default clock)."""
    max_num_batched_tokens: int = 8192
    """Engine token budget per iteration."""
    seed: int = 0
    """Seeds the prompt and output lengths."""

    def __post_init__(self) -> None:
        check_ranges(self, {"max_num_seqs": self.max_num_seqs >= 1, "requests": self.requests >= 0,
                            "prompt_mean": self.prompt_mean >= 1, "output_mean": self.output_mean >= 1,
                            "prompt_cv": self.prompt_cv >= 0, "output_cv": self.output_cv >= 0,
                            "output_max": self.output_max >= 1, "seed": self.seed >= 0,
                            "clock_mhz": self.clock_mhz is None or self.clock_mhz > 0},
                     {"max_num_seqs": "≥ 1", "requests": "≥ 0", "prompt_mean": "≥ 1 token", "output_mean": "≥ 1 token",
                      "prompt_cv": "≥ 0", "output_cv": "≥ 0", "output_max": "≥ 1 token", "seed": "≥ 0",
                      "clock_mhz": "> 0 MHz"})

    @property
    def prompt(self) -> LengthDist:
        return LengthDist.from_mean_cv(self.prompt_mean, self.prompt_cv)

    @property
    def output(self) -> LengthDist:
        return LengthDist.from_mean_cv(self.output_mean, self.output_cv, high=self.output_max)


def bench_profile(cfg: BenchConfig, profiles_root=None) -> Profile:
    """The profile a benchmark runs: built from ``model_config`` in memory, else found by name."""
    if cfg.model_config is None:
        return load_profile(f"{cfg.gpu}/{cfg.model}", profiles_root)
    gpu = GpuSpec.load(cfg.gpu)
    model, _ = model_from_config(cfg.model_config, kv_format=cfg.kv_format)
    return build_profile(gpu, model, Plan.of(gpu, cfg.tp, cfg.ep))


def run_bench(cfg: BenchConfig, profiles_root=None) -> dict[str, Any]:
    """Median/p90/p99 inter-token latency, average power of the engine's GPUs together, energy per
    token and throughput."""
    profile = bench_profile(cfg, profiles_root)
    sim_cfg = SimConfig(drain_s=1e6, keep_alive_s=1e6, stop_when_done=True)  # 11 days: ends when done
    gpus = profile.parallel.gpus
    free_gb = profile.gpu.memory_gb * sim_cfg.gpu_memory_utilization - weight_bytes_per_gpu(profile) / 1e9
    if free_gb <= 0:
        raise FestgymError(f"serve-bench: {profile.key} does not fit: {weight_bytes_per_gpu(profile) / 1e9:.1f} GB of "
                           f"weights per GPU on {profile.gpu.memory_gb:g} GB GPUs; raise --tp or --ep")
    engine = EngineConfig(max_num_seqs=cfg.max_num_seqs, max_num_batched_tokens=max(cfg.max_num_batched_tokens,
                          cfg.max_num_seqs + 1), kv_cache_gb=free_gb * gpus)
    node = NODE_OF.get(profile.gpu.name, "dgx-h100")
    sim = Simulator([profile.gpu.name] * gpus, {profile.name: ModelServing(Slo(), engine)}, sim_cfg, profiles_root,
                    node=node, profiles=[profile])
    n = cfg.requests or max(8 * cfg.max_num_seqs, 500)
    rng = np.random.default_rng(cfg.seed)
    prompt, output = cfg.prompt.sample(rng, n), cfg.output.sample(rng, n)
    trace = Trace.build(np.zeros(n), np.zeros(n, dtype=np.int32), prompt, output, (profile.name,), 0.0)
    result = sim.run(trace, LeastLoaded(spawn_at=float("inf"), clock_mhz=cfg.clock_mhz))
    req = result.requests
    if (req.status != "finished").any():
        raise FestgymError(f"serve-bench: {int((req.status != 'finished').sum())} requests did not finish")
    start, end, steady = _window(np.sort(req.arrival_s + req.e2e_s), float(req.arrival_s.add(req.ttft_s).max()),
                                 cfg.max_num_seqs)
    p50, p90, p99 = result.tbt_quantiles((0.5, 0.9, 0.99), start, end)
    runs = result.runs[(result.runs.t0 >= start) & (result.runs.t0 < end)]
    tokens = float((runs.n * runs.batch).sum())
    span = float((runs.t0 + runs.g0 * runs.n + runs.dg * runs.n * (runs.n - 1) / 2).max() - runs.t0.min())
    line = result.timeline[(result.timeline.t_s > start) & (result.timeline.t_s <= end)]
    # The engine's GPUs together, weighted (a run's last interval may be shorter); a window within one
    # control interval holds no timeline row, and the run's mean GPU power stands in.
    power = float((line.power_w * line.interval_s).sum() / (line.interval_s.sum() / gpus)) if len(line) \
        else float(result.summary["gpu_mean_power_w"])
    batch = float((runs.batch * runs.n).sum() / runs.n.sum())
    return {"gpu": profile.gpu.name, "model": profile.name, "gpus": gpus, "max_num_seqs": cfg.max_num_seqs,
            "clock_mhz": cfg.clock_mhz or profile.gpu.default_sm_clock_mhz, "requests": n,
            "avg_batch_size": batch, "median_itl_ms": p50 * 1e3, "p90_itl_ms": p90 * 1e3, "p99_itl_ms": p99 * 1e3,
            "avg_power_w": power, "energy_per_token_j": power * span / tokens if tokens else float("nan"),
            "output_tokens_per_s": tokens / span if span else float("nan"), "window_s": end - start,
            "preemptions": int(result.summary["preemptions"]), "steady_window": steady,
            "wall_s": result.summary["wall_s"]}


def _window(finished_s: np.ndarray, last_first_token_s: float, max_num_seqs: int) -> tuple[float, float, bool]:
    """(start, end, steady) of the measured window, from the sorted finish times: the steady one
    (see the module docstring) where it exists, else the drain after the last first token."""
    start = float(finished_s[min(max_num_seqs, len(finished_s)) - 1])
    if last_first_token_s > start:
        return start, last_first_token_s, True
    end = float(finished_s[-1])
    if not end > last_first_token_s:
        raise FestgymError("serve-bench: nothing to measure: every request ended with its first token; "
                           "raise --output-mean")
    return last_first_token_s, end, False


def mlenergy_validation(data_dir, profiles_root=None, seed: int = 0, models: Collection[str] | None = None,
                        gpus: Collection[str] = ("H100-SXM-80GB", "B200-SXM-180GB")) -> pd.DataFrame:
    """serve-bench against every ML.ENERGY v3 row (H100 and B200; one GPU, tensor and expert parallel)
    with a shipped profile of its model and plan (of ``models``, by profile name, if given).
    ``avg_batch_size`` is the engine's, as in :func:`festgym.profiles.calibration.sources.mlenergy_comparisons`."""
    rows = []
    for gpu in gpus:
        frame = mlenergy_rows(GpuSpec.load(gpu), data_dir)
        for row in frame.itertuples():
            plan = Parallel(int(row.tp), int(row.ep))
            model = row.name + plan.suffix
            if models is not None and model not in models:
                continue
            try:
                load_profile(f"{gpu}/{model}", profiles_root)
            except LookupError:
                continue
            cfg = BenchConfig(gpu=gpu, model=model, max_num_seqs=int(row.max_num_seqs),
                              prompt_mean=PROMPT_TOKENS[row.task], prompt_cv=PROMPT_CV[row.task],
                              output_mean=float(row.avg_output_len),
                              output_cv=OUTPUT_CV[row.task], output_max=32768, seed=seed)
            got = run_bench(cfg, profiles_root)
            rows.append({"gpu": gpu, "model": model, "task": row.task, "max_num_seqs": int(row.max_num_seqs),
                         "batch_measured": row.avg_batch_size, "batch_sim": got["avg_batch_size"],
                         "itl_measured_ms": row.median_itl_ms, "itl_sim_ms": got["median_itl_ms"],
                         "power_measured_w": row.avg_power_watts, "power_sim_w": got["avg_power_w"]})
    out = pd.DataFrame(rows)
    out["itl_err_pct"] = (out.itl_sim_ms / out.itl_measured_ms - 1) * 100
    out["power_err_pct"] = (out.power_sim_w / out.power_measured_w - 1) * 100
    return out
