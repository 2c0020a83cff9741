"""Trained controllers as numpy-only policies: what the deploy path runs (no torch, no pickle).

A policy folder (:func:`festgym.jobs.export.export_sb3` writes it from a stable-baselines3 model) holds:

* ``weights.npz``: the dense layers, ``W0, b0, W1, b1, ...`` (``W`` is out × in, as torch keeps it);
* ``policy.json``: the format tag, each layer's activation, the observation normalisation of a
  saved ``VecNormalize`` (mean, variance, epsilon, clip), how outputs become actions, and the
  SHA-256 of ``weights.npz``.

:class:`NumpyPolicy` loads such a folder, refuses weights whose hash does not match (a corrupt or
swapped file must not drive GPU clocks) and maps raw observations to actions, batched. Supported:
MLP policies over a flat observation, with a ``MultiDiscrete`` or ``Discrete`` action (PPO, A2C:
arg-max of each component's logits), a ``Box`` action from a Gaussian policy (PPO, A2C: the mean,
clipped to the bounds) or from a squashed one (SAC, TD3: tanh of the mean, scaled to the bounds).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from festgym.errors import FestgymError

FORMAT = "festgym-numpy-policy/1"
WEIGHTS, SPEC = "weights.npz", "policy.json"
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
}
"""Activations a layer may use (torch's ``Tanh``, ``ReLU``; ``identity`` after the last layer)."""


class PolicyFileError(FestgymError, ValueError):
    """An exported policy folder that cannot be used: missing file, bad format, hash mismatch."""


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- load and run (numpy only) ------------------------------------------------------------------


class NumpyPolicy:
    """An exported policy: ``predict(observations) -> actions`` with numpy alone."""

    def __init__(self, spec: dict[str, Any], weights: list[tuple[np.ndarray, np.ndarray]], source: str = "<memory>"):
        self.spec, self.source = spec, source
        self.layers = [(w, b, ACTIVATIONS[act]) for (w, b), act in zip(weights, spec["layers"])]
        self.obs_shape = tuple(spec["observation_shape"])
        norm = spec.get("obs_normalization")
        self._norm = None if norm is None else (np.asarray(norm["mean"]),
                                                np.sqrt(np.asarray(norm["var"]) + norm["epsilon"]), norm["clip"])
        action = spec["action"]
        self._nvec: list[int] | None = action.get("nvec")
        self._splits = np.cumsum(self._nvec)[:-1].tolist() if self._nvec else []
        box = action["type"] == "box"
        self._low = np.asarray(action["low"] if box else [])
        self._high = np.asarray(action["high"] if box else [])

    @classmethod
    def load(cls, folder: str | Path) -> NumpyPolicy:
        """Load an exported folder; a missing file, an unknown format or a weights file whose
        SHA-256 differs from the one recorded is an error naming the file."""
        folder = Path(folder)
        for path in (folder / SPEC, folder / WEIGHTS):
            if not path.is_file():
                raise PolicyFileError(f"{path}: missing (export a controller with `festgym export`)")
        return cls.from_bytes((folder / SPEC).read_bytes(), (folder / WEIGHTS).read_bytes(), folder)

    @classmethod
    def from_bytes(cls, spec_bytes: bytes, weights_bytes: bytes, folder: str | Path) -> NumpyPolicy:
        """The policy from the contents of its two files (``folder`` names them in errors): a
        caller that hashed those bytes runs exactly what it hashed, whatever the files hold later."""
        spec_path, weights_path = Path(folder) / SPEC, Path(folder) / WEIGHTS
        try:
            spec = json.loads(spec_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PolicyFileError(f"{spec_path}: not JSON ({exc})") from None
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise PolicyFileError(f"{spec_path}: format {spec.get('format') if isinstance(spec, dict) else spec!r}, "
                                  f"expected {FORMAT!r}")
        expected, actual = spec.get("sha256", {}).get(WEIGHTS), hashlib.sha256(weights_bytes).hexdigest()
        if expected != actual:
            raise PolicyFileError(f"{weights_path}: SHA-256 {actual} does not match {expected} recorded in "
                                  f"{spec_path}; refusing to load (re-export or restore the file)")
        with np.load(io.BytesIO(weights_bytes), allow_pickle=False) as data:
            weights = [(data[f"W{i}"], data[f"b{i}"]) for i in range(len(spec["layers"]))]
        return cls(spec, weights, str(folder))

    def predict(self, observations: np.ndarray) -> np.ndarray:
        """Deterministic actions for one observation or a batch (leading axis)."""
        obs = np.asarray(observations, dtype=np.float64)
        single = obs.shape == self.obs_shape
        if not single and obs.shape[1:] != self.obs_shape:
            raise ValueError(f"{self.source}: observations of shape {obs.shape}; expected {self.obs_shape} or "
                             f"(batch, {', '.join(map(str, self.obs_shape))})")
        x = obs.reshape(1 if single else len(obs), -1)
        if self._norm is not None:
            mean, std, clip = self._norm
            x = np.clip((x - mean) / std, -clip, clip)
        for w, b, act in self.layers:
            x = act(x @ w.T + b)
        actions = self._decode(x)
        return actions[0] if single else actions

    def _decode(self, out: np.ndarray) -> np.ndarray:
        if self._nvec is not None:
            actions = np.stack([part.argmax(axis=1) for part in np.split(out, self._splits, axis=1)], axis=1)
            return actions[:, 0] if self.spec["action"].get("scalar") else actions
        if self.spec["action"]["squashed"]:
            return self._low + 0.5 * (np.tanh(out) + 1.0) * (self._high - self._low)
        return np.clip(out, self._low, self._high)


__all__ = ["FORMAT", "NumpyPolicy", "PolicyFileError", "sha256_file"]
