"""What a training job is: an agent YAML (:class:`AgentSpec`) and the job's settings
(:class:`TrainConfig`), and what a YAML becomes for RLlib (:func:`rllib_settings`). No
stable-baselines3 or Ray here, so that the command line (``festgym train --help``) and the tests
read them without the train extras; :mod:`festgym.jobs.train` (SB3) and
:mod:`festgym.jobs.train_rllib` (RLlib) run them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from festgym.config import build_dataclass, check_ranges, read_mapping
from festgym.envs.constrained import COSTS
from festgym.errors import SpecError
from festgym.jobs.ray_session import LOCAL_RAY
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
    """First evaluation seed: every evaluation plays the episodes seeded from here up, the same ones."""
    lagrangian: dict[str, Any] | None = None
    """Constrained training (SB3): the reward ``reward_energy − λ·cost``, λ adapted so that the mean
    SLO cost per step meets a limit (the fields of :class:`LagrangianSpec`); absent: the
    environment's reward."""

    def __post_init__(self):
        self.algo = self.algo.lower()
        check_ranges(self, {"algo": self.algo in ALGORITHMS, "n_envs": self.n_envs >= 1,
                            "timesteps": self.timesteps >= 1, "eval_freq": self.eval_freq >= 1,
                            "eval_episodes": self.eval_episodes >= 1},
                     {"algo": f"one of {', '.join(ALGORITHMS)}", "n_envs": "≥ 1", "timesteps": "≥ 1",
                      "eval_freq": "≥ 1", "eval_episodes": "≥ 1"})

    @property
    def constraint(self) -> LagrangianSpec | None:
        return None if self.lagrangian is None else build_dataclass(LagrangianSpec, self.lagrangian, "lagrangian")


PER = ("step", "episode")
"""What a Lagrangian constraint's mean cost is over (:attr:`LagrangianSpec.per`)."""


@dataclass(frozen=True)
class LagrangianSpec:
    """An agent YAML's ``lagrangian`` section (:mod:`festgym.envs.constrained`)."""

    cost_limit: float | None = None
    """Mean ``info[cost_key]`` per step (or per episode, ``per``) to meet; absent: the background
    policy's own (Festina's on the default scenario) over ``baseline_episodes`` episodes, i.e.
    SLOs no worse than it."""
    per: str = "step"
    """What the mean is over: ``step``, or ``episode`` where the agent changes how many steps an
    episode of fixed simulated length has (``Spawn-v0``: absorbing meets the gate more often), so
    that a mean per step would dilute its violations."""
    multiplier: float = 1.0
    """λ at the start (1: the environment's own reward)."""
    lr: float = 0.5
    """Dual step after each rollout: λ += lr · (mean cost − limit) / limit, never below 0."""
    baseline_episodes: int = 4
    """Background-policy episodes that measure the default limit (seeds from :data:`BASELINE_SEED` up)."""
    cost_key: str = "cost"
    """The ``info`` entry held down (:data:`festgym.envs.constrained.COSTS`): ``cost`` (the reward's
    SLO terms) or ``ttft_over`` / ``gaps_over`` (counts of SLO violations, robust to overloaded episodes)."""

    def __post_init__(self):
        check_ranges(self, {"cost_key": self.cost_key in COSTS, "per": self.per in PER,
                            "cost_limit": self.cost_limit is None or self.cost_limit > 0,
                            "multiplier": self.multiplier >= 0, "lr": self.lr > 0,
                            "baseline_episodes": self.baseline_episodes >= 1},
                     {"cost_key": " or ".join(COSTS), "per": " or ".join(PER),
                      "cost_limit": "> 0 (or absent: the background policy's)",
                      "multiplier": "≥ 0", "lr": "> 0",
                      "baseline_episodes": "≥ 1"})


BASELINE_SEED = 20_000
"""First seed of the episodes that measure a Lagrangian limit: far from training's (the run's
seed up) and evaluation's (``eval_seed``, 10 000 up by default)."""


BACKENDS = ("sb3", "rllib")
"""Training libraries: stable-baselines3 (the train extra) or RLlib's new API stack (the rllib extra)."""


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
    backend: str = field(default="sb3", metadata={"choices": BACKENDS})
    """Training library: sb3 (stable-baselines3, the train extra) or rllib (RLlib's new API stack, PPO only,
    the rllib extra)."""
    env_runners: int | None = None
    """RLlib environment runners (Ray actors; default: the agent YAML's n_envs). Only with --backend rllib."""
    ray: str | None = field(default=None, metadata={"bare": LOCAL_RAY, "metavar": "ADDRESS"})
    """Train on the Ray cluster at ADDRESS (auto, ray://HOST:10001); default and bare --ray: a Ray started here.
    Only with --backend rllib."""

    def __post_init__(self) -> None:
        rllib = self.backend == "rllib"
        check_ranges(self, {"timesteps": self.timesteps is None or self.timesteps >= 1, "seed": self.seed >= 0,
                            "backend": self.backend in BACKENDS,
                            "env_runners": self.env_runners is None or (rllib and self.env_runners >= 0),
                            "ray": self.ray is None or rllib},
                     {"timesteps": "≥ 1", "seed": "≥ 0", "backend": " or ".join(BACKENDS),
                      "env_runners": "≥ 0, with --backend rllib", "ray": "only with --backend rllib"})


@dataclass(frozen=True)
class RllibSettings:
    """What an agent YAML becomes for RLlib's ``PPOConfig`` (:func:`rllib_settings`)."""

    training: dict[str, Any]
    """Keyword arguments of ``PPOConfig.training``."""
    model: dict[str, Any]
    """Keyword arguments of RLlib's ``DefaultModelConfig``."""
    env_runners: int
    """Environment runners (0: sample in the driver)."""
    norm_reward: bool
    """Normalise rewards per environment (gymnasium's ``NormalizeReward``), as the YAML's VecNormalize did."""
    clip_reward: float
    """Normalised rewards are clipped to ±this (VecNormalize's ``clip_reward``)."""
    value_clip: float | None
    """PPO's value-function clipping (SB3's ``clip_range_vf``); None: none (RLlib's ``vf_clip_param`` infinite)."""


SB3_PPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4, "n_steps": 2048, "batch_size": 64, "n_epochs": 10, "gamma": 0.99, "gae_lambda": 0.95,
    "clip_range": 0.2, "clip_range_vf": None, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5,
    "normalize_advantage": True,
}
"""stable-baselines3's PPO defaults: what a YAML that leaves a hyper-parameter out trains with."""
RLLIB_PPO_NAMES = {"learning_rate": "lr", "batch_size": "minibatch_size", "n_epochs": "num_epochs", "gamma": "gamma",
                   "gae_lambda": "lambda_", "clip_range": "clip_param", "ent_coef": "entropy_coeff",
                   "vf_coef": "vf_loss_coeff", "max_grad_norm": "grad_clip"}
"""SB3 PPO hyper-parameters that are one RLlib ``PPOConfig.training`` argument under another name."""
SB3_NET = {"net_arch": [64, 64], "activation_fn": "tanh"}
"""SB3's ``MlpPolicy`` for PPO: separate 64-64 tanh policy and value networks (RLlib's ``fcnet_hiddens``)."""


def rllib_settings(agent: AgentSpec, env_runners: int | None = None, source: str | Path = "agent YAML") \
        -> RllibSettings:
    """The agent YAML's PPO as RLlib trains it: the same data per update (``n_steps`` ·
    ``n_envs`` environment steps), minibatches, epochs, discount, GAE, clipping, entropy and value
    coefficients and gradient clipping; SB3's separate 64-64 tanh networks; no KL penalty and no
    value clipping (SB3 has neither by default). A hyper-parameter with no RLlib counterpart here is
    an error naming it, never dropped."""
    if agent.algo != "ppo":
        raise SpecError(source, "algo", f"{agent.algo!r}; --backend rllib trains ppo only")
    if agent.lagrangian is not None:
        raise SpecError(source, "lagrangian", "constrained training runs with --backend sb3 only; remove the section "
                          "for --backend rllib")
    if agent.normalize and agent.normalize.get("norm_obs", True):
        raise SpecError(source, "normalize.norm_obs", "true; --backend rllib exports no observation "
                          "statistics: set it to false (festgym's observations already lie in [0, 1])")
    unknown = set(agent.normalize) - {"norm_obs", "norm_reward", "clip_reward"}
    if unknown:
        raise SpecError(source, f"normalize.{sorted(unknown)[0]}", "no RLlib counterpart; remove it for "
                          "--backend rllib")
    params = {**SB3_PPO_DEFAULTS, **agent.hyperparams}
    net = _rllib_net(params.pop("policy_kwargs", {}), source)
    unknown = set(params) - set(SB3_PPO_DEFAULTS)
    if unknown:
        raise SpecError(source, f"hyperparams.{sorted(unknown)[0]}", f"no RLlib counterpart in festgym's "
                          f"translation (it knows {', '.join(sorted(SB3_PPO_DEFAULTS))}, policy_kwargs); remove it "
                          "for --backend rllib")
    if not params["normalize_advantage"]:
        raise SpecError(source, "hyperparams.normalize_advantage", "false; RLlib's PPO always "
                          "normalises advantages")
    if not isinstance(params["learning_rate"], (int, float)):
        raise SpecError(source, "hyperparams.learning_rate", f"{params['learning_rate']!r}; --backend "
                          "rllib takes a number")
    training = {RLLIB_PPO_NAMES[k]: params[k] for k in RLLIB_PPO_NAMES}
    training.update(train_batch_size_per_learner=int(params["n_steps"]) * agent.n_envs, grad_clip_by="global_norm",
                    use_kl_loss=False)
    vf_clip = params["clip_range_vf"]
    return RllibSettings(training=training, model=net,
                         env_runners=agent.n_envs if env_runners is None else env_runners,
                         norm_reward=bool(agent.normalize.get("norm_reward", False)),
                         clip_reward=float(agent.normalize.get("clip_reward", 10.0)),
                         value_clip=None if vf_clip is None else float(vf_clip))


def _rllib_net(policy_kwargs: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """RLlib's model config for SB3's ``policy_kwargs`` (``net_arch`` as a list, or as pi and vf
    lists that agree; ``activation_fn`` by name: tanh or relu)."""
    kwargs = {**SB3_NET, **policy_kwargs}
    unknown = set(kwargs) - set(SB3_NET)
    arch = kwargs["net_arch"]
    if isinstance(arch, dict) and arch.get("pi") == arch.get("vf") and set(arch) == {"pi", "vf"}:
        arch = arch["pi"]
    if unknown or not isinstance(arch, list) or str(kwargs["activation_fn"]).lower() not in ("tanh", "relu"):
        what = sorted(unknown)[0] if unknown else "net_arch" if not isinstance(arch, list) else "activation_fn"
        raise SpecError(source, f"hyperparams.policy_kwargs.{what}", f"{kwargs.get(what)!r}; --backend "
                          "rllib takes net_arch as a list of layer sizes (or equal pi and vf lists) and "
                          "activation_fn tanh or relu")
    return {"fcnet_hiddens": [int(n) for n in arch], "fcnet_activation": str(kwargs["activation_fn"]).lower(),
            "head_fcnet_hiddens": [], "vf_share_layers": False}


def load_agent(spec: str | Path) -> AgentSpec:
    """Read and validate an agent YAML, by path or by name (``ppo``: ``ppo.yaml`` in the
    user's agent folders or the shipped one, :data:`festgym.resources.AGENTS`); unknown keys are an
    error naming them."""
    path = AGENTS.resolve(spec, "{}.yaml")
    agent = build_dataclass(AgentSpec, read_mapping(path), path)
    if agent.lagrangian is not None:
        build_dataclass(LagrangianSpec, agent.lagrangian, f"{path}: lagrangian")  # its errors name the file
    return agent


def training_card(name: str, config: TrainConfig, agent: AgentSpec, timesteps: int, wall_s: float,
                  history: list[dict[str, Any]]) -> dict[str, Any]:
    """What every backend's ``card.json`` records of a run: scenario, agent, timesteps, seed, wall
    time and the evaluation history (each entry ``timesteps``, ``mean_reward``, ``std_reward``)."""
    return {
        "name": name,
        "scenario": config.scenario,
        "env": agent.env,
        "agent": asdict(agent),
        "timesteps": timesteps,
        "seed": config.seed,
        "wall_s": round(wall_s, 1),
        "evaluation": {"episodes": agent.eval_episodes, "first_seed": agent.eval_seed,
                       "best_mean_reward": max((h["mean_reward"] for h in history), default=None),
                       "history": history},
    }


def run_name(scenario: str, algo: str, seed: int, when: datetime | None = None) -> str:
    """``{scenario}__{algo}__{seed}__{time}``, as CleanRL names runs."""
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{Path(scenario).stem}__{algo}__{seed}__{stamp}"


__all__ = ["ALGORITHMS", "BACKENDS", "AgentSpec", "RllibSettings", "TrainConfig", "load_agent", "rllib_settings",
           "run_name", "training_card"]
