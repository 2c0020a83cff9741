"""The RLlib ``MultiAgentEnv`` adapter: RLlib's own environment check, the PettingZoo environment's
steps unchanged (agent order, rewards, the ``__all__`` flags), and one multi-agent PPO iteration
with a module shared by the GPU agents beside the placement agent's."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.rllib.algorithms.ppo", reason="needs the rllib extra")
pytest.importorskip("pettingzoo")

from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from festgym.envs.multi_agent import ServingParallelEnv
from festgym.envs.rllib import ServingMultiAgentEnv, module_of

CONFIG = {"scenario": "default", "placement_agent": True, "env": {"episode_s": 5.0}}


def test_rllib_accepts_it():
    env = ServingMultiAgentEnv(CONFIG)
    check_multiagent_environments(env)
    assert env.possible_agents == [f"gpu_{g}" for g in range(8)] + ["placement"]
    assert {module_of(a) for a in env.possible_agents} == {"gpu", "placement"}


def test_it_steps_as_the_pettingzoo_env():
    wrapped, plain = ServingMultiAgentEnv(CONFIG), ServingParallelEnv(**CONFIG)
    obs_w, _ = wrapped.reset(seed=3)
    obs_p, _ = plain.reset(seed=3)
    assert all(np.array_equal(obs_w[a], obs_p[a]) for a in plain.possible_agents)
    rng = np.random.default_rng(0)
    for step in range(5):
        actions = {a: rng.integers(0, wrapped.action_spaces[a].nvec) for a in wrapped.agents}
        _, rew_w, term_w, trunc_w, _ = wrapped.step(actions)
        _, rew_p, _, _, _ = plain.step(actions)
        assert rew_w == rew_p and not term_w["__all__"]
        assert trunc_w["__all__"] == (step == 4)
    assert wrapped.agents == []


def test_one_multi_agent_ppo_iteration():
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    from festgym.jobs.ray_session import LOCAL_RAY, ray_session

    config = (PPOConfig()
              .environment(ServingMultiAgentEnv, env_config={**CONFIG, "env": {"episode_s": 30.0}})
              .env_runners(num_env_runners=0)
              .multi_agent(policies={"gpu", "placement"}, policy_mapping_fn=module_of)
              .training(train_batch_size_per_learner=60, minibatch_size=30, num_epochs=1)
              .debugging(seed=0))
    with ray_session(LOCAL_RAY):
        algo = config.build_algo()
        try:
            result = algo.train()
        finally:
            algo.stop()
    assert not ray.is_initialized()
    sampled = result["env_runners"]["num_agent_steps_sampled_lifetime"]
    assert set(sampled) == {f"gpu_{g}" for g in range(8)} | {"placement"} and min(sampled.values()) >= 60
