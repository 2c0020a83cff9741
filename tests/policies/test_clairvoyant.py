"""The clairvoyant reference and the residual adjustments it searches over."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from festgym.control.levels import clock_levels
from festgym.policies.clairvoyant import Clairvoyant, ClairvoyantConfig
from festgym.policies.registry import make_policy
from festgym.policies.residual import Residual
from festgym.scenario import load_scenario
from festgym.sim.reward import EnergySLOReward, Meter, RewardConfig

# One H100 serving two models (the default scenario's local sub-cluster), a short run.
SCENARIO = load_scenario("default", sim={"drain_s": 10.0})
DURATION_S = 30.0
ALL_STEPS = list(range(-9, 10))  # every move on Festina's 10-level clock grid: an exhaustive search


def cost_of_run(policy, seed: int = 0, weights: RewardConfig | None = None) -> tuple[float, dict]:
    """The run's cost as the clairvoyant counts it (energy over TDP·interval plus SLO lateness), and its summary."""
    sim = SCENARIO.simulator(local=True)
    sim.start(SCENARIO.trace(seed, DURATION_S, local=True), policy)
    meter = Meter(sim.gpus)
    meter.start(0.0)
    sim.advance(sim.end)
    reference = sim.gpus[0].spec.tdp_w * sim.config.control_interval_s
    reward, _ = EnergySLOReward(weights or RewardConfig(), reference)(meter.read(sim.now))
    return -reward, sim.result().summary


def exhaustive(**params) -> Clairvoyant:
    return make_policy("clairvoyant", **{"steps": ALL_STEPS, "hold_s": 1.0, "horizon_s": 1e6, **params})


@pytest.mark.parametrize("seed", [0, 1])
def test_never_worse_than_festina_where_the_search_is_exhaustive(seed):
    festina, _ = cost_of_run(make_policy("festina"), seed)
    policy = exhaustive()
    clairvoyant, summary = cost_of_run(policy, seed)
    assert clairvoyant <= festina + 1e-9 * abs(festina)
    assert policy.plans > 0 and summary["requests"] > 0


def test_deterministic():
    a = cost_of_run(make_policy("clairvoyant", horizon_s=10.0, hold_s=2.0), 3)
    b = cost_of_run(make_policy("clairvoyant", horizon_s=10.0, hold_s=2.0), 3)
    drop = ("wall_s", "requests_per_wall_s")
    assert a[0] == b[0]
    assert {k: v for k, v in a[1].items() if k not in drop} == {k: v for k, v in b[1].items() if k not in drop}


def test_only_the_zero_step_is_festina_bit_for_bit():
    festina, fs = cost_of_run(make_policy("festina"), 2)
    zero, zs = cost_of_run(make_policy("clairvoyant", steps=[0], hold_s=1.0, horizon_s=5.0), 2)
    assert zero == festina and zs["energy_kwh"] == fs["energy_kwh"]


def test_costs_a_bounded_multiple_of_a_plain_run():
    """K candidates rolled horizon_s forward every hold_s: at most K·horizon/hold simulated
    seconds of rollouts per simulated second, and as many forks as plans × K."""
    policy = make_policy("clairvoyant", horizon_s=8.0, hold_s=4.0)
    _, summary = cost_of_run(policy, 0)
    k = len(policy.config.candidates)
    assert policy.forks == policy.plans * k
    assert policy.rollout_s <= k * 8.0 / 4.0 * summary["horizon_s"] + 1e-9
    assert policy.rollout_s > 0


def test_adjusts_any_base_policy():
    policy = Clairvoyant(make_policy("max-clock"), steps=[-1], hold_s=2.0, horizon_s=6.0)
    cost, summary = cost_of_run(policy, 0)
    assert policy.plans > 0 and summary["requests"] > 0 and cost > 0


def test_config_is_checked_and_zero_always_tried():
    assert ClairvoyantConfig(steps=(-1, 1)).candidates == (0, -1, 1)
    with pytest.raises(ValueError, match="horizon_s"):
        make_policy("clairvoyant", horizon_s=0)
    with pytest.raises(ValueError, match="unknown setting"):
        make_policy("clairvoyant", horizon=10)


def test_residual_at_zero_is_its_base_and_moves_the_clock_by_levels():
    a = SCENARIO.simulator(local=True).run(SCENARIO.trace(4, DURATION_S, local=True), make_policy("festina"))
    b = SCENARIO.simulator(local=True).run(SCENARIO.trace(4, DURATION_S, local=True),
                                           Residual(make_policy("festina"), {0: 0}))
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.summary["energy_kwh"] == b.summary["energy_kwh"]
    low = SCENARIO.simulator(local=True).run(SCENARIO.trace(4, DURATION_S, local=True),
                                             Residual(make_policy("festina"), {0: -9}))
    lowest = clock_levels(SCENARIO.simulator(local=True).specs["H100-SXM-80GB"].sm_clocks_mhz, 10)[0]
    clocks = low.timeline[low.timeline["instances"] > 0]["clock_mhz"].to_numpy()
    assert np.all(clocks[1:] == lowest)  # -9 levels: the grid's bottom from the first control on
    assert a.timeline["clock_mhz"].mean() > low.timeline["clock_mhz"].mean()


class TestFork:
    def test_a_fork_goes_on_exactly_as_the_run(self):
        scenario = load_scenario("default")
        trace = scenario.trace(0, 240)
        whole = scenario.simulator().run(trace, make_policy("festina"))
        sim = scenario.simulator()
        policy = make_policy("festina")
        sim.start(trace, policy)
        sim.advance(120.5)
        twin = sim.fork(policy)
        sim.advance(sim.end)
        twin.advance(twin.end)
        for result in (sim.result(), twin.result()):
            pd.testing.assert_frame_equal(result.requests, whole.requests)
            pd.testing.assert_frame_equal(result.gpus, whole.gpus)

    def test_a_fork_leaves_the_run_untouched(self):
        trace = SCENARIO.trace(0, DURATION_S, local=True)
        whole = SCENARIO.simulator(local=True).run(trace, make_policy("festina"))
        sim = SCENARIO.simulator(local=True)
        policy = make_policy("festina")
        sim.start(trace, policy)
        sim.advance(10.0)
        twin = sim.fork(Residual(policy, {0: -5}))
        twin.advance(twin.end)  # a different future in the copy
        sim.advance(sim.end)
        pd.testing.assert_frame_equal(sim.result().requests, whole.requests)


def test_costs_hold_the_last_plan_and_its_choice_is_their_least():
    """``Clairvoyant.costs`` (what benchmarks/predictable_headroom.py imitates): every candidate's
    cost per awake GPU at the last plan; the committed adjustment is the cheapest, 0 on ties."""
    policy = make_policy("clairvoyant", horizon_s=5.0, hold_s=2.0)
    cost_of_run(policy, 1)
    assert sorted(policy.costs) == sorted(policy.config.candidates)
    gpus = set(policy.costs[0])
    assert gpus and all(set(by_gpu) == gpus for by_gpu in policy.costs.values())
    for g in gpus:
        best = min(policy.costs, key=lambda k: (policy.costs[k][g], abs(k)))
        chosen = policy.adjusted.steps.get(g, 0)
        assert policy.costs[chosen][g] == policy.costs[best][g]
