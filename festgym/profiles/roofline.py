"""The physics: FLOPs and bytes of one engine iteration, turned into seconds and watts.

This is the one model behind every profile grid, the calibration fits and the fit report.
It is vectorised: every argument broadcasts, and SM clocks run along the last axis.

Modelling assumptions (each a named constant below, with its source in the GPU spec):

* **Per-operator roofline.** An iteration is three operator groups, each bound by compute or
  memory: linear layers (weights streamed once per iteration, FLOPs ∝ tokens), attention
  (KV-cache reads ∝ batch × context, FLOPs ∝ context) and element-wise kernels (activation
  bytes ∝ tokens). Each group takes the smooth maximum of its compute and memory times,
  ``(a^p + b^p)^(1/p)`` with ``p = roofline_sharpness``.
* **GEMM efficiency**: large GEMMs reach ``gemm_peak_frac`` of dense peak. Mid-sized GEMMs
  overlap their weight streaming and arithmetic only partly; a low ``roofline_sharpness``
  (fitted on vidur's H100 operator times) captures that soft transition, and keeps the
  memory-bound regime insensitive to the SM clock, as it is on hardware.
* **SM share** (MPS-style): compute throughput scales with the share. HBM bandwidth needs enough
  SMs issuing loads at a high enough clock: it saturates once ``share · f/f_max`` exceeds
  ``bw_saturation_share`` (no public data; the physical assumption of decode saturating at a
  share of about 0.3-0.5), through a smooth minimum of exponent ``BW_SATURATION_SHARPNESS``.
* **SM clock**: a fraction ``clock_insensitive_frac`` of compute-bound time does not scale with
  clock (memory stalls inside GEMMs, synchronisation), calibrated on Perseus A100 sweeps. Kernel
  launch floors (front-end latency) and host-side engine time (scheduling, sampling) do not
  depend on the SM clock.
* **Power** = resident idle + SM activity + arithmetic + attention + memory traffic:
  ``idle_w + active_w·busy·share·x·v(x)² + (compute_w·FLOP rate/peak + attention_w·KV-read
  rate/peak bandwidth)·v(x)² + memory_w·byte rate/peak bandwidth``, where ``x = f/f_max`` and
  ``v(x)`` is the relative core voltage: dynamic power scales as f·V², energy per FLOP as V²,
  energy per HBM byte does not depend on the SM clock; decode attention (gathers, softmax) costs
  SM energy per KV byte read. ``v(x) = clip(1 - v_slope·(1 - x), v_floor, 1)``.
* **Precision**: linear layers run at the tensor peak of their weights' format (FP8 twice BF16's on
  Hopper; MXFP4 natively only on Blackwell, dequantised to BF16 elsewhere at
  ``DEQUANT_FLOPS_PER_WEIGHT``); weights and KV are read at their format's bytes. Arithmetic power
  counts the fraction of the format's peak in use (at full FP8 rate, as much as at full BF16 rate).
* **Mixture of experts**: a MoE layer reads the weights of the distinct experts its batch chooses
  (expected count under uniform independent routing: an upper bound, as real routers are skewed),
  computes top-k experts per token, and routes tokens at ``DISPATCH_PASSES`` activation passes.
* **Several GPUs** (:mod:`festgym.profiles.parallel`): work is split per GPU; the collectives'
  time, from the node's measured NCCL times (and the engine's own all-reduce for small messages),
  adds to the iteration at neither clock nor share.
* **Power cap**: where the model draws more than TDP, the GPU throttles to the highest supported
  clock whose power fits (as the firmware's power limiter does), which lengthens the iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from festgym.profiles.collectives import Collectives
from festgym.profiles.models import FORMAT_BYTES, ModelSpec
from festgym.profiles.parallel import SINGLE_GPU, Parallel, kv_split
from festgym.profiles.specs import GpuSpec


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes of one iteration on each GPU of an engine. Fields are arrays that broadcast
    together. Linear FLOPs run at the tensor peak of their weights' format: ``flops_linear`` at
    ``formats[0]``'s (attention, dense MLPs, shared experts, LM head), ``flops_expert`` at
    ``formats[1]``'s (routed experts)."""

    tokens: np.ndarray
    seqs: np.ndarray
    flops_linear: np.ndarray
    flops_attention: np.ndarray
    bytes_linear: np.ndarray
    bytes_kv: np.ndarray
    bytes_elementwise: np.ndarray
    layers: int
    flops_expert: np.ndarray | float = 0.0
    bytes_weights: np.ndarray | float = 0.0
    """The weights among ``bytes_linear`` (the least an iteration reads besides KV)."""
    bytes_expert_weights: np.ndarray | float = 0.0
    """The routed experts' among them (in ``formats[1]``; the rest in ``formats[0]``)."""
    comm_s: np.ndarray | float = 0.0
    """Time in collectives (all-reduce, all-to-all) on the node's NVLink: it does not scale with the SM
    clock or share, and the SMs wait meanwhile (vLLM runs them between kernels, not overlapped)."""
    comm_bytes: np.ndarray | float = 0.0
    """HBM traffic of those collectives on this GPU (each byte sent is read and each received written)."""
    formats: tuple[str, str] = ("bf16", "bf16")

    @property
    def flops(self) -> np.ndarray:
        return self.flops_linear + self.flops_expert + self.flops_attention

    @property
    def bytes(self) -> np.ndarray:
        return self.bytes_linear + self.bytes_kv + self.bytes_elementwise + self.comm_bytes


DEQUANT_FLOPS_PER_WEIGHT = 60.0
"""Cost, in BF16 tensor-core FLOPs, of dequantising one weight element an iteration reads in a format
its GPU has no tensor cores for (MXFP4 on Hopper, converted to BF16 in registers before the MMA, as
vLLM's Marlin/Triton MoE kernels do). Assumption: about 4 CUDA-core operations per element (unpack,
convert, scale), and CUDA cores run at about 1/15 of the BF16 tensor rate (H100: 67 against 989
TFLOP/s), so 4 × 15 = 60. Band 15-120."""

DISPATCH_PASSES = 4
"""Activation passes of a MoE layer's token routing per token and chosen expert: permute (read and
write) before the experts, un-permute and weighted sum (read and write) after. Assumption."""


def iteration_work(model: ModelSpec, prefill_tokens=0.0, prefill_seqs=1.0, decode_batch=0.0,
                   decode_ctx=0.0, parallel: Parallel = SINGLE_GPU.parallel,
                   collectives: Collectives | None = None) -> Work:
    """FLOPs and bytes, on each GPU of an engine run with ``parallel``, of one iteration that
    prefills ``prefill_tokens`` tokens of ``prefill_seqs`` equal-length prompts (one chunk each, no
    earlier context) and decodes one token for each of ``decode_batch`` sequences whose mean context
    is ``decode_ctx`` tokens; the counts are the whole engine's.

    Logits are computed for one token per sequence, as vLLM does. Tensor parallelism splits weights,
    heads and FLOPs ``tp`` ways (KV heads fewer than ``tp`` are replicated) and adds two all-reduces
    of the activations per layer; expert parallelism splits the routed experts ``ep`` ways, runs the
    rest data-parallel (each replica a share of the sequences) and adds two all-to-alls per MoE layer
    (:mod:`festgym.profiles.parallel`). ``collectives`` (the node's) times them; needed when the plan
    spans more than one GPU. MoE layers read the weights of the distinct experts the batch's tokens
    choose (:meth:`ModelSpec.expected_experts`).
    """
    tp, replicas = parallel.tp, parallel.replicas
    split = parallel.ep if parallel.ep > 1 else tp  # how many ways the routed experts are split
    p = np.asarray(prefill_tokens, dtype=float)
    ps = np.where(p > 0, np.asarray(prefill_seqs, dtype=float), 0.0)
    b = np.asarray(decode_batch, dtype=float)
    c = np.asarray(decode_ctx, dtype=float)
    engine_tokens = p + b
    if replicas > 1:  # data-parallel attention: the busiest replica's whole sequences (and their tokens)
        busy_ps = np.ceil(ps / replicas)
        p = np.where(ps > 0, p * busy_ps / np.maximum(ps, 1.0), 0.0)
        ps, b = busy_ps, np.ceil(b / replicas)
    tokens, seqs = p + b, ps + b
    layers, h, d = model.num_layers, model.hidden_size, model.dtype_bytes
    q, kv = model.q_dim, model.kv_dim
    moe = model.moe_layers if model.is_moe else 0
    k = model.experts_per_token
    mlp_width = ((layers - moe) * model.intermediate_size
                 + moe * (k * model.expert_intermediate_size + model.shared_expert_intermediate_size)) / layers
    non_expert = model.layer_matmul_params * layers if not model.is_moe else (
        model.attn_params_per_layer * layers + model.dense_mlp_params * (layers - moe)
        + (model.shared_expert_params + model.router_params) * moe)
    flops_linear = (2.0 * non_expert * tokens + 2.0 * model.lm_head_params * seqs) / tp
    flops_expert = 2.0 * model.expert_params * k * moe * engine_tokens / split
    expert_bytes = moe * model.expected_experts(engine_tokens) * model.expert_weight_bytes / split
    # Attention: QK^T and AV cost 4·head_dim per head for each (query, key) pair a layer attends to:
    # s²/2 pairs for a causal prompt of length s (s·W − W²/2 in a sliding-window layer of window W
    # once s > W), and ctx pairs for one decoded token (at most W in a window layer).
    per_token_kv = float(model.kv_bytes_per_token)
    attended = model.kv_bytes(c) / per_token_kv
    s = np.where(ps > 0, p / np.maximum(ps, 1.0), 0.0)
    w = float(model.sliding_window)
    window_pairs = np.where(s > w, s * w - w * w / 2, s * s / 2) if model.sliding_layers else 0.0
    pairs = (layers - model.sliding_layers) * s * s / 2 + model.sliding_layers * window_pairs
    flops_attention = (4.0 * q * pairs * ps + 4.0 * layers * q * b * attended) / tp
    bytes_kv = (b * model.kv_bytes(c) + 2.0 * tokens * per_token_kv) / kv_split(model, tp)
    gemm_act_per_token = layers * d * (4 * h + (2 * q + 2 * kv + 3 * mlp_width) / tp)
    weights = model.streamed_weight_bytes / tp + expert_bytes
    bytes_linear = weights + gemm_act_per_token * tokens
    elementwise_per_token = layers * d * (10 * h + (2 * (q + kv) + 3 * mlp_width) / tp)
    dispatch = DISPATCH_PASSES * moe * k * h * d * engine_tokens / parallel.gpus
    bytes_elementwise = elementwise_per_token * tokens + dispatch
    comm_s, comm_bytes = _collectives(model, parallel, collectives, tokens, engine_tokens)
    return Work(tokens, seqs, flops_linear, flops_attention, bytes_linear, bytes_kv, bytes_elementwise, layers,
                flops_expert, weights, expert_bytes, comm_s, comm_bytes, (model.weight_format, model.expert_format))


def _collectives(model: ModelSpec, parallel: Parallel, collectives: Collectives | None, tokens: np.ndarray,
                 engine_tokens: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Seconds and HBM bytes of one iteration's collectives on each GPU: two all-reduces of a
    replica's activations per layer (tensor parallel), two all-to-alls of each GPU's routed tokens per
    MoE layer (expert parallel)."""
    if parallel.gpus == 1:
        return 0.0, 0.0
    if collectives is None:
        raise ValueError(f"a {parallel.gpus}-GPU plan needs its node's collectives to time its communication")
    h, d = model.hidden_size, model.dtype_bytes
    time: np.ndarray | float = 0.0
    moved: np.ndarray | float = 0.0
    if parallel.tp > 1:
        size = tokens * h * d
        time = time + 2 * model.num_layers * collectives.engine_all_reduce_s(size, parallel.tp) * (tokens > 0)
        moved = moved + 2 * model.num_layers * 2 * size
    if parallel.ep > 1 and model.is_moe:
        size = engine_tokens / parallel.gpus * model.experts_per_token * h * d
        time = time + 2 * model.moe_layers * collectives.time_s("all_to_all", size, parallel.ep) * (engine_tokens > 0)
        moved = moved + 2 * model.moe_layers * 2 * size
    return time, moved


BW_SATURATION_SHARPNESS = 4.0
"""How abruptly HBM bandwidth saturates with share × clock (assumption: a knee, as in a
Little's-law bound on outstanding loads)."""


def _smooth_max(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    hi = np.maximum(np.maximum(a, b), 1e-30)
    return hi * ((a / hi) ** p + (b / hi) ** p) ** (1.0 / p)


@dataclass(frozen=True)
class Iteration:
    """Seconds and watts of one iteration (arrays, clocks along the last axis)."""

    time_s: np.ndarray
    power_w: np.ndarray
    hbm_util: np.ndarray
    """Fraction of peak HBM bandwidth used over the iteration (input to contention models)."""


def _dequant_flops(work: Work, gpu: GpuSpec) -> np.ndarray | float:
    """BF16-rate operations to dequantise the weights read in formats ``gpu`` has no tensor cores for."""
    parts = (work.bytes_weights - work.bytes_expert_weights, work.bytes_expert_weights)
    return sum((DEQUANT_FLOPS_PER_WEIGHT * part / FORMAT_BYTES[fmt] for part, fmt in zip(parts, work.formats)
                if fmt != "bf16" and not gpu.native(fmt)), 0.0)


def _uncapped(work: Work, gpu: GpuSpec, share, clock_frac) -> Iteration:
    lat, pw = gpu.latency, gpu.power
    share = np.asarray(share, dtype=float)
    x = np.asarray(clock_frac, dtype=float)
    peak = gpu.peak_bf16_tflops * 1e12
    bw = gpu.hbm_bandwidth_gbps * 1e9
    clock_stretch = lat.clock_insensitive_frac + (1.0 - lat.clock_insensitive_frac) / x
    compute_rate = peak * share / clock_stretch
    # Linear FLOPs in BF16-peak units: a format with its own tensor cores runs at their peak.
    speedup = [gpu.peak_tflops(fmt) / gpu.peak_bf16_tflops for fmt in work.formats]
    linear = work.flops_linear / speedup[0] + work.flops_expert / speedup[1] + _dequant_flops(work, gpu)
    load = share * x / lat.bw_saturation_share
    q = BW_SATURATION_SHARPNESS
    full = 1.0 / lat.bw_saturation_share  # the load at share 1 and top clock, which gets all of bw
    mem_rate = bw * load / (1.0 + load**q) ** (1.0 / q) * (1.0 + full**-q) ** (1.0 / q)
    p = lat.roofline_sharpness
    t_linear = _smooth_max(linear / (compute_rate * lat.gemm_peak_frac),
                           work.bytes_linear / (mem_rate * lat.hbm_frac), p)
    t_attention = _smooth_max(work.flops_attention / (compute_rate * lat.attn_compute_frac),
                              work.bytes_kv / (mem_rate * lat.kv_frac), p)
    t_elementwise = work.bytes_elementwise / (mem_rate * lat.hbm_frac)
    t_gpu = t_linear + t_attention + t_elementwise + lat.kernel_floor_s * work.layers * (work.tokens > 0)
    t = lat.seq_overhead_s * work.seqs + t_gpu + work.comm_s
    v2 = pw.relative_voltage(x) ** 2
    busy = t_gpu / t
    hbm_util = work.bytes / (t * bw)
    power = (pw.idle_w + pw.active_w * busy * share * x * v2
             + (pw.compute_w * (linear + work.flops_attention) / peak + pw.attention_w * work.bytes_kv / bw) / t * v2
             + pw.memory_w * hbm_util)
    return Iteration(t, power, hbm_util)


def evaluate(work: Work, gpu: GpuSpec, share, clocks_mhz, power_cap: bool = True) -> Iteration:
    """Time and power of ``work`` at each SM clock of the 1-D array ``clocks_mhz``.

    The clocks form the last axis of the result, so work and share arrays carry a trailing axis
    of length 1. With ``power_cap`` the model runs on the GPU's whole clock ladder and each asked
    clock (snapped down to the ladder) gets the highest ladder clock at or below it whose power
    fits under TDP: the power limiter. ``power_cap=False`` evaluates exactly the asked clocks
    without a limiter (to compare relative shapes with measurements taken under another limit).
    """
    clocks = np.asarray(clocks_mhz, dtype=float)
    if not power_cap:
        return _uncapped(work, gpu, share, clocks / gpu.max_sm_clock_mhz)
    ladder = np.asarray(gpu.sm_clocks_mhz, dtype=float)
    it = _uncapped(work, gpu, share, ladder / gpu.max_sm_clock_mhz)
    fits = it.power_w <= gpu.tdp_w
    # Highest fitting ladder index at or below each index; 0 if none fits (the lowest clock).
    best = np.maximum(np.maximum.accumulate(np.where(fits, np.arange(len(ladder)), -1), axis=-1), 0)
    asked = np.clip(np.searchsorted(ladder, clocks, side="right") - 1, 0, len(ladder) - 1)
    idx = best[..., asked]

    def pick(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(np.broadcast_to(a, best.shape), idx, axis=-1)

    return Iteration(pick(it.time_s), np.minimum(pick(it.power_w), gpu.tdp_w), pick(it.hbm_util))
