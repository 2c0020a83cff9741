"""Batched festgym environments: N environments of one id stepped in one process, no subprocesses.

``gym.make_vec("festgym/LocalGPU-v0", num_envs=8)`` builds a :class:`ServingVectorEnv` (each id's
``vector_entry_point``); ``vectorization_mode="sync"`` or ``"async"`` still gives Gymnasium's own.
Results are those of ``SyncVectorEnv`` over the same environments bit for bit (tested), with
Gymnasium's autoreset semantics (``AutoresetMode.NEXT_STEP``: the step after an episode ends
resets that environment, ignores its action, and returns its first observation with reward 0),
its seeding (``reset(seed=s)`` seeds environment i with ``s + i``) and its info convention (a key
maps to an array over the environments, ``_key`` to the mask of those that gave it). What it
saves: one validation of the whole batch of actions instead of one per environment, observations
written into one array, and none of ``gym.make``'s wrappers (the environment checker ran on the
ids' single environments: ``tests/envs``). ``benchmarks/vector_env.py`` measures it against Gymnasium's.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from festgym.envs.core import ServingEnv


class ServingVectorEnv(VectorEnv):
    """``num_envs`` environments of class ``env_class``, each built with ``kwargs``."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}  # noqa: RUF012 (Gymnasium's)

    def __init__(self, env_class: type[ServingEnv], num_envs: int, **kwargs: Any):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a whole number ≥ 1, got {num_envs!r}")
        kwargs.pop("max_episode_steps", None)  # episodes end by simulated time (env.episode_s), as the single env's
        self.envs = [env_class(**kwargs) for _ in range(num_envs)]
        first = self.envs[0]
        self.num_envs = num_envs
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, num_envs)
        self.action_space = batch_space(first.action_space, num_envs)
        self.nvec = first.nvec
        self.box = first.action_type == "box"
        shape = first.observation_space.shape
        assert shape is not None  # festgym's observations are boxes
        self._obs = np.zeros((num_envs, *shape), dtype=first.observation_space.dtype)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)] if not isinstance(seed, list) \
            else seed
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset(seed=...): {len(seeds)} seeds for {self.num_envs} environments")
        infos: dict[str, Any] = {}
        for i, (env, s) in enumerate(zip(self.envs, seeds)):
            self._obs[i], info = env.reset(seed=s, options=options)
            infos = self._add_info(infos, info, i)
        self._autoreset[:] = False
        return self._obs.copy(), infos

    def step(self, actions):
        levels = self._levels(actions)
        n = self.num_envs
        rewards = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        infos: list[dict[str, Any]] = []
        for i, env in enumerate(self.envs):
            if self._autoreset[i]:
                self._obs[i], info = env.reset()
            else:
                if env._episode is None:
                    raise gym.error.ResetNeeded(f"{type(self).__name__}: call reset() before step()")
                self._obs[i], rewards[i], terminated[i], truncated[i], info = env.step_levels(levels[i], actions[i])
            infos.append(info)
        self._autoreset = terminated | truncated
        return self._obs.copy(), rewards, terminated, truncated, self._batch_infos(infos)

    def _batch_infos(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        """Gymnasium's vector infos (what ``_add_info`` builds one environment at a time): when every
        environment gave the same keys of plain numbers, one array per key at once."""
        keys = infos[0].keys()
        if all(info.keys() == keys for info in infos) and \
                all(type(v) in (float, int, bool) for v in infos[0].values()):
            out: dict[str, Any] = {}
            mask = np.ones(self.num_envs, dtype=np.bool_)
            for key, first in infos[0].items():
                column = [info[key] for info in infos]
                if all(type(v) is type(first) for v in column):
                    out[key], out[f"_{key}"] = np.array(column, dtype=type(first)), mask.copy()
                else:  # mixed types: as _add_info casts them, into the first one's
                    array = np.zeros(self.num_envs, dtype=type(first))
                    array[:] = column
                    out[key], out[f"_{key}"] = array, mask.copy()
            return out
        merged: dict[str, Any] = {}
        for i, info in enumerate(infos):
            merged = self._add_info(merged, info, i)
        return merged

    def _levels(self, actions) -> list[list[int]]:
        """The whole batch validated at once (each error names the environment and the component),
        then one level list per environment."""
        a = np.asarray(actions)
        shape = (self.num_envs, len(self.nvec))
        labels = self.envs[0].action_labels
        if a.shape != shape:
            raise ValueError(f"{type(self).__name__}: actions have shape {a.shape}, expected {shape} "
                             f"(one row per environment: {', '.join(labels)})")
        if self.box:
            bad = ~((a >= -1 - 1e-6) & (a <= 1 + 1e-6))  # NaN fails too
            if bad.any():
                i, j = map(int, np.argwhere(bad)[0])
                raise ValueError(f"{type(self).__name__}: actions[{i}, {j}] ({labels[j]}) = {a[i, j]!r} "
                                 "is outside [-1, 1]")
            levels = ((a.astype(np.float64) + 1) / 2 * self.nvec).astype(np.int64)
            return np.minimum(levels, self.nvec - 1).tolist()
        if a.dtype.kind not in "iu":
            if a.dtype.kind != "f" or not np.all(np.isfinite(a) & (a == np.floor(a))):
                raise ValueError(f"{type(self).__name__}: actions must hold whole numbers, got {a.tolist()}")
            a = a.astype(np.int64)
        bad = (a < 0) | (a >= self.nvec)
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            raise ValueError(f"{type(self).__name__}: actions[{i}, {j}] ({labels[j]}) = {a[i, j]} is outside "
                             f"0..{self.nvec[j] - 1}")
        return a.tolist()

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def local_gpu(num_envs: int = 1, **kwargs: Any) -> ServingVectorEnv:
    from festgym.envs.local_gpu import LocalGpuEnv

    return ServingVectorEnv(LocalGpuEnv, num_envs, **kwargs)


def placement(num_envs: int = 1, **kwargs: Any) -> ServingVectorEnv:
    from festgym.envs.placement import PlacementEnv

    return ServingVectorEnv(PlacementEnv, num_envs, **kwargs)


def cluster(num_envs: int = 1, **kwargs: Any) -> ServingVectorEnv:
    from festgym.envs.cluster import ClusterEnv

    return ServingVectorEnv(ClusterEnv, num_envs, **kwargs)


def spawn(num_envs: int = 1, **kwargs: Any) -> ServingVectorEnv:
    from festgym.envs.spawn import SpawnEnv

    return ServingVectorEnv(SpawnEnv, num_envs, **kwargs)


__all__ = ["ServingVectorEnv", "cluster", "local_gpu", "placement", "spawn"]
