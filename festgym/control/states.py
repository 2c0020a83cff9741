"""GPU states and model-instance phases: their names and numbers, defined once.

The simulator numbers them (:mod:`festgym.sim.gpu`, :mod:`festgym.sim.instance`), policies and
reports name them, and observations one-hot the GPU state; the deploy agent names the states of
real GPUs with the same words. A light module (no imports), so that every layer can use it.
"""

from __future__ import annotations

from typing import Final

STATES: Final = ("busy", "loading", "idle", "asleep", "empty", "booting", "off")
"""GPU states, index = number; energy is reported per state. An instance runs iterations; an engine
loads weights, initialises, restarts or wakes from sleep and nothing runs; an engine is resident
and nothing runs; engines are resident only asleep (memory freed, CUDA context kept); no engine
(the floor of a GPU whose node is on); its node boots or shuts down; its node is off."""
GPU_BUSY: Final = 0
GPU_LOADING: Final = 1
GPU_IDLE: Final = 2
GPU_ASLEEP: Final = 3
GPU_EMPTY: Final = 4
GPU_BOOTING: Final = 5
GPU_OFF: Final = 6

OBSERVED_STATES: Final = ("busy", "loading", "idle", "waking", "parked")
"""The states an observation one-hots (the interface trained controllers were built against):
asleep and empty read as idle, a booting node as waking, a node that is off as parked."""
OBSERVED: Final = (0, 1, 2, 2, 2, 3, 4)
"""``STATES`` index -> ``OBSERVED_STATES`` index."""

PHASE_NAMES: Final = ("loading", "idle", "prefill", "decode", "restarting", "unloaded", "asleep")
"""Instance phases, index = number: a cold start or a wake from sleep under way; loaded with no
iteration running; an iteration with prompt tokens (and the decodes beside them); a run of
decode-only iterations; its engine restarting for a new SM share (MPS); gone from its GPU; asleep
(vLLM sleep mode: weights offloaded or discarded, KV cache freed, CUDA context kept)."""
PHASE_LOADING: Final = 0
PHASE_IDLE: Final = 1
PHASE_PREFILL: Final = 2
PHASE_DECODE: Final = 3
PHASE_RESTARTING: Final = 4
PHASE_UNLOADED: Final = 5
PHASE_ASLEEP: Final = 6
