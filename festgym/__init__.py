"""festgym: testbed and controller for energy-aware serverless LLM serving on shared GPUs."""

from festgym.envs import register_envs

__version__ = "0.1.0"

register_envs()
