"""What a training job is: an agent YAML (:class:`AgentSpec`) and the job's settings
(:class:`TrainConfig`). No stable-baselines3 here, so that the command line (``festgym train
--help``) and the tests read them without the train extra; :mod:`festgym.jobs.train` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from festgym.config import build_dataclass, check_ranges, read_mapping
from festgym.resources import AGENTS

ALGORITHMS = ("ppo", "a2c", "sac", "td3", "dqn")
"""stable-baselines3 algorithms an agent YAML may name."""


@dataclass
class AgentSpec:
    """An agent YAML (``<algo>.yaml`` in the agent folders, :data:`festgym.resources.AGENTS`)."""

    algo: str
    """One of :data:`ALGORITHMS`."""
    env: str = "festgym/LocalGPU-v0"
    """Environment id."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the environment (``action_type``, scenario overrides, ...)."""
    n_envs: int = 2
    """Training environments (worker processes when more than one)."""
    timesteps: int = 200_000
    """Environment steps to train for (``--timesteps`` overrides)."""
    policy: str = "MlpPolicy"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the SB3 algorithm (learning_rate, n_steps, batch_size, gamma, ...)."""
    normalize: dict[str, Any] = field(default_factory=lambda: {"norm_obs": True, "norm_reward": True})
    """Keyword arguments of ``VecNormalize`` (empty mapping: no normalisation)."""
    eval_freq: int = 10_000
    """Evaluate every this many environment steps (over all environments)."""
    eval_episodes: int = 5
    eval_seed: int = 10_000
    """First evaluation seed; evaluation episodes use seeds from here up."""

    def __post_init__(self):
        self.algo = self.algo.lower()
        check_ranges(self, {"algo": self.algo in ALGORITHMS, "n_envs": self.n_envs >= 1,
                            "timesteps": self.timesteps >= 1, "eval_freq": self.eval_freq >= 1,
                            "eval_episodes": self.eval_episodes >= 1},
                     {"algo": f"one of {', '.join(ALGORITHMS)}", "n_envs": "≥ 1", "timesteps": "≥ 1",
                      "eval_freq": "≥ 1", "eval_episodes": "≥ 1"})


@dataclass
class TrainConfig:
    """One training job (what ``festgym train`` parses)."""

    agent: str
    """Agent YAML: a path, or an agent's name (the shipped ones: ppo, sac)."""
    scenario: str = "default"
    """Scenario name or path, passed to the environment."""
    timesteps: int | None = None
    """Environment steps to train for (default: the agent YAML's timesteps)."""
    seed: int = 0
    """Seeds the algorithm and the training environments."""
    runs_dir: str = "runs"
    """Where run folders go."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        check_ranges(self, {"timesteps": self.timesteps is None or self.timesteps >= 1, "seed": self.seed >= 0},
                     {"timesteps": "≥ 1", "seed": "≥ 0"})


def load_agent(spec: str | Path) -> AgentSpec:
    """Read and validate an agent YAML, by path or by name (``ppo``: ``ppo.yaml`` in the
    user's agent folders or the shipped one, :data:`festgym.resources.AGENTS`); unknown keys are an
    error naming them."""
    path = AGENTS.resolve(spec, "{}.yaml")
    return build_dataclass(AgentSpec, read_mapping(path), path)


def run_name(scenario: str, algo: str, seed: int, when: datetime | None = None) -> str:
    """``{scenario}__{algo}__{seed}__{time}``, as CleanRL names runs."""
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{Path(scenario).stem}__{algo}__{seed}__{stamp}"


__all__ = ["ALGORITHMS", "AgentSpec", "TrainConfig", "load_agent", "run_name"]
