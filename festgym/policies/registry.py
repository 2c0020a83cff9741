"""Every policy by name: a rule policy (:mod:`festgym.policies.rules`) or a trained controller,
by checkpoint path or the name of a shipped checkpoint (:class:`LearnedLocal`)."""

from __future__ import annotations

from typing import Any

from festgym.control.checkpoint import find_checkpoints, resolve_checkpoint
from festgym.policies.learned import LearnedLocal
from festgym.policies.rules import RULE_POLICIES, make_rule_policy
from festgym.scenario import Scenario
from festgym.sim.policy import Policy


def make_policy(name: str, **params: Any) -> Policy:
    """A rule policy by name, configured from ``policies/<name>.yaml`` and ``params``; or a trained
    local controller (:class:`LearnedLocal`) by checkpoint path or shipped checkpoint name."""
    if name in RULE_POLICIES:
        return make_rule_policy(name, **params)
    if resolve_checkpoint(name) is not None:
        return LearnedLocal(name, **params)
    shipped = ", ".join(find_checkpoints())
    raise ValueError(f"unknown policy {name!r}; rule policies: {', '.join(sorted(RULE_POLICIES))}; checkpoints: "
                     f"{shipped or 'none shipped'} (or a checkpoint folder's path)")


def background_policy(scenario: Scenario) -> Policy:
    """The scenario's background rule policy (``policy`` section): what runs whatever an agent,
    or a trained controller, does not decide."""
    return make_policy(scenario.policy, **scenario.policy_params)


__all__ = ["background_policy", "make_policy"]
