"""The deploy agent: run a festgym controller on GPU hosts that serve LLMs."""
