"""What an agent YAML becomes for ``festgym train --backend rllib`` (no Ray needed): SB3's PPO
hyper-parameters under RLlib's names, and a clear refusal of what has no counterpart."""

from __future__ import annotations

import re

import pytest

from festgym.errors import RangeError, SpecError
from festgym.jobs.train_config import AgentSpec, TrainConfig, load_agent, rllib_settings


def test_the_shipped_ppo_yaml_as_rllib_trains_it():
    agent = load_agent("ppo")
    settings = rllib_settings(agent)
    hp = agent.hyperparams
    assert settings.training == {
        "lr": hp["learning_rate"], "minibatch_size": hp["batch_size"], "num_epochs": 10, "gamma": hp["gamma"],
        "lambda_": hp["gae_lambda"], "clip_param": 0.2, "entropy_coeff": hp["ent_coef"], "vf_loss_coeff": 0.5,
        "grad_clip": 0.5, "grad_clip_by": "global_norm", "use_kl_loss": False,
        "train_batch_size_per_learner": hp["n_steps"] * agent.n_envs}  # SB3's data per update
    assert settings.model == {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh", "head_fcnet_hiddens": [],
                              "vf_share_layers": False}
    assert settings.env_runners == agent.n_envs and settings.norm_reward and settings.value_clip is None
    assert rllib_settings(agent, env_runners=6).env_runners == 6


def test_network_and_value_clip_carry_over():
    agent = AgentSpec("ppo", hyperparams={"clip_range_vf": 0.3, "policy_kwargs": {
        "net_arch": {"pi": [32, 16], "vf": [32, 16]}, "activation_fn": "ReLU"}}, normalize={})
    settings = rllib_settings(agent)
    assert settings.model["fcnet_hiddens"] == [32, 16] and settings.model["fcnet_activation"] == "relu"
    assert settings.value_clip == 0.3 and not settings.norm_reward


@pytest.mark.parametrize(("agent", "field"), [
    (AgentSpec("sac"), "algo"),
    (AgentSpec("ppo", normalize={"norm_obs": True}), "normalize.norm_obs"),
    (AgentSpec("ppo", normalize={"norm_obs": False, "gamma": 0.9}), "normalize.gamma"),
    (AgentSpec("ppo", hyperparams={"target_kl": 0.01}, normalize={}), "hyperparams.target_kl"),
    (AgentSpec("ppo", hyperparams={"normalize_advantage": False}, normalize={}), "hyperparams.normalize_advantage"),
    (AgentSpec("ppo", hyperparams={"learning_rate": "lin_3e-4"}, normalize={}), "hyperparams.learning_rate"),
    (AgentSpec("ppo", hyperparams={"policy_kwargs": {"net_arch": {"pi": [64], "vf": [32]}}}, normalize={}),
     "hyperparams.policy_kwargs.net_arch"),
    (AgentSpec("ppo", hyperparams={"policy_kwargs": {"activation_fn": "gelu"}}, normalize={}),
     "hyperparams.policy_kwargs.activation_fn"),
    (AgentSpec("ppo", hyperparams={"policy_kwargs": {"ortho_init": False}}, normalize={}),
     "hyperparams.policy_kwargs.ortho_init"),
])
def test_what_rllib_cannot_train_is_refused_by_field(agent, field):
    with pytest.raises(SpecError, match=re.escape(f"my.yaml: field '{field}'")):
        rllib_settings(agent, source="my.yaml")


@pytest.mark.parametrize("kwargs", [{"env_runners": 2}, {"ray": "auto"}, {"backend": "jax"},
                                    {"backend": "rllib", "env_runners": -1}])
def test_rllib_options_need_the_rllib_backend(kwargs):
    with pytest.raises(RangeError, match="TrainConfig"):
        TrainConfig("ppo", **kwargs)
