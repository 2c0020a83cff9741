"""Simulator: closed-form advancement against a per-iteration reference, scenarios and errors."""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
import pytest

from festgym.control.actions import GpuControl, Migrate, Park, Unload, Wake
from festgym.policies.least_loaded import LeastLoaded
from festgym.policies.rules import RULE_POLICIES, make_rule_policy
from festgym.profiles.specs import NodeSpec
from festgym.sim.config import SimConfig
from festgym.sim.lifecycle import LOADERS
from festgym.sim.policy import ActionError, BasePolicy
from festgym.sim.serving import EngineConfig, ModelServing, Slo
from festgym.sim.simulator import Simulator
from festgym.sim.workload import SyntheticWorkload, Trace

H100 = "H100-SXM-80GB"
LLAMA, SMALL = "Llama-3.1-8B", "Llama-3.2-1B"


class Fixed(BasePolicy):
    """Everything on one GPU at one clock; extra actions at given times."""

    name = "fixed"

    def __init__(self, gpu: int = 0, clock_mhz: float | None = None, actions=()):
        self.gpu, self.clock_mhz, self.actions = gpu, clock_mhz, list(actions)

    def place(self, request, cluster):
        """The GPU holding the model (it may have been migrated), else ``self.gpu``."""
        resident = cluster.instances_of(request.model)
        return resident[0].gpu if resident else self.gpu

    def control(self, gpu, now):
        return GpuControl(clock_mhz=self.clock_mhz) if self.clock_mhz else None

    def consolidate(self, cluster, now):
        due = [a for t, a in self.actions if t <= now]
        self.actions = [(t, a) for t, a in self.actions if t > now]
        return due


def trace_of(arrivals, prompts, outputs, model=LLAMA, duration=None):
    n = len(arrivals)
    return Trace.build(arrivals, np.zeros(n, dtype=np.int32), prompts, outputs, (model,), duration)


def reference_times(sim: Simulator, trace: Trace, ready_s: float, clock: float, engine: EngineConfig):
    """Per-iteration vLLM-like loop with the same timing rules (one step per token)."""
    slices = sim.slice_cache(H100, LLAMA)
    dec, pre = slices.decode(1.0, clock), slices.prefill(1.0, clock)
    first, finish = {}, {}
    waiting, prefilling, decoding = deque(), [], {}  # decoding: rid -> [ctx, remaining]
    t, i, n = ready_s, 0, len(trace)
    while len(finish) < n:
        while (i < n and trace.arrival_s[i] < t) or (i < n and trace.arrival_s[i] <= ready_s):
            waiting.append([i, int(trace.prompt_tokens[i])])
            i += 1
        while waiting and len(decoding) + len(prefilling) < engine.max_num_seqs:
            prefilling.append(waiting.popleft())
        batch = len(decoding)
        if not prefilling and not decoding:
            t = trace.arrival_s[i]
            waiting.append([i, int(trace.prompt_tokens[i])])
            i += 1
            continue
        ctx = sum(c for c, _ in decoding.values()) / batch if batch else 0.0
        if prefilling:
            budget, chunk = engine.max_num_batched_tokens - batch, []
            for seq in prefilling:
                take = min(seq[1], budget)
                if take <= 0:
                    break
                chunk.append((seq, take))
                budget -= take
            tokens = sum(take for _, take in chunk)
            step = pre.at(pre.time_s, tokens + batch)
            if batch:
                step += max(dec.at(dec.time_s, batch, ctx) - dec.at(dec.time_s, batch, dec.ctx[0]), 0.0)
        else:
            chunk, step = [], dec.at(dec.time_s, batch, ctx)
        t += step
        for rid, state in list(decoding.items()):
            state[0] += 1
            state[1] -= 1
            if state[1] == 0:
                finish[rid] = t
                del decoding[rid]
        for seq, take in chunk:
            seq[1] -= take
            if seq[1] == 0:
                prefilling.remove(seq)
                rid = seq[0]
                first[rid] = t
                out = int(trace.output_tokens[rid])
                if out == 1:
                    finish[rid] = t
                else:
                    decoding[rid] = [int(trace.prompt_tokens[rid]) + 1, out - 1]
    return np.array([first[k] for k in range(n)]), np.array([finish[k] for k in range(n)])


@pytest.mark.parametrize("clock", [1980.0, 990.0])
def test_closed_form_matches_per_iteration_reference(clock):
    engine = EngineConfig(max_num_seqs=24, max_num_batched_tokens=1024, kv_cache_gb=40.0, init_s=1.0)
    sim = Simulator([H100], {LLAMA: ModelServing(Slo(), engine)}, SimConfig(drain_s=3600, clock_change_s=0.0))
    rng = np.random.default_rng(3)
    n = 160
    arrivals = np.sort(rng.uniform(0, 40, n))
    prompts = rng.integers(1, 3000, n)
    outputs = np.maximum(rng.lognormal(4.5, 1.0, n).astype(int), 1)
    outputs[:3] = 1
    trace = trace_of(arrivals, prompts, outputs)
    result = sim.run(trace, Fixed(clock_mhz=clock))
    assert (result.requests.status == "finished").all()
    weights = sim.profile(H100, LLAMA).model.weight_bytes
    # cold start on arrival: the default loader (safetensors) from DRAM, capped by the host link, then init
    rate_gbps = min(LOADERS["safetensors"]["dram"], sim.specs[H100].host_to_gpu_gbps)
    ready = arrivals[0] + weights / (rate_gbps * 1e9) + engine.init_s
    first, finish = reference_times(sim, trace, ready, clock, engine)
    req = result.requests
    np.testing.assert_allclose(req.arrival_s + req.ttft_s, first, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(req.arrival_s + req.e2e_s, finish, rtol=1e-9, atol=1e-9)
    # every token is counted once: prompts' first tokens plus decode steps
    assert result.summary["output_tokens"] == outputs.sum()


def test_decode_runs_are_closed_form_not_per_token():
    sim = Simulator([H100], [LLAMA])
    trace = trace_of([0.0], [100], [5000], duration=60)
    result = sim.run(trace, Fixed())
    assert result.requests.status[0] == "finished"
    assert len(result.runs) < 20  # one prefill plus one run per context-grid cell


ONE_GPU_NODES = NodeSpec.load("dgx-h100").replace(gpus_per_node=1, shutdown_s=5.0, boot_s=10.0)
"""Nodes of one GPU each, quick to power off and on: a released GPU's node goes off on its own."""


def small_world(node: NodeSpec | str = "dgx-h100", **config):
    engine = EngineConfig(max_num_seqs=32, kv_cache_gb=4.0, init_s=0.5)
    models = {LLAMA: ModelServing(Slo(0.5, 0.1), engine), SMALL: ModelServing(Slo(0.3, 0.05), engine)}
    return Simulator([H100, H100], models, SimConfig(**{"drain_s": 120.0, **config}), node=node)


def workload(rate=4.0, duration=60.0, seed=1):
    return SyntheticWorkload((LLAMA, SMALL), rate_rps=rate, duration_s=duration).generate(seed)


def test_same_seed_gives_identical_results():
    sim = small_world(share_mechanism="mps")  # share changes restart engines: recomputation on the way
    first = sim.run(workload(), LeastLoaded(spawn_at=0.2))
    second = sim.run(workload(), LeastLoaded(spawn_at=0.2))
    for name in ("requests", "gpus", "timeline", "runs", "nodes"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name), check_exact=True)
    drop = {"wall_s", "requests_per_wall_s"}
    assert {k: v for k, v in first.summary.items() if k not in drop} == \
        {k: v for k, v in second.summary.items() if k not in drop}


def test_lower_clock_saves_decode_power_and_costs_latency():
    sim = Simulator([H100], [LLAMA], SimConfig(drain_s=300))
    trace = SyntheticWorkload((LLAMA,), rate_rps=3.0, duration_s=120).generate(2)
    fast, slow = (sim.run(trace, Fixed(clock_mhz=c)) for c in (1980, 900))
    # memory-bound decode: a 55% lower clock costs far less than 55% in step time
    assert 1.05 < slow.summary["tbt_p50_ms"] / fast.summary["tbt_p50_ms"] < 1.6
    def busy(r):
        return r.gpus.energy_busy_j.sum() / r.gpus.time_busy_s.sum()
    assert busy(slow) < busy(fast) * 0.9


def test_kv_pressure_preempts_and_recomputes_but_finishes():
    engine = EngineConfig(max_num_seqs=64, kv_cache_gb=0.5, init_s=0.0)  # ~3.8k tokens of KV
    sim = Simulator([H100], {LLAMA: ModelServing(Slo(), engine)}, SimConfig(drain_s=600))
    rng = np.random.default_rng(0)
    trace = trace_of(np.zeros(40), rng.integers(50, 200, 40), rng.integers(100, 600, 40))
    result = sim.run(trace, Fixed())
    assert result.summary["preemptions"] > 0
    assert result.summary["recomputed_tokens"] > 0
    assert (result.requests.status == "finished").all()
    assert result.summary["output_tokens"] == trace.output_tokens.sum()


def test_pending_prompt_count_stays_exact_through_preemption_and_migration():
    """``Instance.prompt_todo`` is kept incrementally; it must equal the sum over the queues."""
    engine = EngineConfig(max_num_seqs=64, kv_cache_gb=0.5, init_s=0.0)  # KV pressure: preemptions
    sim = Simulator([H100, H100], {LLAMA: ModelServing(Slo(), engine)}, SimConfig(drain_s=600))
    rng = np.random.default_rng(0)
    trace = trace_of(np.sort(rng.uniform(0, 60, 150)), rng.integers(50, 400, 150), rng.integers(100, 600, 150))
    sim.start(trace, Fixed(actions=[(20.0, Migrate(LLAMA, 0, 1))]))  # hands over a busy queue
    checked = 0
    for t in np.arange(0.25, 200, 0.25):
        sim.advance(t)
        for inst in (i for g in sim.gpus for i in g.instances):
            assert inst.prompt_todo == sum(s.todo for s in inst.waiting) + sum(s.todo for s in inst.prefilling)
            checked += inst.prompt_todo > 0
    result = sim.result()
    assert result.summary["preemptions"] > 0 and result.summary["migrations"] == 1 and checked > 10


def test_least_laxity_first_queue_serves_the_tightest_deadline_first():
    engine = EngineConfig(max_num_seqs=1, init_s=0.0)  # one at a time: the queue order decides
    sim = Simulator([H100], {LLAMA: ModelServing(Slo(ttft_s=0.3, ttft_per_1k_tokens_s=0.1), engine)})
    prompts = [4000, 3000, 100, 2000, 50]
    trace = trace_of([1.0] * 5, prompts, [20] * 5)  # a burst after the cold start

    class Llf(Fixed):
        queue_order = "llf"

    fcfs = sim.run(trace, Fixed()).requests.ttft_s.to_numpy()
    llf = sim.run(trace, Llf()).requests.ttft_s.to_numpy()
    assert list(np.argsort(fcfs)) == [0, 1, 2, 3, 4]
    assert list(np.argsort(llf)) == list(np.argsort(prompts))  # deadline grows faster than prefill time
    assert llf.mean() < fcfs.mean()

    class Bad(Fixed):
        queue_order = "random"

    with pytest.raises(ValueError, match="queue_order 'random'"):
        sim.run(trace, Bad())


def test_rejections_are_counted_not_lost():
    engine = EngineConfig(kv_cache_gb=1.0)
    sim = Simulator([H100], {LLAMA: ModelServing(Slo(), engine)})
    trace = trace_of([0.0, 1.0, 2.0], [100, 100_000, 100], [10, 10, 10])

    class RejectLast(Fixed):
        def place(self, request, cluster):
            return None if request.rid == 2 else 0

    status = sim.run(trace, RejectLast()).requests.status.tolist()
    assert status == ["finished", "rejected_too_long", "rejected_policy"]


@pytest.mark.parametrize("policy", sorted(RULE_POLICIES))
def test_a_request_no_gpu_can_serve_is_booked_under_the_same_reason_by_every_policy(policy):
    """Too long for every GPU's KV cache, or a model no GPU has the memory for: the cluster's
    reason, whether the policy turns the request away or places it."""
    small_kv = ModelServing(Slo(), EngineConfig(kv_cache_gb=1.0))
    too_big = ModelServing(Slo(), EngineConfig(kv_cache_gb=70.0))  # 16 GB of weights + 70 GB > 72 GB
    sim = Simulator([H100, H100], {LLAMA: small_kv, SMALL: too_big})
    trace = Trace.build([0.0, 1.0, 2.0], [0, 0, 1], [100, 100_000, 100], [10, 10, 10], (LLAMA, SMALL))
    status = sim.run(trace, make_rule_policy(policy)).requests.status.tolist()
    assert status == ["finished", "rejected_too_long", "rejected_memory"]


def test_memory_is_never_over_committed():
    engine = EngineConfig(kv_cache_gb=30.0)
    sim = Simulator([H100], {LLAMA: ModelServing(Slo(), engine), SMALL: ModelServing(Slo(), engine)})
    trace = Trace.build([0.0, 0.5], [0, 1], [100, 100], [10, 10], (LLAMA, SMALL))
    result = sim.run(trace, Fixed())  # 16 + 30 GB, then 2.5 + 30 GB: over 72 GB
    assert result.requests.status.tolist() == ["finished", "rejected_memory"]


def test_keep_alive_unloads_and_a_later_request_cold_starts():
    sim = Simulator([H100], [LLAMA], SimConfig(keep_alive_s=10.0, drain_s=30))
    trace = trace_of([0.0, 100.0], [50, 50], [5, 5])
    result = sim.run(trace, Fixed())
    assert result.summary["cold_starts"] == 2
    assert result.requests.cold_start.tolist() == [True, True]
    assert result.gpus.time_loading_s[0] > 0


def test_park_wake_and_migration():
    """A released GPU's node powers off; the migration to it boots the node; the emptied source
    is released and its node goes off in turn."""
    sim = small_world(ONE_GPU_NODES, node_off_after_s=5.0)
    trace = SyntheticWorkload((LLAMA,), rate_rps=3.0, duration_s=80).generate(5)
    actions = [(30.0, Park(1)), (60.0, Migrate(LLAMA, 0, 1)), (90.0, Park(0))]
    result = sim.run(trace, Fixed(actions=actions))
    s, gpus, nodes = result.summary, result.gpus, result.nodes
    assert s["migrations"] == 1 and s["recomputed_tokens"] > 0
    assert s["finished"] == len(trace)
    # GPU 1: released at 30, off from 40 (5 s timer, 5 s shutdown) until the migration boots it at 60
    assert gpus.time_off_s[1] == pytest.approx(20.0)
    assert gpus.time_booting_s[1] == pytest.approx(ONE_GPU_NODES.shutdown_s + ONE_GPU_NODES.boot_s)
    assert gpus.energy_off_j[1] == 0.0 and nodes.boots.tolist() == [0, 1]
    # GPU 0: emptied by the migration, released at 90, then its node goes off too
    assert gpus.time_off_s[0] == pytest.approx(s["horizon_s"] - 100.0)
    assert nodes.time_off_s[0] == pytest.approx(s["horizon_s"] - 100.0)
    assert s["node_boots"] == 1 and s["node_off_hours"] * 3600 == pytest.approx(nodes.time_off_s.sum())
    after = result.requests.arrival_s > 75  # the target is ready by then (boot, then cold start)
    assert after.any() and (result.requests.gpu[after] == 1).all()


def test_unload_drains_then_frees_the_gpu():
    """Unloaded and released, a GPU falls to its empty floor; its node stays on while another
    GPU of it (never released) is not."""
    sim = small_world()
    trace = trace_of([0.0, 1.0], [50, 50], [20, 20])
    result = sim.run(trace, Fixed(actions=[(30.0, Unload(LLAMA, 0)), (30.0, Park(0))]))
    gpu0, empty_w = result.gpus.iloc[0], sim.specs[H100].states.empty_w
    assert gpu0.time_empty_s == pytest.approx(result.summary["horizon_s"] - 30.0)
    assert gpu0.energy_empty_j == pytest.approx(empty_w * gpu0.time_empty_s)
    assert result.gpus.time_off_s.sum() == 0.0 and result.nodes.time_off_s.sum() == 0.0


def test_co_resident_decodes_contend_for_bandwidth():
    engine = EngineConfig(max_num_seqs=64, kv_cache_gb=8.0, init_s=0.0)
    models = {LLAMA: ModelServing(Slo(), engine), "Qwen3-8B": ModelServing(Slo(), engine)}
    sim = Simulator([H100], models, SimConfig(drain_s=200))
    n = 64
    both = Trace.build(np.zeros(2 * n), np.repeat([0, 1], n), np.full(2 * n, 100), np.full(2 * n, 2000),
                       (LLAMA, "Qwen3-8B"))
    alone = Trace.build(np.zeros(n), np.zeros(n), np.full(n, 100), np.full(n, 2000), (LLAMA,))
    shared = sim.run(both, LeastLoaded(spawn_at=np.inf))
    single = sim.run(alone, LeastLoaded(spawn_at=np.inf))
    # Two instances at share 0.5 each run slower than one with the whole GPU, and share power.
    assert shared.tbt_quantiles((0.5,), model=0)[0] > 1.3 * single.tbt_quantiles((0.5,), model=0)[0]
    assert shared.gpus.energy_busy_j[0] / shared.gpus.time_busy_s[0] <= sim.specs[H100].tdp_w


@pytest.mark.parametrize("control, match", [
    (GpuControl(clock_mhz=5000), "outside the supported"),
    (GpuControl(shares={LLAMA: 1.2}), "must lie in"),
    (GpuControl(shares={"Qwen3-8B": 0.5}), "not resident"),
    (GpuControl(max_num_seqs={LLAMA: 0}), "whole number"),
])
def test_bad_controls_raise_clear_errors(control, match):
    class Bad(Fixed):
        def control(self, gpu, now):
            return control if gpu.instances and gpu.instances[0].ready else None

    with pytest.raises(ActionError, match=match):
        Simulator([H100], [LLAMA]).run(trace_of([0.0], [10], [2000]), Bad())


def test_bad_placement_and_actions_raise_clear_errors():
    with pytest.raises(ActionError, match="GPU index 3"):
        Simulator([H100], [LLAMA]).run(trace_of([0.0], [10], [10]), Fixed(gpu=3))
    with pytest.raises(ActionError, match="not resident"):
        Simulator([H100, H100], [LLAMA]).run(trace_of([0.0], [10], [10], duration=60),
                                             Fixed(actions=[(0.0, Migrate(LLAMA, 1, 0))]))
    with pytest.raises(ActionError, match="unknown action"):
        Simulator([H100], [LLAMA]).run(trace_of([0.0], [10], [10], duration=60), Fixed(actions=[(0.0, "park")]))


def test_shares_must_sum_to_one_at_most():
    class TooMuch(Fixed):
        def control(self, gpu, now):
            if len(gpu.instances) == 2:
                return GpuControl(shares={LLAMA: 0.7, SMALL: 0.7})
            return None

    trace = Trace.build([0.0, 0.1], [0, 1], [10, 10], [500, 500], (LLAMA, SMALL))
    with pytest.raises(ActionError, match="sum to 1.4"):
        small_world().run(trace, TooMuch())


def test_unknown_trace_model_is_an_error():
    with pytest.raises(ValueError, match="not served"):
        Simulator([H100], [LLAMA]).run(trace_of([0.0], [1], [1], model="Other"), Fixed())


def test_wake_action_on_parked_gpu():
    """Park releases GPU 1, its node shuts down and goes off; Wake boots it back to the empty floor."""
    sim = small_world(ONE_GPU_NODES, node_off_after_s=10.0)
    trace = trace_of([0.0], [10], [10], duration=100)
    result = sim.run(trace, Fixed(actions=[(30.0, Park(1)), (60.0, Wake(1))]))
    gpu1, node1 = result.gpus.iloc[1], result.nodes.iloc[1]
    assert gpu1.time_off_s == pytest.approx(60.0 - 30.0 - 10.0 - ONE_GPU_NODES.shutdown_s)
    assert gpu1.time_booting_s == pytest.approx(ONE_GPU_NODES.shutdown_s + ONE_GPU_NODES.boot_s)
    assert gpu1.time_empty_s == pytest.approx(result.summary["horizon_s"] - gpu1.time_off_s - gpu1.time_booting_s)
    assert node1.time_shutting_down_s == pytest.approx(ONE_GPU_NODES.shutdown_s)
    assert node1.time_booting_s == pytest.approx(ONE_GPU_NODES.boot_s) and node1.boots == 1
    assert node1.energy_off_j == pytest.approx(ONE_GPU_NODES.off_w * gpu1.time_off_s)


@pytest.mark.parametrize("order", [(SMALL, LLAMA), (LLAMA, SMALL)])
def test_one_models_gpu_figures_do_not_become_every_models(order, tmp_path):
    """A profile whose GPU disagrees with its neighbours' (memory_gb 40 on an 80 GB type) is
    refused, whichever model is listed first, rather than resizing the GPU for all of them."""
    import shutil

    from festgym.errors import SpecError
    from festgym.resources import PROFILES

    root = tmp_path / "profiles"
    shutil.copytree(PROFILES.shipped / H100, root / H100)
    path = root / H100 / SMALL / "profile.yaml"
    text = path.read_text()
    assert "memory_gb: 80.0" in text
    path.write_text(text.replace("memory_gb: 80.0", "memory_gb: 40.0", 1))
    with pytest.raises(SpecError, match=r"gpu.memory_gb.*same GPU type"):
        Simulator([H100], list(order), None, root)
