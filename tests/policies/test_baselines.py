"""Baselines: each runs its documented rule, and they sit where the literature puts them."""

from __future__ import annotations

import pytest

from festgym.errors import SpecError
from festgym.policies import RULE_POLICIES, make_policy
from festgym.policies.baselines import BASELINES
from festgym.scenario import load_scenario

DURATION = 600.0  # ten simulated minutes of the default scenario: every rule acts hundreds of times


@pytest.fixture(scope="module")
def runs():
    """One seeded run per policy on the same workload."""
    scenario = load_scenario("default")
    trace = scenario.trace(0, DURATION)
    out = {}
    for name in ("festina", *BASELINES):
        sim = scenario.simulator()
        out[name] = sim.run(trace, make_policy(name))
    return out


def energy(result) -> float:
    return result.summary["energy_kwh"]


def busy_ticks(result):
    tl = result.timeline
    return tl[tl.state == "busy"]


def test_every_baseline_is_registered_with_its_parameter_file():
    for name, cls in BASELINES.items():
        assert RULE_POLICIES[name] is cls
        assert make_policy(name).name == name


def test_energy_order_follows_the_literature(runs):
    # Every energy control saves against default clocks on dedicated GPUs.
    for name in ("festina", "dvfs-only", "power-cap", "miad-llf", "mps-even"):
        assert energy(runs[name]) < energy(runs["max-clock"]), name
    assert energy(runs["miad-llf"]) < energy(runs["mps-even"])  # clock control on top of sharing
    # Festina keeps SLOs better than clock control alone for about the same energy (at this load,
    # clock control is most of the saving: parked power is 73% of idle).
    slo = {name: r.summary["slo_attainment"] for name, r in runs.items()}
    assert slo["festina"] > slo["dvfs-only"] and energy(runs["festina"]) < 1.05 * energy(runs["dvfs-only"])


def test_baselines_keep_slos_near_max_clock(runs):
    reference = runs["max-clock"].summary["slo_attainment"]
    for name in BASELINES:
        assert runs[name].summary["slo_attainment"] > reference - 0.03, name
        assert runs[name].summary["finished"] == runs[name].summary["requests"], name


def test_no_baseline_parks_or_migrates(runs):
    for name in BASELINES:
        s = runs[name].summary
        assert s["migrations"] == 0 and (runs[name].gpus.time_parked_s == 0).all(), name


def test_max_clock_serves_each_model_on_gpus_of_its_own_at_the_default_clock(runs):
    result = runs["max-clock"]
    assert (busy_ticks(result).clock_mhz == 1980.0).all()
    assert (result.timeline.instances <= 1).all()


def test_mps_even_packs_models_onto_shared_gpus(runs):
    assert runs["mps-even"].timeline.instances.max() > 1
    assert (busy_ticks(runs["mps-even"]).clock_mhz == 1980.0).all()


def test_dvfs_only_lowers_the_clock(runs):
    assert busy_ticks(runs["dvfs-only"]).clock_mhz.mean() < 0.9 * 1980.0


def test_miad_moves_the_clock_both_ways_and_queues_by_laxity(runs):
    assert make_policy("miad-llf").queue_order == "llf"
    clocks = runs["miad-llf"].timeline.sort_values(["gpu", "t_s"]).groupby("gpu").clock_mhz.diff().dropna()
    assert (clocks > 0).any() and (clocks < 0).any()


def test_power_cap_lowers_busy_power(runs):
    assert busy_ticks(runs["power-cap"]).power_w.mean() < busy_ticks(runs["max-clock"]).power_w.mean()
    assert (busy_ticks(runs["power-cap"]).clock_mhz == 1980.0).mean() < 0.2  # top clock only before a control


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="cap_frac"):
        make_policy("power-cap", cap_frac=1.5)
    with pytest.raises(SpecError, match="clock_mhz"):
        make_policy("dvfs-only", clock_mhz=900)
