"""Trained spawn-gate controllers in the simulator (LearnedSpawn), with hand-built numpy policies
whose choice is known: the middle level is Festina bit for bit, the ends make the gate's choice,
and the loader refuses what is not a Spawn-v0 controller."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_learned import write_export

from festgym.control.checkpoint import LocalController, seal_card
from festgym.control.numpy_policy import PolicyFileError
from festgym.jobs.compare import check_policies
from festgym.policies import make_policy
from festgym.policies.gate import GATE_FEATURES, GATE_LEVELS, LearnedSpawn
from festgym.scenario import load_scenario

DURATION_S = 300.0


N_OBS, NVEC = len(GATE_FEATURES), (len(GATE_LEVELS),)


def write_gate_checkpoint(folder, level: int, n_obs: int = N_OBS, nvec=NVEC, env: str = "festgym/Spawn-v0"):
    """A Spawn-v0 checkpoint whose policy always picks ``level`` (zero weights, a one-hot bias)."""
    write_export(folder, [np.eye(n)[level] for n in nvec], n_obs, nvec)
    card = {"name": folder.name, "scenario": "default",
            "agent": {"algo": "ppo", "env": env, "env_kwargs": {"action_type": "multidiscrete"}}, "sha256": {}}
    (folder / "card.json").write_text(json.dumps(card))
    seal_card(folder, None)
    return folder


def run(policy, seed: int = 0):
    scenario = load_scenario("default")
    return scenario.simulator().run(scenario.trace(seed, DURATION_S), policy)


@pytest.fixture(scope="module")
def festina_run():
    return run(make_policy("festina"))


def test_middle_level_is_festina_bit_for_bit(tmp_path, festina_run):
    policy = make_policy(str(write_gate_checkpoint(tmp_path / "middle", 1)))
    assert isinstance(policy, LearnedSpawn)
    result = run(policy)
    assert policy.gates > 0 and policy.overrides == 0
    assert result.requests.equals(festina_run.requests)
    assert result.gpus.drop(columns="policy", errors="ignore").equals(festina_run.gpus.drop(columns="policy",
                                                                                              errors="ignore"))


def test_the_ends_make_the_gates_choice(tmp_path, festina_run):
    absorb = make_policy(str(write_gate_checkpoint(tmp_path / "absorb", 0)))
    spawn = make_policy(str(write_gate_checkpoint(tmp_path / "spawn", 2)))
    colds = {name: int(run(p).gpus.cold_starts.sum()) for name, p in (("absorb", absorb), ("spawn", spawn))}
    assert colds["absorb"] < int(festina_run.gpus.cold_starts.sum()) < colds["spawn"]
    assert absorb.overrides > 0 and spawn.overrides > 0


def test_loader_refuses_other_controllers(tmp_path):
    wrong_env = write_gate_checkpoint(tmp_path / "placement", 1, env="festgym/Placement-v0")
    with pytest.raises(PolicyFileError, match="a festgym/Placement-v0 controller"):
        LearnedSpawn(wrong_env)
    with pytest.raises(PolicyFileError, match=r"observes \(5,\)"):
        LearnedSpawn(write_gate_checkpoint(tmp_path / "short", 1, n_obs=5))
    with pytest.raises(PolicyFileError, match="does not match festgym/Spawn-v0's levels"):
        LearnedSpawn(write_gate_checkpoint(tmp_path / "levels", 1, nvec=(4,)))
    with pytest.raises(PolicyFileError, match="a festgym/Spawn-v0 controller"):
        LocalController(write_gate_checkpoint(tmp_path / "gate", 1))


def test_compare_lists_a_spawn_controller_by_default(tmp_path, monkeypatch):
    write_gate_checkpoint(tmp_path / "gate", 1)
    monkeypatch.setenv("FESTGYM_CHECKPOINTS", str(tmp_path))
    assert "gate" in check_policies(None)
