"""Policies: Festina, the baselines it is compared with, the reference rule, the clairvoyant
reference and trained controllers, by name (:func:`make_policy`)."""

from festgym.policies.baselines import BaselineConfig
from festgym.policies.clairvoyant import Clairvoyant, ClairvoyantConfig
from festgym.policies.festina import Festina, FestinaConfig
from festgym.policies.learned import LearnedLocal
from festgym.policies.least_loaded import LeastLoaded
from festgym.policies.registry import background_policy, make_policy
from festgym.policies.rules import (
           COMPARED,
           REFERENCES,
           RULE_POLICIES,
           make_rule_policy,
           rule_params,
)

__all__ = ["COMPARED", "REFERENCES", "RULE_POLICIES", "BaselineConfig", "Clairvoyant", "ClairvoyantConfig",
           "Festina", "FestinaConfig", "LearnedLocal", "LeastLoaded",
           "background_policy", "make_policy", "make_rule_policy", "rule_params"]
