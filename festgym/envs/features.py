"""Observation features shared by the environments and the deploy agent.

Every feature lies in [0, 1]. Unbounded quantities go through ``squash(x) = x / (1 + x)``, which
maps 0 → 0 and the reference point x = 1 → 0.5, so that "at the SLO" reads 0.5.

Per model slot (``SLOT_FEATURES``; all zero when the model is not resident):

=============  ==============================================================  =========
resident       the model has an instance on this GPU (1/0)                      flag
ready          loaded and able to run (1/0)                                      flag
share          SM share (pending one if a change is under way)                   fraction
queue          squash(waiting requests / 16)                                     requests
batch          running sequences / batch limit                                   fraction
prefill_mix    pending prompt tokens (up to the token budget) over those plus    fraction
               decoding sequences: the prompt share of the next iteration
kv_used        KV cache in use / capacity                                        fraction
ttft           squash(max(TTFT/SLO since the last tick, oldest wait/SLO))        SLO units
tbt            squash(longest gap since the last tick / TBT SLO)                 SLO units
recency        exp(−(time since the last request routed here) / 10 s)            —
=============  ==============================================================  =========

Per GPU (``GPU_FEATURES``): power / TDP, clock position in the control range, free memory
fraction, and a one-hot of the state (busy, loading, idle, waking, parked).

Time (``TIME_FEATURES``): (1 + sin)/2 and (1 + cos)/2 of the phase of the workload's diurnal period.
"""

from __future__ import annotations

import math

from festgym.cluster_gpu import STATES, Gpu
from festgym.instance import GONE, LOADING, Instance

SLOT_FEATURES = ("resident", "ready", "share", "queue", "batch", "prefill_mix", "kv_used", "ttft", "tbt", "recency")
GPU_FEATURES = ("power", "clock", "mem_free") + tuple(f"state_{s}" for s in STATES)
TIME_FEATURES = ("day_sin", "day_cos")
QUEUE_REF = 16.0
RECENCY_S = 10.0
EMPTY_SLOT = [0.0] * len(SLOT_FEATURES)


def squash(x: float) -> float:
    return x / (1.0 + x) if x > 0 else 0.0


def slot_vector(ready: bool, share: float, waiting: int, batch_frac: float, prompt_tokens: float, decoding: int,
                kv_frac: float, ttft_ratio: float, gap_ratio: float, since_last_s: float) -> list[float]:
    """A resident model's slot from plain figures: the one definition the simulator's GPUs
    (:func:`slot_features`) and the deploy agent's engine metrics both go through.
    ``since_last_s`` < 0: no request was ever routed here."""
    return [
        1.0,
        1.0 if ready else 0.0,
        share,
        squash(waiting / QUEUE_REF),
        min(batch_frac, 1.0),
        prompt_tokens / (prompt_tokens + decoding) if prompt_tokens + decoding else 0.0,
        min(kv_frac, 1.0),
        squash(ttft_ratio),
        squash(gap_ratio),
        math.exp(-since_last_s / RECENCY_S) if since_last_s >= 0 else 0.0,
    ]


def slot_features(inst: Instance | None, now: float) -> list[float]:
    if inst is None:
        return EMPTY_SLOT
    running = len(inst.decoding)
    ttft = inst.peak_ttft_ratio
    oldest = inst.waiting[0] if inst.waiting else inst.prefilling[0] if inst.prefilling else None
    if oldest is not None and oldest.gen == 0:
        deadline, limit = inst.sim.ttft_deadline(oldest.rid)
        ttft = max(ttft, (now - deadline) / limit + 1.0)
    last = inst.last_arrival_s
    return slot_vector(inst.phase not in (LOADING, GONE),
                       inst.pending_share if inst.pending_share is not None else inst.share,
                       len(inst.waiting), running / inst.max_num_seqs,
                       min(inst.prompt_todo, inst.serving.engine.max_num_batched_tokens), running,
                       inst.kv_used / inst.kv_tokens, ttft, inst.peak_gap_s / inst.tbt_s,
                       now - last if last >= 0 else -1.0)


def gpu_vector(power_w: float, tdp_w: float, clock_mhz: float, clock_lo: float, clock_hi: float,
               mem_free_frac: float, state: int) -> list[float]:
    """The GPU part of an observation from plain figures (``state``: an index into ``STATES``)."""
    onehot = [0.0] * len(STATES)
    onehot[state] = 1.0
    return [min(power_w / tdp_w, 1.0), min(max((clock_mhz - clock_lo) / (clock_hi - clock_lo), 0.0), 1.0),
            min(max(mem_free_frac, 0.0), 1.0)] + onehot


def gpu_features(gpu: Gpu, clock_lo: float) -> list[float]:
    spec = gpu.spec
    return gpu_vector(gpu.power_w, spec.tdp_w, gpu.clock, clock_lo, spec.max_sm_clock_mhz,
                      1.0 - gpu.mem_used / gpu.mem_bytes, gpu.state)


def time_features(now: float, period_s: float) -> list[float]:
    phase = 2 * math.pi * (now % period_s) / period_s
    return [(1 + math.sin(phase)) / 2, (1 + math.cos(phase)) / 2]


def local_features(gpu: Gpu, models: list[int], now: float, clock_lo: float, period_s: float) -> list[float]:
    """``LocalGPU-v0``'s observation: the slots of ``models`` (model numbers) on ``gpu``, the GPU,
    the time of day."""
    out: list[float] = []
    for k in models:
        out += slot_features(gpu.instance_of(k), now)
    out += gpu_features(gpu, clock_lo)
    out += time_features(now, period_s)
    return out


def cluster_features(gpus: list[Gpu], n_models: int, now: float, clock_lo: dict[str, float],
                     period_s: float) -> list[float]:
    """``Cluster-v0``'s observation: per GPU its features and every model's slot; the time of day."""
    out: list[float] = []
    for gpu in gpus:
        out += gpu_features(gpu, clock_lo[gpu.spec.name])
        for k in range(n_models):
            out += slot_features(gpu.instance_of(k), now)
    out += time_features(now, period_s)
    return out

