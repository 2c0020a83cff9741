"""Environment speed: steps per wall-second on one core, default scenario.

    python benchmarks/env_speed.py [--steps 10000] [--repeats 3]

Targets (issue 4): LocalGPU-v0 ≥ 5,000 steps/s, Cluster-v0 ≥ 1,000 steps/s. For each env, with
random actions (an untrained agent: every step changes clocks and shares) and with a fixed action
(a settled agent), both drawn beforehand from a seeded generator (the sampler is the agent's cost,
not the environment's), it warms up (slice caches, first episodes), then times ``--repeats`` runs
of ``--steps`` steps and prints the best and the median rate: this machine's timings vary by tens
of percent between runs, and the best is the least disturbed one. Also prints whether the
simulator runs compiled (mypyc, see setup.py) and its own cost per simulated second.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import festgym  # noqa: F401  (registers the environments)
from festgym.compiled import compiled_modules
from festgym.policies.least_loaded import LeastLoaded
from festgym.scenario import load_scenario

TARGETS = {"festgym/LocalGPU-v0": 5000, "festgym/Placement-v0": None, "festgym/Cluster-v0": 1000}
WARMUP_STEPS = 3000


def rates(env_id: str, steps: int, repeats: int, fixed: bool) -> list[float]:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    # Actions are drawn beforehand: what is timed is the environment, not the action sampler.
    rng = np.random.default_rng(0)
    total = WARMUP_STEPS + steps * repeats
    actions = rng.integers(0, env.nvec, size=(1 if fixed else total, len(env.nvec)))
    cursor = 0

    def run(n: int) -> float:
        nonlocal cursor
        started = time.perf_counter()
        for _ in range(n):
            _, _, term, trunc, _ = env.step(actions[0 if fixed else cursor])
            cursor += 1
            if term or trunc:
                env.reset()
        return n / (time.perf_counter() - started)

    run(WARMUP_STEPS)
    return [run(steps) for _ in range(repeats)]


def sim_floor(local: bool) -> float:
    """Microseconds of bare simulation (LeastLoaded policy) per simulated second."""
    scenario = load_scenario("default")
    sim = scenario.simulator(local=local)
    result = sim.run(scenario.trace(0, 600, local=local), LeastLoaded())
    return result.summary["wall_s"] / result.summary["horizon_s"] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"compiled modules: {', '.join(compiled_modules()) or 'none (pure Python)'}")
    for env_id, target in TARGETS.items():
        for fixed in (False, True):
            r = rates(env_id, args.steps, args.repeats, fixed)
            goal = f"target ≥ {target:,}" if target else "no target"
            print(f"{env_id:22s} {'fixed ' if fixed else 'random'} actions: best {max(r):7,.0f} steps/s, "
                  f"median {statistics.median(r):7,.0f} ({goal})")
    for local in (True, False):
        print(f"bare simulator, {'local sub-cluster' if local else 'full cluster'} (LeastLoaded): "
              f"{sim_floor(local):,.0f} µs per simulated second")


if __name__ == "__main__":
    main()
