"""Training throughput of the two backends on the shipped PPO agent: environment steps per
wall-second of ``festgym train --backend sb3`` (``n_envs`` SubprocVecEnv workers) and ``--backend
rllib`` (``--env-runners`` Ray actors), each over the same steps, evaluation included.

    python benchmarks/train_throughput.py [--timesteps 40960] [--env-runners 2]

On a cluster, RLlib's runners scale past one machine's cores (``--ray ADDRESS``); on this one
both backends share its cores between sampling and learning, so the figure says what RLlib costs
and gains locally, not what a cluster gives. Each run writes a run folder under a temporary
directory; the wall time is the training call's.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from festgym.jobs.train_config import TrainConfig, load_agent


def steps_per_s(backend: str, timesteps: int, env_runners: int | None, runs_dir: str) -> float:
    module = __import__(f"festgym.jobs.{'train_rllib' if backend == 'rllib' else 'train'}", fromlist=["train"])
    config = TrainConfig("ppo", "default", timesteps, 0, runs_dir, progress=False, backend=backend,
                         env_runners=env_runners if backend == "rllib" else None)
    started = time.perf_counter()
    module.train(config)
    return timesteps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=40_960)
    parser.add_argument("--env-runners", type=int, default=None, help="RLlib runners (default: the YAML's n_envs)")
    args = parser.parse_args()
    agent = load_agent("ppo")
    with tempfile.TemporaryDirectory() as runs:
        for backend in ("sb3", "rllib"):
            rate = steps_per_s(backend, args.timesteps, args.env_runners, runs)
            workers = agent.n_envs if backend == "sb3" or args.env_runners is None else args.env_runners
            print(f"{backend:5s}  {workers} workers  {args.timesteps} steps  {rate:8.0f} env-steps/wall-s")


if __name__ == "__main__":
    main()
