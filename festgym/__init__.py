"""festgym: testbed and controller for energy-aware serverless LLM serving on shared GPUs."""

from festgym.compiled import warn_if_stale
from festgym.envs import register_envs

__version__ = "0.1.0"

warn_if_stale()
register_envs()
