"""Spawn-gate controllers: what one observes (``Spawn-v0``) and how a trained one runs.

The observation is read from the policy views only, so that the environment and a trained
controller in any scenario compute the same numbers. It is model-agnostic (no model one-hot:
SLO ratios, fractions and counts), so a controller trained on one scenario's models runs on
another's. :class:`LearnedSpawn` runs a trained ``Spawn-v0`` checkpoint as a simulator policy:
Festina, configured as in the checkpoint's training scenario, with the checkpoint making the
choice at Festina's spawn gate, as in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from festgym.control.actions import Action, GpuControl
from festgym.control.checkpoint import GATE_ENV, Controller
from festgym.control.decoder import LevelDecoder
from festgym.control.features import GPU_FEATURES, SLOT_FEATURES, TIME_FEATURES, squash
from festgym.control.numpy_policy import PolicyFileError
from festgym.policies.festina import Festina, SpawnGate
from festgym.policies.rules import make_rule_policy
from festgym.scenario import training_scenario
from festgym.sim.policy import BasePolicy
from festgym.sim.views import ClusterView, GpuView, Request

PROMPT_REF = 1024.0
LOAD_REF = 64.0
INSTANCES_REF = 4.0

GATE_FEATURES = (("request.prompt", "gate.festina_spawns", "gate.unsafe")
                 + tuple(f"absorb.{f}" for f in SLOT_FEATURES) + tuple(f"absorb.gpu.{f}" for f in GPU_FEATURES)
                 + TIME_FEATURES + ("model.instances", "model.load", "cluster.parked", "cluster.fits"))
"""Feature names, in order: the request's prompt, squash(prompt tokens / 1024); Festina's choice
(1: spawn) and squash(requests in a row at the gate / spawn_after); the least-loaded instance as
``LocalGPU-v0`` observes a one-slot GPU (its slot, its GPU, the time of day); squash(the model's
instances / 4) and squash(its sequences queued or running / 64); the share of GPUs parked and the
share a new instance of the model fits on."""


def gate_features(request: Request, gate: SpawnGate, cluster: ClusterView, spawn_after: int, clock_lo_mhz: float,
                  period_s: float) -> list[float]:
    """The observation of ``request`` at ``gate`` (:data:`GATE_FEATURES`); ``clock_lo_mhz``: the
    lowest control clock of the absorbing GPU's type."""
    model, now = request.model, cluster.now
    rank = cluster.models.index(model)
    out = [squash(request.prompt_tokens / PROMPT_REF), 1.0 if gate.spawn else 0.0, squash(gate.unsafe / spawn_after)]
    out += cluster.gpu(gate.absorb_gpu).observe([rank], now, clock_lo_mhz, period_s)
    instances = cluster.instances_of(model)
    load = sum(i.queue_len + i.running + i.prefilling for i in instances)
    gpus = cluster.gpus
    fits = sum(1 for g in gpus if g.instance(model) is None and cluster.can_host(g.index, model))
    out += [squash(len(instances) / INSTANCES_REF), squash(load / LOAD_REF),
            sum(1 for g in gpus if g.parked) / len(gpus), fits / len(gpus)]
    return out


GATE_LEVELS = ("absorb", "festina", "spawn")
"""The action's levels: the middle one leaves the choice to Festina."""


class GateController(Controller):
    """A checkpoint's trained ``Spawn-v0`` controller: observation -> gate level (:data:`GATE_LEVELS`)."""

    env = GATE_ENV
    plays = "simulator policies beside Festina (festgym.policies.gate.LearnedSpawn)"

    def _check(self) -> None:
        action_type = str(self.net.spec["action"]["type"])
        if action_type not in ("box", "multidiscrete"):
            raise PolicyFileError(f"{self.folder}: the exported action type {action_type!r} is not Spawn-v0's "
                                  "(box or multidiscrete)")
        self.action_type = action_type
        self._check_export([len(GATE_LEVELS)], action_type, len(GATE_FEATURES), "(absorb, Festina, spawn)")

    def level(self, observation: Sequence[float]) -> int:
        return self._action(observation, [len(GATE_LEVELS)], self.action_type)[0]


class LearnedSpawn(BasePolicy):
    """Festina, with a trained ``Spawn-v0`` controller choosing at its spawn gate.

    ``checkpoint``: a checkpoint folder or the name of a shipped one; ``sha256``: pin its digest.
    Festina is built from the checkpoint's training scenario (its ``policy`` section); the
    time-of-day features use that scenario's diurnal period, as in training. ``gates`` and
    ``overrides`` count the requests at the gate and those where the controller chose otherwise
    than Festina.
    """

    def __init__(self, checkpoint: str | Path, sha256: str | None = None):
        self.controller = GateController(checkpoint, sha256)
        self.folder, self.name, self.card = self.controller.folder, self.controller.name, self.controller.card
        scenario = training_scenario(self.card)
        festina = make_rule_policy(scenario.policy, **scenario.policy_params)
        if not isinstance(festina, Festina):
            raise PolicyFileError(f"{self.folder}: trained beside {scenario.policy!r}; a spawn-gate controller needs "
                                  "Festina's placement")
        self.festina = festina
        self.queue_order = festina.queue_order
        self.mechanisms = festina.mechanisms  # its engines live as Festina's
        self._levels = (scenario.env.clock_levels, scenario.env.share_levels, tuple(scenario.env.batch_caps))
        self.period_s = float(scenario.workload.diurnal_period_s)
        self.gates = self.overrides = 0

    def reset(self, cluster: ClusterView) -> None:
        ladders = {g.spec.name: g.spec.sm_clocks_mhz for g in cluster.gpus}
        self.clock_lo = LevelDecoder(ladders, *self._levels).clock_lo
        self.gates = self.overrides = 0
        self.festina.reset(cluster)

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        festina = self.festina
        gate = festina.spawn_gate(request, cluster)
        if gate is not None:
            self.gates += 1
            spec = cluster.gpu(gate.absorb_gpu).spec
            obs = gate_features(request, gate, cluster, festina.config.spawn_after, self.clock_lo[spec.name],
                                self.period_s)
            level = self.controller.level(obs)
            if level != 1:
                festina.spawn_override = level == 2
                self.overrides += (level == 2) != gate.spawn
        return festina.place(request, cluster)

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        return self.festina.control(gpu, now)

    def consolidate(self, cluster: ClusterView, now: float) -> Sequence[Action]:
        return self.festina.consolidate(cluster, now)


__all__ = ["GATE_FEATURES", "GATE_LEVELS", "GateController", "LearnedSpawn", "gate_features"]
