"""Rule policies by name: Festina, the baselines it is compared with, and the reference rule.

``make_rule_policy(name)`` builds one with the parameters of its shipped (or the user's)
``policies/<name>.yaml`` (:mod:`festgym.resources`); keyword arguments override them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from festgym.config import read_mapping
from festgym.policies.baselines import BASELINES
from festgym.policies.clairvoyant import Clairvoyant
from festgym.policies.festina import Festina
from festgym.policies.least_loaded import LeastLoaded
from festgym.policies.offline import OfflineOptimal
from festgym.resources import POLICY_PARAMS
from festgym.sim.policy import Policy

RULE_POLICIES: dict[str, Callable[..., Policy]] = {
    "festina": Festina,
    **BASELINES,
    "least-loaded": LeastLoaded,
    "clairvoyant": lambda **params: clairvoyant_festina(**params),
    "offline-optimal": lambda **params: offline_festina(**params),
}

COMPARED = ("festina", *BASELINES)
"""What ``festgym compare`` runs by default: Festina and the published baselines (``least-loaded``
is the simulator's reference rule, not a published system; ``clairvoyant`` sees the future and
costs dozens of plain runs, so it runs when named). ``clairvoyant`` adjusts a Festina configured
as ``policies/festina.yaml``; its parameter ``festina`` (a mapping) overrides that."""


REFERENCES = ("clairvoyant", "offline-optimal")
"""Policies that know the future (``festgym compare --references``): bounds, not deployable."""


def clairvoyant_festina(festina: dict[str, Any] | None = None, **params: Any) -> Clairvoyant:
    """The clairvoyant reference over Festina as ``policies/festina.yaml`` sets it (``festina``
    overrides some of its parameters); ``params``: :class:`ClairvoyantConfig` fields."""
    return Clairvoyant(make_rule_policy("festina", **(festina or {})), **params)


def offline_festina(festina: dict[str, Any] | None = None, **params: Any) -> OfflineOptimal:
    """The offline plan's replay over Festina's local control (``festina`` as for
    :func:`clairvoyant_festina`); ``params``: :class:`OfflineConfig` fields."""
    return OfflineOptimal(make_rule_policy("festina", **(festina or {})), **params)


def rule_params(name: str) -> dict[str, Any]:
    """The ``params`` mapping of ``policies/<name>.yaml`` (empty when there is no such file)."""
    path = POLICY_PARAMS.find(f"{name}.yaml")  # none: the policy's own defaults
    return {} if path is None else dict(read_mapping(path).get("params") or {})


def make_rule_policy(name: str, **params: Any) -> Policy:
    """A rule policy by name, configured from ``policies/<name>.yaml`` and ``params``."""
    if name not in RULE_POLICIES:
        raise ValueError(f"unknown rule policy {name!r}; rule policies: {', '.join(sorted(RULE_POLICIES))}")
    return RULE_POLICIES[name](**{**rule_params(name), **params})


__all__ = ["COMPARED", "REFERENCES", "RULE_POLICIES", "clairvoyant_festina", "make_rule_policy", "offline_festina",
           "rule_params"]
