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
* **Power cap**: where the model draws more than TDP, the GPU throttles to the highest supported
  clock whose power fits (as the firmware's power limiter does), which lengthens the iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from festgym.profiles.models import ModelSpec
from festgym.profiles.specs import GpuSpec


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes of one iteration. Fields are arrays that broadcast together."""

    tokens: np.ndarray
    seqs: np.ndarray
    flops_linear: np.ndarray
    flops_attention: np.ndarray
    bytes_linear: np.ndarray
    bytes_kv: np.ndarray
    bytes_elementwise: np.ndarray
    layers: int

    @property
    def flops(self) -> np.ndarray:
        return self.flops_linear + self.flops_attention

    @property
    def bytes(self) -> np.ndarray:
        return self.bytes_linear + self.bytes_kv + self.bytes_elementwise


def iteration_work(model: ModelSpec, prefill_tokens=0.0, prefill_seqs=1.0, decode_batch=0.0,
                   decode_ctx=0.0) -> Work:
    """FLOPs and bytes of one iteration that prefills ``prefill_tokens`` tokens of
    ``prefill_seqs`` equal-length prompts (one chunk each, no earlier context) and decodes one
    token for each of ``decode_batch`` sequences whose mean context is ``decode_ctx`` tokens.

    Logits are computed for one token per sequence, as vLLM does.
    """
    p = np.asarray(prefill_tokens, dtype=float)
    ps = np.where(p > 0, np.asarray(prefill_seqs, dtype=float), 0.0)
    b = np.asarray(decode_batch, dtype=float)
    c = np.asarray(decode_ctx, dtype=float)
    tokens = p + b
    seqs = ps + b
    layers, h, d = model.num_layers, model.hidden_size, model.dtype_bytes
    q, kv, inter = model.q_dim, model.kv_dim, model.intermediate_size
    flops_linear = 2.0 * model.layer_matmul_params * layers * tokens + 2.0 * model.lm_head_params * seqs
    # Causal attention: QK^T and AV cost 2·s²·head_dim per head for a prompt of length s, and
    # 4·ctx·head_dim per head for one decoded token.
    prompt_sq = np.where(ps > 0, p * p / np.maximum(ps, 1.0), 0.0)
    flops_attention = 2.0 * layers * q * prompt_sq + 4.0 * layers * q * b * c
    gemm_act_per_token = layers * d * (4 * h + 2 * q + 2 * kv + 3 * inter)
    bytes_linear = model.streamed_weight_bytes + gemm_act_per_token * tokens
    bytes_kv = model.kv_bytes_per_token * (b * c + 2.0 * tokens)
    elementwise_per_token = layers * d * (10 * h + 2 * (q + kv) + 3 * inter)
    bytes_elementwise = elementwise_per_token * tokens
    return Work(tokens, seqs, flops_linear, flops_attention, bytes_linear, bytes_kv, bytes_elementwise,
                layers)


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


def _uncapped(work: Work, gpu: GpuSpec, share, clock_frac) -> Iteration:
    lat, pw = gpu.latency, gpu.power
    share = np.asarray(share, dtype=float)
    x = np.asarray(clock_frac, dtype=float)
    peak = gpu.peak_bf16_tflops * 1e12
    bw = gpu.hbm_bandwidth_gbps * 1e9
    clock_stretch = lat.clock_insensitive_frac + (1.0 - lat.clock_insensitive_frac) / x
    compute_rate = peak * share / clock_stretch
    load = share * x / lat.bw_saturation_share
    q = BW_SATURATION_SHARPNESS
    full = 1.0 / lat.bw_saturation_share  # the load at share 1 and top clock, which gets all of bw
    mem_rate = bw * load / (1.0 + load**q) ** (1.0 / q) * (1.0 + full**-q) ** (1.0 / q)
    p = lat.roofline_sharpness
    t_linear = _smooth_max(work.flops_linear / (compute_rate * lat.gemm_peak_frac),
                           work.bytes_linear / (mem_rate * lat.hbm_frac), p)
    t_attention = _smooth_max(work.flops_attention / (compute_rate * lat.attn_compute_frac),
                              work.bytes_kv / (mem_rate * lat.kv_frac), p)
    t_elementwise = work.bytes_elementwise / (mem_rate * lat.hbm_frac)
    t_gpu = t_linear + t_attention + t_elementwise + lat.kernel_floor_s * work.layers * (work.tokens > 0)
    t = lat.seq_overhead_s * work.seqs + t_gpu
    v2 = pw.relative_voltage(x) ** 2
    busy = t_gpu / t
    hbm_util = work.bytes / (t * bw)
    power = (pw.idle_w + pw.active_w * busy * share * x * v2
             + (pw.compute_w * work.flops / peak + pw.attention_w * work.bytes_kv / bw) / t * v2
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
