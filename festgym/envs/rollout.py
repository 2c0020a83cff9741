"""One episode of a control environment, summed: how controllers are scored on the reward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

TOTALS = ("reward_energy", "reward_ttft", "reward_tbt", "energy_j", "first_tokens", "ttft_over", "gaps", "gaps_over")
"""``info`` entries summed over the episode."""


def run_episode(env: gym.Env, act: Callable[[np.ndarray], Any], seed: int) -> dict[str, float]:
    """Play one episode from ``reset(seed=seed)`` with ``act(observation) -> action`` (``None``:
    the background rule policy decides). Returns the episode reward, its terms, kWh, and the
    TTFT and TBT attainment over the whole episode."""
    obs, _ = env.reset(seed=seed)
    reward, total = 0.0, dict.fromkeys(TOTALS, 0.0)
    done = False
    while not done:
        obs, r, terminated, truncated, info = env.step(act(obs))
        done = terminated or truncated
        reward += float(r)
        for key in TOTALS:
            total[key] += info[key]
    return {"reward": reward, "energy_term": total["reward_energy"], "ttft_term": total["reward_ttft"],
            "tbt_term": total["reward_tbt"], "kwh": total["energy_j"] / 3.6e6,
            "ttft_attainment": 1 - total["ttft_over"] / max(total["first_tokens"], 1),
            "tbt_attainment": 1 - total["gaps_over"] / max(total["gaps"], 1)}


__all__ = ["TOTALS", "run_episode"]
