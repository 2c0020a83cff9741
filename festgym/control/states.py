"""Names of the simulated GPUs' states and of model instances' phases, in index order.

A light module (no simulator imports), so that the deploy agent and the views can name states
without loading the simulator; :mod:`festgym.cluster_gpu` and :mod:`festgym.instance` number
them (``BUSY, LOADING, ... = range(5)``) in this order.
"""

STATES = ("busy", "loading", "idle", "waking", "parked")
"""GPU states: index = the simulator's state number."""
PHASE_NAMES = ("loading", "idle", "prefill", "decode", "restarting", "unloaded")
"""Instance phases: index = the simulator's phase number."""
