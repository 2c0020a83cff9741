"""Batched environments: environment steps per wall-second of ``gym.make_vec(id, 8)`` (festgym's
vector entry point: N environments in one process) against Gymnasium's ``SyncVectorEnv`` and
``AsyncVectorEnv`` (subprocesses) over the same environments.

    python benchmarks/vector_env.py [--num-envs 8] [--steps 2000] [--repeats 3]

Target (issue 22): faster than ``SyncVectorEnv`` for N = 8. Actions are drawn beforehand from a
seeded generator (random: every step changes clocks and shares); each mode warms up, then times
``--repeats`` runs of ``--steps`` vector steps and prints the best and the median (this machine's
timings move by tens of percent between runs). Async runs one subprocess per environment, so on a
machine with fewer cores than environments it measures the cores as much as the environments.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import festgym  # noqa: F401  (registers the environments)
from festgym.compiled import compiled_modules

IDS = ("festgym/LocalGPU-v0", "festgym/Cluster-v0")
MODES = ("vector_entry_point", "sync", "async")
WARMUP = 300


def rates(env_id: str, mode: str, num_envs: int, steps: int, repeats: int) -> list[float]:
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    try:
        vec.reset(seed=0)
        rng = np.random.default_rng(0)
        nvec = vec.single_action_space.nvec
        actions = rng.integers(0, nvec, size=(WARMUP + steps * repeats, num_envs, len(nvec)))
        cursor = 0

        def run(n: int) -> float:
            nonlocal cursor
            started = time.perf_counter()
            for _ in range(n):
                vec.step(actions[cursor])
                cursor += 1
            return n * num_envs / (time.perf_counter() - started)

        run(WARMUP)
        return [run(steps) for _ in range(repeats)]
    finally:
        vec.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated (default: %(default)s)")
    args = parser.parse_args()
    print(f"compiled modules: {', '.join(compiled_modules()) or 'none (pure Python)'}; N = {args.num_envs}")
    for env_id in IDS:
        best = {}
        for mode in args.modes.split(","):
            r = rates(env_id, mode, args.num_envs, args.steps, args.repeats)
            best[mode] = max(r)
            print(f"{env_id:22s} {mode:19s} best {max(r):8,.0f} env-steps/s, median {statistics.median(r):8,.0f}")
        if "sync" in best and "vector_entry_point" in best:
            print(f"{env_id:22s} vector / sync: {best['vector_entry_point'] / best['sync']:.2f}× (target > 1)")


if __name__ == "__main__":
    main()
