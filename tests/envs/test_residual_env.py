"""Residual LocalGPU-v0 (``env.residual_steps``): the agent adjusts the background policy's clock."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import festgym  # noqa: F401  (registers the environments)

LOCAL = "festgym/LocalGPU-v0"


def episode(action, action_type: str = "multidiscrete", steps: int = 120, seed: int = 3, **env):
    e = gym.make(LOCAL, action_type=action_type, env={"residual_steps": 2, "episode_s": steps, **env})
    obs, _ = e.reset(seed=seed)
    out = [obs.tobytes()]
    for t in range(steps):
        obs, reward, _, truncated, info = e.step(action(t))
        out.append((obs.tobytes(), reward, dict(info)))
        if truncated:
            break
    return out


def test_action_space_is_one_clock_adjustment():
    env = gym.make(LOCAL, env={"residual_steps": 3})
    assert env.action_space == gym.spaces.MultiDiscrete([7])
    assert env.unwrapped.action_labels == ("clock_adjust",)


@pytest.mark.parametrize("seed", [3, 11])
def test_zero_action_is_the_background_policy_bit_for_bit(seed):
    festina = episode(lambda t: None, seed=seed)  # None: the background policy decides
    assert episode(lambda t: np.array([2]), seed=seed) == festina  # the middle level
    assert episode(lambda t: np.zeros(1, np.float32), "box", seed=seed) == festina  # 0 in a Box


def test_an_adjustment_changes_the_episode():
    festina = episode(lambda t: None)
    lower = episode(lambda t: np.array([0]))
    assert lower != festina
    # Two levels down at every step: less energy on the same requests.
    assert sum(step[2]["energy_j"] for step in lower[1:]) < sum(step[2]["energy_j"] for step in festina[1:])


def test_passes_the_checkers():
    env = gym.make(LOCAL, env={"residual_steps": 2, "episode_s": 20})
    gym_check_env(env.unwrapped, skip_render_check=True)
    from stable_baselines3.common.env_checker import check_env

    check_env(gym.make(LOCAL, env={"residual_steps": 2, "episode_s": 20}).unwrapped, warn=False)


def test_refused_where_there_is_no_single_gpu_to_adjust():
    with pytest.raises(ValueError, match="residual_steps is for LocalGPU-v0"):
        gym.make("festgym/Cluster-v0", env={"residual_steps": 2})
    with pytest.raises(ValueError, match="residual_steps"):
        gym.make(LOCAL, env={"residual_steps": -1})
