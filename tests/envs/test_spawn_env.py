"""Spawn-v0 and Festina's spawn gate: the middle action is Festina bit for bit, the other two make
the gate's choice, and the gate's query changes nothing."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import festgym  # noqa: F401  (registers the environments)
from festgym.policies.festina import Festina
from festgym.policies.registry import make_policy
from festgym.scenario import load_scenario

SPAWN = "festgym/Spawn-v0"
EPISODE = {"episode_s": 120, "warmup_s": 30}


def episode(action, action_type: str = "multidiscrete", seed: int = 0):
    """Every step's (observation bytes, reward, info), the environment, and its cold starts."""
    env = gym.make(SPAWN, action_type=action_type, env=EPISODE)
    obs, _ = env.reset(seed=seed)
    out = [obs.tobytes()]
    while True:
        obs, reward, _, truncated, info = env.step(action)
        out.append((obs.tobytes(), reward, dict(info)))
        if truncated:
            return out, env.unwrapped


def gpu_energies(sim) -> list[float]:
    for g in sim.gpus:
        g.update(sim.now)
    return [g.energy_total_j for g in sim.gpus]


def test_spaces_name_the_gate():
    env = gym.make(SPAWN)
    assert env.action_space == gym.spaces.MultiDiscrete([3])
    assert env.unwrapped.action_labels == ("spawn",)
    names = env.unwrapped.feature_names
    assert len(names) == env.observation_space.shape[0] and "gate.festina_spawns" in names


@pytest.mark.parametrize("seed", [0, 4])
def test_middle_action_is_festina_bit_for_bit(seed):
    festina, _ = episode(None, seed=seed)  # None: the background policy decides
    assert len(festina) > 3  # the gate was met
    assert episode(np.array([1]), seed=seed)[0] == festina
    assert episode(np.zeros(1, np.float32), "box", seed=seed)[0] == festina  # the middle third of the Box


def test_middle_action_runs_as_festina_alone():
    """The gate's queries on every arrival change none of Festina's decisions: every request goes
    where a plain Festina run of the same trace sends it, and its tokens come at the same times
    (energy agrees to rounding: the episode integrates it in more pieces)."""
    _, env = episode(np.array([1]), seed=2)
    sim = env.sim
    alone = env.scenario.simulator()
    alone.start(sim.trace, make_policy("festina"))
    alone.advance(sim.now)
    ours, theirs = sim.ledger.log, alone.ledger.log
    for field in ("gpu", "status", "cold", "first_s", "finish_s", "gap_over"):
        assert np.array_equal(getattr(ours, field), getattr(theirs, field), equal_nan=True), field
    assert gpu_energies(alone) == pytest.approx(gpu_energies(sim), rel=1e-12)
    assert alone.ledger.tokens_out == sim.ledger.tokens_out


def test_the_other_actions_make_the_gates_choice():
    steps = {a: episode(np.array([a]), seed=1)[1] for a in (0, 2)}
    colds = {a: sum(g.cold_starts for g in env.sim.gpus) for a, env in steps.items()}
    assert colds[2] > colds[0]  # spawning at every gate starts more engines than absorbing
    _, festina = episode(None, seed=1)
    assert colds[0] <= sum(g.cold_starts for g in festina.sim.gpus) <= colds[2]


def test_gate_reports_festinas_choice_and_the_absorbing_gpu():
    env = gym.make(SPAWN, env=EPISODE)
    env.reset(seed=3)
    u = env.unwrapped
    seen = 0
    while u.gate is not None and seen < 20:
        gate = u.gate
        assert gate.spawn == (gate.unsafe >= u.festina.config.spawn_after)
        absorb = u.sim.view.gpu(gate.absorb_gpu).instance(u.request.model)
        assert absorb is not None and absorb.ready
        obs, *_ = env.step(np.array([1]))
        assert obs[u.feature_names.index("gate.festina_spawns")] in (0.0, 1.0)
        seen += 1
    assert seen > 0


def test_override_is_one_request_only():
    festina = make_policy("festina")
    assert isinstance(festina, Festina)
    scenario = load_scenario("default")
    sim = scenario.simulator()
    sim.start(scenario.trace(0, 60.0), festina)
    sim.advance(20.0, hold_arrivals=True)
    festina.spawn_override = True
    sim.advance(sim.now + 1e-9)  # places the held request: the override is consumed whatever it met
    assert festina.spawn_override is None


def test_needs_festina_as_the_background_policy():
    with pytest.raises(ValueError, match="set policy: festina"):
        gym.make(SPAWN, policy={"name": "max-clock"})
