"""Baselines: each runs its documented rule, and they sit where the literature puts them."""

from __future__ import annotations

import pytest

from festgym.control.actions import Migrate, Park
from festgym.errors import SpecError
from festgym.policies import RULE_POLICIES, Festina, make_policy
from festgym.policies.baselines import BASELINES
from festgym.scenario import load_scenario
from festgym.sim.lifecycle import Mechanisms

DURATION = 600.0  # ten simulated minutes of the saturated scenario: every rule acts hundreds of times


@pytest.fixture(scope="module")
def runs():
    """One seeded run per policy on the same workload (4 models at ~20 req/s: the baselines'
    dedicated GPUs stay busy, so their clock, share and cap rules act all the time)."""
    return run_all(load_scenario("saturated"), ("festina", *BASELINES))


def run_all(scenario, names, duration_s=DURATION):
    """One run per policy on the same trace, each result with the actions its policy took
    (``result.actions``)."""
    trace = scenario.trace(0, duration_s)
    out = {}
    for name in names:
        policy = make_policy(name)
        actions = record_actions(policy)
        out[name] = scenario.simulator().run(trace, policy)
        out[name].actions = actions
    return out


def record_actions(policy) -> list:
    """Every action ``policy.consolidate`` returns, from now on."""
    seen: list = []
    consolidate = policy.consolidate

    def recording(cluster, now):
        actions = consolidate(cluster, now)
        seen.extend(actions or ())
        return actions

    policy.consolidate = recording
    return seen


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
    # clock control is most of the saving: a released GPU still draws its empty floor, and with
    # every model busy no node empties to power off).
    slo = {name: r.summary["slo_attainment"] for name, r in runs.items()}
    assert slo["festina"] > slo["dvfs-only"] and energy(runs["festina"]) < 1.05 * energy(runs["dvfs-only"])


def test_baselines_keep_slos_near_max_clock(runs):
    reference = runs["max-clock"].summary["slo_attainment"]
    for name in BASELINES:
        assert runs[name].summary["slo_attainment"] > reference - 0.03, name
        assert runs[name].summary["finished"] == runs[name].summary["requests"], name


def test_no_baseline_parks_or_migrates(runs):
    assert any(isinstance(a, Park) for a in runs["festina"].actions)  # the recording sees what a policy does
    for name in BASELINES:
        result, s = runs[name], runs[name].summary
        assert not any(isinstance(a, (Park, Migrate)) for a in result.actions), name
        assert s["migrations"] == 0 and s["node_boots"] == 0 and s["node_off_hours"] == 0, name
        assert (result.gpus.time_off_s == 0).all() and (result.gpus.time_booting_s == 0).all(), name


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


# --- engine mechanisms, on the serverless default scenario ---------------------------------------


@pytest.fixture(scope="module")
def serverless():
    """The default scenario (17 models, ~5 req/s: most engines idle most of the time)."""
    return run_all(load_scenario("default"), ("max-clock", "serverless-llm", "festina", "dvfs-only"))


def test_each_baseline_says_how_its_engines_live():
    assert BASELINES["max-clock"].mechanisms == Mechanisms(loader="safetensors", always_resident=True)
    assert BASELINES["serverless-llm"].mechanisms == Mechanisms(loader="fast", keep_alive_s=60.0)
    for name in set(BASELINES) - {"max-clock", "serverless-llm"}:
        assert BASELINES[name].mechanisms == Mechanisms(), name  # vLLM reload, the scenario's keep-alive
    festina = Festina()
    assert (festina.mechanisms.loader, festina.mechanisms.sleep_level) == ("fast", 1)
    assert festina.mechanisms.sleep_after_s == festina.config.sleep_after_s


def last_tick(result):
    tl = result.timeline
    return tl[tl.t_s == tl.t_s.max()]


def test_max_clock_keeps_one_engine_per_requested_model_resident(serverless):
    result = serverless["max-clock"]
    requested = result.requests.model.nunique()
    assert requested > 8  # more models than GPUs: dedicated placement must co-locate
    assert last_tick(result).instances.sum() >= requested  # none unloaded, whatever the keep-alive
    assert result.summary["sleeps"] == 0


def test_serverless_llm_scales_to_zero_and_pays_in_cold_starts(serverless):
    mc, sl = serverless["max-clock"].summary, serverless["serverless-llm"].summary
    assert last_tick(serverless["serverless-llm"]).instances.sum() < last_tick(serverless["max-clock"]).instances.sum()
    assert sl["cold_starts"] > mc["cold_starts"]  # an unloaded model's next request starts it again
    assert sl["sleeps"] == 0 and sl["node_boots"] == 0


def test_only_festina_puts_engines_to_sleep(serverless):
    assert serverless["festina"].summary["sleeps"] > 0 and serverless["festina"].summary["wakes"] > 0
    assert (serverless["festina"].gpus.time_asleep_s > 0).any()
    for name in ("max-clock", "serverless-llm", "dvfs-only"):
        assert serverless[name].summary["sleeps"] == 0 and (serverless[name].gpus.time_asleep_s == 0).all(), name
