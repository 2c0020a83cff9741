"""Environment speed: steps per wall-second on one core, random actions, default scenario.

    python benchmarks/env_speed.py [--steps 3000]

Targets (issue 4): LocalGPU-v0 ≥ 5,000 steps/s, Cluster-v0 ≥ 1,000 steps/s. Also prints the
simulator's own cost per simulated second for the same load, the floor under any env step, and
where a step's time goes (simulation and policy calls vs. observation and reward).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import festgym  # noqa: F401
from festgym.policy import LeastLoaded
from festgym.scenario import load_scenario

TARGETS = {"festgym/LocalGPU-v0": 5000, "festgym/Placement-v0": None, "festgym/Cluster-v0": 1000}


def env_speed(env_id: str, steps: int, fixed: bool = False) -> tuple[float, float, float]:
    """(steps/s, share of time in the simulator's advance, simulated seconds per step)."""
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    env.action_space.seed(0)
    action = env.action_space.sample()
    advance, sim_time = 0.0, 0.0
    done_steps = 0
    started = time.perf_counter()
    while done_steps < steps:
        t0 = env.sim.now
        a = action if fixed else env.action_space.sample()
        s0 = env.sim._wall
        _, _, term, trunc, _ = env.step(a)
        advance += env.sim._wall - s0
        sim_time += env.sim.now - t0
        done_steps += 1
        if term or trunc:
            env.reset()
    wall = time.perf_counter() - started
    return done_steps / wall, advance / wall, sim_time / done_steps


def sim_floor(local: bool) -> float:
    """Microseconds of bare simulation (LeastLoaded policy) per simulated second."""
    scenario = load_scenario("default")
    sim = scenario.simulator(local=local)
    trace = scenario.trace(0, 600, local=local)
    result = sim.run(trace, LeastLoaded())
    return result.summary["wall_s"] / result.summary["horizon_s"] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    for env_id, target in TARGETS.items():
        for fixed in (False, True):
            rate, in_sim, per_step = env_speed(env_id, args.steps, fixed)
            goal = f"target ≥ {target:,}" if target else "no target"
            print(f"{env_id:22s} {'fixed ' if fixed else 'random'} actions: {rate:7,.0f} steps/s ({goal}); "
                  f"{in_sim:4.0%} of the time in simulation and policy calls; {per_step:.3f} simulated s/step")
    for local in (True, False):
        print(f"bare simulator, {'local sub-cluster' if local else 'full cluster'} (LeastLoaded): "
              f"{sim_floor(local):,.0f} µs per simulated second")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
