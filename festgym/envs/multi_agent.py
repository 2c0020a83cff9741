"""A PettingZoo ``ParallelEnv``: every GPU's local controller an agent, and optionally a placement agent.

``festgym.envs.multi_agent.parallel_env(scenario="default", placement_agent=False, **overrides)``
(PettingZoo, the ``multiagent`` extra) runs ``Cluster-v0``'s simulation with its action split among
agents that act together every control interval:

* ``gpu_<g>`` for each GPU g: its SM clock level and the share level of each of the scenario's M
  models on it (``MultiDiscrete([C] + [S] * M)``, ``Box(-1, 1)`` with ``action_type="box"``). It
  sees its GPU as ``LocalGPU-v0`` does, with a slot for each of the M models (10·M + 8 + 2
  features, ``feature_names``).
* ``placement`` (with ``placement_agent=True``): where each model's arrivals of the next interval
  go, 0 for the background policy's placement, k for GPU k−1 (``MultiDiscrete([G + 1] * M)``). It
  sees ``Cluster-v0``'s whole observation. Without it the background policy places.

Rewards split ``Cluster-v0``'s: each GPU agent gets :class:`~festgym.sim.reward.EnergySLOReward`'s
terms of its own GPU (its energy, and the SLO counters of the requests its engines served; a
multi-GPU engine's are its lead GPU's, and the requests routed to it that it refused), over the
cluster's reference energy, so that the agents' rewards add up to the cluster's reward (tested);
the placement agent gets 0 (so a GPU agent bears the refusals the placement caused), and each agent's
``info`` holds its terms. Episodes are truncated together after ``env.episode_s``, never
terminated. For RLlib, :class:`festgym.envs.rllib.ServingMultiAgentEnv` is it as a ``MultiAgentEnv``.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

from festgym.envs.cluster import ClusterEnv
from festgym.envs.core import box
from festgym.sim.observation import GPU_FEATURES, SLOT_FEATURES, TIME_FEATURES, local_features
from festgym.sim.reward import EnergySLOReward, Meter

PLACEMENT = "placement"


class ServingParallelEnv(ParallelEnv):
    """The agents of one cluster: ``gpu_0`` ... ``gpu_<G-1>`` (and ``placement``)."""

    metadata = {"name": "festgym_cluster_v0", "render_modes": ["ansi"], "is_parallelizable": True}  # noqa: RUF012

    def __init__(self, scenario: Any = "default", placement_agent: bool = False, action_type: str = "multidiscrete",
                 render_mode: str | None = None, **overrides: Any):
        self.cluster = ClusterEnv(scenario, action_type, render_mode, **overrides)
        self.render_mode = render_mode
        sim = self.cluster.sim
        self.n_gpus, self.models = len(sim.gpu_types), sim.model_names
        self.possible_agents = [f"gpu_{g}" for g in range(self.n_gpus)] + ([PLACEMENT] if placement_agent else [])
        self.agents: list[str] = []
        env, m = self.cluster.scenario.env, len(self.models)
        self._nvec = {a: [env.clock_levels] + [env.share_levels] * m for a in self.possible_agents if a != PLACEMENT}
        if placement_agent:
            self._nvec[PLACEMENT] = [self.n_gpus + 1] * m
        self.feature_names = tuple(f"{x}.{f}" for x in self.models for f in SLOT_FEATURES) + \
            tuple(f"gpu.{f}" for f in GPU_FEATURES) + TIME_FEATURES
        """What a GPU agent's observation holds (the placement agent's: ``cluster.feature_names``)."""
        self._slots = list(range(m))

    @functools.cache  # noqa: B019 (PettingZoo's documented pattern: one space object per agent)
    def observation_space(self, agent: str) -> gym.spaces.Space:
        return self.cluster.observation_space if agent == PLACEMENT else box(len(self.feature_names))

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> gym.spaces.Space:
        nvec = self._nvec[agent]
        if self.cluster.action_type == "box":
            return gym.spaces.Box(-1.0, 1.0, shape=(len(nvec),), dtype=np.float32)
        return gym.spaces.MultiDiscrete(nvec)

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.cluster.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self.meters = {a: Meter([self.cluster.sim.gpus[g]]) for g, a in enumerate(self.agents[:self.n_gpus])}
        for meter in self.meters.values():
            meter.start(self.cluster.sim.now)
        self.reward_fn = EnergySLOReward(self.cluster.scenario.reward, self.cluster.reward_fn.reference_j)
        return self._observations(), {a: {"time_s": float(self.cluster.sim.now)} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise gym.error.ResetNeeded(f"{type(self).__name__}: the episode is over (or never began): call reset()")
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self.agents]
        if missing or unknown:
            raise ValueError(f"{type(self).__name__}: actions for {', '.join(self.agents)} expected"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; not agents: {', '.join(map(str, unknown))}" if unknown else ""))
        joint = self._joint(actions)
        _, _, _, truncated, cluster_info = self.cluster.step_levels(self.cluster._levels(joint), joint)
        now = self.cluster.sim.now
        rewards, infos = {}, {}
        for agent, meter in self.meters.items():
            rewards[agent], infos[agent] = self.reward_fn(meter.read(now))
            infos[agent]["time_s"] = float(now)
        if PLACEMENT in self.agents:
            rewards[PLACEMENT], infos[PLACEMENT] = 0.0, dict(cluster_info)
        observations = self._observations()
        agents = self.agents
        terminations = {a: False for a in agents}
        truncations = {a: truncated for a in agents}
        if truncated:
            self.agents = []
        return observations, {a: float(rewards[a]) for a in agents}, terminations, truncations, infos

    def _joint(self, actions: dict[str, Any]) -> np.ndarray:
        """``Cluster-v0``'s action from the agents' (routes 0, the background's, without a placement agent)."""
        m = len(self.models)
        rows = [np.asarray(actions[f"gpu_{g}"]) for g in range(self.n_gpus)]
        for g, row in enumerate(rows):
            if row.shape != (1 + m,):
                raise ValueError(f"{type(self).__name__}: gpu_{g}'s action has shape {row.shape}, expected {(1 + m,)}"
                                 f" (clock, then the share of {', '.join(self.models)})")
        box_type = self.cluster.action_type == "box"
        routes = np.asarray(actions[PLACEMENT]) if PLACEMENT in actions else \
            np.full(m, -1.0 if box_type else 0, dtype=np.float32 if box_type else np.int64)
        if routes.shape != (m,):
            raise ValueError(f"{type(self).__name__}: placement's action has shape {routes.shape}, expected {(m,)}")
        return np.concatenate([[r[0] for r in rows], *[r[1:] for r in rows], routes])

    def _observations(self) -> dict[str, np.ndarray]:
        sim, lo, period = self.cluster.sim, self.cluster.decoder.clock_lo, self.cluster.period_s
        out = {}
        for g in range(self.n_gpus):
            gpu = sim.gpus[g]
            out[f"gpu_{g}"] = np.asarray(local_features(gpu, self._slots, sim.now, lo[gpu.spec.name], period),
                                         dtype=np.float32)
        if PLACEMENT in self.possible_agents:
            out[PLACEMENT] = self.cluster._observe()
        return out

    def render(self):
        return self.cluster.render()

    def close(self) -> None:
        self.cluster.close()


def parallel_env(scenario: Any = "default", placement_agent: bool = False, **kwargs: Any) -> ServingParallelEnv:
    """PettingZoo's constructor convention."""
    return ServingParallelEnv(scenario, placement_agent, **kwargs)


__all__ = ["PLACEMENT", "ServingParallelEnv", "parallel_env"]
