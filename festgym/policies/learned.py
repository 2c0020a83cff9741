"""Trained local controllers as simulator policies: how a checkpoint runs in the full cluster.

A controller trained on ``LocalGPU-v0`` sets one GPU's clock and its model slots' SM shares
from that GPU's observation. :class:`LearnedLocal` runs it on every GPU of any scenario, with
numpy alone (the exported ``numpy/`` folder of a checkpoint, :class:`~festgym.export.NumpyPolicy`):

* **Placement, keep-alive and consolidation** come from the rule policy the controller was
  trained beside (its training scenario's background policy, Festina by default): in
  ``LocalGPU-v0`` that policy placed the requests and the agent only set clocks and shares.
* **Slots.** ``LocalGPU-v0`` names its slots after models (``local.models``, in popularity order).
  On a cluster GPU the resident models fill the slots in the running scenario's model order
  (its popularity rank); unused slots read as empty, as a model that is not resident does in
  training. *Assumption:* the features are model-agnostic (SLO ratios, fractions), so a slot
  trained on Llama-3.1-8B serves another model of similar rank. A GPU holding more models than
  there are slots goes to the background policy's local control; ``fallbacks`` counts those calls.
* **Time of day** features use the training scenario's diurnal period (a policy does not see
  the running workload's).

Checkpoints are found by path, or by name under ``checkpoints/`` (``FESTGYM_CHECKPOINTS``
overrides the folder); :func:`find_checkpoints` lists the shipped ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from festgym.envs.features import GPU_FEATURES, SLOT_FEATURES, TIME_FEATURES
from festgym.errors import FestgymError
from festgym.export import NumpyPolicy, PolicyFileError
from festgym.local_control import LevelDecoder, box_level
from festgym.paths import project_dir
from festgym.policy import Action, BasePolicy, ClusterView, GpuControl, GpuView, Policy, Request
from festgym.scenario import Scenario, load_scenario

CARD = "card.json"
EXPORTED = "numpy"
"""Sub-folder of a checkpoint with its numpy-only export (``festgym export``)."""


def checkpoints_dir() -> Path | None:
    """The shipped checkpoints folder, or None when there is none."""
    try:
        return project_dir("checkpoints", "FESTGYM_CHECKPOINTS")
    except FileNotFoundError:
        return None


def find_checkpoints() -> dict[str, Path]:
    """Shipped checkpoints by name: every ``checkpoints/<name>/`` with a card and an export."""
    root = checkpoints_dir()
    if root is None:
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CARD).is_file() and (p / EXPORTED).is_dir()}


def resolve_checkpoint(spec: str | Path) -> Path | None:
    """A checkpoint folder from a path or a shipped name; None if ``spec`` is neither."""
    path = Path(spec)
    if (path / CARD).is_file():
        return path
    return find_checkpoints().get(str(spec))


def read_card(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CARD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyFileError(f"{path}: missing (a checkpoint folder holds card.json, model.zip and numpy/)") from None
    except json.JSONDecodeError as exc:
        raise PolicyFileError(f"{path}: not JSON ({exc})") from None


def record_evaluation(folder: str | Path, result) -> Path:
    """Add a :class:`~festgym.compare.CompareResult`'s summary table to the checkpoint's card
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


def training_scenario(card: dict[str, Any]) -> Scenario:
    """The scenario a checkpoint was trained on, with the environment overrides of its agent."""
    overrides = {k: v for k, v in card["agent"].get("env_kwargs", {}).items() if k != "action_type"}
    return load_scenario(card["scenario"], **overrides)


class LearnedLocal(BasePolicy):
    """A trained local controller on every GPU, beside its training scenario's rule policy.

    ``checkpoint``: a checkpoint folder or the name of a shipped one. ``background``: override
    the rule policy for placement and consolidation (a name in :data:`festgym.policies.POLICIES`).
    """

    def __init__(self, checkpoint: str | Path, background: str | None = None):
        from festgym.policies import make_policy  # the registry imports this module

        folder = resolve_checkpoint(checkpoint)
        if folder is None:
            known = ", ".join(find_checkpoints()) or "none shipped"
            raise FestgymError(f"no checkpoint at {checkpoint!r} (a folder with {CARD}) and no shipped checkpoint "
                               f"of that name; shipped: {known}")
        self.folder = folder
        self.name = folder.name
        self.card = read_card(folder)
        self.net = NumpyPolicy.load(folder / EXPORTED)
        trained = training_scenario(self.card)
        env = trained.env
        self.n_slots = len(trained.local.models)
        expected = [env.clock_levels] + [env.share_levels] * self.n_slots + \
            ([len(env.batch_caps)] * self.n_slots if env.batch_caps else [])
        action = self.net.spec["action"]
        self._nvec = action.get("nvec") or expected
        if self._nvec != expected or len(action.get("low", expected)) != len(expected):
            raise PolicyFileError(f"{folder}: the exported action ({action}) does not match LocalGPU-v0's levels "
                                  f"{expected} in its training scenario {self.card['scenario']!r}")
        n_obs = len(SLOT_FEATURES) * self.n_slots + len(GPU_FEATURES) + len(TIME_FEATURES)  # as LocalGPU-v0
        if self.net.obs_shape != (n_obs,):
            raise PolicyFileError(f"{folder}: the exported policy observes {self.net.obs_shape}, LocalGPU-v0 with "
                                  f"{self.n_slots} slots gives ({n_obs},)")
        self._box = action["type"] == "box"
        self._levels_cfg = (env.clock_levels, env.share_levels, env.batch_caps)
        self.period_s = trained.workload.diurnal_period_s
        self.background: Policy = make_policy(background) if background else trained.make_policy()
        self.queue_order = getattr(self.background, "queue_order", "fcfs")
        self.fallbacks = 0
        self.calls = 0

    def reset(self, cluster: ClusterView) -> None:
        specs = {g.spec.name: g.spec for g in cluster.gpus}
        self.decoder = LevelDecoder(specs, *self._levels_cfg)
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
        # float32, as the environment hands observations to the agent: the same argmax, bit for bit
        obs = np.asarray(gpu.observe(slots, now, self.decoder.clock_lo[gpu.spec.name], self.period_s), np.float32)
        action = self.net.predict(obs).tolist()
        levels = [box_level(a, n) for a, n in zip(action, self._nvec)] if self._box else action
        m = self.n_slots
        return self.decoder.control(gpu.spec.name, present, ordered, levels[0], levels[1:1 + m], levels[1 + m:])


__all__ = ["LearnedLocal", "checkpoints_dir", "find_checkpoints", "read_card", "record_evaluation",
           "resolve_checkpoint", "training_scenario"]
