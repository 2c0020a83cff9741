"""How much placement and consolidation could save, and what a learned placement controller gets.

    python benchmarks/placement_headroom.py [--scenarios default,saturated] [--seeds 0-4]
        [--duration 3600] [--jobs 2]
        [--checkpoint runs/.../numpy [--checkpoint ...]] [--episodes 0-4]

1. **What placement acts on.** Festina runs each scenario. Two parts of its GPU energy lie above
   the empty floor (``empty_w``, what a GPU on a powered node draws at least) and could go if
   engines were placed, kept and packed perfectly: what its engines drew while serving nothing
   (idle, asleep, loading; :meth:`festgym.sim.results.Result.standby_excess_j`), and the busy
   GPUs' resident floor above the empty one (``resident_idle_w`` at the tick's clock minus
   ``empty_w``, per busy tick), which packing busy engines together could share. Their sum bounds
   what placement, keep-alive and consolidation of the same work could save of the GPUs' static
   draw while every node stays on (loosely: packed engines run slower; and not the serving
   energy, which larger batches on fewer replicas lower, nor nodes powered off). Printed in Wh,
   as a share of wall-plug and of GPU energy.
2. **A learned placement controller.** Each ``--checkpoint`` (an exported ``numpy/`` folder of a
   ``Placement-v0`` controller, e.g. trained with ``festgym/data/agents/ppo-placement.yaml``)
   plays ``Placement-v0`` episodes ``--episodes`` (by default seeds 30000 up: training seeds its
   workers' first episodes from its own seed, and validation plays 10000 up) against Festina's
   own placement on the same episodes: return, GPU energy, TTFT attainment, requests refused.

docs/headroom.md reports both.
"""

from __future__ import annotations

import argparse
from multiprocessing import Pool
from pathlib import Path

import gymnasium as gym
import numpy as np

import festgym  # noqa: F401  (registers the environments)
from festgym.control.numpy_policy import NumpyPolicy
from festgym.envs.rollout import run_episode
from festgym.jobs.compare import parse_seeds
from festgym.policies.registry import make_policy
from festgym.scenario import load_scenario


def busy_floor_excess_j(result, sim) -> float:
    """The busy GPUs' resident floor above the empty one, summed over busy ticks (J)."""
    line = result.timeline
    busy = line[line.state == "busy"]
    floor_w = np.array([sim.gpus[g].spec.resident_idle_w(c) - sim.gpus[g].empty_w
                        for g, c in zip(busy.gpu.to_numpy(), busy.clock_mhz.to_numpy())])
    return float((floor_w * busy.interval_s.to_numpy()).sum())


def festina_bound(job: tuple[str, int, float | None]) -> dict[str, float | str]:
    name, seed, duration = job
    scenario = load_scenario(name)
    sim = scenario.simulator()
    result = sim.run(scenario.trace(seed, duration), make_policy("festina"))
    s = result.summary
    standby_kwh, busy_kwh = result.standby_excess_j() / 3.6e6, busy_floor_excess_j(result, sim) / 3.6e6
    total_kwh = standby_kwh + busy_kwh
    return {"scenario": name, "seed": seed, "standby_wh": 1000 * standby_kwh, "busy_wh": 1000 * busy_kwh,
            "wall_pct": 100 * total_kwh / s["energy_kwh"], "gpu_pct": 100 * total_kwh / s["gpu_energy_kwh"],
            "standby_pct": 100 * standby_kwh / s["energy_kwh"], "node_off_h": s["node_off_hours"]}


def bound_table(scenarios: list[str], seeds: tuple[int, ...], duration: float | None, jobs: int) -> None:
    with Pool(jobs) as pool:
        rows = pool.map(festina_bound, [(n, s, duration) for n in scenarios for s in seeds])
    print("scenario              standby Wh   busy floor Wh   standby % wall   bound % wall (min-max)   bound % GPU"
          "   node-off h")
    for name in scenarios:
        mine = [r for r in rows if r["scenario"] == name]
        mean = {k: sum(float(r[k]) for r in mine) / len(mine)
                for k in ("standby_wh", "busy_wh", "standby_pct", "wall_pct", "gpu_pct", "node_off_h")}
        lo, hi = min(float(r["wall_pct"]) for r in mine), max(float(r["wall_pct"]) for r in mine)
        print(f"{name:22s}{mean['standby_wh']:10.1f}   {mean['busy_wh']:13.1f}   {mean['standby_pct']:14.2f}"
              f"   {mean['wall_pct']:12.2f} ({lo:.2f}-{hi:.2f})   {mean['gpu_pct']:11.2f}   {mean['node_off_h']:10.2f}")


def play(folder: str | None, seeds: tuple[int, ...]) -> list[dict[str, float]]:
    """Episodes of the default Placement-v0 (the shipped placement agents train on it)."""
    env = gym.make("festgym/Placement-v0")
    policy = None if folder is None else NumpyPolicy.load(folder)
    act = (lambda obs: None) if policy is None else (lambda obs: policy.predict(obs))
    try:
        return [run_episode(env, act, seed) for seed in seeds]
    finally:
        env.close()


def run_name(folder: str) -> str:
    """A training run's folder name for an export inside it (``<run>/checkpoint/numpy``)."""
    path = Path(folder).resolve()
    return path.parents[1].name if path.parent.name == "checkpoint" else path.name


def placement_table(folders: list[str], seeds: tuple[int, ...]) -> None:
    base = play(None, seeds)
    print("controller                      return   vs Festina   kWh vs Festina   TTFT att.   refused")
    for label, runs in [("festina", base)] + [(run_name(f), play(f, seeds)) for f in folders]:
        ret = sum(r["reward"] for r in runs) / len(runs)
        kwh = sum(r["kwh"] for r in runs) / sum(r["kwh"] for r in base) - 1
        ttft = sum(r["ttft_attainment"] for r in runs) / len(runs)
        refused = sum(r["rejected"] for r in runs) / len(runs)
        gap = ret - sum(r["reward"] for r in base) / len(base)
        print(f"{label:30.30s}{ret:9.1f}   {gap:+9.1f}   {100 * kwh:+13.2f}%   {100 * ttft:8.2f}%   {refused:7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="default,diurnal-low,saturated,mixed-a100-h100,serverless-multinode")
    ap.add_argument("--seeds", default="0-4", help="seeds of the bound's Festina runs")
    ap.add_argument("--duration", type=float, default=None, help="simulated seconds (default: the scenario's)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--checkpoint", action="append", default=[], help="exported Placement-v0 controller folder")
    ap.add_argument("--episodes", default="30000-30004", help="Placement-v0 episode seeds the controllers play")
    args = ap.parse_args()
    if args.scenarios:
        bound_table(args.scenarios.split(","), parse_seeds(args.seeds), args.duration, args.jobs)
    if args.checkpoint:
        placement_table(args.checkpoint, parse_seeds(args.episodes))


if __name__ == "__main__":
    main()
