"""Policies: Festina, the baselines it is compared with, the reference rule and trained
controllers, by name (:func:`make_policy`)."""

from festgym.policies.baselines import BaselineConfig
from festgym.policies.festina import Festina, FestinaConfig
from festgym.policies.learned import LearnedLocal
from festgym.policies.least_loaded import LeastLoaded
from festgym.policies.registry import background_policy, make_policy
from festgym.policies.rules import (
           COMPARED,
           RULE_POLICIES,
           make_rule_policy,
           rule_params,
)

__all__ = ["COMPARED", "RULE_POLICIES", "BaselineConfig", "Festina", "FestinaConfig", "LearnedLocal", "LeastLoaded",
           "background_policy", "make_policy", "make_rule_policy", "rule_params"]
