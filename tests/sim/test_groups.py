"""Multi-GPU engines (tensor or expert parallel): one engine resident on a block of GPUs of one node.

Each test scripts a small cluster with a 2-GPU engine (a tensor-parallel-2 profile made from a shipped
one, so that its per-GPU figures are known) beside single-GPU ones, and checks what the group must
guarantee: it is placed, slept, woken, migrated and unloaded as one; every GPU of the group books its
power and memory; its requests count once; shares and memory are never over-committed on any of its
GPUs; a block that does not fit on one node is refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from festgym.config import read_mapping
from festgym.control.actions import GpuControl, Migrate, Unload
from festgym.control.states import STATES
from festgym.profiles.parallel import Parallel, weight_bytes_per_gpu
from festgym.profiles.profile import load_profile
from festgym.profiles.specs import NodeSpec, spec_path
from festgym.sim.config import SimConfig
from festgym.sim.lifecycle import Mechanisms
from festgym.sim.policy import ActionError, BasePolicy
from festgym.sim.serving import EngineConfig, ModelServing, Slo
from festgym.sim.simulator import Simulator
from festgym.sim.workload import Trace

H100 = "H100-SXM-80GB"
BASE = "Llama-3.2-1B"
TP2 = f"{BASE}-tp2"
SMALL = "Qwen3-0.6B"
NODE = NodeSpec.load("dgx-h100").replace(gpus_per_node=4)


@pytest.fixture(autouse=True)
def tp2_profile(tmp_path, monkeypatch):
    """A tensor-parallel-2 profile of the 1B model in a user profile folder (its grids: the 1-GPU ones)."""
    profile = dataclasses.replace(load_profile(f"{H100}/{BASE}"), parallel=Parallel(tp=2), path=None)
    profile.save(tmp_path / H100 / TP2, read_mapping(spec_path(BASE, "model")))
    monkeypatch.setenv("FESTGYM_PROFILES", str(tmp_path))


class Script(BasePolicy):
    """Each request where its model is resident, else on a fixed GPU per model; given actions at given
    times; optional controls."""

    name = "script"

    def __init__(self, where, actions=(), control=None, mechanisms=None):
        self.where, self.actions, self._control = where, list(actions), control
        self.mechanisms = mechanisms or Mechanisms()

    def place(self, request, cluster):
        resident = cluster.instances_of(request.model)
        return resident[0].gpu if resident else self.where[request.model]

    def control(self, gpu, now):
        return self._control(gpu, now) if self._control else None

    def consolidate(self, cluster, now):
        due = [a for t, a in self.actions if t <= now]
        self.actions = [(t, a) for t, a in self.actions if t > now]
        return due


def simulator(n_gpus=4, models=(TP2, SMALL), node=NODE, kv_cache_gb=2.0, **config) -> Simulator:
    engine = EngineConfig(max_num_seqs=16, kv_cache_gb=kv_cache_gb)
    cfg = SimConfig(drain_s=0.0, **{"init_s": 2.0, "consolidate_interval_s": 5.0, **config})
    return Simulator([H100] * n_gpus, {m: ModelServing(engine=engine) for m in models}, cfg, node=node)


def trace(arrivals, models, duration, names=(TP2, SMALL)) -> Trace:
    n = len(arrivals)
    return Trace.build(np.asarray(arrivals, dtype=float), np.asarray(models, dtype=np.int32), np.full(n, 64),
                       np.full(n, 32), names, duration)


def energy(result, gpu: int) -> float:
    return float(result.gpus.iloc[gpu][[f"energy_{s}_j" for s in STATES]].sum())


def test_an_engine_spans_its_block_and_every_gpu_books_it():
    sim = simulator()
    result = sim.run(trace([1.0, 2.0, 3.0], [0, 0, 0], 30.0), Script({TP2: 1, SMALL: 2}))
    requests = result.requests
    assert (requests.status == "finished").all()
    assert (requests.gpu == 0).all()  # placed on GPU 1: booked on its block's lead, GPU 0
    busy = result.gpus[[f"time_{s}_s" for s in ("busy", "loading", "idle")]].sum(axis=1)
    assert busy.iloc[0] > 0 and busy.iloc[0] == pytest.approx(busy.iloc[1])  # both GPUs run it, in step
    assert busy.iloc[2] == 0 and busy.iloc[3] == 0
    # The same kernels on each GPU: the same energy on both, state by state.
    for s in STATES:
        assert result.gpus.iloc[0][f"energy_{s}_j"] == pytest.approx(result.gpus.iloc[1][f"energy_{s}_j"], rel=1e-12)
    # Requests count once, not once per GPU.
    assert result.summary["finished"] == 3


def test_memory_per_gpu_is_the_engines_slice_on_each_gpu():
    sim = simulator()
    sim.start(trace([1.0], [0], 30.0), Script({TP2: 3, SMALL: 0}))
    sim.advance(1.5)
    profile = sim.profile(H100, TP2)
    shard = weight_bytes_per_gpu(profile)
    assert shard == pytest.approx(profile.model.weight_bytes / 2)
    want = shard + 2.0e9 / 2  # and half of the engine's 2 GB KV cache
    assert sim.gpus[2].mem_used == pytest.approx(want) and sim.gpus[3].mem_used == pytest.approx(want)
    assert sim.gpus[0].mem_used == 0 and sim.gpus[1].mem_used == 0
    inst = sim.instances_of(TP2)[0]
    assert [g.index for g in inst.group] == [2, 3] and inst in sim.gpus[3].instances
    assert sim.view.instances_of(TP2)[0].gpus == (2, 3)


def test_a_block_with_no_room_on_one_gpu_is_refused_whole():
    # The single-GPU model on GPU 1 takes most of its memory: the 2-GPU engine cannot start on
    # GPUs 0-1 even though GPU 0 is empty, and no memory is taken on GPU 0.
    sim = simulator(kv_cache_gb=60.0, models=(TP2, SMALL))
    sim.start(trace([1.0, 2.0], [1, 0], 30.0), Script({TP2: 0, SMALL: 1}))
    sim.advance(30.0)
    result = sim.result()
    assert list(result.requests.status) == ["finished", "rejected_memory"] or \
        list(result.requests.sort_values("arrival_s").status) == ["finished", "rejected_memory"]
    assert not sim.gpus[0].instances
    assert not sim.can_host(0, TP2) and not sim.can_host(1, TP2) and sim.can_host(2, TP2)


def test_placement_outside_one_node_is_refused():
    with pytest.raises(ValueError, match="one node"):
        simulator(node=NodeSpec.load("dgx-h100").replace(gpus_per_node=1), n_gpus=2)
    with pytest.raises(ValueError, match="multiple of the span"):
        simulator(n_gpus=3)


def test_shares_are_never_over_committed_on_any_gpu_of_the_group():
    def grow(gpu, now):  # on GPU 1, give the small model 0.8 beside the 2-GPU engine's share
        if gpu.index == 1 and gpu.instance(SMALL) is not None and gpu.instance(TP2) is not None and now >= 8:
            return GpuControl(shares={SMALL: 0.8})
        return None

    sim = simulator()
    sim.start(trace([1.0, 1.5], [0, 1], 30.0), Script({TP2: 0, SMALL: 1}, control=grow))
    sim.advance(5.0)
    inst, small = sim.instances_of(TP2)[0], sim.instances_of(SMALL)[0]
    assert inst.shares_on[1] + small.current_share <= 1 + 1e-12
    assert inst.shares_on == [1.0, 0.5] and inst.share == 0.5  # GPU 1 holds two engines: each gets half
    with pytest.raises(ActionError, match="on GPU 1"):
        sim.advance(9.0)


def test_each_gpu_gives_the_engine_its_own_share_and_it_runs_at_the_least():
    sim = simulator()
    sim.start(trace([1.0], [0], 30.0), Script({TP2: 0, SMALL: 2}))
    sim.advance(5.0)
    inst = sim.instances_of(TP2)[0]
    sim.apply_control(sim.gpus[1], GpuControl(shares={TP2: 0.6}), 5.0)
    sim.advance(6.0)
    assert inst.shares_on == [1.0, 0.6] and inst.share == pytest.approx(0.6)
    assert sim.gpus[0].view.instance(TP2).share == sim.gpus[1].view.instance(TP2).share == pytest.approx(0.6)
    sim.apply_control(sim.gpus[0], GpuControl(shares={TP2: 0.5}), 6.0)
    sim.apply_control(sim.gpus[1], GpuControl(shares={TP2: 1.0}), 6.0)
    sim.advance(7.0)
    assert inst.shares_on == [0.5, 1.0] and inst.share == pytest.approx(0.5)


def test_iterations_run_at_the_lowest_clock_of_the_group():
    def slow(gpu, now):
        return GpuControl(clock_mhz=450) if gpu.index == 1 else None

    def decode_s(result):
        return float((result.requests.e2e_s - result.requests.ttft_s).iloc[0])

    fast = simulator().run(trace([1.0], [0], 30.0), Script({TP2: 0, SMALL: 2}))
    slowed = simulator().run(trace([1.0], [0], 30.0), Script({TP2: 0, SMALL: 2}, control=slow))
    assert decode_s(slowed) > 1.2 * decode_s(fast)
    assert slowed.gpus.iloc[0].energy_busy_j < fast.gpus.iloc[0].energy_busy_j * 1.5  # GPU 0 ran at its own clock


def test_a_group_migrates_and_unloads_as_one():
    sim = simulator()
    sim.start(trace([1.0, 20.0], [0, 0], 40.0), Script({TP2: 0, SMALL: 2}, actions=[(10.0, Migrate(TP2, 1, 3))]))
    sim.advance(40.0)
    result = sim.result()
    assert (result.requests.status == "finished").all()
    assert list(result.requests.gpu) == [0, 2]  # after the move, its block is GPUs 2-3
    assert not sim.gpus[0].instances and not sim.gpus[1].instances
    assert sim.gpus[0].mem_used == pytest.approx(0, abs=1) and sim.gpus[1].mem_used == pytest.approx(0, abs=1)
    assert [g.index for g in sim.instances_of(TP2)[0].group] == [2, 3]
    with pytest.raises(ActionError, match="spans GPUs 2..3"):
        sim.apply_action(Migrate(TP2, 2, 3), 40.0)
    sim.apply_action(Unload(TP2, 3), 40.0)  # through any of its GPUs
    assert not sim.gpus[2].instances and not sim.gpus[3].instances
    assert sim.gpus[2].mem_used == pytest.approx(0, abs=1) and sim.gpus[3].mem_used == pytest.approx(0, abs=1)


def test_sleep_and_wake_free_and_take_memory_on_every_gpu():
    sim = simulator(keep_alive_s=1e6)
    policy = Script({TP2: 0, SMALL: 2}, mechanisms=Mechanisms(sleep_level=1, sleep_after_s=2.0))
    sim.start(trace([1.0, 30.0], [0, 0], 50.0), policy)
    sim.advance(25.0)
    inst = sim.instances_of(TP2)[0]
    assert inst.phase == 6  # asleep
    assert sim.gpus[0].mem_used == pytest.approx(0, abs=1) and sim.gpus[1].mem_used == pytest.approx(0, abs=1)
    sim.advance(30.5)
    assert sim.gpus[0].mem_used > 1e9 and sim.gpus[1].mem_used == pytest.approx(sim.gpus[0].mem_used)
    sim.advance(50.0)
    result = sim.result()
    assert (result.requests.status == "finished").all()
    assert energy(result, 0) == pytest.approx(energy(result, 1), rel=1e-12)


def test_a_scenario_with_a_group_keeps_every_invariant():
    """Festina on mixed-tp-moe (a 70B engine on 4 GPUs beside MoE and small models): every GPU's shares
    (as it gives them) and memory stay within it at every step, energy adds up, requests count once."""
    from festgym.policies.registry import background_policy
    from festgym.scenario import load_scenario

    scenario = load_scenario("mixed-tp-moe")
    sim = scenario.simulator()
    trace = scenario.trace(seed=3, duration_s=300.0)
    sim.start(trace, background_policy(scenario))
    for t in np.arange(1.0, sim.end, 1.0):
        sim.advance(float(t))
        for gpu in sim.gpus:
            assert sum(i.share_on(gpu) for i in gpu.instances) <= 1 + 1e-9, gpu.index
            assert [gpu.view.share_of(i.name) for i in gpu.instances] == [i.share_on(gpu) for i in gpu.instances]
            assert gpu.mem_used <= gpu.mem_bytes * (1 + 1e-12), gpu.index
            assert gpu.spec.empty_w - 1e-9 <= gpu.power_w <= gpu.spec.tdp_w + 1e-9 or gpu.power_w == 0.0
            for inst in gpu.instances:
                assert inst.gpu.index % len(inst.group) == 0 and gpu in inst.group
    sim.advance(sim.end)
    result = sim.result()
    requests = result.requests
    assert len(requests) == len(trace) and result.summary["finished"] == int((requests.status == "finished").sum())
    big = requests[requests.model == "Llama-3.1-70B-tp4"]
    assert len(big) and (big[big.gpu >= 0].gpu % 4 == 0).all()  # booked on a block's lead
    line = result.timeline
    booked = (line.power_w * line.interval_s).groupby(line.gpu).sum().to_numpy()
    energy = result.gpus[[f"energy_{s}_j" for s in STATES]].sum(axis=1).to_numpy()
    np.testing.assert_allclose(booked, energy, rtol=1e-9)


def test_every_gpu_of_the_group_sees_the_engines_latency_peaks():
    seen: dict[int, list[float]] = {0: [], 1: []}

    def record(gpu, now):
        inst = gpu.instance(TP2)
        if inst is not None and gpu.index in seen:
            seen[gpu.index].append(inst.peak_gap_s)
        return None

    sim = simulator()
    sim.run(trace(np.linspace(1.0, 20.0, 40), [0] * 40, 30.0), Script({TP2: 0, SMALL: 2}, control=record))
    assert max(seen[0]) > 0 and seen[0] == seen[1]  # the peer reads what the lead reads, tick by tick


def test_festina_never_empties_a_gpu_of_a_multi_gpu_engine_even_asleep():
    from festgym.policies.registry import make_policy

    sim = simulator(keep_alive_s=1e6)
    festina = make_policy("festina")
    policy = Script({TP2: 0, SMALL: 2}, mechanisms=Mechanisms(sleep_level=1, sleep_after_s=2.0))
    sim.start(trace([1.0], [0], 60.0), policy)
    sim.advance(30.0)
    festina.reset(sim.view)
    assert sim.instances_of(TP2)[0].phase == 6  # asleep
    assert festina._empty(sim.view.gpu(1), sim.view.gpus, {g: 0.0 for g in range(4)}, sim.view) is None


def test_festinas_peer_gpus_keep_a_multi_gpu_engine_at_its_leads_clock_and_a_passing_share():
    """The engine runs at the least clock and share its GPUs give it: each GPU of it other than the lead
    runs no lower a clock than the lead's and gives the engine at least the share that meets its SLOs at
    that clock (planned apart, the engine alone on its second GPU took a lower clock than the lead's)."""
    from festgym.policies.festina import Festina

    checked: list[bool] = []
    planned: dict[int, tuple[float, float]] = {}  # what each GPU is set to give the engine (it lands a moment later)

    class Pinned(Festina):
        def place(self, request, cluster):
            return 0  # the small model shares the engine's lead GPU; the second GPU holds the engine alone

        def control(self, gpu, now):
            out = super().control(gpu, now)
            inst = gpu.instance(TP2)
            if inst is None or not inst.ready:
                return out
            planned[gpu.index] = (out.clock_mhz if out is not None else gpu.clock_mhz,
                                  out.shares[TP2] if out is not None and out.shares else gpu.share_of(TP2))
            lead = self._lead_plans.get((0, TP2))
            tab = self.tables(gpu, TP2)
            if gpu.index != 1 or lead is None or lead[0] != now or self._situation(inst, tab, self._interval) is None:
                return out  # idle, or nothing passes on the lead (overload: no setting would)
            _, c, level = lead  # the lead's clock and the least share that passes there
            (lead_clock, _), (clock, share) = planned[0], planned[1]
            checked.append(clock >= lead_clock == tab.clocks[c] and share >= tab.shares[level] - 1e-9)
            return out

    times = np.r_[np.linspace(1.0, 80.0, 2000), np.linspace(2.0, 80.0, 1200)]  # the engine's, the small model's
    order = np.argsort(times, kind="stable")
    arrivals, models = times[order], np.r_[np.zeros(2000, dtype=int), np.ones(1200, dtype=int)][order]
    engine = EngineConfig(max_num_seqs=16, kv_cache_gb=2.0)
    tight = ModelServing(Slo(ttft_s=0.02, tbt_s=0.002), engine)  # tight enough that clock and share matter
    sim = Simulator([H100] * 2, {TP2: tight, SMALL: ModelServing(engine=engine)},
                    SimConfig(drain_s=0.0, init_s=2.0, consolidate_interval_s=1e6),
                    node=NodeSpec.load("dgx-h100").replace(gpus_per_node=2))
    sim.run(trace(arrivals, models, 85.0), Pinned())
    assert len(checked) > 20 and all(checked)
