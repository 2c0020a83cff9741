"""Observation features from plain figures: the one definition the environments (through
:mod:`festgym.sim.observation`, from the simulator's state) and the deploy agent (from NVML and
engine metrics) share. No simulator imports.

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
fraction, and a one-hot of the state as ``OBSERVED_STATES`` reads it (busy, loading, idle, waking,
parked: the simulator's asleep and empty read as idle, a booting node as waking, a node off as parked).

Time (``TIME_FEATURES``): (1 + sin)/2 and (1 + cos)/2 of the phase of the workload's diurnal period.
"""

from __future__ import annotations

import math

from festgym.control.states import OBSERVED, OBSERVED_STATES

SLOT_FEATURES = ("resident", "ready", "share", "queue", "batch", "prefill_mix", "kv_used", "ttft", "tbt", "recency")
GPU_FEATURES = ("power", "clock", "mem_free") + tuple(f"state_{s}" for s in OBSERVED_STATES)
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


def gpu_vector(power_w: float, tdp_w: float, clock_mhz: float, clock_lo: float, clock_hi: float,
               mem_free_frac: float, state: int) -> list[float]:
    """The GPU part of an observation from plain figures (``state``: an index into ``STATES``)."""
    onehot = [0.0] * len(OBSERVED_STATES)
    onehot[OBSERVED[state]] = 1.0
    return [min(power_w / tdp_w, 1.0), min(max((clock_mhz - clock_lo) / (clock_hi - clock_lo), 0.0), 1.0),
            min(max(mem_free_frac, 0.0), 1.0)] + onehot


def time_features(now: float, period_s: float) -> list[float]:
    phase = 2 * math.pi * (now % period_s) / period_s
    return [(1 + math.sin(phase)) / 2, (1 + math.cos(phase)) / 2]
