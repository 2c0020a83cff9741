"""festgym: testbed and controller for energy-aware serverless LLM serving on shared GPUs."""

__version__ = "0.1.0"
