"""The offline energy-optimal plan (a MILP over the known trace) and its replay."""

from __future__ import annotations

import pytest

pytest.importorskip("scipy")

from festgym.errors import FestgymError
from festgym.policies.offline import REPLAY_GAP, OfflineConfig, _Program
from festgym.policies.registry import make_policy
from festgym.scenario import load_scenario

SCENARIO = load_scenario("default")


def replay(seed: int, duration_s: float = 300.0):
    sim = SCENARIO.simulator(local=True)
    policy = make_policy("offline-optimal")
    summary = sim.run(SCENARIO.trace(seed, duration_s, local=True), policy).summary
    return policy.plan, summary


@pytest.mark.parametrize("seed", [0, 1])
def test_the_plan_replays_within_its_stated_gap(seed):
    plan, summary = replay(seed)
    replayed_j = summary["gpu_energy_kwh"] * 3.6e6
    assert abs(replayed_j - plan.energy_j) <= REPLAY_GAP * replayed_j
    assert plan.gap <= OfflineConfig().mip_rel_gap + 1e-9
    assert summary["finished"] == summary["requests"]  # every request served


def test_the_plan_routes_all_work_and_keeps_what_it_routes_to():
    plan, _ = replay(0)
    for w, routes in enumerate(plan.route):
        for model, shares in routes.items():
            assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
            assert all(model in plan.resident[w][g] and plan.clock_mhz[w][g] is not None for g in shares)


def test_deterministic():
    a, sa = replay(2, 120.0)
    b, sb = replay(2, 120.0)
    assert a.route == b.route and a.clock_mhz == b.clock_mhz and sa["gpu_energy_kwh"] == sb["gpu_energy_kwh"]


def _program(scenario, duration_s: float, **config):
    sim = scenario.simulator()
    sim.start(scenario.trace(0, duration_s), make_policy("festina"))
    return _Program(sim, OfflineConfig(**config))


def test_multi_gpu_engines_are_refused_by_name():
    with pytest.raises(FestgymError, match="spans 4 GPUs"):
        _program(load_scenario("mixed-tp-moe"), 30.0)


def test_a_cluster_too_small_for_a_window_says_so():
    small = load_scenario("default", cluster={"gpus": {"H100-SXM-80GB": 1}})
    with pytest.raises(FestgymError, match="fit in memory and capacity"):
        _program(small, 120.0).solve()
