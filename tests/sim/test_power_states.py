"""Power states and transitions: energy is the integral of power through every GPU and node state.

Each test scripts a small cluster through states whose durations are known in closed form (empty,
node shutdown, off, boot, loading, idle at a clock, asleep, an MPS restart) and checks the booked
time and energy of every state against them; the last ones check the floors: no GPU state below the
empty floor exists unless its node is off.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from festgym.control.actions import GpuControl, Park, Wake
from festgym.control.states import STATES
from festgym.policies import make_policy
from festgym.profiles.specs import NodeSpec
from festgym.scenario import load_scenario
from festgym.sim.config import SimConfig
from festgym.sim.lifecycle import Mechanisms, cold_start_s, wake_s
from festgym.sim.node import NODE_STATES
from festgym.sim.policy import BasePolicy
from festgym.sim.serving import EngineConfig, ModelServing
from festgym.sim.simulator import Simulator
from festgym.sim.workload import Trace

H100 = "H100-SXM-80GB"
MODEL = "Llama-3.2-1B"
NODE = NodeSpec.load("dgx-h100").replace(gpus_per_node=2, boot_s=50.0, shutdown_s=20.0, host_w=1000.0, off_w=25.0)


class Script(BasePolicy):
    """Every request on GPU 0; a fixed clock (None: the default); actions at given times."""

    name = "script"

    def __init__(self, clock_mhz=None, actions=(), shares=None, mechanisms=None):
        self.clock_mhz, self.actions, self.shares = clock_mhz, list(actions), shares
        self.mechanisms = mechanisms or Mechanisms()

    def place(self, request, cluster):
        return 0

    def control(self, gpu, now):
        shares = self.shares(gpu, now) if self.shares else None
        if self.clock_mhz is None and shares is None:
            return None
        return GpuControl(clock_mhz=self.clock_mhz, shares=shares)

    def consolidate(self, cluster, now):
        due = [a for t, a in self.actions if t <= now]
        self.actions = [(t, a) for t, a in self.actions if t > now]
        return due


def simulator(n_gpus=2, **config) -> Simulator:
    engine = EngineConfig(max_num_seqs=16, kv_cache_gb=2.0)
    cfg = SimConfig(drain_s=0.0, consolidate_interval_s=10.0, **{"init_s": 2.0, **config})
    return Simulator([H100] * n_gpus, {MODEL: ModelServing(engine=engine)}, cfg, node=NODE)


def trace(arrivals, duration, outputs=None) -> Trace:
    n = len(arrivals)
    return Trace.build(np.asarray(arrivals, dtype=float), np.zeros(n, dtype=np.int32), np.full(n, 64),
                       np.asarray(outputs if outputs is not None else [8] * n), (MODEL,), duration)


def state(result, gpu: int, name: str) -> tuple[float, float]:
    row = result.gpus.iloc[gpu]
    return float(row[f"time_{name}_s"]), float(row[f"energy_{name}_j"])


def test_release_power_off_and_boot_book_each_state_exactly():
    sim = simulator(node_off_after_s=60.0)
    spec = sim.specs[H100]
    empty = spec.states.empty_w
    # Both GPUs released at t=10; the node waits 60 s, shuts down for 20 s (70..90), is off until the
    # wake at t=300, boots for 50 s, then its GPUs are empty (awake) until the horizon at 400 s.
    policy = Script(actions=[(10.0, Park(0)), (10.0, Park(1)), (300.0, Wake(0))])
    result = sim.run(trace([], 400.0), policy)
    for g in (0, 1):
        assert state(result, g, "empty") == pytest.approx((70.0 + 50.0, empty * 120.0))
        assert state(result, g, "booting") == pytest.approx((20.0 + 50.0, empty * 70.0))
        assert state(result, g, "off") == pytest.approx((210.0, 0.0))
        assert sum(state(result, g, s)[0] for s in STATES) == pytest.approx(400.0)
    node = result.nodes.iloc[0]
    assert node.time_on_s == pytest.approx(70.0 + 50.0)
    assert node.time_shutting_down_s == pytest.approx(20.0)
    assert node.time_off_s == pytest.approx(210.0)
    assert node.time_booting_s == pytest.approx(50.0)
    host_j = NODE.host_w * (70 + 20 + 50 + 50) + NODE.off_w * 210
    assert node[[f"energy_{s}_j" for s in NODE_STATES]].sum() == pytest.approx(host_j)
    assert node.boots == 1
    s = result.summary
    assert s["host_energy_kwh"] == pytest.approx(host_j / 3.6e6)
    assert s["energy_kwh"] == pytest.approx(s["gpu_energy_kwh"] + s["host_energy_kwh"])
    assert s["node_off_hours"] == pytest.approx(210 / 3600)


def test_a_node_with_one_claimed_gpu_stays_on():
    sim = simulator(node_off_after_s=30.0)
    result = sim.run(trace([], 300.0), Script(actions=[(10.0, Park(1))]))
    assert result.nodes.iloc[0].time_off_s == 0
    assert state(result, 1, "empty")[0] == pytest.approx(300.0)  # released, but at the empty floor


def test_a_wake_during_shutdown_boots_once_it_is_down():
    sim = simulator(node_off_after_s=20.0)
    policy = Script(actions=[(10.0, Park(0)), (10.0, Park(1)), (40.0, Wake(1))])  # shutdown runs 30..50
    result = sim.run(trace([], 200.0), policy)
    node = result.nodes.iloc[0]
    assert node.time_shutting_down_s == pytest.approx(20.0)
    assert node.time_off_s == pytest.approx(0.0)
    assert node.time_booting_s == pytest.approx(50.0)
    assert node.boots == 1


def test_a_request_on_an_off_node_waits_for_boot_then_the_cold_start():
    sim = simulator(node_off_after_s=10.0)
    spec = sim.specs[H100]
    weights = sim.profile(H100, MODEL).model.weight_bytes
    load = cold_start_s(weights, "safetensors", "dram", spec.host_to_gpu_gbps, 2.0)
    # released at 10, shut down 20..40, off until the request at 100 boots it
    result = sim.run(trace([100.0], 300.0), Script(actions=[(10.0, Park(0)), (10.0, Park(1))]))
    req = result.requests.iloc[0]
    assert req.status == "finished" and req.cold_start
    assert req.ttft_s > NODE.boot_s + load
    assert state(result, 0, "loading")[0] == pytest.approx(load)
    assert state(result, 0, "loading")[1] == pytest.approx(load * spec.states.loading_w)


@pytest.mark.parametrize("locked", [False, True])
def test_a_clock_lock_on_an_idle_resident_gpu_lowers_its_power(locked):
    sim = simulator(n_gpus=1, keep_alive_s=1e9)
    spec = sim.specs[H100]
    low = float(spec.sm_clocks_mhz[0])
    result = sim.run(trace([1.0], 300.0), Script(clock_mhz=low if locked else None))
    idle_s, idle_j = state(result, 0, "idle")
    assert idle_s > 250
    expected = spec.resident_idle_w(low if locked else spec.default_sm_clock_mhz)
    assert idle_j / idle_s == pytest.approx(expected, rel=1e-6)
    assert spec.states.empty_w < expected <= spec.states.resident_w
    if locked:
        assert expected < spec.states.resident_w - 20  # the lock is worth something


def test_resident_idle_power_falls_monotonically_with_the_clock_to_near_the_empty_floor():
    spec = simulator(n_gpus=1).specs[H100]
    powers = [spec.resident_idle_w(c) for c in spec.sm_clocks_mhz]
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(powers))
    assert powers[-1] == pytest.approx(spec.states.resident_w)
    st = spec.states
    assert powers[0] - st.empty_w < (st.resident_w - st.empty_w) * (st.resident_floor_frac + 0.15)


@pytest.mark.parametrize("mechanism", ["green-contexts", "mps"])
def test_an_mps_share_change_restarts_the_engine_and_green_contexts_are_free(mechanism):
    sim = simulator(n_gpus=1, keep_alive_s=1e9, share_mechanism=mechanism)
    spec = sim.specs[H100]
    weights = sim.profile(H100, MODEL).model.weight_bytes
    load = cold_start_s(weights, "safetensors", "dram", spec.host_to_gpu_gbps, 2.0)
    policy = Script(shares=lambda gpu, now: {MODEL: 0.5} if now >= 100 and gpu.instances else None)
    result = sim.run(trace([1.0, 150.0], 300.0, outputs=[8, 8]), policy)
    loading_s, loading_j = state(result, 0, "loading")
    restart = load if mechanism == "mps" else 0.0
    assert loading_s == pytest.approx(load + restart)
    assert loading_j == pytest.approx((load + restart) * spec.states.loading_w)
    assert (result.requests.status == "finished").all()


def test_sleep_frees_memory_keeps_resident_power_and_wakes_in_the_measured_time():
    mech = Mechanisms(sleep_level=1, sleep_after_s=10.0, keep_alive_s=100.0)
    sim = simulator(n_gpus=1)
    spec = sim.specs[H100]
    weights = sim.profile(H100, MODEL).model.weight_bytes
    load = cold_start_s(weights, "safetensors", "dram", spec.host_to_gpu_gbps, 2.0)
    woken = wake_s(weights, 1, "safetensors", spec.host_to_gpu_gbps)
    result = sim.run(trace([1.0, 60.0], 400.0), Script(mechanisms=mech))
    s = result.summary
    assert s["sleeps"] == 2 and s["wakes"] == 1 and s["cold_starts"] == 1
    asleep_s, asleep_j = state(result, 0, "asleep")
    assert asleep_j / asleep_s == pytest.approx(spec.resident_idle_w(spec.default_sm_clock_mhz))
    assert state(result, 0, "loading")[0] == pytest.approx(load + woken)
    assert state(result, 0, "empty")[0] > 200  # unloaded after the keep-alive: the empty floor
    assert sim.gpus[0].mem_used == pytest.approx(0.0)
    assert result.requests.cold_start.tolist() == [True, True]  # the second waited for the wake


def test_energy_is_the_sum_of_power_times_time_in_every_state_on_a_busy_run():
    scenario = load_scenario("serverless-multinode", workload={"rate_rps": 3.0})
    result = scenario.simulator().run(scenario.trace(0, 900), make_policy("festina"))
    gpus = result.gpus
    total = sum(gpus[f"time_{s}_s"] for s in STATES)
    assert np.allclose(total, result.summary["horizon_s"])
    energy = sum(gpus[f"energy_{s}_j"] for s in STATES)
    assert np.allclose(energy / 3.6e6, gpus.energy_kwh)
    # the timeline's intervals integrate to the same energy
    line = result.timeline
    assert (line.power_w * line.interval_s).sum() == pytest.approx(energy.sum(), rel=1e-9)


@pytest.mark.parametrize("policy", ["festina", "max-clock", "serverless-llm", "mps-even"])
def test_no_gpu_state_draws_less_than_the_empty_floor_unless_its_node_is_off(policy):
    scenario = load_scenario("serverless-multinode", workload={"rate_rps": 3.0}, sim={"node_off_after_s": 60.0})
    sim = scenario.simulator()
    result = sim.run(scenario.trace(1, 900), make_policy(policy))
    empty = sim.specs[H100].states.empty_w
    for s in STATES:
        t = result.gpus[f"time_{s}_s"].to_numpy()
        e = result.gpus[f"energy_{s}_j"].to_numpy()
        busy = t > 0
        if s == "off":
            assert (e == 0).all()
        else:
            assert (e[busy] / t[busy] >= empty - 1e-9).all(), s
    off_gpu_s = result.gpus.time_off_s.sum()
    nodes = result.nodes
    assert off_gpu_s == pytest.approx((nodes.time_off_s * nodes.gpus.map(len)).sum())


@pytest.mark.parametrize("source_goes", ["asleep", "unloaded"])
def test_a_migration_target_whose_source_goes_first_gets_its_own_idle_timers(source_goes):
    """The source stays awake until its target is ready (it does not sleep mid-move); unloaded
    mid-move, it leaves the target on its own, which then sleeps and expires like any engine."""
    from festgym.control.actions import Migrate, Unload

    mech = Mechanisms(sleep_level=1, sleep_after_s=30.0, keep_alive_s=100.0)
    sim = simulator(init_s=20.0)
    actions = [(40.0, Migrate(MODEL, 0, 1))] + ([(40.0, Unload(MODEL, 0))] if source_goes == "unloaded" else [])
    result = sim.run(trace([1.0], 1000.0), Script(actions=actions, mechanisms=mech))
    assert not sim.gpus[0].instances and not sim.gpus[1].instances  # both gone by the horizon
    asleep_s = state(result, 1, "asleep")[0]
    assert 0 < asleep_s < 100.0  # the target slept, then its keep-alive unloaded it
    assert state(result, 1, "empty")[0] > 700.0
    assert result.summary["migrations"] == (1 if source_goes == "asleep" else 0)


def test_a_wake_then_a_release_during_shutdown_leaves_the_node_off():
    sim = simulator(node_off_after_s=20.0)  # released at 10: shutdown 30..50
    policy = Script(actions=[(10.0, Park(0)), (10.0, Park(1)), (40.0, Wake(1)), (40.0, Park(1))])
    node = sim.run(trace([], 400.0), policy).nodes.iloc[0]
    assert node.boots == 0 and node.time_booting_s == 0
    assert node.time_off_s == pytest.approx(350.0)
