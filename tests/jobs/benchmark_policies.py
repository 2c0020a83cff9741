"""Policies in plain Python for the benchmark's submission tests (imported by entry point)."""

from __future__ import annotations

import random

from festgym.policies.least_loaded import LeastLoaded
from festgym.sim.policy import BasePolicy


class Steady(LeastLoaded):
    """Deterministic: least-loaded placement under another name."""

    name = "steady"


class Wobbly(LeastLoaded):
    """Not deterministic: draws from the unseeded global generator on every arrival."""

    name = "wobbly"

    def place(self, request, cluster):
        return random.randrange(len(cluster.gpus))


class Crashing(BasePolicy):
    name = "crashing"

    def place(self, request, cluster):
        raise RuntimeError("no GPU for you")


def not_a_policy():
    return object()
