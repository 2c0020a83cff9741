"""Calibration sources: read one public data set, predict its figures with the roofline model.

Each ``*_comparisons`` function returns :class:`Comparison` objects (measured vs predicted,
one per metric). The fits minimise their relative errors; ``festgym profiles check`` reports
them. The data files are read from the reference-data folder and never copied.

Named assumptions of the ML.ENERGY steady-state benchmark model (the data set gives batch size
and output length, not prompt length or iteration mix):

* ``PROMPT_TOKENS``: mean prompt length with chat template per task (LMArena conversation
  prompts; GPQA-diamond question, options and instructions).
* ``OUTPUT_CV``: coefficient of variation of output length per task. Running sequences are
  length-biased, so their mean context is ``prompt + output·(1 + cv²)/2``.
* ``PROMPT_CV``: coefficient of variation of prompt length per task (lognormal lengths).
* New requests join at ``batch/output`` per iteration (closed loop at ``max_num_seqs``), each
  prefilled whole in the iteration it joins (vLLM chunked prefill with an 8192-token budget);
  the number per iteration is Poisson and their prompts' total is lognormal with the sum's mean
  and variance (Fenton-Wilkinson), taken at the means of ``PROMPT_NODES`` equiprobable parts (which
  keep its mean). The median inter-token latency is the weighted median of the iteration times
  over that mix, and average power is time-weighted over it. Why the spread matters: once more
  than half the steps carry a new prompt, a fixed-length prompt would put a whole mean prefill into
  the median step, where with skewed lengths the median step carries a short one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from festgym.errors import DataMissingError
from festgym.profiles import roofline
from festgym.profiles.models import ModelSpec, model_name_of
from festgym.profiles.parallel import SINGLE_GPU, Parallel, Plan
from festgym.profiles.specs import GpuSpec, NodeSpec

MLENERGY_FILE = "mlenergy-v3/h100_llm_configs.csv"
MLENERGY_FILES = {MLENERGY_FILE: "H100", "mlenergy-v3/h100_moe_fp8_configs.csv": "H100",
                  "mlenergy-v3/b200_llm_configs.csv": "B200"}
"""ML.ENERGY v3 tables and the GPU each was measured on (``gpu_model``)."""

VIDUR_FILES = {"vidur-h100/Llama-2-7b-hf.mlp.csv": {"hidden_size": 4096, "num_attention_heads": 32,
                                                   "num_key_value_heads": 32, "intermediate_size": 11008},
               "vidur-h100/Llama-2-70b-hf.mlp.csv": {"hidden_size": 8192, "num_attention_heads": 64,
                                                    "num_key_value_heads": 8, "intermediate_size": 28672}}
"""vidur's per-layer operator tables and the layer each times: a small and a large model, each at
tensor-parallel 1-8, so that the GEMMs' weight slices per GPU span 51 MB to 1.7 GB."""
VIDUR_FILE = next(iter(VIDUR_FILES))
PERSEUS_FILE = "perseus-a100-freq/stage_time_energy_vs_sm_clock.csv"
SPLITWISE_FILE = "splitwise/power_model_constant.yaml"

PROMPT_TOKENS = {"lm-arena-chat": 220.0, "gpqa": 300.0}
PROMPT_CV = {"lm-arena-chat": 1.5, "gpqa": 0.4}
"""Assumptions (the data set gives no prompt lengths): chat prompts are right-skewed, most short and a
few long pasted texts or long conversations (band 1.0-2.5; the Azure 2023 conversation trace's context
lengths have 0.96); GPQA questions with their options vary less (band 0.2-0.6)."""
OUTPUT_CV = {"lm-arena-chat": 1.0, "gpqa": 0.5}
PROMPT_NODES = 8
"""Equiprobable parts of the prompts' total per count of new prompts, each at its mean (256 parts
move Llama-3.1-8B's median ITL at batch 512 by 0.6% and its power by 0.01%)."""

VIDUR_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj", "input_layernorm",
             "post_attention_layernorm", "attn_rope", "mlp_act", "add", "add")
"""Per-layer operators of vidur's MLP table; the residual add runs twice per layer."""
VIDUR_LAYER = {**VIDUR_FILES[VIDUR_FILE], "num_hidden_layers": 1, "vocab_size": 1}
"""One Llama-2-7B layer (the LM head is left out: vidur times it separately)."""


@dataclass(frozen=True)
class Comparison:
    """Measured against predicted values of one metric from one source."""

    source: str
    file: str
    metric: str
    labels: tuple[str, ...]
    measured: np.ndarray
    predicted: np.ndarray
    model: str = ""
    """The model (and plan) the rows are of, where a source has several."""

    @property
    def rel_error(self) -> np.ndarray:
        return self.predicted / self.measured - 1.0

    def summary(self) -> dict:
        err = np.abs(self.rel_error) * 100
        worst = int(np.argmax(err))
        return {"source": self.source, "file": self.file, **({"model": self.model} if self.model else {}),
                "metric": self.metric, "n": int(err.size),
                "mape_pct": round(float(err.mean()), 2), "max_pct": round(float(err.max()), 2),
                "worst": self.labels[worst]}


def read_csv(data_dir: Path, name: str) -> pd.DataFrame:
    path = Path(data_dir) / name
    if not path.is_file():
        raise DataMissingError(f"calibration source {path} is absent")
    return pd.read_csv(path)


mlenergy_model_name = model_name_of
"""``meta-llama/Llama-3.1-8B-Instruct`` -> ``Llama-3.1-8B`` (profile folder names)."""


def steady_state(model: ModelSpec, gpu: GpuSpec, batch: float, output_len: float, task: str,
                 clock_mhz: float | None = None, plan: Plan = SINGLE_GPU) -> tuple[float, float]:
    """Median inter-token latency (s) and average power of each GPU (W) of a closed-loop benchmark
    of an engine run with ``plan``, ``batch`` sequences in all."""
    prompt, cv = PROMPT_TOKENS[task], OUTPUT_CV[task]
    rate = batch / output_len
    k = np.arange(int(rate + 8 * np.sqrt(rate) + 12))
    log_pmf = k * np.log(rate) - rate - np.cumsum(np.log(np.maximum(k, 1)))
    pmf = np.exp(log_pmf)
    pmf /= pmf.sum()
    tokens, weight = _prompt_mix(k, pmf, prompt, PROMPT_CV[task])
    work = roofline.iteration_work(model, prefill_tokens=tokens[:, None],
                                   prefill_seqs=np.repeat(k, PROMPT_NODES)[:, None], decode_batch=batch,
                                   decode_ctx=prompt + output_len * (1 + cv**2) / 2,
                                   parallel=plan.parallel, collectives=plan.collectives)
    clock = np.array([clock_mhz or gpu.default_sm_clock_mhz], dtype=float)
    it = roofline.evaluate(work, gpu, 1.0, clock)
    t, p = it.time_s[:, 0], it.power_w[:, 0]
    order = np.argsort(t, kind="stable")
    median = t[order][np.searchsorted(np.cumsum(weight[order]), 0.5)]
    return float(median), float((weight * t * p).sum() / (weight * t).sum())


def _prompt_mix(k: np.ndarray, pmf: np.ndarray, mean: float, cv: float) -> tuple[np.ndarray, np.ndarray]:
    """Prefill tokens of an iteration that admits ``k`` new prompts (probability ``pmf``), at the
    means of ``PROMPT_NODES`` equiprobable parts of their lognormal total each, and each point's weight."""
    n = np.maximum(k, 1)
    tokens = np.array([_lognormal_part_means(int(j), cv) for j in n]) * (n * mean)[:, None]
    tokens[k == 0] = 0.0
    return tokens.ravel(), np.repeat(pmf / PROMPT_NODES, PROMPT_NODES)


@cache
def _lognormal_part_means(n: int, cv: float) -> tuple[float, ...]:
    """Means, relative to the whole mean, of the ``PROMPT_NODES`` equiprobable parts of the lognormal
    total of ``n`` prompts (mean ``n·mean``, CV ``cv/sqrt(n)``): they average to 1 exactly, so the mix
    keeps the mean prefill, and they spread as the total does."""
    sigma = float(np.sqrt(np.log1p(cv**2 / n)))
    if sigma == 0.0:
        return (1.0,) * PROMPT_NODES
    unit = NormalDist()
    edges = [-np.inf, *(unit.inv_cdf(i / PROMPT_NODES) for i in range(1, PROMPT_NODES)), np.inf]
    cdf = [0.0 if e == -np.inf else 1.0 if e == np.inf else unit.cdf(e - sigma) for e in edges]
    return tuple(PROMPT_NODES * (hi - lo) for lo, hi in pairwise(cdf))


def mlenergy_rows(gpu: GpuSpec, data_dir: Path, files: Iterable[str] | None = None) -> pd.DataFrame:
    """ML.ENERGY v3 rows measured on ``gpu``'s type, from ``files`` (default: every table), with the
    profile-folder model name (``name``) and the file (``file``) of each."""
    family = gpu.name.split("-")[0].upper()
    frames, missing = [], []
    for name in files if files is not None else MLENERGY_FILES:
        if MLENERGY_FILES[name] != family:
            continue
        try:
            frame = read_csv(data_dir, name)
        except DataMissingError as exc:
            missing.append(exc)
            continue
        frames.append(frame[frame.gpu_model == family].assign(file=name, name=frame.model.map(mlenergy_model_name)))
    if missing and not frames:
        raise missing[0]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def mlenergy_comparisons(gpu: GpuSpec, models: Mapping[str, ModelSpec], data_dir: Path,
                         parallel: Parallel | None = None, files: Iterable[str] | None = None) -> list[Comparison]:
    """ML.ENERGY v3 rows of the given models on ``gpu``'s type, run with ``parallel`` (default: with
    whatever plan each row used): median ITL and average power of the engine's GPUs together, one
    comparison per file, model and plan. The table's ``avg_batch_size`` is the engine's (its output
    throughput times its median ITL gives it back on the expert-parallel rows too), split over the
    data-parallel replicas with expert parallelism."""
    frame = mlenergy_rows(gpu, data_dir, files)
    if frame.empty:
        return []
    frame = frame[frame.name.isin(list(models))]
    out = []
    for (file, name, tp, ep), rows in frame.groupby(["file", "name", "tp", "ep"], sort=True):
        plan = Parallel(int(tp), int(ep))
        if parallel is not None and plan != parallel:
            continue
        node = Plan.of(gpu, plan.tp, plan.ep)
        labels, itl, power = [], [], []
        for row in rows.itertuples():
            t, p = steady_state(models[name], gpu, row.avg_batch_size, row.avg_output_len, row.task, plan=node)
            labels.append(f"{name}{plan.suffix} {row.task} max_num_seqs={int(row.max_num_seqs)}")
            itl.append(t * 1e3)
            power.append(p * plan.gpus)
        key = f"{name}{plan.suffix}"
        out += [Comparison("mlenergy-v3", file, "median_itl_ms", tuple(labels), rows.median_itl_ms.to_numpy(),
                           np.array(itl), key),
                Comparison("mlenergy-v3", file, "avg_power_w", tuple(labels), rows.avg_power_watts.to_numpy(),
                           np.array(power), key)]
    return out


def vidur_comparisons(gpu: GpuSpec, data_dir: Path, files: Iterable[str] = tuple(VIDUR_FILES),
                      degrees: Iterable[int] = (1, 2, 4, 8)) -> list[Comparison]:
    """vidur H100 Llama-2-7B and -70B layers at tensor-parallel 1-8: time of one layer's
    non-attention operators on one GPU vs tokens.

    A GPU of a tensor-parallel group runs the layer's slice: its attention heads, KV heads and MLP
    width divided by the degree, the norms and residual adds on the full hidden size (vidur times
    the all-reduces apart). The calibration fits the streaming constants on the 7B layer on one GPU
    (``files``, ``degrees``); the other tables check them across sizes: the 70B layer's GEMMs stream
    at up to 0.88 of peak bandwidth where the 7B fit allows 0.69 (see docs/models.md), and a fixed
    per-kernel time of the harness (it times each operator alone, without CUDA graphs) makes small
    slices look slower still.
    Assumption: vidur times each operator in isolation, in bursts shorter than the power limiter's
    averaging window, so the prediction runs at the top clock without the limiter. (Sustained
    prefill in a profile does hit the limiter, as splitwise's 700 W prompt power says.)
    """
    if not gpu.name.upper().startswith("H100"):
        return []
    gpu_only = dataclasses.replace(gpu, latency=gpu.latency.replace(seq_overhead_s=0.0, kernel_floor_s=0.0))
    clock = np.array([float(gpu.max_sm_clock_mhz)])
    collectives = NodeSpec.load("dgx-h100").collectives  # timed here, then left out as vidur leaves them out
    out = []
    for name in files:
        layer = ModelSpec.from_hf_config({**VIDUR_FILES[name], "num_hidden_layers": 1, "vocab_size": 1},
                                         f"{name} layer", name)
        frame = read_csv(data_dir, name)
        frame = frame[frame.num_tensor_parallel_workers.isin(list(degrees))]
        for tp, rows in frame.groupby("num_tensor_parallel_workers"):
            rows = rows.sort_values("num_tokens")
            measured = sum(rows[f"time_stats.{op}.median"].to_numpy() for op in VIDUR_OPS) * 1e-3
            tokens = rows.num_tokens.to_numpy(dtype=float)
            work = roofline.iteration_work(layer, prefill_tokens=tokens[:, None], prefill_seqs=tokens[:, None],
                                           parallel=Parallel(int(tp)), collectives=collectives)
            work = dataclasses.replace(work, flops_attention=np.zeros_like(work.flops_attention),
                                       bytes_kv=np.zeros_like(work.bytes_kv), comm_s=0.0, comm_bytes=0.0)
            predicted = roofline.evaluate(work, gpu_only, 1.0, clock, power_cap=False).time_s[:, 0]
            labels = tuple(f"{name.split('/')[-1].split('.')[0]} tp{tp} tokens={int(t)}" for t in tokens)
            out.append(Comparison("vidur-h100", name, f"layer_time_ms tp{tp}", labels, measured * 1e3,
                                  predicted * 1e3))
    return out


def perseus_comparisons(gpu: GpuSpec, data_dir: Path) -> list[Comparison]:
    """Perseus A100-SXM forward passes (compute-bound, a stand-in for prefill): time and power
    relative to the GPU's top clock (as the file's rel_* columns are), against SM clock. Relative
    figures, so the power limit of the measured system (its power exceeds a 400 W TDP) does not
    enter."""
    if not gpu.name.upper().startswith("A100"):
        return []
    frame = read_csv(data_dir, PERSEUS_FILE)
    frame = frame[frame.config.str.contains("a100") & (frame.instruction == "forward")]
    clocks = frame.frequency.to_numpy(dtype=float)
    layer = ModelSpec.from_hf_config({**VIDUR_LAYER, "num_hidden_layers": 8}, "forward-stage", PERSEUS_FILE)
    work = roofline.iteration_work(layer, prefill_tokens=np.array([[4096.0]]), prefill_seqs=1.0)
    grid = np.append(clocks, gpu.max_sm_clock_mhz)
    it = roofline.evaluate(work, gpu, 1.0, grid, power_cap=False)
    rel_time = it.time_s[0, :-1] / it.time_s[0, -1]
    rel_power = it.power_w[0, :-1] / it.power_w[0, -1]
    labels = tuple(f"{c} {int(f)} MHz" for c, f in zip(frame.config, clocks))
    return [
        Comparison("perseus-a100", PERSEUS_FILE, "rel_time", labels, frame.rel_time.to_numpy(), rel_time),
        Comparison("perseus-a100", PERSEUS_FILE, "rel_power", labels, frame.rel_power.to_numpy(), rel_power),
    ]


def splitwise_idle_w(gpu: GpuSpec, data_dir: Path) -> float | None:
    """splitwise-sim's measured idle power for this GPU type, if it lists one."""
    import yaml

    path = Path(data_dir) / SPLITWISE_FILE
    if not path.is_file():
        raise DataMissingError(f"calibration source {path} is absent")
    idle = yaml.safe_load(path.read_text()).get("idle_power", {})
    family = gpu.name.split("-")[0].lower()  # "H100-SXM-80GB" -> "h100", listed as "h100-80gb"
    return next((float(w) for key, w in idle.items() if key.split("-")[0] == family), None)


def splitwise_comparisons(gpu: GpuSpec, data_dir: Path) -> list[Comparison]:
    measured = splitwise_idle_w(gpu, data_dir)
    if measured is None:
        return []
    return [Comparison("splitwise", SPLITWISE_FILE, "idle_w", (gpu.name,), np.array([float(measured)]),
                       np.array([gpu.power.idle_w]))]


def all_comparisons(gpu: GpuSpec, models: Mapping[str, ModelSpec], data_dir: Path,
                    parallel: Parallel | None = None) -> list[Comparison]:
    """Every source that applies to this GPU (and these models, run with ``parallel``: default, any
    plan); absent files are skipped."""
    out: list[Comparison] = []
    for compare in (lambda: mlenergy_comparisons(gpu, models, data_dir, parallel),
                    lambda: vidur_comparisons(gpu, data_dir),
                    lambda: perseus_comparisons(gpu, data_dir), lambda: splitwise_comparisons(gpu, data_dir)):
        try:
            out.extend(compare())
        except DataMissingError:
            continue
    return out


def summaries(comparisons: Iterable[Comparison]) -> list[dict]:
    return [c.summary() for c in comparisons]
