"""RLlib's ``MultiAgentEnv`` over festgym's multi-agent environment (the rllib extra).

:class:`ServingMultiAgentEnv` is :class:`~festgym.envs.multi_agent.ServingParallelEnv` as RLlib's
new API stack takes it: the same agents (``gpu_<g>``, optionally ``placement``) in the same order,
their spaces in ``observation_spaces`` / ``action_spaces``, and the ``__all__`` flags. RLlib builds
it from its ``env_config``, which holds ``ServingParallelEnv``'s keyword arguments::

    from ray.rllib.algorithms.ppo import PPOConfig
    from festgym.envs.rllib import ServingMultiAgentEnv, module_of

    config = (PPOConfig().environment(ServingMultiAgentEnv, env_config={"scenario": "default"})
              .multi_agent(policies={"gpu"}, policy_mapping_fn=module_of))

:func:`module_of` maps every GPU agent to one shared module (``gpu``: the GPUs' controllers are
interchangeable, as ``LocalGPU-v0``'s one controller serves every GPU) and the placement agent to
its own (``placement``). Unlike RLlib's generic ``ParallelPettingZooEnv`` wrapper, the agents keep
the environment's order rather than a set's, so runs do not depend on the hash seed.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.env.multi_agent_env import MultiAgentEnv

from festgym.envs.multi_agent import PLACEMENT, ServingParallelEnv


class ServingMultiAgentEnv(MultiAgentEnv):
    """``ServingParallelEnv(**config)`` as an RLlib ``MultiAgentEnv``."""

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        self.par_env = ServingParallelEnv(**dict(config or {}))
        self.possible_agents = list(self.par_env.possible_agents)
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: self.par_env.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: self.par_env.action_space(a) for a in self.possible_agents}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        observations, infos = self.par_env.reset(seed=seed, options=options)
        self.agents = list(self.par_env.agents)
        return observations, infos

    def step(self, action_dict: dict[Any, Any]):
        observations, rewards, terminations, truncations, infos = self.par_env.step(action_dict)
        self.agents = list(self.par_env.agents)
        terminations["__all__"] = all(terminations.values())
        truncations["__all__"] = all(truncations.values())
        return observations, rewards, terminations, truncations, infos

    def render(self):
        return self.par_env.render()

    def close(self) -> None:
        self.par_env.close()


def module_of(agent_id: str, *args: Any, **kwargs: Any) -> str:
    """RLlib's ``policy_mapping_fn``: one ``gpu`` module for every GPU agent, ``placement`` for the placement agent."""
    return PLACEMENT if agent_id == PLACEMENT else "gpu"


__all__ = ["ServingMultiAgentEnv", "module_of"]
