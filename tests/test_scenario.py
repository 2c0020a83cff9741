"""Scenarios: shipped files load and build, traces are seeded, overrides merge, bad input is named."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

from festgym.errors import SpecError
from festgym.policies import Festina
from festgym.policies.registry import background_policy
from festgym.resources import SCENARIOS
from festgym.scenario import Scenario, list_scenarios, load_scenario
from festgym.sim.workload import TraceWarning

H100, A100 = "H100-SXM-80GB", "A100-SXM-80GB"
SHIPPED = list_scenarios()


def small(**extra) -> dict:
    """A minimal mapping scenario."""
    data = {
        "cluster": {"gpus": {H100: 2}},
        "models": {"Llama-3.1-8B": {"slo": {"ttft_s": 0.3, "tbt_s": 0.1}}, "Llama-3.2-1B": {}},
        "workload": {"rate_rps": 3.0, "arrival_cv": 1.0},
    }
    data.update(extra)
    return data


def same_trace(a, b) -> bool:
    return (a.models == b.models and a.duration_s == b.duration_s
            and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("arrival_s", "model", "prompt_tokens",
                                                                            "output_tokens")))


# --- shipped scenarios -----------------------------------------------------------------------------

def test_shipped_scenarios_are_listed():
    assert {"default", "saturated", "serverless-multinode", "diurnal-low", "mixed-a100-h100"} <= set(SHIPPED)
    assert sorted(p.stem for p in SCENARIOS.shipped.glob("*.yaml")) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_loads_and_builds(name):
    sc = load_scenario(name)
    assert isinstance(sc, Scenario) and sc.name == name and sc.description
    sim = sc.simulator()
    assert sim.gpu_types == sc.gpus and len(sc.gpus) >= 1
    assert sim.model_names == tuple(sc.models)
    local = sc.simulator(local=True)
    assert local.gpu_types == sc.local.gpus
    assert local.model_names == sc.local.models and set(sc.local.models) <= set(sc.models)
    policy = background_policy(sc)
    assert isinstance(policy, Festina) and policy.name == "festina"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_trace_is_seeded(name):
    sc = load_scenario(name)
    a, b, c = sc.trace(7, 60), sc.trace(7, 60), sc.trace(8, 60)
    assert same_trace(a, b)
    assert not same_trace(a, c)
    assert a.duration_s == 60.0 and len(a) > 0
    assert a.arrival_s.min() >= 0 and a.arrival_s.max() < 60
    assert a.models == tuple(sc.models)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert same_trace(sc.trace(rng_a, 60), sc.trace(rng_b, 60))
    local = sc.trace(7, 60, local=True)
    assert local.models == sc.local.models and same_trace(local, sc.trace(7, 60, local=True))
    # the mean rate follows workload.rate_rps (cluster) and local.rate_rps (local), within noise
    long = sc.trace(1, 600)
    assert len(long) / 600 == pytest.approx(sc.workload.rate_rps, rel=0.35)
    assert len(sc.trace(1, 600, local=True)) / 600 == pytest.approx(sc.local.rate_rps, rel=0.35)


def test_default_scenario_values():
    """The default is serverless serving: one 8-GPU node, 17 models on a long tail at ~5 req/s."""
    sc = load_scenario()
    assert sc.name == "default" and sc.gpus == (H100,) * 8
    assert len(sc.models) == 17 and list(sc.models)[:4] == ["Llama-3.1-8B", "Qwen3-8B", "Qwen2.5-7B", "Mistral-7B-v0.3"]
    assert sc.workload.rate_rps == 5 and sc.workload.zipf_s == 1.1
    assert sc.node is not None and sc.node.name == "dgx-h100" and sc.node.gpus_per_node == 8
    assert (sc.sim.share_mechanism, sc.sim.weights_from, sc.sim.init_s, sc.sim.node_off_after_s) == \
        ("green-contexts", "dram", 14.0, 600.0)
    assert sc.local.models == ("Llama-3.1-8B", "Llama-3.2-3B") and sc.local.rate_rps == 4.0
    assert sc.policy == "festina" and sc.reward.mode == "smooth"
    assert load_scenario(SCENARIOS.shipped / "default.yaml").gpus == sc.gpus  # by path too
    assert load_scenario(sc) is sc


def test_saturated_and_multinode_scenarios():
    """``saturated`` is the earlier default (4 models, ~20 req/s); ``serverless-multinode`` spans 4 nodes."""
    sat = load_scenario("saturated")
    assert sat.gpus == (H100,) * 8 and list(sat.models) == ["Llama-3.1-8B", "Qwen3-8B", "Llama-3.2-3B", "Qwen3-14B"]
    assert sat.workload.rate_rps == 20 and sat.local == load_scenario("default").local
    multi = load_scenario("serverless-multinode")
    assert multi.gpus == (H100,) * 32 and multi.simulator().node_spec.gpus_per_node == 8  # 4 nodes
    assert set(multi.models) == set(load_scenario("default").models)


def test_cluster_node_by_name_or_with_changed_figures():
    assert load_scenario(small()).node is None  # the simulator's default, dgx-h100
    named = load_scenario(small(cluster={"gpus": {H100: 2}, "node": "dgx-a100"})).node
    assert named is not None and named.name == "dgx-a100"
    sc = load_scenario(small(cluster={"gpus": {H100: 4}, "node": {"spec": "dgx-h100", "gpus_per_node": 2,
                                                                   "boot_s": 60}}))
    assert sc.node is not None and (sc.node.name, sc.node.gpus_per_node, sc.node.boot_s) == ("dgx-h100", 2, 60.0)
    sim = sc.simulator()
    sim.start(sc.trace(0, 1.0), background_policy(sc))
    assert [[g.index for g in n.gpus] for n in sim.nodes] == [[0, 1], [2, 3]]
    with pytest.raises(SpecError, match="'cluster.node.fans'"):
        load_scenario(small(cluster={"gpus": {H100: 2}, "node": {"fans": 3}}))
    with pytest.raises(SpecError, match="'cluster.node'"):
        load_scenario(small(cluster={"gpus": {H100: 2}, "node": 3}))


# --- overrides ---------------------------------------------------------------------------------------

def test_override_changes_only_that_field():
    base = load_scenario("default")
    sc = load_scenario("default", workload={"rate_rps": 9})
    assert sc.workload == dataclasses.replace(base.workload, rate_rps=9)
    for f in ("gpus", "models", "sim", "policy", "policy_params", "reward", "local", "env", "name", "node", "physics"):
        assert getattr(sc, f) == getattr(base, f), f
    assert load_scenario("default").workload.rate_rps == 5  # the file is untouched


def test_overrides_merge_into_nested_sections():
    sc = load_scenario("default", env={"episode_s": 30}, local={"rate_rps": 6},
                       models={"Qwen3-8B": {"slo": {"tbt_s": 0.2}}})
    base = load_scenario("default")
    assert sc.env == dataclasses.replace(base.env, episode_s=30)
    assert sc.local == dataclasses.replace(base.local, rate_rps=6)
    assert sc.models["Qwen3-8B"].slo == dataclasses.replace(base.models["Qwen3-8B"].slo, tbt_s=0.2)
    assert sc.models["Qwen3-8B"].engine == base.models["Qwen3-8B"].engine
    assert {k: v for k, v in sc.models.items() if k != "Qwen3-8B"} == \
        {k: v for k, v in base.models.items() if k != "Qwen3-8B"}


def test_overrides_apply_to_a_scenario_object():
    base = load_scenario("diurnal-low")
    sc = load_scenario(base, workload={"rate_rps": 2})
    assert sc.workload == dataclasses.replace(base.workload, rate_rps=2)
    assert sc.sim == base.sim and sc.source == base.source
    again = load_scenario(sc, reward={"mode": "count"})
    assert again.workload.rate_rps == 2 and again.reward.mode == "count"
    assert base.workload.rate_rps == 6 and base.reward.mode == "smooth"


def test_mapping_input_is_not_mutated():
    data = small(env={"episode_s": 100})
    before = repr(data)
    sc = load_scenario(data, env={"warmup_s": 5}, workload={"rate_rps": 9})
    assert repr(data) == before
    assert sc.env.episode_s == 100 and sc.env.warmup_s == 5 and sc.workload.rate_rps == 9


def test_unknown_section_or_setting_is_named():
    with pytest.raises(SpecError, match="'foo'") as err:
        load_scenario("default", foo=1)
    assert "unknown scenario section" in str(err.value)
    with pytest.raises(SpecError, match="'rate'") as err:
        load_scenario("default", workload={"rate": 3})
    assert "rate_rps" in str(err.value)  # the known ones are listed
    with pytest.raises(SpecError, match="'cluster.nodes'"):
        load_scenario("default", cluster={"nodes": 3})
    with pytest.raises(SpecError, match="'policy.extra'"):
        load_scenario("default", policy={"extra": 1})
    with pytest.raises(SpecError, match="'bar'"):
        load_scenario(small(bar=2))
    with pytest.raises(SpecError, match="reward: field .mode.: out of range .'other'.; expected one of smooth, count"):
        load_scenario("default", reward={"mode": "other"})


def test_unknown_scenario_name_lists_shipped():
    with pytest.raises(SpecError) as err:
        load_scenario("no-such-scenario")
    message = str(err.value)
    assert "no-such-scenario" in message
    for name in SHIPPED:
        assert name in message


# --- cluster, local ------------------------------------------------------------------------------

def test_cluster_gpus_as_mapping_and_as_list():
    sc = load_scenario(small(cluster={"gpus": {A100: 1, H100: 2}}))
    assert sc.gpus == (A100, H100, H100)
    assert sc.simulator().gpu_types == (A100, H100, H100)
    sc = load_scenario(small(cluster={"gpus": [H100, A100, H100]}))
    assert sc.gpus == (H100, A100, H100)
    assert sc.simulator().gpu_types == (H100, A100, H100)
    assert sc.local.gpus == (H100,)  # defaults to the first GPU
    # a list override replaces the file's mapping
    assert load_scenario("default", cluster={"gpus": [A100, A100]}).gpus == (A100, A100)


@pytest.mark.parametrize("count", [0, -1, 2.5, 2.0, "two", None])
def test_bad_gpu_count_is_named(count):
    with pytest.raises(SpecError, match=f"'cluster.gpus.{H100}'"):
        load_scenario(small(cluster={"gpus": {H100: count}}))


def test_bool_gpu_count_is_rejected():
    with pytest.raises(SpecError, match=f"'cluster.gpus.{H100}'"):
        load_scenario(small(cluster={"gpus": {H100: True}}))


@pytest.mark.parametrize("gpus", [[], {}, "H100-SXM-80GB", None, 3])
def test_bad_gpu_spec_is_named(gpus):
    with pytest.raises(SpecError, match="'cluster.gpus'"):
        load_scenario(small(cluster={"gpus": gpus}))


@pytest.mark.parametrize("missing", ["cluster", "models"])
def test_missing_cluster_or_models(missing):
    data = small()
    del data[missing]
    with pytest.raises(SpecError, match=f"'{missing}'"):
        load_scenario(data)


@pytest.mark.parametrize("models", [["Qwen3-8B"], ["Llama-3.1-8B", "Qwen3-14B"], []])
def test_local_models_must_be_scenario_models(models):
    with pytest.raises(SpecError, match="'local.models'") as err:
        load_scenario(small(local={"models": models}))
    assert "Llama-3.1-8B" in str(err.value)  # the scenario's models are listed


def test_local_section_defaults_and_overrides():
    sc = load_scenario(small(cluster={"gpus": [A100, H100]}))
    assert sc.local.gpus == (A100,) and sc.local.models == ("Llama-3.1-8B", "Llama-3.2-1B")
    sc = load_scenario(small(local={"models": ["Llama-3.2-1B"], "gpus": [H100, H100], "rate_rps": 1.5}))
    assert sc.local.models == ("Llama-3.2-1B",) and sc.local.gpus == (H100, H100)
    sim = sc.simulator(local=True)
    assert sim.gpu_types == (H100, H100) and sim.model_names == ("Llama-3.2-1B",)
    assert sc.trace(0, 60, local=True).models == ("Llama-3.2-1B",)


def test_local_gpus_as_a_string():
    try:
        sc = load_scenario(small(local={"gpus": H100}))
    except SpecError as exc:
        assert "local.gpus" in str(exc)
        return
    assert sc.local.gpus == (H100,)


# --- mapping scenarios -----------------------------------------------------------------------------

def test_mapping_scenario_works_end_to_end():
    sc = load_scenario(small(name="tiny", env={"episode_s": 20, "warmup_s": 10}))
    assert sc.name == "tiny" and sc.source == "<dict>"
    assert sc.gpus == (H100, H100) and list(sc.models) == ["Llama-3.1-8B", "Llama-3.2-1B"]
    assert sc.models["Llama-3.1-8B"].slo.ttft_s == 0.3
    assert background_policy(sc).name == "festina"
    sim = sc.simulator()
    result = sim.run(sc.trace(0, 30), background_policy(sc))
    assert result.summary["requests"] == result.summary["finished"] > 0
    env = gym.make("festgym/LocalGPU-v0", scenario=small(env={"episode_s": 5, "warmup_s": 10}))
    env.reset(seed=0)
    for _ in range(5):
        *_, truncated, info = env.step(env.action_space.sample())
    assert truncated and info["energy_j"] > 0
    assert background_policy(load_scenario(small(policy={"name": "least-loaded"}))).name == "least-loaded"
    with pytest.raises(ValueError, match="rule policies: clairvoyant, dvfs-only, festina, least-loaded, max-clock"):
        background_policy(load_scenario(small(policy={"name": "nope"})))


# --- trace replay --------------------------------------------------------------------------------

@pytest.fixture
def trace_csv(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    models = ["Llama-3.1-8B", "Qwen3-8B", "Llama-3.2-3B", "Qwen3-14B"]
    frame = pd.DataFrame({"timestamp": np.sort(rng.uniform(0, 600, n)), "input_tokens": rng.integers(10, 500, n),
                          "output_tokens": rng.integers(5, 100, n), "model": rng.choice(models, n)})
    path = tmp_path / "trace.csv"
    frame.to_csv(path, index=False)
    return path


def test_replayed_trace_is_seeded(trace_csv):
    sc = load_scenario("default", workload={"trace": str(trace_csv)})
    a, b, c = sc.trace(0, 30), sc.trace(0, 30), sc.trace(1, 30)
    assert same_trace(a, b) and not same_trace(a, c)
    assert a.duration_s == 30 and a.models == tuple(sc.models)
    assert a.arrival_s.max() < 30


def test_replayed_trace_for_the_local_sub_cluster(trace_csv):
    sc = load_scenario("default", workload={"trace": str(trace_csv)})
    with pytest.warns(TraceWarning, match="local sub-cluster's replay is rescaled"):
        local = sc.trace(0, 30, local=True)
    assert set(local.models) <= set(sc.local.models) and len(local) > 0


def test_local_models_follow_the_popularity_order():
    with pytest.raises(SpecError, match="popularity"):
        load_scenario("default", local={"models": ["Llama-3.2-3B", "Llama-3.1-8B"]})
