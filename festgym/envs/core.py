"""What the three environments share: the scenario, the simulator stepped between decisions, the
agent's slot in the policy, action decoding and the reward meter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from festgym.control.actions import Action, GpuControl
from festgym.control.decoder import LevelDecoder, box_level
from festgym.policies.registry import background_policy
from festgym.policies.residual import ClockSteps, base_clock_levels
from festgym.scenario import Scenario, load_scenario
from festgym.sim.gpu import SimGpu
from festgym.sim.lifecycle import Mechanisms
from festgym.sim.observation import time_features
from festgym.sim.policy import BasePolicy, Policy
from festgym.sim.reward import EnergySLOReward, Meter
from festgym.sim.views import ClusterView, GpuView, Request

ACTION_TYPES = ("multidiscrete", "box")


class RenderModeError(ValueError, TypeError):
    """An unsupported ``render_mode``. Also a TypeError: SB3's ``make_vec_env`` asks for
    ``rgb_array`` unless told otherwise and retries without a render mode on a TypeError."""


class AgentPolicy(BasePolicy):
    """The background rule policy, except where the environment's agent acts.

    The background policy's ``control`` is not called for the agent's GPUs; what its placement
    and consolidation need to know about them it reads from the live state (Festina computes its
    load estimates on demand). When the agent's GPU is the only one, requests go straight to it.
    """

    def __init__(self, background: Policy, controlled: Sequence[int], n_gpus: int):
        self.background = background
        self.controlled = frozenset(controlled)
        self.only_gpu = controlled[0] if n_gpus == 1 and len(controlled) == 1 else None
        self.name = f"agent+{getattr(background, 'name', 'policy')}"
        self.mechanisms = getattr(background, "mechanisms", Mechanisms())  # its engines live as the background's
        self.active = False
        self.defer = False  # this step, the background policy decides for the agent too
        self.pending: dict[int, Callable[[], GpuControl]] = {}
        self.routes: dict[str, int] = {}
        self.target: int | None = None
        self.residual: ClockSteps | None = None  # a residual agent: it adjusts the background's decisions
        self.steps: dict[int, int] = {}  # its clock adjustment per GPU
        foresee = getattr(background, "foresee", None)
        if foresee is not None:  # a planner with foresight (the clairvoyant reference) plans as it would alone
            self.foresee = foresee

    def reset(self, cluster: ClusterView) -> None:
        self.active, self.pending, self.routes, self.target, self.steps = False, {}, {}, None, {}
        self.background.reset(cluster)

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        if self.active and not self.defer and self.residual is None:  # a residual agent places as the background
            if self.only_gpu is not None:
                return self.only_gpu  # one GPU, the agent's: nothing to choose
            if self.target is not None:
                target, self.target = self.target, None
                return target
            route = self.routes.get(request.model)
            if route is not None:
                return route
        return self.background.place(request, cluster)

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        if self.active and not self.defer and gpu.index in self.controlled:
            if self.residual is not None:
                return self.residual.shift(self.background.control(gpu, now), gpu, self.steps.get(gpu.index, 0))
            build = self.pending.pop(gpu.index, None)
            return build() if build is not None else None  # built now: residents may have changed
        return self.background.control(gpu, now)

    def consolidate(self, cluster: ClusterView, now: float) -> Sequence[Action]:
        return self.background.consolidate(cluster, now)


class ServingEnv(gym.Env):
    """Base class: subclasses define the spaces, :meth:`_apply`, :meth:`_observe` and which GPUs
    the agent controls (``controlled``)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}  # noqa: RUF012 (Gymnasium declares it so)
    local = False
    """Simulate the scenario's ``local`` sub-cluster instead of the whole cluster."""
    residual_capable = False
    """Whether ``env.residual_steps`` may turn the agent into a residual controller."""

    def __init__(self, scenario: str | Scenario | dict = "default", action_type: str = "multidiscrete",
                 render_mode: str | None = None, **overrides: Any):
        if action_type not in ACTION_TYPES:
            raise ValueError(f"action_type {action_type!r}: expected one of {', '.join(ACTION_TYPES)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise RenderModeError(f"render_mode {render_mode!r}: expected one of {self.metadata['render_modes']} "
                                  "or None")
        self._args = (scenario, action_type, render_mode, overrides)  # for pickling (see __getstate__)
        self._episode: dict | None = None
        self.scenario = load_scenario(scenario, **overrides)
        self.action_type = action_type
        self.render_mode = render_mode
        self.sim = self.scenario.simulator(local=self.local)
        self.interval_s = self.scenario.sim.control_interval_s
        self.controlled = self._controlled()
        self.agent = AgentPolicy(background_policy(self.scenario), self.controlled, len(self.sim.gpu_types))
        env = self.scenario.env
        if env.residual_steps:
            if not self.residual_capable:
                raise ValueError(f"{type(self).__name__}: env.residual_steps is for LocalGPU-v0 (here: set it to 0)")
            self.agent.residual = ClockSteps(base_clock_levels(self.agent.background))
        ladders = {t: s.sm_clocks_mhz for t, s in self.sim.specs.items()}
        self.decoder = LevelDecoder(ladders, env.clock_levels, env.share_levels, env.batch_caps)
        self.clocks = self.decoder.clocks
        self.period_s = self.scenario.workload.diurnal_period_s
        self.t = 0.0
        self.t_end = 0.0

    # --- subclass hooks -----------------------------------------------------------------------

    def _controlled(self) -> list[int]:
        """GPUs whose clock and shares the agent sets."""
        raise NotImplementedError

    def _metered(self) -> list[int]:
        """GPUs whose energy and SLO counters make the reward."""
        return self.controlled

    def _apply(self, levels: list[int]) -> None:
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        raise NotImplementedError

    # --- actions ------------------------------------------------------------------------------

    def _set_action_space(self, nvec: Sequence[int], labels: Sequence[str]) -> None:
        self.nvec = np.asarray(nvec, dtype=np.int64)
        self._nvec = self.nvec.tolist()
        self.action_labels = tuple(labels)
        if self.action_type == "box":
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(len(self.nvec),), dtype=np.float32)
        else:
            self.action_space = gym.spaces.MultiDiscrete(self.nvec)

    def _levels(self, action) -> list[int]:
        """Validate ``action`` and turn it into one level index per component (plain Python on a
        few dozen numbers: cheaper than array operations at this size)."""
        a = np.asarray(action)
        if a.shape != self.nvec.shape:
            raise ValueError(f"{type(self).__name__}: action has shape {a.shape}, expected {self.nvec.shape} "
                             f"({', '.join(self.action_labels)})")
        values = a.tolist()
        if self.action_type == "box":
            levels = []
            for i, (v, n) in enumerate(zip(values, self._nvec)):
                if not -1 - 1e-6 <= v <= 1 + 1e-6:  # NaN fails too
                    raise ValueError(f"{type(self).__name__}: action[{i}] ({self.action_labels[i]}) = {v!r} "
                                     "is outside [-1, 1]")
                levels.append(box_level(v, n))
            return levels
        if a.dtype.kind not in "iu":
            if not all(isinstance(v, (int, float)) and float(v).is_integer() for v in values):
                raise ValueError(f"{type(self).__name__}: action {values} must hold whole numbers")
            values = [int(v) for v in values]
        for i, (v, n) in enumerate(zip(values, self._nvec)):
            if not 0 <= v < n:
                raise ValueError(f"{type(self).__name__}: action[{i}] ({self.action_labels[i]}) = {v} is outside "
                                 f"0..{n - 1}")
        return values

    def set_control(self, gpu: SimGpu, models: Sequence[str], clock: int, shares: Sequence[int],
                    caps: Sequence[int] = ()) -> None:
        """Queue the agent's control of ``gpu`` for the next tick (built then, from the models
        resident at that moment)."""
        self.agent.pending[gpu.index] = partial(self.gpu_control, gpu, models, clock, shares, caps)

    def gpu_control(self, gpu: SimGpu, models: Sequence[str], clock: int, shares: Sequence[int],
                    caps: Sequence[int] = ()) -> GpuControl:
        """The control of one GPU from levels (:class:`~festgym.control.decoder.LevelDecoder`), for
        the models resident at this moment."""
        present = tuple([inst.name for inst in gpu.instances])
        return self.decoder.control(gpu.spec.name, present, models, clock, shares, caps)

    # --- gymnasium API --------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # What replays this episode: the generator before its draw, and the actions that follow.
        self._episode = {"rng": self.np_random.bit_generator.state, "seed": self.np_random_seed, "actions": []}
        return self._restart()

    def _restart(self):
        env = self.scenario.env
        trace = self._trace(int(self.np_random.integers(2**63 - 1)), env.warmup_s + env.episode_s)
        self.sim.start(trace, self.agent)
        self.sim.advance(env.warmup_s)
        self.agent.active = True
        self.t = self.sim.now
        self.t_end = float(env.warmup_s + env.episode_s)
        self._begin()
        gpus = [self.sim.gpus[i] for i in self._metered()]
        self.meter = Meter(gpus)
        self.meter.start(self.sim.now)
        reference = sum(g.spec.tdp_w for g in gpus) * self.interval_s
        self.reward_fn = EnergySLOReward(self.scenario.reward, reference)
        return self._observe(), {"time_s": float(self.sim.now)}

    def _trace(self, seed: int, duration_s: float):
        """This episode's workload."""
        return self.scenario.trace(seed, duration_s, local=self.local)

    def _begin(self) -> None:
        """Advance to the first decision (control envs: already there)."""

    def step(self, action):
        """Gymnasium ``step``. ``action=None`` lets the background policy decide this step for
        the agent's GPUs too (how the rule policy is scored on the same reward)."""
        if self._episode is None:
            raise gym.error.ResetNeeded(f"{type(self).__name__}: call reset() before step()")
        return self.step_levels(None if action is None else self._levels(action), action)

    def step_levels(self, levels: list[int] | None, action):
        """``step`` with ``action`` already validated into ``levels`` (None: the background policy
        decides); what :class:`~festgym.envs.vector.ServingVectorEnv` calls, having validated a batch."""
        assert self._episode is not None  # step() and the vector env check it first
        self.agent.defer = levels is None
        if levels is not None:
            self._apply(levels)
        self._episode["actions"].append(None if action is None else np.array(action, copy=True))
        until = self._advance()
        reward, info = self.reward_fn(self.meter.read(self.sim.now))
        info["time_s"] = float(self.sim.now)
        truncated = until >= self.t_end - 1e-9
        return self._observe(), float(reward), False, truncated, info

    def _advance(self) -> float:
        """Run the simulator to the next decision; return its time."""
        self.t = min(self.t + self.interval_s, self.t_end)
        self.sim.advance(self.t)
        return self.t

    # --- pickling ---------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        """An environment pickles as its constructor arguments plus the episode so far (the
        generator state at reset and the actions since), and unpickles by replaying them: the
        simulator is deterministic, so the copy reaches the same state bit for bit. The pickle
        stays small and does not depend on the simulator's (possibly compiled) classes."""
        return {"args": self._args, "episode": self._episode, "spec": getattr(self, "spec", None)}

    def __setstate__(self, state: dict) -> None:
        scenario, action_type, render_mode, overrides = state["args"]
        type(self).__init__(self, scenario, action_type, render_mode, **overrides)
        self.spec = state["spec"]
        episode = state["episode"]
        if episode is None:
            return
        self._np_random = np.random.Generator(np.random.PCG64())
        self._np_random.bit_generator.state = episode["rng"]
        self._np_random_seed = episode["seed"]
        self._episode = {"rng": episode["rng"], "seed": episode["seed"], "actions": []}
        self._restart()
        for action in episode["actions"]:
            self.step(action)

    def _time(self) -> list[float]:
        return time_features(self.sim.now, self.period_s)

    def render(self):
        if self.render_mode != "ansi":
            return None
        lines = [f"t={self.sim.now:8.1f}s"]
        for i in self._metered():
            g = self.sim.gpus[i]
            models = ", ".join(f"{inst.name}: share {inst.share:.2f} batch {len(inst.decoding)} "
                               f"queue {len(inst.waiting)}" for inst in g.instances)
            lines.append(f"  GPU {i} {g.spec.name} {g.clock:6.0f} MHz {g.power_w:6.1f} W  {models or 'empty'}")
        return "\n".join(lines)


def box(n: int) -> gym.spaces.Box:
    """The observation space: ``n`` features in [0, 1]."""
    return gym.spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32)


__all__ = ["ACTION_TYPES", "AgentPolicy", "RenderModeError", "ServingEnv", "box"]
