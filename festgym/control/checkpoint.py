"""A trained controller checkpoint, loaded with numpy alone: what the simulator's
:class:`~festgym.policies.learned.LearnedLocal` and the deploy agent run.

A checkpoint folder holds ``model.zip`` (SB3), ``vecnormalize.pkl`` (when trained with it), the
numpy export ``numpy/`` (:mod:`festgym.control.numpy_policy`) and ``card.json``: how it was trained and scores,
the SHA-256 of every file, and its ``interface``, the layout of ``LocalGPU-v0`` in its training
scenario (slots, clock and share levels, batch caps, diurnal period), so that running it needs
neither that scenario nor YAML.

Loading refuses a checkpoint whose export files differ from the hashes its card records (or from
a hash the operator pins); it never opens the pickles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from festgym.control.decoder import box_level
from festgym.control.features import GPU_FEATURES, SLOT_FEATURES, TIME_FEATURES
from festgym.control.numpy_policy import (
    SPEC,
    WEIGHTS,
    NumpyPolicy,
    PolicyFileError,
    sha256_file,
)
from festgym.errors import FestgymError
from festgym.resources import CHECKPOINTS

CARD = "card.json"
EXPORTED = "numpy"
"""Sub-folder of a checkpoint with its numpy-only export (``festgym export``)."""
SEALED = (f"{EXPORTED}/{SPEC}", f"{EXPORTED}/{WEIGHTS}")
"""Export files whose SHA-256 the card must record."""


def find_checkpoints() -> dict[str, Path]:
    """Checkpoints by name: every ``<name>/`` with a card and an export in the user's checkpoint
    folders and the shipped one (:data:`festgym.resources.CHECKPOINTS`)."""
    found = CHECKPOINTS.glob(f"*/{CARD}", keep=lambda card: (card.parent / EXPORTED).is_dir())
    return {name[: -len("/" + CARD)]: path.parent for name, path in found}


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


@dataclass(frozen=True)
class ControllerInterface:
    """``LocalGPU-v0``'s layout in a controller's training scenario: what its observation and
    action mean."""

    slots: int
    """Model slots, in popularity order (most popular first)."""
    clock_levels: int
    share_levels: int
    batch_caps: tuple[int, ...]
    """Batch-cap levels per slot (empty: the action sets no caps)."""
    period_s: float
    """Diurnal period of the time-of-day features."""
    action_type: str
    """``multidiscrete`` (level indices) or ``box`` (each component in [-1, 1], cut into levels)."""

    @classmethod
    def from_card(cls, card: dict[str, Any], source: str) -> ControllerInterface:
        data = card.get("interface")
        if not isinstance(data, dict):
            raise PolicyFileError(f"{source}: no 'interface' (seal the checkpoint: `festgym export <checkpoint>`)")
        try:
            return cls(int(data["slots"]), int(data["clock_levels"]), int(data["share_levels"]),
                       tuple(int(c) for c in data["batch_caps"]), float(data["period_s"]), str(data["action_type"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyFileError(f"{source}: field 'interface': {exc!r}") from None

    @property
    def nvec(self) -> list[int]:
        """Levels of each action component: clock, a share per slot, a batch cap per slot."""
        caps = [len(self.batch_caps)] * self.slots if self.batch_caps else []
        return [self.clock_levels] + [self.share_levels] * self.slots + caps

    @property
    def n_obs(self) -> int:
        return len(SLOT_FEATURES) * self.slots + len(GPU_FEATURES) + len(TIME_FEATURES)


def seal_card(folder: str | Path, interface: ControllerInterface) -> Path:
    """Record the interface and the export's hashes in the checkpoint's card."""
    folder = Path(folder)
    card = read_card(folder)
    card["interface"] = asdict(interface)
    card["sha256"] = {**card.get("sha256", {}), **{name: sha256_file(folder / name) for name in SEALED}}
    path = folder / CARD
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


class LocalController:
    """A checkpoint's trained local controller: observation -> level indices, numpy only.

    ``checkpoint``: a folder or the name of a shipped one. ``expect_sha256``: pin the export
    (the SHA-256 of ``numpy/policy.json``, which records the weights' hash); another is refused.
    The card's own hashes catch corrupt or partly replaced files; against deliberate tampering
    (card and files replaced together) only a pinned hash helps, so deployments pin it.
    """

    def __init__(self, checkpoint: str | Path, expect_sha256: str | None = None):
        folder = resolve_checkpoint(checkpoint)
        if folder is None:
            known = ", ".join(find_checkpoints()) or "none shipped"
            raise FestgymError(f"no checkpoint at {checkpoint!r} (a folder with {CARD}) and no shipped checkpoint "
                               f"of that name; shipped: {known}")
        self.folder, self.name = folder, folder.name
        self.card = read_card(folder)
        self.sha256 = self._verify(expect_sha256)
        self.interface = ControllerInterface.from_card(self.card, str(folder / CARD))
        self.net = NumpyPolicy.load(folder / EXPORTED)
        action = self.net.spec["action"]
        expected = self.interface.nvec
        nvec = action.get("nvec") or expected
        if action["type"] != self.interface.action_type or nvec != expected or \
                len(action.get("low", expected)) != len(expected):
            raise PolicyFileError(f"{folder}: the exported action ({action}) does not match LocalGPU-v0's levels "
                                  f"{expected} ({self.interface.action_type}) in its card's interface")
        if self.net.obs_shape != (self.interface.n_obs,):
            raise PolicyFileError(f"{folder}: the exported policy observes {self.net.obs_shape}, LocalGPU-v0 with "
                                  f"{self.interface.slots} slots gives ({self.interface.n_obs},)")

    def _verify(self, expect_sha256: str | None) -> str:
        """Check every file hash the card records (the export's must be there; the training files
        may be left out); returns the export's hash."""
        hashes = self.card.get("sha256", {})
        missing = [name for name in SEALED if name not in hashes]
        if missing:
            raise PolicyFileError(f"{self.folder / CARD}: no SHA-256 for {', '.join(missing)} (seal the checkpoint: "
                                  "`festgym export <checkpoint>`)")
        for name, expected in hashes.items():
            path = self.folder / name
            if name not in SEALED and not path.exists():
                continue  # a deploy host needs the card and the export only, not the SB3 files
            if not path.is_file() or sha256_file(path) != expected:
                raise PolicyFileError(f"{path}: missing or its SHA-256 differs from the one in {self.folder / CARD}; "
                                      "refusing to run this checkpoint")
        digest = hashes[SEALED[0]]
        if expect_sha256 is not None and expect_sha256.lower() != digest:
            raise PolicyFileError(f"{self.folder}: export SHA-256 {digest} is not the pinned {expect_sha256}; "
                                  "refusing to run this checkpoint")
        return digest

    def levels(self, observation: Sequence[float]) -> list[int]:
        """Level indices (clock, shares per slot, caps per slot) for one observation.

        The observation is cast to float32 first, as the environment hands it to the agent:
        the same arg-max, bit for bit."""
        action = self.net.predict(np.asarray(observation, np.float32)).tolist()
        if self.interface.action_type == "box":
            return [box_level(a, n) for a, n in zip(action, self.interface.nvec)]
        return [int(a) for a in action]


__all__ = ["CARD", "EXPORTED", "ControllerInterface", "LocalController", "find_checkpoints",
           "read_card", "resolve_checkpoint", "seal_card"]
