"""A trained controller checkpoint, loaded with numpy alone: what the simulator's
:class:`~festgym.policies.learned.LearnedLocal` and the deploy agent run.

A checkpoint folder holds ``model.zip`` (SB3), ``vecnormalize.pkl`` (when trained with it), the
numpy export ``numpy/`` (:mod:`festgym.control.numpy_policy`) and ``card.json``: how it was trained and scores,
the SHA-256 of every file, and its ``interface``, the layout of ``LocalGPU-v0`` in its training
scenario (slots, clock and share levels, batch caps, diurnal period), so that running it needs
neither that scenario nor YAML.

Loading refuses a checkpoint whose files differ from the hashes its card records, or whose
digest (:func:`checkpoint_digest`: one SHA-256 over the card's hashes, its interface and what it
was trained on) is not the one the operator pins; it never opens the pickles. The SB3 files are
pickles, which run code when loaded: :func:`pinned_training_files` hands them out only under a
pinned digest (``festgym export --sha256``). What the hashes do and do not protect against:
``docs/learned.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
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
MODEL, STATISTICS = "model.zip", "vecnormalize.pkl"
PICKLED = (MODEL, STATISTICS)
"""Training files whose loading runs code: SB3's ``model.zip`` (cloudpickled objects in ``data``,
torch ``.pth`` pickles) and the pickled ``VecNormalize``."""
DIGEST_FORMAT = "festgym-checkpoint-digest/1"
"""Tag inside the record :func:`checkpoint_digest` hashes: a new definition gets a new tag."""
LOCAL_ENV = "festgym/LocalGPU-v0"
"""The environment whose controllers run as simulator and host policies (the card's ``interface``)."""
GATE_ENV = "festgym/Spawn-v0"
"""The environment of spawn-gate controllers: they run as simulator policies beside Festina
(:class:`~festgym.policies.gate.LearnedSpawn`), not on hosts."""
SIMULATED_ENVS = (LOCAL_ENV, GATE_ENV)
"""Environments whose controllers run as simulator policies (compare, benchmark)."""


def trained_env(card: dict[str, Any]) -> str:
    """The environment a checkpoint was trained on (its card's ``agent.env``)."""
    agent = card.get("agent")
    env = agent.get("env") if isinstance(agent, dict) else None
    return str(env) if env else LOCAL_ENV


def find_checkpoints(simulated_only: bool = False) -> dict[str, Path]:
    """Checkpoints by name: every ``<name>/`` with a card and an export in the user's checkpoint
    folders and the shipped one (:data:`festgym.resources.CHECKPOINTS`). ``simulated_only``: only
    those that run as simulator policies (trained on one of :data:`SIMULATED_ENVS`; a card that
    does not read stays in, so that running it names the problem)."""
    found = CHECKPOINTS.glob(f"*/{CARD}", keep=lambda card: (card.parent / EXPORTED).is_dir())
    out = {name[: -len("/" + CARD)]: path.parent for name, path in found}
    return {name: folder for name, folder in out.items() if not simulated_only or _simulated(folder)}


def _simulated(folder: Path) -> bool:
    try:
        return trained_env(read_card(folder)) in SIMULATED_ENVS
    except PolicyFileError:
        return True


def resolve_checkpoint(spec: str | Path) -> Path | None:
    """A checkpoint folder from a path or a shipped name; None if ``spec`` is neither."""
    path = Path(spec)
    if (path / CARD).is_file():
        return path
    return find_checkpoints().get(str(spec))


def read_card(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CARD
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyFileError(f"{path}: missing (a checkpoint folder holds card.json, model.zip and numpy/)") from None
    except json.JSONDecodeError as exc:
        raise PolicyFileError(f"{path}: not JSON ({exc})") from None
    if not isinstance(card, dict):
        raise PolicyFileError(f"{path}: expected a JSON object, got {type(card).__name__}")
    return card


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
    residual_steps: int = 0
    """0: the action sets the clock and shares. R ≥ 1: a residual controller, whose one action
    component moves the background policy's clock by −R..R levels (``env.residual_steps``)."""

    @classmethod
    def from_card(cls, card: dict[str, Any], source: str) -> ControllerInterface:
        data = card.get("interface")
        if not isinstance(data, dict):
            raise PolicyFileError(f"{source}: no 'interface' (seal the checkpoint: `festgym export <checkpoint>`)")
        try:
            return cls(int(data["slots"]), int(data["clock_levels"]), int(data["share_levels"]),
                       tuple(int(c) for c in data["batch_caps"]), float(data["period_s"]), str(data["action_type"]),
                       int(data.get("residual_steps", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyFileError(f"{source}: field 'interface': {exc!r}") from None

    def record(self) -> dict[str, Any]:
        """The card's ``interface``: the fields, ``residual_steps`` only when set (cards written
        before it existed keep their digests)."""
        data = asdict(self)
        if not self.residual_steps:
            del data["residual_steps"]
        return data

    @property
    def nvec(self) -> list[int]:
        """Levels of each action component: clock, a share per slot, a batch cap per slot; for a
        residual controller, its clock adjustment alone."""
        if self.residual_steps:
            return [2 * self.residual_steps + 1]
        caps = [len(self.batch_caps)] * self.slots if self.batch_caps else []
        return [self.clock_levels] + [self.share_levels] * self.slots + caps

    @property
    def n_obs(self) -> int:
        return len(SLOT_FEATURES) * self.slots + len(GPU_FEATURES) + len(TIME_FEATURES)


def card_hashes(card: dict[str, Any], source: str) -> dict[str, str]:
    """The card's ``sha256`` table (file path relative to the checkpoint -> hex digest), checked:
    a path that leaves the folder, or a value that is not a digest, is refused."""
    hashes = card.get("sha256", {})
    if not isinstance(hashes, dict):
        raise PolicyFileError(f"{source}: field 'sha256': expected a mapping of file -> SHA-256, got {hashes!r}")
    for name, digest in hashes.items():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise PolicyFileError(f"{source}: field 'sha256': {name!r} is not a file inside the checkpoint folder")
        if not isinstance(digest, str) or not _is_digest(digest):
            raise PolicyFileError(f"{source}: field 'sha256': {name}: {digest!r} is not a SHA-256 (64 hex digits)")
    return hashes


def _is_digest(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{64}", text) is not None


def pinned(digest: str) -> str:
    """A digest the user pins (``--sha256``), in lower case; refused unless 64 hex digits."""
    pin = digest.strip().lower()
    if not _is_digest(pin):
        raise PolicyFileError(f"--sha256 {digest!r}: not a SHA-256 digest (64 hex digits); pin the one `festgym "
                              "export` (or, before the export, `festgym train`) printed")
    return pin


def checkpoint_digest(card: dict[str, Any], source: str, *, with_export: bool = True) -> str:
    """The digest a user pins with ``--sha256``: SHA-256 of the canonical JSON (sorted keys, no
    spaces, ASCII) of what in the card changes a controller's decisions:

    * the SHA-256 of every file the card lists: ``numpy/policy.json`` (layers, action type and
      bounds, observation normalisation, the weights' hash), ``numpy/weights.npz``, and the
      training files the export came from (``model.zip``, ``vecnormalize.pkl``);
    * the ``interface`` (slots, clock and share levels, batch caps, diurnal period, action type),
      as the controller reads it;
    * the training scenario, algorithm and environment arguments (export derives the interface
      from them and loads ``model.zip`` as that algorithm; the simulator takes the background
      policy from the scenario).

    The training record (timesteps, wall time, evaluation tables) is left out: recording an
    evaluation does not change the digest. ``with_export=False``: the digest without the export
    (its hashes and the interface), i.e. of the card as ``festgym train`` wrote it."""
    agent = card.get("agent", {})
    if not isinstance(agent, dict):
        raise PolicyFileError(f"{source}: field 'agent': expected a mapping, got {agent!r}")
    hashes = card_hashes(card, source)
    sealed = with_export and card.get("interface") is not None
    record = {
        "format": DIGEST_FORMAT,
        "scenario": card.get("scenario"),
        "algo": agent.get("algo"),
        "env_kwargs": agent.get("env_kwargs", {}),
        "sha256": {name: h for name, h in hashes.items() if with_export or not name.startswith(EXPORTED + "/")},
        "interface": ControllerInterface.from_card(card, source).record() if sealed else None,
    }
    try:
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:  # NaN or a non-JSON value: no canonical form to hash
        raise PolicyFileError(f"{source}: {exc}") from None
    return hashlib.sha256(text.encode()).hexdigest()


def pinned_training_files(folder: str | Path, card: dict[str, Any], sha256: str | None) -> dict[str, bytes]:
    """The bytes of the training files the card lists (``model.zip``, ``vecnormalize.pkl``, ...),
    each matching its hash, for loading them (``festgym export``); nothing else reads them.

    They are pickles, and loading a pickle runs the code it names; so they are handed out only
    under ``sha256``, a digest the user trusts: :func:`checkpoint_digest` of the card with or
    without its export (the card's hashes, and so the files, are then what the user pinned). A
    pickle the card lists no hash for is refused. The bytes are those hashed: a file replaced
    after the check is never loaded."""
    folder = Path(folder)
    source = str(folder / CARD)
    hashes = card_hashes(card, source)
    if MODEL not in hashes:
        raise PolicyFileError(f"{source}: no SHA-256 for {MODEL}; refusing to load it (a checkpoint from `festgym "
                              "train` lists it)")
    for name in PICKLED:
        if name not in hashes and (folder / name).exists():
            raise PolicyFileError(f"{folder / name}: a pickle that {source} lists no SHA-256 for; refusing to load it "
                                  "(loading a pickle runs its code). Remove it if the checkpoint was trained without "
                                  "it, or restore the card that lists it")
    exported, trained = checkpoint_digest(card, source), checkpoint_digest(card, source, with_export=False)
    says = exported if exported == trained else f"{exported} ({trained} before its export)"
    if sha256 is None:
        raise PolicyFileError(
            f"{folder}: refusing to load {' and '.join(n for n in PICKLED if n in hashes)} without a pinned digest "
            "(they are pickles: loading one runs its code). Pass --sha256 DIGEST with the digest `festgym train` "
            "printed for this checkpoint, or the one its author published (`festgym export` prints it for an "
            f"exported one). Its card's digest is {says}: pin that only if it is one of those, since pinning a "
            "card's own digest trusts whoever wrote it")
    pin = pinned(sha256)
    if pin not in (exported, trained):
        raise PolicyFileError(f"{folder}: checkpoint digest {says} is not the pinned {pin}; refusing to load its "
                              "pickles (the card or its files changed since the digest was taken)")
    return {name: _verified_bytes(folder, name, expected, "load it") for name, expected in hashes.items()
            if not name.startswith(EXPORTED + "/")}  # the export is what this replaces


def _verified_bytes(folder: Path, name: str, expected: str, refusing: str) -> bytes:
    """The bytes of ``folder / name`` if their SHA-256 is the card's ``expected``; else an error
    saying what is refused (``refusing``: "run this checkpoint", ...)."""
    path = folder / name
    data = path.read_bytes() if path.is_file() else None
    if data is None or hashlib.sha256(data).hexdigest() != expected:
        raise PolicyFileError(f"{path}: missing or its SHA-256 differs from the one in {folder / CARD}; refusing to "
                              f"{refusing}")
    return data


def seal_card(folder: str | Path, interface: ControllerInterface | None, card: dict[str, Any] | None = None) -> Path:
    """Record the interface and the export's hashes in the checkpoint's card: ``card``, the one
    the export was verified against (default: the card on disk). Export passes it, so that a card
    replaced on disk while the export ran is overwritten, not sealed and then printed as trusted.
    ``interface`` None: a controller of another environment than ``LocalGPU-v0``, which has none."""
    folder = Path(folder)
    card = dict(read_card(folder) if card is None else card)
    card.pop("interface", None)
    if interface is not None:
        card["interface"] = interface.record()
    card["sha256"] = {**card.get("sha256", {}), **{name: sha256_file(folder / name) for name in SEALED}}
    path = folder / CARD
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


class Controller:
    """A checkpoint's trained controller, verified and loaded with numpy alone.

    ``checkpoint``: a folder or the name of a shipped one. ``expect_sha256``: pin the checkpoint's
    digest (:func:`checkpoint_digest`, ``sha256`` here: the export, the interface and the card's
    other hashes); another is refused. The card's own hashes catch corrupt or partly replaced
    files; against deliberate tampering (card and files replaced together) only a pinned digest
    helps, so deployments pin it. Subclasses name the environment they play (:attr:`env`) and
    check the export against it (:meth:`_check`).
    """

    env = LOCAL_ENV
    plays = "simulator and host policies"

    def __init__(self, checkpoint: str | Path, expect_sha256: str | None = None):
        folder = resolve_checkpoint(checkpoint)
        if folder is None:
            known = ", ".join(find_checkpoints()) or "none shipped"
            raise FestgymError(f"no checkpoint at {checkpoint!r} (a folder with {CARD}) and no shipped checkpoint "
                               f"of that name; shipped: {known}")
        self.folder, self.name = folder, folder.name
        self.card = read_card(folder)
        env = trained_env(self.card)
        if env != self.env:
            raise PolicyFileError(f"{folder}: a {env} controller ('agent.env' in {CARD}); {type(self).__name__} runs "
                                  f"{self.env} controllers as {self.plays} (play it in {env} with "
                                  f"festgym.control.numpy_policy.NumpyPolicy.load('{folder / EXPORTED}'))")
        self._read_interface()
        self.sha256, verified = self._verify(expect_sha256)
        # The bytes that were hashed, not the files again: what runs is what the pin covers.
        self.net = NumpyPolicy.from_bytes(verified[SEALED[0]], verified[SEALED[1]], folder / EXPORTED)
        self._check()

    def _read_interface(self) -> None:
        """Read what the card says the observation and action are (before the files are verified)."""

    def _check(self) -> None:
        """Refuse an export whose action or observation is not the environment's."""

    def _verify(self, expect_sha256: str | None) -> tuple[str, dict[str, bytes]]:
        """Check every file hash the card records (the export's must be there; the training files
        may be left out) and the pin; returns the checkpoint's digest and the export's verified bytes."""
        source = str(self.folder / CARD)
        hashes = card_hashes(self.card, source)
        missing = [name for name in SEALED if name not in hashes]
        if missing:
            raise PolicyFileError(f"{source}: no SHA-256 for {', '.join(missing)} (seal the checkpoint: "
                                  "`festgym export <checkpoint>`)")
        verified = {}
        for name, expected in hashes.items():
            if name in SEALED or (self.folder / name).exists():  # a deploy host may leave out the SB3 files
                verified[name] = _verified_bytes(self.folder, name, expected, "run this checkpoint")
        digest = checkpoint_digest(self.card, source)
        pin = None if expect_sha256 is None else pinned(expect_sha256)
        if pin is not None and pin != digest:
            # Before the digest covered the card, the pin was policy.json's hash: say so to whoever still pins one.
            older = " (that is numpy/policy.json's SHA-256, the pin of older festgym versions, which left the card's " \
                "interface unpinned; pin the checkpoint's digest: docs/learned.md)" if pin == hashes[SEALED[0]] else ""
            raise PolicyFileError(f"{self.folder}: checkpoint digest {digest} is not the pinned {pin}{older}; "
                                  "refusing to run this checkpoint")
        return digest, verified

    def _action(self, observation: Sequence[float], nvec: Sequence[int], action_type: str) -> list[int]:
        """Level indices for one observation, cast to float32 first as the environment hands it
        to the agent: the same arg-max, bit for bit."""
        action = self.net.predict(np.asarray(observation, np.float32)).tolist()
        if action_type == "box":
            return [box_level(a, n) for a, n in zip(action, nvec)]
        return [int(a) for a in action]

    def _check_export(self, nvec: Sequence[int], action_type: str, n_obs: int, what: str) -> None:
        action = self.net.spec["action"]
        found = action.get("nvec") or list(nvec)
        if action["type"] != action_type or found != list(nvec) or len(action.get("low", nvec)) != len(nvec):
            raise PolicyFileError(f"{self.folder}: the exported action ({action}) does not match {self.env}'s levels "
                                  f"{list(nvec)} ({action_type}) {what}")
        if self.net.obs_shape != (n_obs,):
            raise PolicyFileError(f"{self.folder}: the exported policy observes {self.net.obs_shape}, {self.env} "
                                  f"gives ({n_obs},)")


class LocalController(Controller):
    """A checkpoint's trained local controller (``LocalGPU-v0``): observation -> level indices."""

    def _read_interface(self) -> None:
        self.interface = ControllerInterface.from_card(self.card, str(self.folder / CARD))

    def _check(self) -> None:
        face = self.interface
        self._check_export(face.nvec, face.action_type, face.n_obs, f"in its card's interface ({face.slots} slots)")

    def levels(self, observation: Sequence[float]) -> list[int]:
        """Level indices (clock, shares per slot, caps per slot) for one observation."""
        return self._action(observation, self.interface.nvec, self.interface.action_type)


__all__ = ["CARD", "EXPORTED", "GATE_ENV", "LOCAL_ENV", "MODEL", "PICKLED", "SIMULATED_ENVS", "STATISTICS",
           "Controller", "ControllerInterface", "LocalController",
           "card_hashes", "checkpoint_digest", "find_checkpoints", "pinned", "pinned_training_files", "read_card",
           "resolve_checkpoint", "seal_card"]
