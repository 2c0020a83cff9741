"""``festgym/Spawn-v0``: Festina's placement, except the choice at its spawn gate."""

from __future__ import annotations

import numpy as np

from festgym.envs.core import ServingEnv, box
from festgym.policies.festina import Festina, SpawnGate
from festgym.policies.gate import GATE_FEATURES, GATE_LEVELS, gate_features
from festgym.sim.views import Request


class SpawnEnv(ServingEnv):
    """
    ## Description

    A residual placement controller: Festina places every request, local control and
    consolidation stay Festina's, and the agent decides only where Festina's placement decides
    whether to start an engine. That is the spawn gate: no ready instance of the request's model
    passes its SLOs with it, none is loading, and one is ready. Festina then sends the request to
    the least-loaded instance (absorbing a burst) until ``spawn_after`` requests in a row have
    met the gate, and starts a new instance at the next (on the GPU its best-fit rule picks). A
    new instance costs a cold start's energy and the engine's resident power until keep-alive
    ends; absorbing costs the absorbed requests' lateness. The agent sees one step per request
    at the gate; every other request is placed by Festina between steps.

    ## Action Space

    ``MultiDiscrete([3])``: 0 absorbs the request into the least-loaded instance, 1 leaves the
    choice to Festina, 2 starts a new instance (``action_type="box"``: ``Box(-1, 1, (1,))``, whose
    middle third is Festina's choice). Action 1 at every step is Festina bit for bit.

    ## Observation Space

    ``Box(0, 1, (27,), float32)``, model-agnostic (:data:`festgym.policies.gate.GATE_FEATURES`):
    squash(prompt tokens / 1024); Festina's choice (1: spawn) and squash(requests in a row at
    the gate / spawn_after); the least-loaded instance as ``LocalGPU-v0`` observes a one-slot GPU
    (its slot, its GPU, the time of day); squash(the model's instances / 4), squash(its sequences
    queued or running / 64), the share of GPUs parked, the share of GPUs a new instance fits on.
    All zeros but the time when no request is at the gate (the episode's end).

    ## Rewards

    :class:`~festgym.sim.reward.EnergySLOReward` over the whole cluster from this gate to the
    next (energy over G·TDP·control interval, as ``Placement-v0``), all terms in ``info``.

    ## Starting State

    A fresh seeded workload after ``env.warmup_s`` of Festina alone; the first observation is the
    first request at the gate after it.

    ## Episode End

    Truncated at the first gate after ``env.episode_s`` simulated seconds (or when no request
    reaches it again); never terminated.

    ## Arguments

    As ``LocalGPU-v0``. The scenario's background policy must be Festina (its placement owns the
    gate).

    ## Version History

    * v0: initial release.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        festina = self.agent.background
        if not isinstance(festina, Festina):
            raise ValueError(f"Spawn-v0: the scenario's policy {self.scenario.policy!r} has no spawn gate; "
                             "set policy: festina")
        self.festina = festina
        self.models = self.sim.model_names
        self._set_action_space([len(GATE_LEVELS)], ["spawn"])
        self.feature_names = GATE_FEATURES
        self.observation_space = box(len(self.feature_names))
        self.request: Request | None = None
        self.gate: SpawnGate | None = None

    def _controlled(self) -> list[int]:
        return []  # local control stays with the background policy

    def _metered(self) -> list[int]:
        return list(range(len(self.sim.gpu_types)))

    def _begin(self) -> None:
        self._next_gate()

    def _apply(self, levels: list[int]) -> None:
        if self.gate is not None and levels[0] != 1:
            self.festina.spawn_override = levels[0] == 2

    def _advance(self) -> float:
        self._next_gate()
        return self.sim.now if self.request is not None else self.t_end

    def _next_gate(self) -> None:
        """Run the simulator (Festina placing every request) to the next request at the gate."""
        sim, trace = self.sim, self.sim.trace
        while True:
            rid = sim.advance(self.t_end, hold_arrivals=True)
            if rid is None:
                self.request, self.gate = None, None
                return
            name = self.models[int(sim.trace_model[trace.model[rid]])]
            request = Request(rid, name, int(trace.prompt_tokens[rid]), sim.now)
            gate = self.festina.spawn_gate(request, sim.view)
            if gate is not None:
                self.request, self.gate = request, gate
                return

    def _observe(self) -> np.ndarray:
        if self.request is None or self.gate is None:
            return np.asarray([0.0] * (len(GATE_FEATURES) - 6) + self._time() + [0.0] * 4, dtype=np.float32)
        gpu = self.sim.gpus[self.gate.absorb_gpu]
        return np.asarray(gate_features(self.request, self.gate, self.sim.view, self.festina.config.spawn_after,
                                        self.decoder.clock_lo[gpu.spec.name], self.period_s), dtype=np.float32)
