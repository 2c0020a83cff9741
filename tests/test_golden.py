"""Results are bit-identical to those recorded in ``tests/golden/`` (each file's ``about`` says when).

``festgym compare --seeds 0`` (every shipped policy and the Festina ablation on the default scenario,
one simulated hour) must give the same energy, SLO and latency figures to the last bit, and seeded
rollouts of the three environments the same observations, rewards and ``info`` terms. A change that
moves any of them is a change of results, not of layout: it must say so and re-record these files,
never pass silently. Re-record with ``python tests/test_golden.py --record "why and when"``, adding
``compare`` or ``rollouts`` to re-record one file only (the tests themselves only ever compare).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from festgym.cli.main import main

GOLDEN = Path(__file__).parent / "golden"
WALL = ("wall_s", "requests_per_wall_s")
"""Columns that measure this machine, not the simulation."""


def test_compare_seed_0_is_bit_identical(tmp_path, capsys):
    golden = json.loads((GOLDEN / "compare_seed0.json").read_text())
    assert main([*golden["argv"], "--json", "--out", str(tmp_path)]) == 0
    runs = [{k: v for k, v in row.items() if k not in WALL} for row in json.loads(capsys.readouterr().out)["runs"]]
    assert [(r["policy"], r["seed"]) for r in runs] == [(r["policy"], r["seed"]) for r in golden["runs"]]
    for got, want in zip(runs, golden["runs"]):
        moved = {k: (want[k], got.get(k)) for k in want if got.get(k) != want[k]}
        assert not moved, f"{want['policy']}: (recorded, now) {moved}"


def rollout(env_id: str, seed: int, steps: int, overrides: dict) -> dict:
    """The recorded rollout: actions from ``default_rng(seed + 1000)``, every 7th step ``None``
    (the background policy decides), hashes of everything the environment returned."""
    env = gym.make(env_id, scenario="default", **overrides)
    try:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed + 1000)
        nvec = env.unwrapped.nvec
        observed = hashlib.sha256(np.asarray(obs, np.float32).tobytes())
        rewards, infos = [], []
        for k in range(steps):
            action = None if k % 7 == 3 else rng.integers(0, nvec)
            obs, reward, terminated, truncated, info = env.step(action)
            observed.update(np.asarray(obs, np.float32).tobytes())
            rewards.append(reward)
            infos.append({key: info[key] for key in sorted(info)})
            if terminated or truncated:
                break
    finally:
        env.close()
    return {"steps": len(rewards), "obs_sha256": observed.hexdigest(),
            "rewards_sha256": hashlib.sha256(np.asarray(rewards, dtype=np.float64).tobytes()).hexdigest(),
            "infos_sha256": hashlib.sha256(json.dumps(infos, sort_keys=True).encode()).hexdigest(),
            "reward_sum": float(sum(rewards)), "first_rewards": rewards[:5]}


@pytest.mark.parametrize("recorded", json.loads((GOLDEN / "rollouts.json").read_text())["rollouts"],
                         ids=lambda r: r["env"])
def test_environment_rollouts_are_bit_identical(recorded):
    got = rollout(recorded["env"], recorded["seed"], recorded["steps"], recorded["overrides"])
    want = {k: recorded[k] for k in got}
    assert got == want


def record(about: str, which: tuple[str, ...] = ("compare", "rollouts")) -> None:
    """Re-record the golden files named in ``which`` from this checkout, keeping their argv and
    rollout settings."""
    if "compare" in which:
        record_compare(about)
    if "rollouts" in which:
        record_rollouts(about)


def record_compare(about: str) -> None:
    import contextlib
    import io
    import tempfile

    compare_file = GOLDEN / "compare_seed0.json"
    golden = json.loads(compare_file.read_text())
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(out):
        assert main([*golden["argv"], "--json", "--out", tmp]) == 0
    runs = [{k: v for k, v in row.items() if k not in WALL} for row in json.loads(out.getvalue())["runs"]]
    argv = " ".join(golden["argv"])
    compare_file.write_text(json.dumps({"about": f"festgym {argv} (default scenario, every shipped policy and the "
                                        f"ablation), {about}; wall-clock columns left out.",
                                        "argv": golden["argv"], "runs": runs}, indent=1) + "\n")


def record_rollouts(about: str) -> None:
    rollouts_file = GOLDEN / "rollouts.json"
    old = json.loads(rollouts_file.read_text())["rollouts"]
    rollouts = [{"env": r["env"], "seed": r["seed"], "overrides": r["overrides"],
                 **rollout(r["env"], r["seed"], r["steps"], r["overrides"])} for r in old]
    rollouts_file.write_text(json.dumps({"about": "Seeded rollouts (actions from default_rng(seed + 1000), every 7th "
                                         f"step None), {about}: hashes of every observation, reward and info entry.",
                                         "rollouts": rollouts}, indent=1) + "\n")


if __name__ == "__main__":
    import sys

    if len(sys.argv) not in (3, 4) or sys.argv[1] != "--record" or not set(sys.argv[3:]) <= {"compare", "rollouts"}:
        sys.exit('usage: python tests/test_golden.py --record "recorded at ..., because ..." [compare|rollouts]')
    record(sys.argv[2], tuple(sys.argv[3:]) or ("compare", "rollouts"))
