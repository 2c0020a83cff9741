"""Festina rule policy on a small simulator: valid actions, SLOs at light load, DVFS, consolidation,
the ablation switches and its construction errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from festgym.control.actions import Park
from festgym.control.levels import quantize_share
from festgym.errors import SpecError
from festgym.policies import RULE_POLICIES, Festina, FestinaConfig, make_policy
from festgym.policies.least_loaded import LeastLoaded
from festgym.policies.registry import background_policy
from festgym.profiles.specs import NodeSpec
from festgym.scenario import list_scenarios, load_scenario
from festgym.sim.config import SimConfig
from festgym.sim.policy import BasePolicy
from festgym.sim.results import STATUS_NAMES
from festgym.sim.serving import ModelServing, Slo
from festgym.sim.simulator import Simulator
from festgym.sim.workload import SyntheticWorkload

H100 = "H100-SXM-80GB"
MODELS = {"Llama-3.1-8B": ModelServing(slo=Slo(ttft_s=0.3, ttft_per_1k_tokens_s=0.1, tbt_s=0.1)),
          "Llama-3.2-3B": ModelServing(slo=Slo(ttft_s=0.25, ttft_per_1k_tokens_s=0.1, tbt_s=0.1))}


class Recorder(BasePolicy):
    """Delegates to ``inner`` and records what it decided (and what least-loaded would have placed)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.mechanisms, self.queue_order = inner.mechanisms, inner.queue_order  # its engines live as the inner's
        self.controls: list = []
        self.placements: list = []
        self.actions: list = []

    def reset(self, cluster):
        self.inner.reset(cluster)

    def place(self, request, cluster):
        least = LeastLoaded(spawn_at=self.inner.config.spawn_at).place(request, cluster)  # stateless
        target = self.inner.place(request, cluster)
        self.placements.append((request, target, least))
        return target

    def control(self, gpu, now):
        control = self.inner.control(gpu, now)
        self.controls.append((now, gpu.index, {i.model: i.share for i in gpu.instances}, gpu.spec, control))
        return control

    def consolidate(self, cluster, now):
        actions = list(self.inner.consolidate(cluster, now))
        self.actions.append((now, actions))
        return actions


def light_trace(seed: int = 0, rate: float = 2.0, duration: float = 120.0):
    return SyntheticWorkload(tuple(MODELS), rate_rps=rate, duration_s=duration).generate(seed)


ONE_GPU_NODES = NodeSpec.load("dgx-h100").replace(gpus_per_node=1)
"""A node per GPU: a GPU Festina releases can be powered off while the other serves."""


def run(seed: int = 0, gpus: int = 2, node: NodeSpec | str = "dgx-h100", config: SimConfig | None = None,
        **params):
    sim = Simulator([H100] * gpus, MODELS, config or SimConfig(), node=node)
    policy = Recorder(make_policy("festina", **params))
    result = sim.run(light_trace(seed), policy)
    return sim, policy, result


@pytest.fixture(scope="module")
def default_run():
    return run()


def assert_all_counted(result):
    req, s = result.requests, result.summary
    assert len(req) == s["requests"] and req.rid.tolist() == list(range(len(req)))
    assert set(req.status.astype(str)) <= set(STATUS_NAMES)
    assert sum(int((req.status == name).sum()) for name in STATUS_NAMES) == len(req)
    assert s["finished"] + sum(s[name] for name in STATUS_NAMES if name != "finished") == s["requests"]


# --- light load ----------------------------------------------------------------------------------

def test_light_load_every_request_finishes_within_slo(default_run):
    _sim, _policy, result = default_run
    s = result.summary
    assert_all_counted(result)
    assert s["requests"] > 150
    assert s["finished"] == s["requests"]  # light load: nothing rejected or left over
    assert s["rejected_actions"] == 0
    assert s["slo_attainment"] >= 0.8
    assert result.requests.gpu.ge(0).all()
    assert s["policy"] == "festina"


def test_controls_are_valid(default_run):
    _sim, policy, _result = default_run
    assert policy.controls
    for _now, _index, models, spec, control in policy.controls:
        if control is None:
            continue
        if control.clock_mhz is not None:
            assert spec.sm_clocks_mhz[0] <= control.clock_mhz <= spec.sm_clocks_mhz[-1]
        if control.shares is not None:
            assert set(control.shares) <= set(models)
            assert all(0 < v <= 1 for v in control.shares.values())
            assert sum(control.shares.values()) <= 1 + 1e-9


def test_same_trace_same_result():
    _, _, a = run(seed=3)
    _, _, b = run(seed=3)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.gpus, b.gpus)
    assert {k: v for k, v in a.summary.items() if "wall" not in k} == \
        {k: v for k, v in b.summary.items() if "wall" not in k}


def test_caches_kept_across_runs_change_nothing_and_follow_the_slos():
    """Decision caches outlive a reset (they are pure functions of profiles, SLOs and interval):
    a reused policy decides exactly as a fresh one, and new SLOs start fresh caches."""
    sim = Simulator([H100] * 2, MODELS, SimConfig())
    reused = make_policy("festina")
    sim.run(light_trace(1), reused)
    warm = sim.run(light_trace(3), reused)
    fresh = sim.run(light_trace(3), make_policy("festina"))
    pd.testing.assert_frame_equal(warm.requests, fresh.requests)
    pd.testing.assert_frame_equal(warm.gpus, fresh.gpus)
    summaries = reused._summaries
    assert summaries
    strict = {m: ModelServing(slo=Slo(ttft_s=0.1, tbt_s=0.03)) for m in MODELS}
    Simulator([H100] * 2, strict, SimConfig()).run(light_trace(3), reused)
    assert reused._summaries is not summaries


# --- DVFS ----------------------------------------------------------------------------------------

def test_dvfs_lowers_the_clock_of_busy_gpus(default_run):
    sim, _, result = default_run
    line = result.timeline
    busy = line[line.state == "busy"]
    assert len(busy) > 20
    assert busy.clock_mhz.mean() < sim.specs[H100].default_sm_clock_mhz


def test_dvfs_off_keeps_the_default_clock():
    sim, policy, result = run(dvfs=False)
    default = sim.specs[H100].default_sm_clock_mhz
    assert (result.timeline.clock_mhz == default).all()
    clocks = {c.clock_mhz for *_, c in policy.controls if c is not None and c.clock_mhz is not None}
    assert clocks <= {float(default)}
    assert_all_counted(result)


def test_dvfs_saves_energy_at_light_load(default_run):
    _, _, on = default_run
    _, _, off = run(dvfs=False)
    assert on.summary["energy_kwh"] < off.summary["energy_kwh"]


# --- consolidation -------------------------------------------------------------------------------

def test_empty_awake_gpus_are_parked_at_once():
    sim = Simulator([H100] * 2, MODELS, SimConfig())
    festina = make_policy("festina")
    sim.start(light_trace(), festina)
    assert list(festina.consolidate(sim.view, 0.0)) == [Park(0), Park(1)]
    assert make_policy("festina", consolidation=False).consolidate(sim.view, 0.0) == []


def test_consolidation_parks_the_unused_gpu():
    """The unused GPU is released, and on a node of its own it is powered off; the serving one
    never is."""
    config = SimConfig(node_off_after_s=30.0)
    _sim, policy, result = run(spawn_after=3, node=ONE_GPU_NODES, config=config)  # a lone burst wakes no GPU
    assert (result.requests.gpu == 0).all()  # the load fits on one GPU and is packed there
    gpus = result.gpus.set_index("gpu")
    released = min(now for now, actions in policy.actions if Park(1) in actions)
    off_s = result.summary["horizon_s"] - released - config.node_off_after_s - ONE_GPU_NODES.shutdown_s
    assert gpus.loc[1, "time_busy_s"] == 0 and off_s > 0 and gpus.loc[1, "time_off_s"] == pytest.approx(off_s)
    assert gpus.loc[0, "time_off_s"] == 0 and gpus.loc[0, "time_empty_s"] < gpus.loc[1, "time_empty_s"]
    assert result.nodes.time_off_s.tolist() == [0.0, gpus.loc[1, "time_off_s"]]
    assert result.summary["node_boots"] == 0


def test_consolidation_off_never_parks():
    config = SimConfig(node_off_after_s=30.0)
    _sim, policy, result = run(consolidation=False, node=ONE_GPU_NODES, config=config)
    assert (result.gpus.time_off_s == 0).all() and result.summary["node_off_hours"] == 0
    assert all(actions == [] for _, actions in policy.actions) and policy.actions
    _, _, on = run(node=ONE_GPU_NODES, config=config)
    assert on.summary["node_off_hours"] > 0
    assert on.summary["energy_kwh"] < result.summary["energy_kwh"]  # powering the idle GPU's node off saves energy


def test_releasing_alone_saves_nothing_while_the_node_stays_on():
    """Both GPUs on one node: the released GPU draws its empty floor, as an unclaimed one does."""
    sim, policy, on = run(spawn_after=3)
    _, _, off = run(spawn_after=3, consolidation=False)
    empty_w = sim.specs[H100].states.empty_w
    assert any(Park(1) in actions for _, actions in policy.actions)
    assert on.summary["node_off_hours"] == off.summary["node_off_hours"] == 0
    for result in (on, off):
        gpu1 = result.gpus.set_index("gpu").loc[1]
        assert gpu1.time_busy_s == 0
        assert gpu1.energy_empty_j == pytest.approx(gpu1.time_empty_s * empty_w)


# --- ablations -----------------------------------------------------------------------------------

def test_partition_off_splits_shares_evenly():
    _sim, policy, result = run(partition=False)
    multi = 0
    for now, index, shares, _spec, control in policy.controls:
        if not shares:
            assert control is None or control.shares is None
            continue
        effective = dict(shares)
        if control is not None and control.shares is not None:
            assert set(control.shares) == set(shares)
            effective.update(control.shares)
        even = quantize_share(1.0 / len(shares))
        assert all(v == even for v in effective.values()), (now, index, effective)
        multi += len(shares) > 1
    assert multi > 20  # both models were co-resident for a while
    assert_all_counted(result)


def test_partition_on_gives_uneven_shares(default_run):
    _, policy, _ = default_run
    uneven = [c.shares for *_, c in policy.controls
              if c is not None and c.shares is not None and len(set(c.shares.values())) > 1]
    assert uneven


def test_placement_off_places_least_loaded():
    _sim, policy, result = run(placement=False)
    assert policy.placements
    for request, target, least in policy.placements:
        assert target == least, request
    assert_all_counted(result)


def test_placement_on_differs_from_least_loaded(default_run):
    _, policy, _ = default_run
    assert any(target != least for _, target, least in policy.placements)


# --- construction --------------------------------------------------------------------------------

def test_make_policy_defaults():
    festina = make_policy("festina")
    assert isinstance(festina, Festina) and festina.name == "festina"
    assert festina.config == FestinaConfig()  # policies/festina.yaml holds the dataclass defaults
    tuned = make_policy("festina", dvfs=False, low_load=0.2)
    assert tuned.config.dvfs is False and tuned.config.low_load == 0.2 and tuned.config.partition is True
    assert set(RULE_POLICIES) == {"festina", "least-loaded", "max-clock", "serverless-llm", "mps-even",
                                  "dvfs-only", "miad-llf", "power-cap", "clairvoyant", "offline-optimal"}
    assert make_policy("least-loaded").name == "least-loaded"


def test_unknown_parameter_is_named():
    with pytest.raises(SpecError, match="'foo'") as err:
        make_policy("festina", foo=1)
    assert "dvfs" in str(err.value)  # the known parameters are listed


def test_unknown_policy_lists_known():
    with pytest.raises(ValueError, match="'nope'") as err:
        make_policy("nope")
    for name in RULE_POLICIES:
        assert name in str(err.value)


@pytest.mark.parametrize("params, name", [({"tbt_margin": 1.0}, "tbt_margin"), ({"ttft_margin": -0.1}, "ttft_margin"),
                                          ({"n_share_levels": 21}, "n_share_levels"),
                                          ({"n_clock_levels": 1}, "n_clock_levels"),
                                          ({"low_windows": 0}, "low_windows"),
                                          ({"absorb_limit": 0.0}, "absorb_limit"), ({"spawn_at": 0}, "spawn_at")])
def test_out_of_range_parameter_is_named(params, name):
    with pytest.raises(SpecError, match=f"^Festina parameters: field '{name}': out of range .*; expected "):
        make_policy("festina", **params)


# --- shipped scenarios -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_scenarios())
def test_shipped_scenarios_run_without_action_errors(name):
    sc = load_scenario(name)
    sim = sc.simulator()
    result = sim.run(sc.trace(0, 120), Recorder(background_policy(sc)))
    assert_all_counted(result)
    s = result.summary
    assert s["rejected_actions"] == 0
    assert s["finished"] >= 0.95 * s["requests"] > 0
    assert np.isfinite(s["energy_kwh"]) and s["energy_kwh"] > 0
