"""``festgym/LocalGPU-v0``: one GPU's local controller (clock and SM shares)."""

from __future__ import annotations

import numpy as np

from festgym.envs.core import ServingEnv, box
from festgym.sim.observation import (
    GPU_FEATURES,
    SLOT_FEATURES,
    TIME_FEATURES,
    local_features,
)


class LocalGpuEnv(ServingEnv):
    """
    ## Description

    The agent is the local controller of one GPU, the learned counterpart of Festina's
    phase-aware local scheduler. Co-resident models share the GPU under one device-wide SM clock
    and MPS-style SM shares, while their phases (compute-bound prefill, memory-bound decode) and
    their latency slack keep changing. Every control interval (1 simulated second by default) the
    agent sets the clock and the share of each model slot; the simulator then serves the
    requests of that interval (continuous batching, chunked prefill, KV cache, cold starts).

    The environment simulates the scenario's ``local`` sub-cluster: its GPU 0 is the agent's;
    the other GPUs of that group (none in the shipped scenarios), request placement, keep-alive
    and consolidation run the scenario's background policy (Festina by default). Only the
    ``local.models`` are served, at ``local.rate_rps``: the traffic one GPU of the full cluster
    carries under consolidation. Simulating one GPU instead of eight keeps a step near 0.1 ms.

    Domain randomisation (``local.pool``, ``local.rate_scale``): each episode fills the M slots
    with 1 to M models drawn from the pool, in popularity order, at a rate scaled by a factor
    drawn from ``rate_scale``, so that one controller learns every model of the cluster, alone
    or paired, at the loads it meets there (:class:`~festgym.policies.learned.LearnedLocal`
    fills a cluster GPU's slots the same way). Slots are then named ``slot0``, ``slot1``, ...

    ## Action Space

    ``MultiDiscrete([C] + [S] * M (+ [B] * M))`` for M model slots (``local.models``, in order):

    | Index      | Action                                                                  |
    |------------|-------------------------------------------------------------------------|
    | 0          | SM clock level: C levels evenly spaced over the GPU's control range     |
    |            | (30%..100% of the top clock), snapped to supported clocks               |
    | 1..M       | SM share weight of slot m: (k+1)/S; the weights of resident models are  |
    |            | scaled down to sum ≤ 1 and quantised down to 5% steps                   |
    | M+1..2M    | (if ``env.batch_caps``) batch limit of slot m: ``batch_caps[k]``        |

    C = ``env.clock_levels`` (8), S = ``env.share_levels`` (4). Slots whose model is not resident
    are ignored. With ``action_type="box"`` the same components are a ``Box(-1, 1)``, component
    i giving level ⌊(a+1)/2 · n_i⌋.

    **Residual** (``env.residual_steps`` = R ≥ 1): ``MultiDiscrete([2R + 1])``, level j moving
    the background policy's own clock decision for the GPU by j − R levels of its clock grid
    (shares, placement and the rest stay the background's). The middle level (0 in a Box) is the
    background policy bit for bit, so training starts from Festina (tested).

    ## Observation Space

    ``Box(0, 1, (10·M + 8 + 2,), float32)``, every feature in [0, 1]; ``squash(x) = x/(1+x)``
    reads 0.5 at x = 1 (for the SLO ratios: exactly at the SLO). ``feature_names`` lists them.

    | Index          | Observation (slot m, then the GPU, then the time)        | Unit / scale         |
    |----------------|----------------------------------------------------------|----------------------|
    | 10m + 0        | model m resident on the GPU                              | 0/1                  |
    | 10m + 1        | loaded and able to run                                   | 0/1                  |
    | 10m + 2        | SM share (pending one during a change)                   | fraction of SMs      |
    | 10m + 3        | squash(waiting requests / 16)                            | requests             |
    | 10m + 4        | running sequences / batch limit                          | fraction             |
    | 10m + 5        | prompt share of the next iteration's tokens              | fraction             |
    | 10m + 6        | KV cache in use                                          | fraction             |
    | 10m + 7        | squash(max TTFT since last step, oldest wait) / TTFT SLO | SLO units, squashed  |
    | 10m + 8        | squash(longest inter-token gap since last step / TBT SLO)| SLO units, squashed  |
    | 10m + 9        | exp(−time since the last request routed here / 10 s)     | —                    |
    | 10M + 0        | GPU power / TDP                                          | fraction             |
    | 10M + 1        | SM clock position in the control range                   | fraction             |
    | 10M + 2        | free GPU memory                                          | fraction             |
    | 10M + 3..7     | GPU state one-hot: busy, loading, idle, waking, parked   | 0/1                  |
    | 10M + 8, 9     | (1 + sin)/2, (1 + cos)/2 of the diurnal phase            | —                    |

    ## Rewards

    :class:`~festgym.sim.reward.EnergySLOReward` over the agent's GPU for the interval:
    −energy/(TDP·interval) − λ_TTFT·TTFT lateness − λ_TBT·TBT excess, weights from the scenario's
    ``reward``. ``info`` holds every term, the raw joules and the interval's TTFT/TBT attainment.

    ## Starting State

    A fresh seeded workload; the background policy runs alone for ``env.warmup_s`` (60 s) so
    that models are loaded and serving when the agent takes over.

    ## Episode End

    Never terminated; truncated after ``env.episode_s`` simulated seconds (600 steps by default).

    ## Arguments

    ``gym.make("festgym/LocalGPU-v0", scenario="default", action_type="multidiscrete",
    render_mode=None, **overrides)``: ``scenario`` is a scenario's name, a path or a mapping;
    overrides replace scenario sections (``env={"episode_s": 300}``, ``local={"rate_rps": 6}``),
    and an unknown key is an error naming it.

    ## Version History

    * v0: initial release (``local.pool`` and ``local.rate_scale`` added later; without them an
      episode draws exactly what it did before).
    """

    local = True
    residual_capable = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        env, local = self.scenario.env, self.scenario.local
        self.models = local.models
        """This episode's slot models (fewer than the slots when ``local.pool`` draws fewer)."""
        m = len(local.models)
        slots = [f"slot{k}" for k in range(m)] if local.pool else list(local.models)
        if env.residual_steps:
            nvec, labels = [2 * env.residual_steps + 1], ["clock_adjust"]
        else:
            nvec = [env.clock_levels] + [env.share_levels] * m + ([len(env.batch_caps)] * m if env.batch_caps else [])
            labels = ["clock"] + [f"share[{x}]" for x in slots] + \
                     ([f"batch_cap[{x}]" for x in slots] if env.batch_caps else [])
        self._set_action_space(nvec, labels)
        self.feature_names = tuple(f"{x}.{f}" for x in slots for f in SLOT_FEATURES) + \
            tuple(f"gpu.{f}" for f in GPU_FEATURES) + TIME_FEATURES
        self.observation_space = box(len(self.feature_names))
        self._slots = self._slot_index(self.models)

    def _slot_index(self, models: tuple[str, ...]) -> list[int]:
        """Model numbers of the slots; -1 for an empty one."""
        empty = len(self.scenario.local.models) - len(models)
        return [self.sim.model_names.index(x) for x in models] + [-1] * empty

    def _trace(self, seed: int, duration_s: float):
        local = self.scenario.local
        self.models, rate = local.draw(self.np_random, self.sim.model_names)
        self._slots = self._slot_index(self.models)
        return self.scenario.trace(seed, duration_s, local=True, models=self.models, rate_rps=rate)

    def _controlled(self) -> list[int]:
        return [0]

    def _apply(self, levels: list[int]) -> None:
        residual = self.scenario.env.residual_steps
        if residual:
            self.agent.steps[0] = int(levels[0]) - residual
            return
        m = len(self.scenario.local.models)
        gpu = self.sim.gpus[0]
        self.set_control(gpu, self.models, int(levels[0]), levels[1:1 + m], levels[1 + m:])

    def _observe(self) -> np.ndarray:
        gpu = self.sim.gpus[0]
        return np.asarray(local_features(gpu, self._slots, self.sim.now, self.decoder.clock_lo[gpu.spec.name],
                                         self.period_s), dtype=np.float32)
