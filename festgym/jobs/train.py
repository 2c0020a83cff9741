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
in-process), normalised by ``VecNormalize``. Evaluation runs on its own environment, on the same
episodes every time (seeds ``eval_seed``, ``eval_seed + 1``, ...; training never draws them, it
seeds its environments from ``seed``), with the training statistics frozen. Everything an agent
needs beyond the defaults lives in its YAML; nothing is hard-coded here. This module imports
stable-baselines3 (and so torch): import it only to train.

A constrained run (an agent YAML's ``lagrangian`` section) is chosen for the constraint, not the
reward: before training the background policy plays the evaluation episodes once (action
``None``), and the best model is the one with the least energy (highest summed
``reward_energy``) among the evaluations whose summed ``cost_key`` over those episodes is no
more than the background policy's, or, while none is, the one with the least of it. Totals over
the same episodes, not means per step: an agent that changes how many steps an episode has (a
``Spawn-v0`` agent that absorbs more meets its gate more often) cannot dilute its violations.
The card records the reference and every evaluation's totals (``lagrangian.selection``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import pickle
import time
from dataclasses import asdict, dataclass
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
from festgym.envs.constrained import LagrangianReward, dual_step
from festgym.envs.rollout import SeededEpisodes, run_episode
from festgym.errors import SpecError
from festgym.jobs.export import export_sb3
from festgym.jobs.train_config import (
    ALGORITHMS,
    BASELINE_SEED,
    AgentSpec,
    LagrangianSpec,
    TrainConfig,
    load_agent,
    run_name,
    training_card,
)
from festgym.scenario import card_interface


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
    constraint = agent.constraint
    dual = None if constraint is None else \
        DualAscent(constraint, _cost_limit(constraint, make, env_kwargs, config.agent))
    venv = make_vec_env(make, n_envs=agent.n_envs, seed=config.seed, env_kwargs=env_kwargs,
                        vec_env_cls=SubprocVecEnv if agent.n_envs > 1 else DummyVecEnv,
                        wrapper_class=None if dual is None else
                        partial(LagrangianReward, multiplier=dual.multiplier, cost_key=dual.constraint.cost_key))
    eval_env = make_vec_env(make, n_envs=1, env_kwargs=env_kwargs, vec_env_cls=DummyVecEnv,
                            wrapper_class=partial(SeededEpisodes, first_seed=agent.eval_seed))
    if agent.normalize:
        gamma = agent.hyperparams.get("gamma", 0.99)
        venv = VecNormalize(venv, gamma=gamma, **agent.normalize)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False, gamma=gamma,
                                **{k: v for k, v in agent.normalize.items() if k != "norm_reward"})
    model = getattr(sb3, agent.algo.upper())(agent.policy, venv, seed=config.seed, device="cpu", verbose=0,
                                             tensorboard_log=str(run / "tb") if _has_tensorboard() else None,
                                             **agent.hyperparams)
    reference = None if constraint is None else \
        _eval_reference(constraint.cost_key, make, env_kwargs, agent.eval_seed, agent.eval_episodes)
    evaluation = FixedEpisodes(eval_env, callback_on_new_best=SaveNormalization(checkpoint / STATISTICS),
                              n_eval_episodes=agent.eval_episodes, eval_freq=max(agent.eval_freq // agent.n_envs, 1),
                              best_model_save_path=str(checkpoint), log_path=str(run / "eval"), deterministic=True,
                              verbose=0, constraint=reference)
    started = time.perf_counter()
    try:
        callbacks = [evaluation, Progress(timesteps, config.progress)] + ([] if dual is None else [dual])
        model.learn(timesteps, callback=CallbackList(callbacks), tb_log_name="train")
    finally:
        venv.close()
    wall = time.perf_counter() - started
    if not (checkpoint / "best_model.zip").exists():  # too short to evaluate: keep the final model
        model.save(checkpoint / "best_model.zip")
        if agent.normalize:
            model.get_vec_normalize_env().save(str(checkpoint / STATISTICS))
    (checkpoint / "best_model.zip").rename(checkpoint / MODEL)
    write_card(checkpoint, config, agent, timesteps, wall, evaluation, dual)
    return checkpoint


def _cost_limit(constraint: LagrangianSpec, make, env_kwargs: dict, source: str) -> float:
    """The constraint's limit: its own, or the background policy's mean cost per step over its
    baseline episodes (action None: the policy the environment runs beside decides)."""
    if constraint.cost_limit is not None:
        return constraint.cost_limit
    env = make(**env_kwargs)
    try:
        episodes = [run_episode(env, lambda _obs: None, BASELINE_SEED + i) for i in range(constraint.baseline_episodes)]
    finally:
        env.close()
    count = len(episodes) if constraint.per == "episode" else sum(e["steps"] for e in episodes)
    limit = sum(e[constraint.cost_key] for e in episodes) / count
    if limit <= 0:
        raise SpecError(source, "lagrangian.cost_limit", f"absent, and the background policy's mean cost per "
                        f"{constraint.per} is "
                        f"{limit}: nothing to hold a controller to; set one")
    return limit


def _eval_reference(cost_key: str, make, env_kwargs: dict, first_seed: int, episodes: int) -> Reference:
    """The background policy's summed ``cost_key`` and ``reward_energy`` over the evaluation
    episodes (action None), which a constrained run's best model must not exceed in cost."""
    env = make(**env_kwargs)
    try:
        played = [run_episode(env, lambda _obs: None, first_seed + i) for i in range(episodes)]
    finally:
        env.close()
    return Reference(cost_key, sum(e[cost_key] for e in played), sum(e["energy_term"] for e in played))


def write_card(checkpoint: Path, config: TrainConfig, agent: AgentSpec, timesteps: int, wall_s: float,
               evaluation, dual: DualAscent | None = None) -> Path:
    """``card.json``: how the controller was trained, how it scored in evaluation, file hashes
    (and, for constrained training, the limit and the multiplier's course)."""
    history = [{"timesteps": int(t), "mean_reward": float(np.mean(r)), "std_reward": float(np.std(r))}
               for t, r in zip(evaluation.evaluations_timesteps, evaluation.evaluations_results)]
    card = training_card(checkpoint.parent.name, config, agent, timesteps, wall_s, history)
    if dual is not None:
        card["lagrangian"] = {"cost_limit": dual.limit, "history": dual.history}
    if evaluation.constraint is not None:
        card["lagrangian"]["selection"] = {**asdict(evaluation.constraint),
                                           "chosen_timesteps": evaluation.chosen_timesteps,
                                           "history": evaluation.scores}
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
        seal_card(checkpoint, card_interface(card), card)
    return folder


def _has_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


@dataclass(frozen=True)
class Reference:
    """What the background policy scored on the evaluation episodes (summed over them)."""

    cost_key: str
    cost: float
    reward_energy: float


class FixedEpisodes(EvalCallback):
    """SB3's evaluation callback on the same episodes at every evaluation (seeds ``eval_seed``
    up, :class:`~festgym.envs.rollout.SeededEpisodes`), so that the best model is chosen on
    returns of one fixed set of episodes, as the RLlib backend chooses its exports.

    With ``constraint`` (the background policy's totals on those episodes) the best model is
    chosen on the constraint instead (the module docstring); :attr:`scores` keeps each
    evaluation's totals."""

    def __init__(self, *args, constraint: Reference | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.constraint = constraint
        self.scores: list[dict[str, float | bool]] = []
        self._best: tuple[bool, float] | None = None
        self.chosen_timesteps: int | None = None
        self._cost = self._energy = 0.0

    def _log_success_callback(self, locals_: dict, globals_: dict) -> None:
        super()._log_success_callback(locals_, globals_)
        if self.constraint is not None:
            info = locals_["info"]
            self._cost += float(info[self.constraint.cost_key])
            self._energy += float(info["reward_energy"])

    def _on_step(self) -> bool:
        evaluating = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
        if evaluating:
            self.eval_env.env_method("restart")
            self._cost = self._energy = 0.0
        if self.constraint is None or not evaluating:
            return super()._on_step()
        self.best_mean_reward = math.inf  # SB3 saves on a new best return: here the constraint chooses
        go_on = super()._on_step()
        feasible = self._cost <= self.constraint.cost
        self.scores.append({"timesteps": int(self.num_timesteps), "cost": self._cost,
                            "reward_energy": self._energy, "feasible": feasible})
        score = (feasible, self._energy if feasible else -self._cost)
        if self._best is None or score > self._best:
            self._best, self.chosen_timesteps = score, int(self.num_timesteps)
            if self.best_model_save_path is not None:
                self.model.save(os.path.join(self.best_model_save_path, "best_model"))
            if self.callback_on_new_best is not None:
                go_on = self.callback_on_new_best.on_step() and go_on
        return go_on


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


class DualAscent(BaseCallback):
    """The Lagrangian's multiplier, adapted after each rollout from the rollout's mean cost per
    step (:func:`festgym.envs.constrained.dual_step`) and sent to every training environment.
    Per episode (``per: episode``): the cost since the last update over the episodes that ended
    since; a rollout in which none ended leaves λ and its sums for the next."""

    def __init__(self, constraint: LagrangianSpec, limit: float):
        super().__init__()
        self.constraint, self.limit = constraint, limit
        self.multiplier = constraint.multiplier
        self.history: list[dict[str, float]] = []
        self._cost, self._count = 0.0, 0

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        self._cost += sum(float(info[self.constraint.cost_key]) for info in infos)
        self._count += int(np.sum(self.locals["dones"])) if self.constraint.per == "episode" else len(infos)
        return True

    def _on_rollout_end(self) -> None:
        if self._count == 0:
            return
        mean = self._cost / self._count
        self.multiplier = dual_step(self.multiplier, mean, self.limit, self.constraint.lr)
        self.training_env.env_method("set_multiplier", self.multiplier)
        self.history.append({"timesteps": int(self.num_timesteps), "mean_cost": mean, "multiplier": self.multiplier})
        self.logger.record("lagrangian/multiplier", self.multiplier)
        self.logger.record("lagrangian/mean_cost", mean)
        self._cost, self._count = 0.0, 0


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
