"""``festgym train --backend rllib``: a short RLlib PPO run (one remote environment runner) whose
checkpoint is exported as it trains, sealed, and run in ``compare`` and by the deploy agent; the
export checked against the RLModule."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from festgym.cli.main import main
from festgym.control.checkpoint import CARD, LocalController, checkpoint_digest, read_card
from festgym.control.numpy_policy import NumpyPolicy, PolicyFileError, sha256_file
from festgym.jobs.train_config import TrainConfig

pytest.importorskip("ray.rllib.algorithms.ppo", reason="needs the rllib extra")

TINY = """\
algo: ppo
env: festgym/LocalGPU-v0
env_kwargs: {reward: {energy_weight: 2.0}, env: {episode_s: 120}}
n_envs: 2
timesteps: 480
hyperparams: {n_steps: 120, batch_size: 60, n_epochs: 2}
normalize: {norm_obs: false, norm_reward: true}
eval_freq: 240
eval_episodes: 2
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from festgym.jobs.train_rllib import train

    root = tmp_path_factory.mktemp("rllib")
    (root / "tiny.yaml").write_text(TINY)
    # One remote environment runner: sampling in a Ray actor, as on a cluster, on this machine's two cores.
    return train(TrainConfig(str(root / "tiny.yaml"), "default", None, 5, str(root / "runs"), progress=False,
                             backend="rllib", env_runners=1))


def test_run_folder_and_card(checkpoint):
    assert re.fullmatch(r"default__ppo-rllib__5__\d{8}-\d{6}", checkpoint.parent.name)
    assert {p.name for p in checkpoint.iterdir()} == {CARD, "numpy"}  # no pickles to pin
    assert (checkpoint.parent / "rllib" / "rllib_checkpoint.json").is_file()  # RLlib's own, to resume
    assert not list(checkpoint.parent.glob("candidate-*"))
    card = json.loads((checkpoint / CARD).read_text())  # strict JSON: no Infinity
    assert card["backend"] == "rllib" and card["seed"] == 5 and card["timesteps"] == 480
    assert card["rllib"]["env_runners"] == 1 and card["rllib"]["training"]["train_batch_size_per_learner"] == 240
    history = card["evaluation"]["history"]
    assert [h["timesteps"] for h in history] == [240, 480]
    assert card["evaluation"]["best_mean_reward"] == max(h["mean_reward"] for h in history)
    assert all(math.isfinite(h["mean_reward"]) and h["mean_reward"] < 0 for h in history)
    assert card["sha256"] == {f"numpy/{n}": sha256_file(checkpoint / "numpy" / n)
                              for n in ("policy.json", "weights.npz")}
    assert card["interface"]["slots"] == 2 and card["interface"]["action_type"] == "multidiscrete"


def test_the_same_seed_trains_the_same_weights(checkpoint, tmp_path):
    """Env runners seeded from the run's seed, the learner's torch too: a rerun is bit for bit."""
    from festgym.jobs.train_rllib import train

    card = read_card(checkpoint)
    agent = tmp_path / "tiny.yaml"
    agent.write_text(TINY)
    again = train(TrainConfig(str(agent), "default", None, 5, str(tmp_path / "runs"), progress=False,
                              backend="rllib", env_runners=1))
    assert read_card(again)["sha256"] == card["sha256"]


def test_the_export_is_what_evaluation_scored(checkpoint):
    """The card's best score is the numpy export's own return on the evaluation seeds."""
    import gymnasium as gym

    from festgym.jobs.train_rllib import evaluate_policy

    card = read_card(checkpoint)
    env = gym.make("festgym/LocalGPU-v0", scenario="default", **card["agent"]["env_kwargs"])
    returns = evaluate_policy(NumpyPolicy.load(checkpoint / "numpy"), env, 2, card["evaluation"]["first_seed"])
    assert float(np.mean(returns)) == card["evaluation"]["best_mean_reward"]


def test_it_runs_in_compare_and_deploy(checkpoint, tmp_path):
    controller = LocalController(checkpoint, expect_sha256=checkpoint_digest(read_card(checkpoint),
                                                                             str(checkpoint / CARD)))
    assert len(controller.levels(np.full(controller.interface.n_obs, 0.5))) == 3
    assert main(["compare", "--policies", f"festina,{checkpoint}", "--duration", "120", "--jobs", "1",
                 "--no-ablation", "--out", str(tmp_path / "cmp")]) == 0
    summary = (tmp_path / "cmp" / "summary.csv").read_text()
    assert "checkpoint" in summary and "festina" in summary
    log = tmp_path / "deploy.jsonl"
    assert main(["deploy", "--policy", str(checkpoint), "--simulate", "default", "--duration", "20",
                 "--log", str(log)]) == 0
    assert any(json.loads(line)["event"] == "interval" for line in log.read_text().splitlines())


def test_export_says_there_is_nothing_to_export(checkpoint):
    from festgym.jobs.train import export_checkpoint

    with pytest.raises(PolicyFileError, match="trained with RLlib.*nothing to export"):
        export_checkpoint(checkpoint)


def test_an_architecture_the_export_cannot_reproduce_is_refused(tmp_path):
    """A layer the numpy policy does not run (here LayerNorm) stops the export, naming why."""
    import gymnasium as gym
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from festgym.jobs.train_rllib import export_rl_module

    obs, act = gym.spaces.Box(0, 1, (6,)), gym.spaces.MultiDiscrete([3, 4])
    plain = DefaultPPOTorchRLModule(observation_space=obs, action_space=act, inference_only=False,
                                    model_config=DefaultModelConfig(fcnet_hiddens=[8]))
    policy = NumpyPolicy.load(export_rl_module(plain, obs, act, tmp_path / "plain"))
    assert policy.predict(np.full(6, 0.5, np.float32)).shape == (2,)
    normed = DefaultPPOTorchRLModule(observation_space=obs, action_space=act, inference_only=False,
                                     model_config=DefaultModelConfig(fcnet_hiddens=[8],
                                                                     fcnet_use_layernorm=True))
    with pytest.raises(PolicyFileError, match="unsupported layer|not a plain MLP"):
        export_rl_module(normed, obs, act, tmp_path / "normed")


def test_box_actions_export_the_gaussian_means(tmp_path):
    import gymnasium as gym
    import torch
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from festgym.jobs.train_rllib import export_rl_module

    obs, act = gym.spaces.Box(0, 1, (5,)), gym.spaces.Box(-1, 1, (3,))
    module = DefaultPPOTorchRLModule(observation_space=obs, action_space=act, inference_only=False,
                                     model_config=DefaultModelConfig(fcnet_hiddens=[8, 8]))
    policy = NumpyPolicy.load(export_rl_module(module, obs, act, tmp_path / "box"))
    x = np.random.default_rng(1).uniform(0, 1, (10, 5)).astype(np.float32)
    with torch.no_grad():
        means = module.forward_inference({"obs": torch.from_numpy(x)})["action_dist_inputs"].numpy()[:, :3]
    assert np.allclose(policy.predict(x), np.clip(means, -1, 1), atol=1e-5)
