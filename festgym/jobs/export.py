"""A trained stable-baselines3 controller written as a numpy-only policy folder (needs torch).

:func:`export_sb3` writes ``weights.npz`` and ``policy.json`` in the format
:class:`~festgym.control.numpy_policy.NumpyPolicy` loads; see that module for what it holds.
:class:`ExportConfig` holds ``festgym export``'s settings (this module imports torch only to export).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from festgym.control.numpy_policy import (
    FORMAT,
    SPEC,
    WEIGHTS,
    PolicyFileError,
    sha256_file,
)


@dataclass(frozen=True)
class ExportConfig:
    """One export (what ``festgym export`` parses; :func:`festgym.jobs.train.export_checkpoint` runs it)."""

    checkpoint: str = field(metadata={"cli": False})
    """Checkpoint folder (the command's argument)."""
    out: str | None = None
    """Output folder (default: <checkpoint>/numpy, sealed into the card)."""
    sha256: str | None = field(default=None, metadata={"metavar": "DIGEST"})
    """The checkpoint's digest from a source you trust: the one `festgym train` printed, or its author published
    (`festgym export` prints it for an exported checkpoint). model.zip and vecnormalize.pkl are pickles, which run
    code when loaded: without it they are not loaded."""


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
    return write_policy(dense_layers(modules, nn), out_dir, algorithm=type(model).__name__,
                        observation_shape=model.observation_space.shape,
                        action=action_spec(model.action_space, squashed=hasattr(policy, "actor")),
                        obs_normalization=_normalization(vec_normalize))


def write_policy(layers: list[tuple[np.ndarray, np.ndarray, str]], out_dir: str | Path, *, algorithm: str,
                 observation_shape: tuple[int, ...], action: dict[str, Any],
                 obs_normalization: dict[str, Any] | None = None) -> Path:
    """Write dense ``layers`` (W, b, activation after it) as a numpy policy folder
    (:mod:`festgym.control.numpy_policy`); returns the folder. Every exporter ends here."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    arrays: dict[str, np.ndarray] = {f"{k}{i}": a for i, (w, b, _) in enumerate(layers)
                                     for k, a in (("W", w), ("b", b))}
    # No allow_pickle keyword: before NumPy 2.1 savez would store it as one more array (plain arrays never
    # pickle). The stub types **arrays as that keyword too, hence the ignore.
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    (out / WEIGHTS).write_bytes(buffer.getvalue())
    spec = {
        "format": FORMAT,
        "algorithm": algorithm,
        "observation_shape": list(observation_shape),
        "layers": [act for _, _, act in layers],
        "action": action,
        "obs_normalization": obs_normalization,
        "sha256": {WEIGHTS: sha256_file(out / WEIGHTS)},
    }
    (out / SPEC).write_text(json.dumps(spec, indent=2) + "\n")
    return out


def dense_layers(modules, nn) -> list[tuple[np.ndarray, np.ndarray, str]]:
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


def action_spec(space, squashed: bool) -> dict[str, Any]:
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


__all__ = ["ExportConfig", "action_spec", "dense_layers", "export_sb3", "write_policy"]
