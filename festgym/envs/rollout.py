"""One episode of a control environment, summed: how controllers are scored on the reward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

TOTALS = ("reward_energy", "reward_ttft", "reward_tbt", "cost", "energy_j", "first_tokens", "ttft_over", "gaps",
          "gaps_over", "rejected")
"""``info`` entries summed over the episode."""


def run_episode(env: gym.Env, act: Callable[[np.ndarray], Any], seed: int) -> dict[str, float]:
    """Play one episode from ``reset(seed=seed)`` with ``act(observation) -> action`` (``None``:
    the background rule policy decides). Returns the episode reward, its terms, its SLO cost
    and violations (``info``'s ``cost``, ``ttft_over`` and ``gaps_over`` summed), the requests
    turned away (``rejected``, counted in ``ttft_over`` too), its steps, kWh,
    and the TTFT and TBT attainment over the whole episode."""
    obs, _ = env.reset(seed=seed)
    reward, total = 0.0, dict.fromkeys(TOTALS, 0.0)
    done, steps = False, 0
    while not done:
        obs, r, terminated, truncated, info = env.step(act(obs))
        done = terminated or truncated
        reward += float(r)
        steps += 1
        for key in TOTALS:
            total[key] += info[key]
    return {"reward": reward, "energy_term": total["reward_energy"], "ttft_term": total["reward_ttft"],
            "tbt_term": total["reward_tbt"], "cost": total["cost"], "ttft_over": total["ttft_over"],
            "gaps_over": total["gaps_over"], "rejected": total["rejected"], "steps": steps,
            "kwh": total["energy_j"] / 3.6e6,
            "ttft_attainment": 1 - total["ttft_over"] / max(total["first_tokens"], 1),
            "tbt_attainment": 1 - total["gaps_over"] / max(total["gaps"], 1)}


class SeededEpisodes(gym.Wrapper):
    """Episodes seeded ``first_seed``, ``first_seed + 1``, ...: a ``reset()`` without a seed takes
    the next one (an explicit seed is passed through and counts as none), and :meth:`restart`
    begins again. So an evaluation that resets it once per episode (SB3's ``evaluate_policy``,
    through a vector environment's automatic resets) plays the episodes :func:`run_episode`
    plays with seeds ``first_seed + i``, the same ones at every evaluation."""

    def __init__(self, env: gym.Env, first_seed: int):
        super().__init__(env)
        self.first_seed = first_seed
        self.played = 0

    def restart(self) -> None:
        self.played = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed = self.first_seed + self.played
            self.played += 1
        return self.env.reset(seed=seed, options=options)


__all__ = ["TOTALS", "SeededEpisodes", "run_episode"]
