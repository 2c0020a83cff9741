"""Festina's decision cost: mean microseconds per call of each decision function.

    python benchmarks/festina_cost.py [--duration 1800] [--seed 0]

Target (issue 5): under 50 µs per call on average, as the paper's constant-time claim requires.
Runs Festina on the default scenario and times every ``place`` (one per request), ``control``
(one per awake GPU per control interval) and ``consolidate`` call (one per consolidation
interval) with ``time.perf_counter``. The first simulated minutes fill the decision caches (a
policy object keeps them for its life); they are timed too, so the figure includes the misses.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from festgym.compiled import compiled_modules
from festgym.policies import make_policy
from festgym.scenario import load_scenario

TARGET_US = 50.0
CALLS = ("place", "control", "consolidate")


class Timed:
    """Wraps a policy and accumulates the wall time of its decision calls."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.queue_order = getattr(inner, "queue_order", "fcfs")
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        for call in CALLS:
            setattr(self, call, self._timed(call, getattr(inner, call)))

    def _timed(self, call: str, fn):
        def timed(*args):
            started = time.perf_counter()
            out = fn(*args)
            self.seconds[call] += time.perf_counter() - started
            self.calls[call] += 1
            return out
        return timed

    def reset(self, cluster) -> None:
        self.inner.reset(cluster)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="simulated seconds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scenario = load_scenario("default")
    policy = Timed(make_policy("festina"))
    result = scenario.simulator().run(scenario.trace(args.seed, args.duration), policy)
    print(f"compiled modules: {', '.join(compiled_modules()) or 'none (pure Python)'}")
    print(f"default scenario, {args.duration:.0f} simulated s, seed {args.seed}: "
          f"{result.summary['requests']:,} requests, wall {result.summary['wall_s']:.1f} s")
    total_s = sum(policy.seconds.values())
    total_n = sum(policy.calls.values())
    for call in CALLS:
        n = policy.calls[call]
        mean = policy.seconds[call] / n * 1e6 if n else float("nan")
        print(f"  {call:12s} {n:8,} calls  {mean:7.1f} µs per call")
    print(f"  {'all':12s} {total_n:8,} calls  {total_s / total_n * 1e6:7.1f} µs per call (target < {TARGET_US:.0f})")


if __name__ == "__main__":
    main()
