"""Rule policies by name: Festina, the baselines it is compared with, and the reference rule.

``make_rule_policy(name)`` builds one with the parameters of its shipped (or the user's)
``policies/<name>.yaml`` (:mod:`festgym.resources`); keyword arguments override them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from festgym.config import read_mapping
from festgym.policies.baselines import BASELINES
from festgym.policies.festina import Festina
from festgym.policies.least_loaded import LeastLoaded
from festgym.resources import POLICY_PARAMS
from festgym.sim.policy import Policy

RULE_POLICIES: dict[str, Callable[..., Policy]] = {
    "festina": Festina,
    **BASELINES,
    "least-loaded": LeastLoaded,
}

COMPARED = ("festina", *BASELINES)
"""What ``festgym compare`` runs by default: Festina and the published baselines (``least-loaded``
is the simulator's reference rule, not a published system)."""


def rule_params(name: str) -> dict[str, Any]:
    """The ``params`` mapping of ``policies/<name>.yaml`` (empty when there is no such file)."""
    path = POLICY_PARAMS.find(f"{name}.yaml")  # none: the policy's own defaults
    return {} if path is None else dict(read_mapping(path).get("params") or {})


def make_rule_policy(name: str, **params: Any) -> Policy:
    """A rule policy by name, configured from ``policies/<name>.yaml`` and ``params``."""
    if name not in RULE_POLICIES:
        raise ValueError(f"unknown rule policy {name!r}; rule policies: {', '.join(sorted(RULE_POLICIES))}")
    return RULE_POLICIES[name](**{**rule_params(name), **params})


__all__ = ["COMPARED", "RULE_POLICIES", "make_rule_policy", "rule_params"]
