"""Train PPO with RLlib's new API stack from the same agent YAMLs as stable-baselines3.

``festgym train --agent ppo --backend rllib [--env-runners N] [--ray [ADDRESS]]`` reads the
agent YAML, translates it (:func:`festgym.jobs.train_config.rllib_settings`: SB3's PPO
hyper-parameters, network and reward normalisation as RLlib's), and trains with ``N``
environment runners (Ray actors, on this machine or a cluster). Every ``eval_freq`` environment
steps the current policy is exported as the numpy policy the simulator and the deploy agent run,
and that export (not RLlib's own stochastic sampler) is evaluated deterministically on the YAML's
evaluation seeds, which training never draws; the best export is kept. So the run folder
``runs/{scenario}__ppo-rllib__{seed}__{time}/`` holds:

* ``checkpoint/``: ``card.json`` (as ``festgym train`` writes it, with ``backend: rllib``, the
  RLlib settings used, the evaluation history and the SHA-256 of each file) and ``numpy/``, the
  best export, sealed with its interface: it runs in ``festgym compare --policies <checkpoint>``
  and ``festgym deploy --policy <checkpoint>`` as it is. There are no pickles in it.
* ``rllib/``: RLlib's own checkpoint of the final algorithm (``Algorithm.from_checkpoint``
  resumes it); festgym never loads it.

How the export is checked: the dense layers taken from the RLModule's actor encoder and policy
head are run in numpy on random observations and compared with the module's own
``forward_inference`` (:func:`export_rl_module`); an architecture they do not reproduce is
refused, not exported. This module imports Ray and torch: import it only to train.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import ray
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.tune.registry import register_env
from tqdm.auto import tqdm

from festgym.control.checkpoint import EXPORTED, seal_card
from festgym.control.numpy_policy import NumpyPolicy, PolicyFileError, sha256_file
from festgym.envs.rollout import run_episode
from festgym.jobs.export import action_spec, dense_layers, write_policy
from festgym.jobs.ray_session import LOCAL_RAY, ray_session
from festgym.jobs.train_config import (
    AgentSpec,
    RllibSettings,
    TrainConfig,
    load_agent,
    rllib_settings,
    run_name,
    training_card,
)
from festgym.resources import AGENTS
from festgym.scenario import card_interface

ENV_NAME = "festgym-rllib"
"""The name under which the environment creator is registered with Ray's registry."""
VERIFY_ATOL = 1e-4
"""Largest difference allowed between the numpy export's outputs and the RLModule's (float32 in torch)."""


def make_env(config: dict[str, Any]) -> gym.Env:
    """An environment for an RLlib env runner: ``gym.make(env_id, **env_kwargs)``, with SB3's
    ``VecNormalize`` reward normalisation as gymnasium's ``NormalizeReward`` when the YAML asks
    for it (per environment, clipped as VecNormalize clips)."""
    # A worker unpickles this function by reference, importing festgym, which registers its ids.
    env = gym.make(config["env_id"], **config["env_kwargs"])
    if config["norm_reward"]:
        env = gym.wrappers.NormalizeReward(env, gamma=config["gamma"])
        clip = config["clip_reward"]
        env = gym.wrappers.TransformReward(env, lambda r: min(max(float(r), -clip), clip))
    return env


def build_config(agent: AgentSpec, settings: RllibSettings, scenario: str, seed: int) -> PPOConfig:
    """The :class:`PPOConfig` an agent YAML and its RLlib settings give."""
    env_config = {"env_id": agent.env, "env_kwargs": {"scenario": scenario, **agent.env_kwargs},
                  "norm_reward": settings.norm_reward, "gamma": settings.training["gamma"],
                  "clip_reward": settings.clip_reward}
    return (PPOConfig()
            .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
            .environment(ENV_NAME, env_config=env_config)
            .framework("torch")
            .env_runners(num_env_runners=settings.env_runners, num_envs_per_env_runner=1,
                         rollout_fragment_length="auto", num_cpus_per_env_runner=1)
            .learners(num_learners=0)
            .training(**settings.training,
                      vf_clip_param=float("inf") if settings.value_clip is None else settings.value_clip)
            .rl_module(model_config=DefaultModelConfig(**settings.model))
            .debugging(seed=seed, log_level="ERROR")
            .reporting(min_sample_timesteps_per_iteration=0))


def train(config: TrainConfig) -> Path:
    """Train, evaluate the numpy export as it goes, and write the run folder; returns its
    checkpoint folder (sealed: it runs in compare and deploy)."""
    agent = load_agent(config.agent)
    settings = rllib_settings(agent, config.env_runners, AGENTS.resolve(config.agent, "{}.yaml"))
    timesteps = config.timesteps or agent.timesteps
    run = Path(config.runs_dir) / run_name(config.scenario, f"{agent.algo}-rllib", config.seed)
    checkpoint = run / "checkpoint"
    checkpoint.mkdir(parents=True, exist_ok=True)
    gym.spec(agent.env)  # an unknown id fails here, with gymnasium's message
    eval_env = gym.make(agent.env, scenario=config.scenario, **agent.env_kwargs)
    history: list[dict[str, Any]] = []
    best: tuple[float, Path] | None = None
    started = time.perf_counter()
    with ray_session(config.ray or LOCAL_RAY, cpus=settings.env_runners), \
            tqdm(total=timesteps, unit="step", desc="train (rllib)", disable=None if config.progress else True) as bar:
        register_env(ENV_NAME, make_env)
        algo = build_config(agent, settings, config.scenario, config.seed).build_algo()
        try:
            steps, next_eval = 0, agent.eval_freq
            while steps < timesteps:
                result = algo.train()
                done = int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])
                bar.update(done - steps)
                steps = done
                if steps >= next_eval or steps >= timesteps:
                    next_eval = steps + agent.eval_freq
                    best = _evaluate(algo, eval_env, agent, steps, run, history, best)
            algo.save_to_path(str((run / "rllib").resolve()))
        finally:
            algo.stop()
            eval_env.close()
    wall = time.perf_counter() - started
    assert best is not None  # the loop evaluates at least once
    best[1].rename(checkpoint / EXPORTED)
    for stale in run.glob("candidate-*"):  # exports that were overtaken by a better one
        shutil.rmtree(stale)
    write_card(checkpoint, config, agent, settings, timesteps, wall, history)
    return checkpoint


def _evaluate(algo, eval_env: gym.Env, agent: AgentSpec, steps: int, run: Path, history: list[dict[str, Any]],
              best: tuple[float, Path] | None) -> tuple[float, Path]:
    """Export the current policy, score it (:func:`evaluate_policy`), record it, keep the best."""
    folder = export_rl_module(algo.get_module(), eval_env.observation_space, eval_env.action_space,
                              run / f"candidate-{steps}")
    rewards = evaluate_policy(NumpyPolicy.load(folder), eval_env, agent.eval_episodes, agent.eval_seed)
    mean = float(np.mean(rewards))
    history.append({"timesteps": steps, "mean_reward": mean, "std_reward": float(np.std(rewards))})
    if best is None or mean > best[0]:
        if best is not None:
            shutil.rmtree(best[1])
        return mean, folder
    shutil.rmtree(folder)
    return best


def evaluate_policy(policy: NumpyPolicy, env: gym.Env, episodes: int, first_seed: int) -> list[float]:
    """Undiscounted return of ``episodes`` deterministic episodes, seeded ``first_seed`` up (as
    SB3's evaluation callback scores a model, but on the numpy export that will be deployed)."""
    def act(obs: np.ndarray) -> np.ndarray:
        return policy.predict(np.asarray(obs, np.float32))

    return [run_episode(env, act, first_seed + i)["reward"] for i in range(episodes)]


def export_rl_module(module, observation_space: gym.Space, action_space: gym.Space, out_dir: str | Path) -> Path:
    """Write an RLlib PPO RLModule's deterministic policy (actor encoder, then policy head) as a
    numpy policy folder, checked against the module's own forward pass; returns the folder.

    A ``Box`` action's head outputs the Gaussian's means and then its log-stds: the export keeps
    the means (the deterministic action), as SB3's export does."""
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise PolicyFileError(f"export: only flat Box observations are supported, got {observation_space}")
    encoder = module.encoder
    actor = getattr(encoder, "actor_encoder", None) or encoder.encoder  # separate or shared layers
    leaves = [m for part in (actor, module.pi) for m in part.modules() if not list(m.children())]
    layers = dense_layers(leaves, torch.nn)
    action = action_spec(action_space, squashed=False)
    if action["type"] == "box":
        w, b, act = layers[-1]
        n = len(action["low"])
        layers[-1] = (w[:n], b[:n], act)
    folder = write_policy(layers, out_dir, algorithm="PPO (RLlib)", observation_shape=observation_space.shape,
                          action=action)
    _verify_export(module, NumpyPolicy.load(folder), observation_space, len(layers[-1][1]), folder)
    return folder


def _verify_export(module, policy: NumpyPolicy, space: gym.spaces.Box, outputs: int, folder: Path) -> None:
    """Refuse an export whose dense layers do not reproduce the module's action-distribution inputs."""
    rng = np.random.default_rng(0)
    obs = rng.uniform(np.maximum(space.low, -1.0), np.minimum(space.high, 1.0), (64, *space.shape)).astype(np.float32)
    with torch.no_grad():
        expected = module.forward_inference({"obs": torch.from_numpy(obs)})["action_dist_inputs"].numpy()[:, :outputs]
    x = obs.astype(np.float64)
    for w, b, act in policy.layers:
        x = act(x @ w.T + b)
    gap = float(np.max(np.abs(x - expected)))
    if not gap <= VERIFY_ATOL:
        raise PolicyFileError(f"{folder}: the exported layers differ from the RLModule's forward pass by {gap:.3g} "
                              f"(> {VERIFY_ATOL}): its architecture is not a plain MLP festgym can export")


def write_card(checkpoint: Path, config: TrainConfig, agent: AgentSpec, settings: RllibSettings, timesteps: int,
               wall_s: float, history: list[dict[str, Any]]) -> Path:
    """``card.json`` as :func:`festgym.jobs.train.write_card` writes it, with the RLlib settings,
    then sealed with the interface of the training scenario."""
    card = {**training_card(checkpoint.parent.name, config, agent, timesteps, wall_s, history), "backend": "rllib",
            "rllib": {"version": ray.__version__, **dataclasses.asdict(settings)}}
    card["evaluation"]["policy"] = "numpy export"
    card["sha256"] = {f"{EXPORTED}/{p.name}": sha256_file(p) for p in sorted((checkpoint / EXPORTED).iterdir())}
    return seal_card(checkpoint, card_interface(card), card)



__all__ = ["build_config", "evaluate_policy", "export_rl_module", "make_env", "train", "write_card"]
