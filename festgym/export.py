"""Trained controllers as numpy-only policies: what the deploy path runs (no torch, no pickle).

:func:`export_sb3` writes a stable-baselines3 model's deterministic policy into a folder:

* ``weights.npz``: the dense layers, ``W0, b0, W1, b1, ...`` (``W`` is out × in, as torch keeps it);
* ``policy.json``: the format tag, each layer's activation, the observation normalisation of a
  saved ``VecNormalize`` (mean, variance, epsilon, clip), how outputs become actions, and the
  SHA-256 of ``weights.npz``.

:class:`NumpyPolicy` loads such a folder, refuses weights whose hash does not match (a corrupt or
swapped file must not drive GPU clocks) and maps raw observations to actions, batched. Supported:
MLP policies over a flat observation, with a ``MultiDiscrete`` or ``Discrete`` action (PPO, A2C:
arg-max of each component's logits), a ``Box`` action from a Gaussian policy (PPO, A2C: the mean,
clipped to the bounds) or from a squashed one (SAC, TD3: tanh of the mean, scaled to the bounds).
Only :func:`export_sb3` imports torch.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from festgym.errors import FestgymError

FORMAT = "festgym-numpy-policy/1"
WEIGHTS, SPEC = "weights.npz", "policy.json"
ACTIVATIONS = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
}
"""Activations a layer may use (torch's ``Tanh``, ``ReLU``; ``identity`` after the last layer)."""


class PolicyFileError(FestgymError, ValueError):
    """An exported policy folder that cannot be used: missing file, bad format, hash mismatch."""


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- export (needs torch and stable-baselines3) ---------------------------------------------------------


def export_sb3(model, out_dir: str | Path, vec_normalize=None) -> Path:
    """Write ``model``'s deterministic policy (and ``vec_normalize``'s observation statistics)
    into ``out_dir``; returns the folder."""
    import torch.nn as nn  # only the export needs torch

    policy = model.policy
    extractor = type(getattr(policy, "actor", policy).features_extractor).__name__
    if extractor != "FlattenExtractor":
        raise PolicyFileError(f"export: only flat observations (FlattenExtractor) are supported, got {extractor}")
    if hasattr(policy, "actor"):  # SAC / TD3: latent_pi then mu, squashed
        modules = list(policy.actor.latent_pi) + [policy.actor.mu]
    elif hasattr(policy, "mlp_extractor"):  # PPO / A2C: the policy branch, then the action head
        modules = list(policy.mlp_extractor.policy_net) + [policy.action_net]
    else:
        raise PolicyFileError(f"export: unsupported policy {type(policy).__name__} (MLP actor-critic or SAC/TD3 actor)")
    layers = _dense_layers(modules, nn)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{k}{i}": a for i, (w, b, _) in enumerate(layers) for k, a in (("W", w), ("b", b))})
    (out / WEIGHTS).write_bytes(buffer.getvalue())
    spec = {
        "format": FORMAT,
        "algorithm": type(model).__name__,
        "observation_shape": list(model.observation_space.shape),
        "layers": [act for _, _, act in layers],
        "action": _action_spec(model.action_space, squashed=hasattr(policy, "actor")),
        "obs_normalization": _normalization(vec_normalize),
        "sha256": {WEIGHTS: sha256_file(out / WEIGHTS)},
    }
    (out / SPEC).write_text(json.dumps(spec, indent=2) + "\n")
    return out


def _dense_layers(modules, nn) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(W, b, activation after it) per Linear layer of a Linear/activation sequence."""
    names = {nn.Tanh: "tanh", nn.ReLU: "relu"}
    layers: list[tuple[np.ndarray, np.ndarray, str]] = []
    for module in modules:
        if isinstance(module, nn.Linear):
            layers.append((module.weight.detach().cpu().numpy().astype(np.float64),
                           module.bias.detach().cpu().numpy().astype(np.float64), "identity"))
        elif type(module) in names and layers and layers[-1][2] == "identity":
            w, b, _ = layers[-1]
            layers[-1] = (w, b, names[type(module)])
        else:
            raise PolicyFileError(f"export: unsupported layer {module!r} (Linear with Tanh or ReLU)")
    return layers


def _action_spec(space, squashed: bool) -> dict[str, Any]:
    kind = type(space).__name__
    if kind == "MultiDiscrete":
        return {"type": "multidiscrete", "nvec": [int(n) for n in space.nvec]}
    if kind == "Discrete":
        return {"type": "multidiscrete", "nvec": [int(space.n)], "scalar": True}
    if kind == "Box":
        return {"type": "box", "squashed": squashed, "low": space.low.tolist(), "high": space.high.tolist()}
    raise PolicyFileError(f"export: unsupported action space {space}")


def _normalization(vec_normalize) -> dict[str, Any] | None:
    if vec_normalize is None or not vec_normalize.norm_obs:
        return None
    rms = vec_normalize.obs_rms
    return {"mean": np.asarray(rms.mean, dtype=float).tolist(), "var": np.asarray(rms.var, dtype=float).tolist(),
            "epsilon": float(vec_normalize.epsilon), "clip": float(vec_normalize.clip_obs)}


# --- load and run (numpy only) ------------------------------------------------------------------


class NumpyPolicy:
    """An exported policy: ``predict(observations) -> actions`` with numpy alone."""

    def __init__(self, spec: dict[str, Any], weights: list[tuple[np.ndarray, np.ndarray]], source: str = "<memory>"):
        self.spec, self.source = spec, source
        self.layers = [(w, b, ACTIVATIONS[act]) for (w, b), act in zip(weights, spec["layers"])]
        self.obs_shape = tuple(spec["observation_shape"])
        norm = spec.get("obs_normalization")
        self._norm = None if norm is None else (np.asarray(norm["mean"]), np.sqrt(np.asarray(norm["var"]) + norm["epsilon"]),
                                                norm["clip"])
        action = spec["action"]
        self._nvec = action.get("nvec")
        self._splits = np.cumsum(self._nvec)[:-1] if self._nvec else None
        self._low = np.asarray(action["low"]) if action["type"] == "box" else None
        self._high = np.asarray(action["high"]) if action["type"] == "box" else None

    @classmethod
    def load(cls, folder: str | Path) -> "NumpyPolicy":
        """Load an exported folder; a missing file, an unknown format or a weights file whose
        SHA-256 differs from the one recorded is an error naming the file."""
        folder = Path(folder)
        spec_path, weights_path = folder / SPEC, folder / WEIGHTS
        for path in (spec_path, weights_path):
            if not path.is_file():
                raise PolicyFileError(f"{path}: missing (export a controller with `festgym export`)")
        try:
            spec = json.loads(spec_path.read_text())
        except json.JSONDecodeError as exc:
            raise PolicyFileError(f"{spec_path}: not JSON ({exc})") from None
        if spec.get("format") != FORMAT:
            raise PolicyFileError(f"{spec_path}: format {spec.get('format')!r}, expected {FORMAT!r}")
        expected, actual = spec.get("sha256", {}).get(WEIGHTS), sha256_file(weights_path)
        if expected != actual:
            raise PolicyFileError(f"{weights_path}: SHA-256 {actual} does not match {expected} recorded in "
                                  f"{spec_path}; refusing to load (re-export or restore the file)")
        with np.load(weights_path, allow_pickle=False) as data:
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


__all__ = ["FORMAT", "NumpyPolicy", "PolicyFileError", "export_sb3", "sha256_file"]
