"""Learnability of ``festgym/LocalGPU-v0``: SB3 PPO for 50k steps against random, Festina's local
rule and a fixed top-clock even-share controller, scored by mean episode reward on held-out seeds.

    python benchmarks/learn_local.py [--timesteps 50000] [--seed 0] [--episodes 5]

Prints one row per controller: mean episode reward ± standard deviation over the evaluation
episodes, its energy and TTFT/TBT penalty terms, energy (kWh) and TTFT/TBT attainment. Needs the
``train`` extra (stable-baselines3, torch).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

EVAL_SEEDS = 10_000  # evaluation seeds start here, far from training's


def evaluate(env, act, episodes: int) -> dict:
    from festgym.envs.rollout import run_episode

    rows = [run_episode(env, act, EVAL_SEEDS + k) for k in range(episodes)]
    rewards = np.array([r["reward"] for r in rows])
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return {"reward": rewards.mean(), "std": rewards.std(), "energy": mean["energy_term"], "ttft": mean["ttft_term"],
            "tbt": mean["tbt_term"], "kwh": mean["kwh"], "ttft_att": mean["ttft_attainment"],
            "tbt_att": mean["tbt_attainment"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()

    import gymnasium as gym
    from stable_baselines3 import PPO

    import festgym  # noqa: F401  (registers the environments)

    env = gym.make("festgym/LocalGPU-v0")
    eval_env = gym.make("festgym/LocalGPU-v0")
    started = time.perf_counter()
    model = PPO("MlpPolicy", env, n_steps=2048, batch_size=128, learning_rate=3e-4, gamma=0.99, ent_coef=0.01,
                seed=args.seed, verbose=0, device="cpu")
    model.learn(total_timesteps=args.timesteps)
    train_s = time.perf_counter() - started
    top = np.array([env.unwrapped.nvec[0] - 1] + [env.unwrapped.nvec[1] - 1] * (len(env.unwrapped.nvec) - 1))
    eval_env.action_space.seed(args.seed)
    controllers = {
        "random": lambda obs: eval_env.action_space.sample(),
        "max-clock, even shares": lambda obs: top,
        "festina (local rule)": lambda obs: None,
        f"PPO {args.timesteps // 1000}k steps": lambda obs: model.predict(obs, deterministic=True)[0],
    }
    print(f"PPO trained {args.timesteps:,} steps in {train_s:.0f} s ({args.timesteps / train_s:,.0f} steps/s); "
          f"evaluation: {args.episodes} episodes of {eval_env.unwrapped.scenario.env.episode_s:.0f} s, seeds "
          f"{EVAL_SEEDS}..{EVAL_SEEDS + args.episodes - 1}")
    print(f"{'controller':26s} {'reward':>16s} {'energy':>8s} {'ttft':>8s} {'tbt':>8s} {'kWh':>7s} "
          f"{'TTFT att':>8s} {'TBT att':>8s}")
    for name, act in controllers.items():
        r = evaluate(eval_env, act, args.episodes)
        print(f"{name:26s} {r['reward']:9.1f} ± {r['std']:5.1f} {r['energy']:8.1f} {r['ttft']:8.1f} {r['tbt']:8.1f} "
              f"{r['kwh']:7.4f} {r['ttft_att']:8.3f} {r['tbt_att']:8.3f}")


if __name__ == "__main__":
    main()
