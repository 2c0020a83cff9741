"""The batched environments (festgym.envs.vector): ``gym.make_vec``'s default for every festgym id,
bit for bit what Gymnasium's ``SyncVectorEnv`` gives over the same environments, autoreset included,
and errors that name the environment and the component."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from test_envs import IDS, LOCAL, PLACEMENT, QUICK, identical

from festgym.envs.vector import ServingVectorEnv

EPISODE = {"episode_s": 8, "warmup_s": 4}
"""Eight steps an episode: a 20-step run crosses two autoresets."""


def pair(env_id: str, n: int, action_type: str = "multidiscrete"):
    kwargs = {"env": dict(EPISODE), "sim": dict(QUICK), "action_type": action_type}
    return (gym.make_vec(env_id, num_envs=n, **kwargs),
            gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", **kwargs))


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_builds_the_batched_env_with_batched_spaces(env_id):
    vec, sync = pair(env_id, 3)
    try:
        assert isinstance(vec.unwrapped, ServingVectorEnv) and vec.num_envs == 3
        assert vec.single_observation_space == sync.single_observation_space
        assert vec.single_action_space == sync.single_action_space
        assert vec.observation_space == sync.observation_space and vec.action_space == sync.action_space
    finally:
        vec.close()
        sync.close()


@pytest.mark.parametrize(("env_id", "action_type"), [(i, "multidiscrete") for i in IDS] + [(LOCAL, "box")])
def test_same_results_as_sync_vector_env_bit_for_bit_across_autoresets(env_id, action_type):
    vec, sync = pair(env_id, 3, action_type)
    try:
        assert identical(vec.reset(seed=7), sync.reset(seed=7))
        vec.action_space.seed(1)
        ends = 0
        for _ in range(200 if env_id == PLACEMENT else 20):  # placement steps once per arrival
            actions = vec.action_space.sample()
            mine, theirs = vec.step(actions), sync.step(actions)
            assert identical(mine, theirs)
            ends += int(mine[3].sum())
        assert ends >= 3  # the environments ended and were reset on the next step
    finally:
        vec.close()
        sync.close()


def test_a_list_of_seeds_seeds_each_environment():
    vec, sync = pair(LOCAL, 2)
    try:
        assert identical(vec.reset(seed=[3, None])[0][0], sync.reset(seed=[3, None])[0][0])
        with pytest.raises(ValueError, match="3 seeds for 2 environments"):
            vec.reset(seed=[1, 2, 3])
    finally:
        vec.close()
        sync.close()


def test_bad_actions_name_the_environment_and_the_component():
    vec = gym.make_vec(LOCAL, num_envs=2, env=dict(EPISODE), sim=dict(QUICK))
    box = gym.make_vec(LOCAL, num_envs=2, env=dict(EPISODE), sim=dict(QUICK), action_type="box")
    try:
        with pytest.raises(gym.error.ResetNeeded):
            vec.step(np.zeros((2, len(vec.unwrapped.nvec)), dtype=np.int64))
        vec.reset(seed=0)
        box.reset(seed=0)
        good = np.zeros((2, len(vec.unwrapped.nvec)), dtype=np.int64)
        with pytest.raises(ValueError, match=r"shape \(3, \d+\), expected \(2, \d+\)"):
            vec.step(np.zeros((3, good.shape[1]), dtype=np.int64))
        bad = good.copy()
        bad[1, 0] = 99
        with pytest.raises(ValueError, match=r"actions\[1, 0\] \(clock\) = 99 is outside 0\.\.7"):
            vec.step(bad)
        with pytest.raises(ValueError, match="whole numbers"):
            vec.step(good + 0.5)
        wild = np.zeros(good.shape, dtype=np.float32)
        wild[0, 1] = np.nan
        with pytest.raises(ValueError, match=r"actions\[0, 1\] .* is outside \[-1, 1\]"):
            box.step(wild)
    finally:
        vec.close()
        box.close()
