"""Trained local controllers as simulator policies: how a checkpoint runs in the full cluster.

A controller trained on ``LocalGPU-v0`` sets one GPU's clock and its model slots' SM shares
from that GPU's observation. :class:`LearnedLocal` runs it on every GPU of any scenario, with
numpy alone (the exported ``numpy/`` folder of a checkpoint, :class:`~festgym.control.numpy_policy.NumpyPolicy`):

* **Placement, keep-alive and consolidation** come from the rule policy the controller was
  trained beside (its training scenario's background policy, Festina by default): in
  ``LocalGPU-v0`` that policy placed the requests and the agent only set clocks and shares.
* **Slots.** ``LocalGPU-v0`` names its slots after models (``local.models``, in popularity order).
  On a cluster GPU the resident models fill the slots in the running scenario's model order
  (its popularity rank); unused slots read as empty, as a model that is not resident does in
  training. *Assumption:* the features are model-agnostic (SLO ratios, fractions), so a slot
  trained on Llama-3.1-8B serves another model of similar rank. A GPU holding more models than
  there are slots goes to the background policy's local control; ``fallbacks`` counts those calls.
* **Residual controllers** (card interface ``residual_steps``) move the background policy's own
  clock decision by their action's levels (:mod:`festgym.policies.residual`), as in training.
* **Time of day** features use the training scenario's diurnal period (the card's interface; a
  policy does not see the running workload's).

Checkpoints are found by path, or by name in the checkpoint folders (``FESTGYM_CHECKPOINTS``
overrides the folder); :mod:`festgym.control.checkpoint` loads and verifies them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from festgym.control.actions import Action, GpuControl
from festgym.control.checkpoint import CARD, LocalController, read_card
from festgym.control.decoder import LevelDecoder
from festgym.policies.residual import ClockSteps, base_clock_levels
from festgym.policies.rules import make_rule_policy
from festgym.scenario import training_scenario
from festgym.sim.lifecycle import Mechanisms
from festgym.sim.policy import BasePolicy, Policy
from festgym.sim.views import ClusterView, GpuView, Request


def record_evaluation(folder: str | Path, result) -> Path:
    """Add a :class:`~festgym.jobs.compare.CompareResult`'s summary table to the checkpoint's card
    (``evaluations``), replacing an earlier one of the same scenario, seeds and duration."""
    folder = Path(folder)
    card = read_card(folder)
    doc = result.to_json()
    entry = {"scenario": result.scenario, "seeds": list(result.seeds), "duration_s": result.duration_s,
             "table": doc["summary"], "paired": doc["paired"]}
    same = (entry["scenario"], entry["seeds"], entry["duration_s"])
    card["evaluations"] = [e for e in card.get("evaluations", [])
                           if (e["scenario"], e["seeds"], e["duration_s"]) != same] + [entry]
    path = folder / CARD
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


class LearnedLocal(BasePolicy):
    """A trained local controller on every GPU, beside its training scenario's rule policy.

    ``checkpoint``: a checkpoint folder or the name of a shipped one. ``background``: override
    the rule policy for placement and consolidation (a name in
    :data:`festgym.policies.rules.RULE_POLICIES`).
    """

    def __init__(self, checkpoint: str | Path, background: str | None = None):
        self.controller = LocalController(checkpoint)
        self.folder, self.name, self.card = self.controller.folder, self.controller.name, self.controller.card
        self.n_slots = self.controller.interface.slots
        if background is None:
            scenario = training_scenario(self.card)
            background, params = scenario.policy, dict(scenario.policy_params)
        else:
            params = {}
        self.background: Policy = make_rule_policy(background, **params)
        self.queue_order = getattr(self.background, "queue_order", "fcfs")
        self.mechanisms = getattr(self.background, "mechanisms", Mechanisms())  # its engines live as the background's
        self.fallbacks = 0
        self.calls = 0
        residual = self.controller.interface.residual_steps
        self.residual = ClockSteps(base_clock_levels(self.background)) if residual else None

    def reset(self, cluster: ClusterView) -> None:
        face = self.controller.interface
        ladders = {g.spec.name: g.spec.sm_clocks_mhz for g in cluster.gpus}
        self.decoder = LevelDecoder(ladders, face.clock_levels, face.share_levels, face.batch_caps)
        self.rank = {m: k for k, m in enumerate(cluster.models)}
        self.fallbacks = self.calls = 0
        self.background.reset(cluster)

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        return self.background.place(request, cluster)

    def consolidate(self, cluster: ClusterView, now: float) -> Sequence[Action]:
        return self.background.consolidate(cluster, now)

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        present = tuple(gpu.models)
        if not present or len(present) > self.n_slots:  # nothing to control / more models than slots
            self.fallbacks += bool(present)
            return self.background.control(gpu, now)
        self.calls += 1
        ordered = sorted(present, key=self.rank.__getitem__)
        slots = [self.rank[m] for m in ordered] + [-1] * (self.n_slots - len(ordered))
        obs = gpu.observe(slots, now, self.decoder.clock_lo[gpu.spec.name], self.controller.interface.period_s)
        levels = self.controller.levels(obs)
        if self.residual is not None:  # it adjusts the background policy's decision
            steps = int(levels[0]) - self.controller.interface.residual_steps
            return self.residual.shift(self.background.control(gpu, now), gpu, steps)
        m = self.n_slots
        return self.decoder.control(gpu.spec.name, present, ordered, levels[0], levels[1:1 + m], levels[1 + m:])


__all__ = ["LearnedLocal", "record_evaluation"]
