"""Train a learned controller with stable-baselines3, RL Zoo style: one YAML per algorithm.

``festgym train --agent ppo --scenario default [--timesteps N] [--seed S]`` runs one
training job and leaves a run folder ``runs/{scenario}__{algo}__{seed}__{time}/`` (CleanRL's
naming) holding:

* ``checkpoint/``: the best model by the evaluation callback (``model.zip``), the
  ``VecNormalize`` statistics saved with it (``vecnormalize.pkl``) and ``card.json`` (scenario,
  algorithm, hyper-parameters, timesteps, wall time, seed, the evaluation history and the
  SHA-256 of each file). ``benchmarks/ship_checkpoint.py`` ships it (``festgym/data/checkpoints/``).
  ``festgym train`` prints its digest (:func:`festgym.control.checkpoint.checkpoint_digest`): the
  pin ``festgym export --sha256`` needs to load its pickles.
* ``tb/``: TensorBoard logs (when the ``tensorboard`` package is installed);
* ``eval/``: the evaluation callback's ``evaluations.npz``.

Training uses ``n_envs`` environments in worker processes (``SubprocVecEnv``; one environment runs
in-process), normalised by ``VecNormalize``. Evaluation runs on its own environment with seeds
from ``eval_seed`` up, which training never draws (training seeds its environments from ``seed``),
with the training statistics frozen. Everything an agent needs beyond the defaults lives in its
YAML; nothing is hard-coded here. This module imports stable-baselines3 (and so torch): import it
only to train.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import time
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import stable_baselines3 as sb3
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize
from tqdm.auto import tqdm

from festgym.control.checkpoint import (
    CARD,
    EXPORTED,
    MODEL,
    STATISTICS,
    pinned_training_files,
    read_card,
    seal_card,
)
from festgym.control.numpy_policy import PolicyFileError, sha256_file
from festgym.jobs.export import export_sb3
from festgym.jobs.train_config import ALGORITHMS, AgentSpec, TrainConfig, load_agent, run_name, training_card
from festgym.scenario import controller_interface, training_scenario


def make_env(env_id: str, **kwargs) -> gym.Env:
    """``gym.make`` from a function of this module, so that worker processes can rebuild it."""
    return gym.make(env_id, **kwargs)


def train(config: TrainConfig) -> Path:
    """Train, evaluate as it goes, and write the run folder; returns its checkpoint folder."""
    agent = load_agent(config.agent)
    timesteps = config.timesteps or agent.timesteps
    run = Path(config.runs_dir) / run_name(config.scenario, agent.algo, config.seed)
    checkpoint = run / "checkpoint"
    checkpoint.mkdir(parents=True, exist_ok=True)
    env_kwargs = {"scenario": config.scenario, **agent.env_kwargs}
    gym.spec(agent.env)  # an unknown id fails here, with gymnasium's message
    make = partial(make_env, agent.env)  # by reference: a worker process imports festgym, which registers the id
    venv = make_vec_env(make, n_envs=agent.n_envs, seed=config.seed, env_kwargs=env_kwargs,
                        vec_env_cls=SubprocVecEnv if agent.n_envs > 1 else DummyVecEnv)
    eval_env = make_vec_env(make, n_envs=1, seed=agent.eval_seed, env_kwargs=env_kwargs, vec_env_cls=DummyVecEnv)
    if agent.normalize:
        gamma = agent.hyperparams.get("gamma", 0.99)
        venv = VecNormalize(venv, gamma=gamma, **agent.normalize)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False, gamma=gamma,
                                **{k: v for k, v in agent.normalize.items() if k != "norm_reward"})
    model = getattr(sb3, agent.algo.upper())(agent.policy, venv, seed=config.seed, device="cpu", verbose=0,
                                             tensorboard_log=str(run / "tb") if _has_tensorboard() else None,
                                             **agent.hyperparams)
    evaluation = EvalCallback(eval_env, callback_on_new_best=SaveNormalization(checkpoint / STATISTICS),
                              n_eval_episodes=agent.eval_episodes, eval_freq=max(agent.eval_freq // agent.n_envs, 1),
                              best_model_save_path=str(checkpoint), log_path=str(run / "eval"), deterministic=True,
                              verbose=0)
    started = time.perf_counter()
    try:
        model.learn(timesteps, callback=CallbackList([evaluation, Progress(timesteps, config.progress)]),
                    tb_log_name="train")
    finally:
        venv.close()
    wall = time.perf_counter() - started
    if not (checkpoint / "best_model.zip").exists():  # too short to evaluate: keep the final model
        model.save(checkpoint / "best_model.zip")
        if agent.normalize:
            model.get_vec_normalize_env().save(str(checkpoint / STATISTICS))
    (checkpoint / "best_model.zip").rename(checkpoint / MODEL)
    write_card(checkpoint, config, agent, timesteps, wall, evaluation)
    return checkpoint


def write_card(checkpoint: Path, config: TrainConfig, agent: AgentSpec, timesteps: int, wall_s: float,
               evaluation) -> Path:
    """``card.json``: how the controller was trained, how it scored in evaluation, file hashes."""
    history = [{"timesteps": int(t), "mean_reward": float(np.mean(r)), "std_reward": float(np.std(r))}
               for t, r in zip(evaluation.evaluations_timesteps, evaluation.evaluations_results)]
    card = training_card(checkpoint.parent.name, config, agent, timesteps, wall_s, history)
    card["sha256"] = {p.name: sha256_file(p) for p in sorted(checkpoint.iterdir()) if p.name != CARD}
    path = checkpoint / CARD
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None, sha256: str | None = None) -> Path:
    """Export a checkpoint folder (``model.zip``, optional ``vecnormalize.pkl``, ``card.json``) as
    a numpy-only policy into ``out`` (default: ``<checkpoint>/numpy``, then sealed into the card:
    :func:`festgym.control.checkpoint.seal_card`).

    ``model.zip`` and ``vecnormalize.pkl`` are pickles, and loading one runs its code: they are
    loaded only under ``sha256``, the checkpoint's digest from a source the user trusts (what
    ``festgym train`` printed, or the digest of the exported checkpoint), and only as the bytes
    that match the card's hashes (:func:`festgym.control.checkpoint.pinned_training_files`)."""
    checkpoint = Path(checkpoint)
    card = read_card(checkpoint)
    if card.get("backend") == "rllib":
        raise PolicyFileError(f"{checkpoint}: trained with RLlib, which exported its policy as it trained "
                              f"({checkpoint / EXPORTED}, sealed in {CARD}): nothing to export; it runs as it is")
    files = pinned_training_files(checkpoint, card, sha256)
    algo = card.get("agent", {}).get("algo")
    if algo not in ALGORITHMS:
        raise PolicyFileError(f"{checkpoint / CARD}: field 'agent.algo': {algo!r}; expected one of "
                              f"{', '.join(ALGORITHMS)}")
    model = getattr(sb3, algo.upper()).load(io.BytesIO(files[MODEL]), device="cpu")
    vec = pickle.loads(files[STATISTICS]) if STATISTICS in files else None  # pinned: see above
    folder = export_sb3(model, out or checkpoint / EXPORTED, vec)
    if out is None:  # the checkpoint's own export: record its hashes and interface in the card
        action_type = card["agent"].get("env_kwargs", {}).get("action_type", "multidiscrete")
        seal_card(checkpoint, controller_interface(training_scenario(card), action_type), card)
    return folder


def _has_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class SaveNormalization(BaseCallback):
    """Saves the training ``VecNormalize`` next to each new best model (SB3's evaluation callback
    saves only the model, whose actions are meaningless without the statistics it saw)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def _on_step(self) -> bool:
        vec = self.model.get_vec_normalize_env()
        if vec is not None:
            vec.save(str(self.path))
        return True


class Progress(BaseCallback):
    """A tqdm progress bar over environment steps (SB3's own needs ``rich``)."""

    def __init__(self, total: int, enabled: bool):
        super().__init__()
        self.total, self.enabled = total, enabled

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, unit="step", desc="train", disable=None if self.enabled else True)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


__all__ = ["export_checkpoint", "make_env", "train", "write_card"]
