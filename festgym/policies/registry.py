"""Every policy by name: a rule policy (:mod:`festgym.policies.rules`) or a trained controller,
by checkpoint path or the name of a shipped checkpoint (:class:`LearnedLocal`)."""

from __future__ import annotations

import importlib
from typing import Any

from festgym.control.checkpoint import GATE_ENV, find_checkpoints, read_card, resolve_checkpoint, trained_env
from festgym.errors import PolicyEntryError
from festgym.policies.gate import LearnedSpawn
from festgym.policies.learned import LearnedLocal
from festgym.policies.rules import RULE_POLICIES, make_rule_policy
from festgym.scenario import Scenario
from festgym.sim.policy import Policy

POLICY_METHODS = ("reset", "place", "control", "consolidate")
"""What an object needs to be run as a policy (:class:`~festgym.sim.policy.Policy`)."""


def is_entry_point(name: str) -> bool:
    """``package.module:attribute``: a policy class or factory in importable Python code."""
    module, sep, attr = name.partition(":")
    return bool(sep) and bool(module) and attr.isidentifier() and all(p.isidentifier() for p in module.split("."))


def load_entry_point(name: str, **params: Any) -> Policy:
    """The policy ``package.module:attribute(**params)`` builds; an error naming what is wrong
    otherwise (the module, the attribute, the call, or the missing policy methods)."""
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyEntryError(f"policy entry point {name!r}: cannot import {module_name} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise PolicyEntryError(f"policy entry point {name!r}: {module_name} has no callable {attr}")
    try:
        policy = factory(**params)
    except Exception as exc:  # the user's constructor: any failure is the submission's
        raise PolicyEntryError(f"policy entry point {name!r}: {attr}({', '.join(params)}) raised {exc!r}") from None
    missing = [m for m in POLICY_METHODS if not callable(getattr(policy, m, None))]
    if missing:
        raise PolicyEntryError(f"policy entry point {name!r}: what {attr} returned has no {', '.join(missing)} "
                               f"(subclass festgym.sim.policy.BasePolicy)")
    return policy


def make_policy(name: str, **params: Any) -> Policy:
    """A rule policy by name, configured from ``policies/<name>.yaml`` and ``params``; a trained
    controller by checkpoint path or shipped checkpoint name (a local one as :class:`LearnedLocal`,
    a spawn-gate one as :class:`LearnedSpawn`); or a policy in Python code, by entry point
    ``package.module:attribute`` (called with ``params``)."""
    if name in RULE_POLICIES:
        return make_rule_policy(name, **params)
    folder = resolve_checkpoint(name)
    if folder is not None:
        gate = trained_env(read_card(folder)) == GATE_ENV
        return LearnedSpawn(name, **params) if gate else LearnedLocal(name, **params)
    if is_entry_point(name):
        return load_entry_point(name, **params)
    shipped = ", ".join(find_checkpoints())
    raise ValueError(f"unknown policy {name!r}; rule policies: {', '.join(sorted(RULE_POLICIES))}; checkpoints: "
                     f"{shipped or 'none shipped'} (or a checkpoint folder's path, or a package.module:Class entry "
                     f"point)")


def background_policy(scenario: Scenario) -> Policy:
    """The scenario's background rule policy (``policy`` section): what runs whatever an agent,
    or a trained controller, does not decide."""
    return make_policy(scenario.policy, **scenario.policy_params)


__all__ = ["POLICY_METHODS", "background_policy", "is_entry_point", "load_entry_point", "make_policy"]
