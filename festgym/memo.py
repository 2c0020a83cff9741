"""Bounded memo tables for pure decisions (policy choices, action decoding).

A decision that depends only on a small, repeating key is computed once and looked up after.
A table is cleared when it reaches ``LIMIT`` entries: situations repeat, so it refills with the
ones in use, and memory stays bounded however long a run lasts.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

LIMIT = 100_000
"""Entries per table before it is cleared."""


class Memo(dict):
    """A memo table of pure decisions. A deep copy is the table itself: a forked run
    (:meth:`festgym.sim.simulator.Simulator.fork`) would compute the same entries, so copying
    them (thousands of arrays) would only cost the fork its time."""

    def __deepcopy__(self, memo: dict) -> Memo:
        return self


def remember(table: dict, key, value: T) -> T:
    """Store ``value`` under ``key`` (clearing a full table first) and return it."""
    if len(table) >= LIMIT:
        table.clear()
    table[key] = value
    return value
