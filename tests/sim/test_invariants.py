"""Property tests: simulator invariants under random workloads and a random policy that uses
every action (placement, rejection, clocks, shares, batch limits, migration, park, wake, unload)
and random engine mechanisms (loader, sleep, keep-alive, always resident), on nodes that power off
and boot within the run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from festgym import compiled
from festgym.control.actions import GpuControl, Migrate, Park, Unload, Wake
from festgym.control.states import GPU_OFF, STATES
from festgym.profiles.specs import NodeSpec
from festgym.sim import gpu as gpu_module
from festgym.sim.config import SHARE_MECHANISMS, SimConfig
from festgym.sim.lifecycle import LOADERS, Mechanisms
from festgym.sim.node import NODE_STATES
from festgym.sim.policy import BasePolicy
from festgym.sim.serving import EngineConfig, ModelServing, Slo
from festgym.sim.simulator import Simulator
from festgym.sim.workload import LengthDist, SyntheticWorkload

MODELS = ("Llama-3.2-1B", "Llama-3.2-3B")
TYPES = ("H100-SXM-80GB", "A100-SXM-80GB")


class RandomPolicy(BasePolicy):
    """Valid but arbitrary decisions, drawn from a seeded generator."""

    name = "random"

    def __init__(self, seed: int, mechanisms: Mechanisms):
        self.seed, self.mechanisms = seed, mechanisms

    def reset(self, cluster):
        self.rng = np.random.default_rng(self.seed)

    def place(self, request, cluster):
        if self.rng.random() < 0.05:
            return None
        return int(self.rng.integers(len(cluster.gpus)))

    def control(self, gpu, now):
        rng = self.rng
        clocks = [c for c in gpu.spec.sm_clocks_mhz if c >= 0.3 * gpu.spec.max_sm_clock_mhz]
        instances = gpu.instances
        shares = rng.dirichlet(np.ones(len(instances))) * rng.uniform(0.3, 1.0) if instances else []
        return GpuControl(clock_mhz=float(rng.choice(clocks)),
                          shares={i.model: float(max(s, 0.02)) * 0.98 for i, s in zip(instances, shares)},
                          max_num_seqs={i.model: int(rng.integers(1, 48)) for i in instances})

    def consolidate(self, cluster, now):
        rng, gpus = self.rng, cluster.gpus
        kind = rng.integers(4)
        g = int(rng.integers(len(gpus)))
        resident = gpus[g].instances
        if kind == 0 and resident and len(gpus) > 1:
            model = resident[int(rng.integers(len(resident)))].model
            targets = [x.index for x in gpus if x.instance(model) is None]
            return [Migrate(model, g, int(rng.choice(targets)))] if targets else []
        if kind == 1:
            return [Park(g)]
        if kind == 2:
            return [Wake(g)]
        if resident:
            return [Unload(resident[0].model, g)]
        return []


PURE_GPU = "festgym.sim.gpu" not in compiled.compiled_modules()
"""Compiled code calls ``SimGpu.update`` directly, past a patched class attribute: the per-event
checks see every call only where the simulator runs in pure Python (elsewhere the rest still runs)."""


def check_gpu(gpu) -> None:
    """A GPU's state invariants: SM shares (pending ones counted) and memory within the GPU, power
    between the empty floor (0 only with its node off) and TDP."""
    shares = sum(i.pending_share if i.pending_share is not None else i.share for i in gpu.instances)
    assert shares <= 1 + 1e-9, f"GPU {gpu.index}: shares sum to {shares}"
    assert gpu.mem_used <= gpu.mem_bytes * (1 + 1e-12), f"GPU {gpu.index}: memory over-committed"
    if gpu.state == GPU_OFF:  # only a node that is off takes a GPU below its empty floor
        assert gpu.power_w == 0.0
    else:
        assert gpu.spec.empty_w - 1e-9 <= gpu.power_w <= gpu.spec.tdp_w + 1e-9


def checked_update(intervals: list, original):
    """Wrap SimGpu.update to record each integrated interval and check the state invariants."""

    def update(self, now, changed=None):
        if now > self.t_last:
            intervals.append((self.index, self.t_last, now, self.power_w))
        check_gpu(self)
        return original(self, now, changed)

    return update


scenario = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31 - 1),
    "types": st.lists(st.sampled_from(TYPES), min_size=1, max_size=3),
    "rate": st.floats(0.5, 6.0),
    "duration": st.floats(10.0, 60.0),
    "kv_cache_gb": st.floats(0.02, 6.0),  # down to ~600 tokens: preemptions, rejections
    "share_mechanism": st.sampled_from(SHARE_MECHANISMS),
    "clock_change_s": st.sampled_from([0.0, 0.05]),
    "keep_alive_s": st.floats(0.0, 20.0),
    "consolidate_s": st.floats(2.0, 15.0),
    "node_off_after_s": st.floats(0.0, 30.0),
    "gpus_per_node": st.integers(1, 2),
    "loader": st.sampled_from(sorted(LOADERS)),
    "sleep_level": st.sampled_from([0, 1, 2]),
    "sleep_after_s": st.floats(0.0, 10.0),
    "always_resident": st.booleans(),
})

STEP_S = 0.25
"""Steps at which every run's GPU states are checked (per event too, where the simulator runs in
pure Python)."""
BOOT_S = 5.0
"""Node boot time here: no shorter than a control interval (1 s), so an interval that saw its node
off ends with it off or booting."""


def simulate(p: dict):
    engine = EngineConfig(max_num_seqs=48, max_num_batched_tokens=2048, kv_cache_gb=p["kv_cache_gb"], init_s=0.5)
    node = NodeSpec.load("dgx-h100").replace(gpus_per_node=p["gpus_per_node"], boot_s=BOOT_S, shutdown_s=2.0)
    sim = Simulator(list(p["types"]), {m: ModelServing(Slo(0.5, 0.1), engine) for m in MODELS},
                    SimConfig(drain_s=1000.0, share_mechanism=p["share_mechanism"], clock_change_s=p["clock_change_s"],
                              keep_alive_s=p["keep_alive_s"], consolidate_interval_s=p["consolidate_s"],
                              node_off_after_s=p["node_off_after_s"]), node=node)
    trace = SyntheticWorkload(MODELS, rate_rps=p["rate"], duration_s=p["duration"],
                              prompt=LengthDist(5.5, 1.0, 1, 3000), output=LengthDist(4.0, 1.0, 1, 600)
                              ).generate(p["seed"])
    mechanisms = Mechanisms(loader=p["loader"], sleep_level=p["sleep_level"], sleep_after_s=p["sleep_after_s"],
                            always_resident=p["always_resident"])
    sim.start(trace, RandomPolicy(p["seed"], mechanisms))
    for t in np.arange(STEP_S, sim.end, STEP_S):  # the state invariants between events, compiled or not
        sim.advance(t)
        for gpu in sim.gpus:
            check_gpu(gpu)
    sim.advance(sim.end)
    return sim, trace, sim.result()


WOKEN_WITH_A_PENDING_SHARE = {
    "seed": 1, "types": ["H100-SXM-80GB"], "rate": 2.25, "duration": 10.0, "kv_cache_gb": 1.0,
    "share_mechanism": "green-contexts", "clock_change_s": 0.0, "keep_alive_s": 1.0, "consolidate_s": 2.0,
    "node_off_after_s": 0.0, "gpus_per_node": 1, "loader": "safetensors", "sleep_level": 2, "sleep_after_s": 0.0,
    "always_resident": False}
"""Found by this test: a share set while an instance sleeps stays pending through its wake, and a
share set while it wakes does not replace it, so on ready the shares sum above 1."""


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=scenario)
@example(p=WOKEN_WITH_A_PENDING_SHARE)
def test_invariants(p, monkeypatch):
    intervals: list = []
    if PURE_GPU:
        monkeypatch.setattr(gpu_module.SimGpu, "update", checked_update(intervals, gpu_module.SimGpu.update))
    sim, trace, result = simulate(p)
    req, gpus = result.requests, result.gpus

    # Energy equals the integral of the piecewise-constant power, over intervals tiling [0, end].
    frame = pd.DataFrame(intervals, columns=["gpu", "t0", "t1", "power_w"])
    assert not PURE_GPU or sorted(set(frame.gpu)) == list(range(len(p["types"])))
    for g, rows in frame.groupby("gpu"):
        assert rows.t0.iloc[0] == 0.0 and rows.t1.iloc[-1] == pytest.approx(result.summary["horizon_s"])
        np.testing.assert_array_equal(rows.t0.to_numpy()[1:], rows.t1.to_numpy()[:-1])
        integral = float(((rows.t1 - rows.t0) * rows.power_w).sum())
        assert integral == pytest.approx(gpus.loc[g, [f"energy_{s}_j" for s in STATES]].sum(), rel=1e-12)
    np.testing.assert_allclose(gpus[[f"time_{s}_s" for s in STATES]].sum(axis=1), result.summary["horizon_s"],
                               rtol=1e-12)

    # Every request is accounted for exactly once; finished ones have consistent latencies.
    assert len(req) == len(trace)
    counts = req.status.value_counts()
    assert counts.sum() == len(trace) and result.summary["finished"] == counts.get("finished", 0)
    done = req[req.status == "finished"]
    assert (done.ttft_s >= 0).all() and (done.ttft_s <= done.e2e_s + 1e-12).all()
    assert done.e2e_s.notna().all() and req[req.status != "finished"].e2e_s.isna().all()
    assert (done.tbt_over_frac.fillna(0) <= 1).all()
    assert result.summary["output_tokens"] >= done.output_tokens.sum()
    # Nothing is left running long after the last arrival (the horizon leaves 1000 s to drain: the random
    # policy can hold an engine at a sliver of the SMs and a low clock throughout, and one such run, on an
    # A100 under MPS, still had 6 requests running 400 s after its last arrival; all finished by 1000 s).
    assert counts.get("unfinished", 0) == 0

    # Power stays between the empty floor and TDP in the per-interval timeline too, except in an
    # interval that saw its node off (it ends off or booting: a boot outlasts an interval).
    specs = [sim.specs[t] for t in p["types"]]
    line = result.timeline
    down = line.state.isin(["off", "booting"]).to_numpy()
    lo = np.where(down, 0.0, np.array([specs[g].empty_w for g in line.gpu])) - 1e-9
    hi = np.array([specs[g].tdp_w for g in line.gpu]) + 1e-9
    assert ((line.power_w >= lo) & (line.power_w <= hi)).all()

    # Host energy: each node's time tiles the run; it draws host_w unless off, off_w when off.
    nodes, spec = result.nodes, sim.node_spec
    times = nodes[[f"time_{s}_s" for s in NODE_STATES]]
    np.testing.assert_allclose(times.sum(axis=1), result.summary["horizon_s"], rtol=1e-12)
    np.testing.assert_allclose(nodes[[f"energy_{s}_j" for s in NODE_STATES]].sum(axis=1),
                               spec.host_w * (times.sum(axis=1) - nodes.time_off_s) + spec.off_w * nodes.time_off_s,
                               rtol=1e-12)
    off = gpus.time_off_s.groupby(gpus.index // spec.gpus_per_node).agg(["min", "max"])
    np.testing.assert_allclose(off["min"], nodes.time_off_s)  # a node's GPUs are off exactly while it is
    np.testing.assert_allclose(off["max"], nodes.time_off_s)
    assert (gpus.energy_off_j == 0).all()
    # Idle, asleep and loading engines draw at least the empty floor, so what placement and
    # consolidation act on is non-negative on every GPU and no more than the energy drawn.
    spent = gpus.energy_idle_j + gpus.energy_asleep_j + gpus.energy_loading_j
    excess = spent - gpus.empty_w * (gpus.time_idle_s + gpus.time_asleep_s + gpus.time_loading_s)
    assert (excess >= -1e-9 * (1 + spent)).all() and (excess <= spent + 1e-9).all()
    assert result.standby_excess_j() == pytest.approx(float(excess.sum()), rel=1e-12, abs=1e-9)
    s = result.summary
    assert s["energy_kwh"] == pytest.approx(s["gpu_energy_kwh"] + s["host_energy_kwh"], rel=1e-12)
    assert s["host_energy_kwh"] == pytest.approx(nodes.energy_kwh.sum(), rel=1e-12)
    # The timeline covers the whole run, its last (shorter) interval included: it adds up to each
    # GPU's energy.
    booked = (line.power_w * line.interval_s).groupby(line.gpu).sum()
    energy = result.gpus[[f"energy_{s}_j" for s in STATES]].sum(axis=1)
    np.testing.assert_allclose(booked.to_numpy(), energy.to_numpy(), rtol=1e-9)
    assert line.groupby("gpu").interval_s.sum().to_numpy() == pytest.approx(sim.now)

    # Attribution: each GPU's energy is its models' parts plus what no engine bore, which is exactly
    # its empty and booting energy; no part is negative; requests are charged no more than their
    # models drew, and their tokens add up to the run's.
    parts = result.attribution
    assert (parts[["static_j", "dynamic_j", "loading_j"]].to_numpy() >= -1e-9).all()
    attributed = parts.groupby("gpu").energy_j.sum().reindex(gpus.gpu, fill_value=0.0).to_numpy()
    np.testing.assert_allclose(attributed + gpus.unattributed_j.to_numpy(), energy.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(gpus.unattributed_j, gpus.energy_empty_j + gpus.energy_booting_j, rtol=1e-9,
                               atol=1e-6)
    models = result.models
    assert (models.requests_j <= models.energy_j * (1 + 1e-9) + 1e-9).all()
    assert (req.energy_j >= -1e-9).all() and (req[req.status != "finished"].generated_tokens >= 0).all()
    assert req.generated_tokens.sum() == s["output_tokens"] == models.output_tokens.sum()
    assert (done.generated_tokens == done.output_tokens).all()  # a recompute prefills its tokens, it makes no more


@settings(max_examples=5, deadline=None)
@given(p=scenario)
def test_same_seed_same_results_bit_for_bit(p):
    first, second = simulate(p)[2], simulate(p)[2]
    for name in ("requests", "gpus", "timeline", "runs", "nodes", "attribution", "models"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name), check_exact=True)
