"""How much placement and consolidation could save, and what a learned placement controller gets.

    python benchmarks/placement_headroom.py [--scenarios default,saturated] [--seeds 0-4]
        [--duration 3600] [--jobs 2]
        [--checkpoint runs/.../numpy [--checkpoint ...]] [--episodes 0-4]

1. **The bound.** Festina runs each scenario; :meth:`festgym.sim.results.Result.idle_excess_j`
   gives the energy its idle and asleep engines drew above their GPUs' empty floor. No placement,
   keep-alive or consolidation of the same work can save more of it while the nodes stay on (a
   GPU an engine leaves still draws the floor), and reaching it would need every idle engine gone
   with no cold start to pay for. Printed in Wh, as a share of wall-plug and of GPU energy.
2. **A learned placement controller.** Each ``--checkpoint`` (an exported ``numpy/`` folder of a
   ``Placement-v0`` controller, e.g. trained with ``festgym/data/agents/ppo-placement.yaml``)
   plays ``Placement-v0`` episodes ``--episodes`` (seeds never used to train or select it) against
   Festina's own placement on the same episodes: return, energy, TTFT attainment, requests refused.

docs/headroom.md reports both.
"""

from __future__ import annotations

import argparse
from multiprocessing import Pool
from pathlib import Path

import gymnasium as gym

import festgym  # noqa: F401  (registers the environments)
from festgym.control.numpy_policy import NumpyPolicy
from festgym.envs.rollout import run_episode
from festgym.jobs.compare import parse_seeds
from festgym.policies.registry import make_policy
from festgym.scenario import load_scenario


def festina_bound(job: tuple[str, int, float | None]) -> dict[str, float | str]:
    name, seed, duration = job
    scenario = load_scenario(name)
    result = scenario.simulator().run(scenario.trace(seed, duration), make_policy("festina"))
    s = result.summary
    excess_kwh = result.idle_excess_j() / 3.6e6
    return {"scenario": name, "seed": seed, "excess_wh": 1000 * excess_kwh,
            "wall_pct": 100 * excess_kwh / s["energy_kwh"], "gpu_pct": 100 * excess_kwh / s["gpu_energy_kwh"],
            "node_off_h": s["node_off_hours"]}


def bound_table(scenarios: list[str], seeds: tuple[int, ...], duration: float | None, jobs: int) -> None:
    with Pool(jobs) as pool:
        rows = pool.map(festina_bound, [(n, s, duration) for n in scenarios for s in seeds])
    print("scenario              idle excess Wh   % wall-plug (min-max)   % GPU   node-off h")
    for name in scenarios:
        mine = [r for r in rows if r["scenario"] == name]
        mean = {k: sum(float(r[k]) for r in mine) / len(mine) for k in ("excess_wh", "wall_pct", "gpu_pct",
                                                                       "node_off_h")}
        lo, hi = min(float(r["wall_pct"]) for r in mine), max(float(r["wall_pct"]) for r in mine)
        print(f"{name:22s}{mean['excess_wh']:10.1f}   {mean['wall_pct']:8.2f} ({lo:.2f}-{hi:.2f})"
              f"   {mean['gpu_pct']:11.2f}   {mean['node_off_h']:8.2f}")


def play(folder: str | None, seeds: tuple[int, ...]) -> list[dict[str, float]]:
    env = gym.make("festgym/Placement-v0")
    policy = None if folder is None else NumpyPolicy.load(folder)
    act = (lambda obs: None) if policy is None else (lambda obs: policy.predict(obs))
    return [run_episode(env, act, seed) for seed in seeds]


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
    ap.add_argument("--episodes", default="0-4", help="Placement-v0 episode seeds the controllers play")
    args = ap.parse_args()
    if args.scenarios:
        bound_table(args.scenarios.split(","), parse_seeds(args.seeds), args.duration, args.jobs)
    if args.checkpoint:
        placement_table(args.checkpoint, parse_seeds(args.episodes))


if __name__ == "__main__":
    main()
