"""The multi-agent environment (festgym.envs.multi_agent): PettingZoo's own API and seed tests, the
agents' rewards adding up to Cluster-v0's, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from test_envs import QUICK

pytest.importorskip("pettingzoo")
from pettingzoo.test import parallel_api_test, parallel_seed_test

from festgym.envs.cluster import ClusterEnv
from festgym.envs.multi_agent import PLACEMENT, parallel_env

EPISODE = {"episode_s": 12, "warmup_s": 5}


def make(**kwargs):
    return parallel_env("default", env=dict(EPISODE), sim=dict(QUICK), **kwargs)


@pytest.mark.parametrize(("placement_agent", "action_type"), [(False, "multidiscrete"), (True, "multidiscrete"),
                                                              (True, "box")])
def test_pettingzoos_parallel_api_test(placement_agent, action_type):
    parallel_api_test(make(placement_agent=placement_agent, action_type=action_type), num_cycles=40)


def test_pettingzoos_parallel_seed_test():
    parallel_seed_test(lambda: make(placement_agent=True), num_cycles=15)


def test_agents_and_spaces():
    env = make(placement_agent=True)
    m = len(env.models)
    assert env.possible_agents == [f"gpu_{g}" for g in range(8)] + [PLACEMENT]
    assert env.action_space("gpu_3").nvec.tolist() == [8] + [4] * m
    assert env.action_space(PLACEMENT).nvec.tolist() == [9] * m
    assert env.observation_space("gpu_0").shape == (10 * m + 10,) == (len(env.feature_names),)
    assert env.observation_space(PLACEMENT) == env.cluster.observation_space


@pytest.mark.parametrize("placement_agent", [False, True])
def test_the_agents_rewards_add_up_to_the_clusters(placement_agent):
    env = make(placement_agent=placement_agent)
    twin = ClusterEnv("default", env=dict(EPISODE), sim=dict(QUICK))
    env.reset(seed=4)
    twin.reset(seed=4)
    rng = np.random.default_rng(0)
    steps = 0
    while env.agents:
        actions = {a: rng.integers(0, env.action_space(a).nvec) for a in env.agents}
        _, rewards, terminations, truncations, infos = env.step(actions)
        _, reward, _, truncated, info = twin.step(env._joint(actions))
        assert sum(rewards.values()) == pytest.approx(reward, rel=1e-9, abs=1e-12)
        assert sum(infos[f"gpu_{g}"]["energy_j"] for g in range(8)) == pytest.approx(info["energy_j"], rel=1e-9)
        assert not any(terminations.values()) and all(t == truncated for t in truncations.values())
        if placement_agent:
            assert rewards[PLACEMENT] == 0.0
        steps += 1
    assert steps == EPISODE["episode_s"]


def test_bad_actions_and_a_finished_episode_are_clear_errors():
    import gymnasium as gym

    env = make()
    with pytest.raises(gym.error.ResetNeeded):
        env.step({})
    env.reset(seed=0)
    good = {a: env.action_space(a).sample() for a in env.agents}
    with pytest.raises(ValueError, match="missing gpu_7"):
        env.step({a: x for a, x in good.items() if a != "gpu_7"})
    with pytest.raises(ValueError, match="not agents: placement"):
        env.step({**good, PLACEMENT: np.zeros(len(env.models), dtype=np.int64)})
    with pytest.raises(ValueError, match=r"gpu_2's action has shape \(3,\)"):
        env.step({**good, "gpu_2": np.zeros(3, dtype=np.int64)})
    with pytest.raises(ValueError, match="outside"):
        env.step({**good, "gpu_0": np.full(len(env.models) + 1, 99)})
