"""Policies by name: Festina, the baselines it is compared with, and trained controllers.

``make_policy(name)`` builds a rule policy with the parameters in ``agents/<name>.yaml`` when
that file exists (keyword arguments override them); ``POLICIES`` lists the names. A checkpoint
path, or the name of a checkpoint shipped in ``checkpoints/``, gives a :class:`LearnedLocal`.
"""

from __future__ import annotations

from typing import Any, Callable

from festgym.paths import project_dir
from festgym.policy import LeastLoaded, Policy
from festgym.policies.baselines import BASELINES, BaselineConfig
from festgym.policies.festina import Festina, FestinaConfig
from festgym.checkpoint import find_checkpoints, resolve_checkpoint
from festgym.policies.learned import LearnedLocal
from festgym.specs import read_mapping

POLICIES: dict[str, Callable[..., Policy]] = {
    "festina": Festina,
    **BASELINES,
    "least-loaded": LeastLoaded,
}


COMPARED = ("festina", *BASELINES)
"""What ``festgym compare`` runs by default: Festina and the published baselines (``least-loaded``
is the simulator's reference rule, not a published system)."""


def agent_params(name: str) -> dict[str, Any]:
    """The ``params`` mapping of ``agents/<name>.yaml`` (empty when there is no such file)."""
    try:
        path = project_dir("agents", "FESTGYM_AGENTS") / f"{name}.yaml"
    except FileNotFoundError:
        return {}
    if not path.is_file():
        return {}
    return dict(read_mapping(path).get("params") or {})


def make_policy(name: str, **params: Any) -> Policy:
    """A rule policy by name, configured from ``agents/<name>.yaml`` and ``params``; or a trained
    local controller (:class:`LearnedLocal`) by checkpoint path or shipped checkpoint name."""
    if name in POLICIES:
        return POLICIES[name](**{**agent_params(name), **params})
    if resolve_checkpoint(name) is not None:
        return LearnedLocal(name, **params)
    shipped = ", ".join(find_checkpoints())
    raise ValueError(f"unknown policy {name!r}; rule policies: {', '.join(sorted(POLICIES))}; checkpoints: "
                     f"{shipped or 'none shipped'} (or a checkpoint folder's path)")


__all__ = ["COMPARED", "POLICIES", "BaselineConfig", "Festina", "FestinaConfig", "LearnedLocal", "agent_params",
           "find_checkpoints", "make_policy", "resolve_checkpoint"]
