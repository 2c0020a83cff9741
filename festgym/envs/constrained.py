"""Constrained training on festgym's environments: the SLO cost as a constraint, not a weight.

Every environment's ``info`` holds ``reward_energy`` and ``cost`` (the SLO terms as a
non-negative cost; ``reward = reward_energy − cost``), as Safety-Gymnasium's environments give
theirs. :class:`LagrangianReward` turns the pair into the Lagrangian ``reward_energy − λ·cost``
(or a count of SLO violations in place of ``cost``, :data:`COSTS`);
a trainer adapts λ by dual ascent so that the mean cost meets a limit (``festgym train`` with an
agent YAML's ``lagrangian`` section: :class:`festgym.jobs.train_config.LagrangianSpec`). With
``cost`` and λ = 1 the reward is the environment's own.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

COSTS = ("cost", "ttft_over", "gaps_over")
"""``info`` entries a constraint may hold down: ``cost``, the SLO terms the reward weighs (lateness
in SLO units: unbounded, an overloaded episode's grows with its queue); ``ttft_over`` and
``gaps_over``, the step's first tokens and token gaps over their SLOs (counts, bounded by the
requests: an overloaded episode weighs no more than its traffic)."""


class LagrangianReward(gym.Wrapper):
    """``reward_energy − multiplier · info[cost_key]`` as the reward; :meth:`set_multiplier` moves λ."""

    def __init__(self, env: gym.Env, multiplier: float = 1.0, cost_key: str = "cost"):
        super().__init__(env)
        self.multiplier, self.cost_key = multiplier, cost_key

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = float(multiplier)

    def step(self, action: Any):
        obs, _reward, terminated, truncated, info = self.env.step(action)
        return obs, info["reward_energy"] - self.multiplier * info[self.cost_key], terminated, truncated, info


def dual_step(multiplier: float, mean_cost: float, limit: float, lr: float) -> float:
    """One dual-ascent step on λ: up when the mean cost exceeds the limit, down (to 0 at the
    least) when it is under; the step is relative to the limit, so ``lr`` is scale-free."""
    return max(0.0, multiplier + lr * (mean_cost - limit) / limit)


__all__ = ["COSTS", "LagrangianReward", "dual_step"]
