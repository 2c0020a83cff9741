"""``festgym/Placement-v0``: place each arriving request on a GPU."""

from __future__ import annotations

import numpy as np

from festgym.envs.core import ServingEnv, box
from festgym.sim.observation import (
    GPU_FEATURES,
    SLOT_FEATURES,
    TIME_FEATURES,
    gpu_features,
    slot_features,
    squash,
)

PROMPT_REF = 1024.0
LOAD_REF = 64.0


class PlacementEnv(ServingEnv):
    """
    ## Description

    The agent is the global placement: on each arriving request it picks the GPU that serves
    it. If the model is resident there the request joins that instance's queue; otherwise the
    model cold-starts there (waking the GPU if parked) and the request waits for it. Local control
    (clock, shares) and consolidation follow the scenario's background policy (Festina).

    ## Action Space

    ``MultiDiscrete([G])``: the GPU index (``action_type="box"``: ``Box(-1, 1, (1,))``). A GPU
    without memory for the model rejects the request (``rejected_memory`` in the results; the
    reward charges it as a first token a cold start there late, ``info["rejected"]``).

    ## Observation Space

    ``Box(0, 1, (M + 1 + G·(8 + 10 + 2) + 2,), float32)``: the request (model one-hot,
    squash(prompt tokens / 1024)); per GPU its features, the slot features of the request's model
    there (zeros if absent), whether the model fits or is resident (1/0), and
    squash(sequences queued or running on the GPU / 64); then the time of day.

    ## Rewards

    :class:`~festgym.sim.reward.EnergySLOReward` over the whole cluster from this arrival to the
    next (energy over G·TDP·control interval, so a step's energy term is small and the sum over
    an interval matches ``Cluster-v0``'s scale).

    ## Starting State

    A fresh seeded workload after ``env.warmup_s`` of the background policy alone; the first
    observation is the first request after it.

    ## Episode End

    Truncated at the first arrival after ``env.episode_s`` simulated seconds (or when no request
    is left); never terminated.

    ## Arguments

    As ``LocalGPU-v0``.

    ## Version History

    * v0: initial release.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.models = self.sim.model_names
        g = len(self.sim.gpu_types)
        self._set_action_space([g], ["gpu"])
        per_gpu = [f"{f}" for f in GPU_FEATURES] + [f"model.{f}" for f in SLOT_FEATURES] + ["fits", "load"]
        self.feature_names = tuple(f"request.{x}" for x in self.models) + ("request.prompt",) + \
            tuple(f"gpu{i}.{f}" for i in range(g) for f in per_gpu) + TIME_FEATURES
        self.observation_space = box(len(self.feature_names))
        self.rid: int | None = None

    def _controlled(self) -> list[int]:
        return []  # local control stays with the background policy

    def _metered(self) -> list[int]:
        return list(range(len(self.sim.gpu_types)))

    def _begin(self) -> None:
        self.rid = self.sim.advance(self.t_end, hold_arrivals=True)

    def _apply(self, levels: list[int]) -> None:
        self.agent.target = int(levels[0])

    def _advance(self) -> float:
        self.rid = self.sim.advance(self.t_end, hold_arrivals=True)
        return self.sim.now if self.rid is not None else self.t_end

    def _observe(self) -> np.ndarray:
        sim = self.sim
        now = sim.now
        trace = sim.trace
        out = [0.0] * len(self.models)
        model = 0
        if self.rid is not None:
            model = int(sim.trace_model[trace.model[self.rid]])
            out[model] = 1.0
            out.append(squash(trace.prompt_tokens[self.rid] / PROMPT_REF))
        else:
            out.append(0.0)
        name = self.models[model]
        for gpu in sim.gpus:
            inst = gpu.instance_of(model)
            out += gpu_features(gpu, self.decoder.clock_lo[gpu.spec.name])
            out += slot_features(inst, now)
            load = sum(len(i.waiting) + len(i.decoding) + len(i.prefilling) for i in gpu.instances)
            out += [1.0 if sim.can_host(gpu.index, name) else 0.0, squash(load / LOAD_REF)]
        out += self._time()
        return np.asarray(out, dtype=np.float32)
