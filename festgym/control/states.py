"""GPU states and model-instance phases: their names and numbers, defined once.

The simulator numbers them (:mod:`festgym.sim.gpu`, :mod:`festgym.sim.instance`), policies and
reports name them, and observations one-hot the GPU state; the deploy agent names the states of
real GPUs with the same words. A light module (no imports), so that every layer can use it.
"""

from __future__ import annotations

from typing import Final

STATES: Final = ("busy", "loading", "idle", "waking", "parked")
"""GPU states, index = number: an instance runs iterations; a cold start loads weights or starts
an engine and nothing runs; awake with nothing running; leaving the parked state; parked (no
instances, deep idle). Energy is reported per state."""
GPU_BUSY: Final = 0
GPU_LOADING: Final = 1
GPU_IDLE: Final = 2
GPU_WAKING: Final = 3
GPU_PARKED: Final = 4

PHASE_NAMES: Final = ("loading", "idle", "prefill", "decode", "restarting", "unloaded")
"""Instance phases, index = number: a cold start under way; loaded with no iteration running; an
iteration with prompt tokens (and the decodes beside them); a run of decode-only iterations; paused
while its SM share changes (an MPS restart); gone from its GPU."""
PHASE_LOADING: Final = 0
PHASE_IDLE: Final = 1
PHASE_PREFILL: Final = 2
PHASE_DECODE: Final = 3
PHASE_RESTARTING: Final = 4
PHASE_UNLOADED: Final = 5
