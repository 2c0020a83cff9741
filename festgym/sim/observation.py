"""The simulator's state as a controller observes it: :mod:`festgym.control.features`' features,
with their figures read from the simulator's GPUs and instances (the environments'
observations, and what a trained controller sees of a cluster GPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from festgym.control.features import (
    EMPTY_SLOT,
    GPU_FEATURES,
    SLOT_FEATURES,
    TIME_FEATURES,
    gpu_vector,
    slot_vector,
    squash,
    time_features,
)

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.gpu import SimGpu
    from festgym.sim.instance import Instance

__all__ = ["GPU_FEATURES", "SLOT_FEATURES", "TIME_FEATURES", "cluster_features", "gpu_features", "local_features",
           "slot_features", "squash", "time_features"]


def slot_features(inst: Instance | None, now: float) -> list[float]:
    if inst is None:
        return EMPTY_SLOT
    running = len(inst.decoding)
    ttft = inst.peak_ttft_ratio
    oldest = inst.waiting.head() if inst.waiting else inst.prefilling[0] if inst.prefilling else None
    if oldest is not None and oldest.gen == 0:
        ttft = max(ttft, (now - oldest.deadline_s) / oldest.ttft_slo_s + 1.0)
    last = inst.last_arrival_s
    return slot_vector(inst.ready, inst.current_share,
                       len(inst.waiting), running / inst.max_num_seqs,
                       min(inst.prompt_todo, inst.serving.engine.max_num_batched_tokens), running,
                       inst.kv_used / inst.kv_tokens, ttft, inst.peak_gap_s / inst.tbt_s,
                       now - last if last >= 0 else -1.0)


def gpu_features(gpu: SimGpu, clock_lo: float) -> list[float]:
    spec = gpu.spec
    return gpu_vector(gpu.power_w, spec.tdp_w, gpu.clock, clock_lo, spec.max_sm_clock_mhz,
                      1.0 - gpu.mem_used / gpu.mem_bytes, gpu.state)


def local_features(gpu: SimGpu, models: list[int], now: float, clock_lo: float, period_s: float) -> list[float]:
    """``LocalGPU-v0``'s observation: the slots of ``models`` (model numbers) on ``gpu``, the GPU,
    the time of day."""
    out: list[float] = []
    for k in models:
        out += slot_features(gpu.instance_of(k), now)
    out += gpu_features(gpu, clock_lo)
    out += time_features(now, period_s)
    return out


def cluster_features(gpus: list[SimGpu], n_models: int, now: float, clock_lo: dict[str, float],
                     period_s: float) -> list[float]:
    """``Cluster-v0``'s observation: per GPU its features and every model's slot; the time of day."""
    out: list[float] = []
    for gpu in gpus:
        out += gpu_features(gpu, clock_lo[gpu.spec.name])
        for k in range(n_models):
            out += slot_features(gpu.instance_of(k), now)
    out += time_features(now, period_s)
    return out

