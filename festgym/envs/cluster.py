"""``festgym/Cluster-v0``: every GPU's clock and shares, plus per-model routing."""

from __future__ import annotations

import numpy as np

from festgym.envs.core import ServingEnv, box
from festgym.sim.observation import (
    GPU_FEATURES,
    SLOT_FEATURES,
    TIME_FEATURES,
    cluster_features,
)


class ClusterEnv(ServingEnv):
    """
    ## Description

    Joint control of the whole cluster, the full problem: every control interval the agent sets
    each GPU's SM clock and the SM share of every model on it, and routes each model's arrivals
    of the coming interval to a GPU of its choice (cold-starting the model there if needed) or
    leaves them to the background policy's placement. Consolidation (migration, parking) and
    keep-alive stay with the background policy (Festina by default).

    ## Action Space

    ``MultiDiscrete([C] * G + [S] * (G·M) + [G + 1] * M)`` for G GPUs and M models:

    | Index               | Action                                                        |
    |---------------------|---------------------------------------------------------------|
    | g                   | clock level of GPU g (C levels over its control range)        |
    | G + g·M + m         | share weight (k+1)/S of model m on GPU g (if resident)        |
    | G + G·M + m         | route of model m: 0 = background placement, k = GPU k−1       |

    Shares are renormalised per GPU as in ``LocalGPU-v0``. Routing to a GPU without memory for
    the model rejects the request (counted as ``rejected_memory``, and in the reward as a first
    token a cold start late: ``info["rejected"]``). ``action_type="box"`` gives
    the same components as a ``Box(-1, 1)``.

    ## Observation Space

    ``Box(0, 1, (G·(8 + 10·M) + 2,), float32)``: per GPU its features (power/TDP, clock position,
    free memory, state one-hot) followed by the slot features of each model on it (see
    :mod:`festgym.sim.observation`); then the time of day. ``feature_names`` lists them.

    ## Rewards

    :class:`~festgym.sim.reward.EnergySLOReward` over every GPU for the interval (energy over
    G·TDP·interval); all terms in ``info``.

    ## Starting State

    A fresh seeded workload after ``env.warmup_s`` of the background policy alone.

    ## Episode End

    Truncated after ``env.episode_s`` simulated seconds; never terminated.

    ## Arguments

    As ``LocalGPU-v0``: ``scenario``, ``action_type``, ``render_mode`` and section overrides.

    ## Version History

    * v0: initial release.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        env = self.scenario.env
        self.models = self.sim.model_names
        g, m = len(self.sim.gpu_types), len(self.models)
        nvec = [env.clock_levels] * g + [env.share_levels] * (g * m) + [g + 1] * m
        labels = [f"clock[gpu {i}]" for i in range(g)] + \
            [f"share[gpu {i}, {x}]" for i in range(g) for x in self.models] + [f"route[{x}]" for x in self.models]
        self._set_action_space(nvec, labels)
        self.feature_names = tuple(name for i in range(g) for name in
                                   [f"gpu{i}.{f}" for f in GPU_FEATURES]
                                   + [f"gpu{i}.{x}.{f}" for x in self.models for f in SLOT_FEATURES]) + TIME_FEATURES
        self.observation_space = box(len(self.feature_names))

    def _controlled(self) -> list[int]:
        return list(range(len(self.sim.gpu_types)))

    def _apply(self, levels: list[int]) -> None:
        g, m = len(self.sim.gpus), len(self.models)
        for i, gpu in enumerate(self.sim.gpus):
            shares = levels[g + i * m: g + (i + 1) * m]
            self.set_control(gpu, self.models, int(levels[i]), shares)
        routes = levels[g + g * m:]
        self.agent.routes = {x: int(r) - 1 for x, r in zip(self.models, routes) if r > 0}

    def _observe(self) -> np.ndarray:
        features = cluster_features(self.sim.gpus, len(self.models), self.sim.now, self.decoder.clock_lo, self.period_s)
        return np.asarray(features, dtype=np.float32)
