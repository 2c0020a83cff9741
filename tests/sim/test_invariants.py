"""Property tests: simulator invariants under random workloads and a random policy that uses
every action (placement, rejection, clocks, shares, batch limits, migration, park, wake, unload)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from festgym.control.actions import GpuControl, Migrate, Park, Unload, Wake
from festgym.control.states import STATES
from festgym.sim import gpu as gpu_module
from festgym.sim.config import SimConfig
from festgym.sim.policy import BasePolicy
from festgym.sim.serving import EngineConfig, ModelServing, Slo
from festgym.sim.simulator import Simulator
from festgym.sim.workload import LengthDist, SyntheticWorkload

MODELS = ("Llama-3.2-1B", "Llama-3.2-3B")
TYPES = ("H100-SXM-80GB", "A100-SXM-80GB")


class RandomPolicy(BasePolicy):
    """Valid but arbitrary decisions, drawn from a seeded generator."""

    name = "random"

    def __init__(self, seed: int):
        self.seed = seed

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


def checked_update(intervals: list, original):
    """Wrap SimGpu.update to record each integrated interval and check the state invariants."""

    def update(self, now, changed=None):
        if now > self.t_last:
            intervals.append((self.index, self.t_last, now, self.power_w))
        shares = sum(i.pending_share if i.pending_share is not None else i.share for i in self.instances)
        assert shares <= 1 + 1e-9, f"GPU {self.index}: shares sum to {shares}"
        assert self.mem_used <= self.mem_bytes * (1 + 1e-12), f"GPU {self.index}: memory over-committed"
        assert self.spec.parked_w - 1e-9 <= self.power_w <= self.spec.tdp_w + 1e-9
        return original(self, now, changed)

    return update


scenario = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31 - 1),
    "types": st.lists(st.sampled_from(TYPES), min_size=1, max_size=3),
    "rate": st.floats(0.5, 6.0),
    "duration": st.floats(10.0, 60.0),
    "kv_cache_gb": st.floats(0.02, 6.0),  # down to ~600 tokens: preemptions, rejections
    "share_change_s": st.sampled_from([0.0, 0.3]),
    "clock_change_s": st.sampled_from([0.0, 0.05]),
    "keep_alive_s": st.floats(0.0, 20.0),
    "consolidate_s": st.floats(2.0, 15.0),
})


def simulate(p: dict):
    engine = EngineConfig(max_num_seqs=48, max_num_batched_tokens=2048, kv_cache_gb=p["kv_cache_gb"], init_s=0.5)
    sim = Simulator(list(p["types"]), {m: ModelServing(Slo(0.5, 0.1), engine) for m in MODELS},
                    SimConfig(drain_s=400.0, share_change_s=p["share_change_s"], clock_change_s=p["clock_change_s"],
                              keep_alive_s=p["keep_alive_s"], consolidate_interval_s=p["consolidate_s"]))
    trace = SyntheticWorkload(MODELS, rate_rps=p["rate"], duration_s=p["duration"],
                              prompt=LengthDist(5.5, 1.0, 1, 3000), output=LengthDist(4.0, 1.0, 1, 600)
                              ).generate(p["seed"])
    return sim, trace, sim.run(trace, RandomPolicy(p["seed"]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=scenario)
def test_invariants(p, monkeypatch):
    intervals: list = []
    monkeypatch.setattr(gpu_module.SimGpu, "update", checked_update(intervals, gpu_module.SimGpu.update))
    sim, trace, result = simulate(p)
    req, gpus = result.requests, result.gpus

    # Energy equals the integral of the piecewise-constant power, over intervals tiling [0, end].
    frame = pd.DataFrame(intervals, columns=["gpu", "t0", "t1", "power_w"])
    for g, rows in frame.groupby("gpu"):
        assert rows.t0.iloc[0] == 0.0 and rows.t1.iloc[-1] == pytest.approx(result.summary["horizon_s"])
        np.testing.assert_array_equal(rows.t0.to_numpy()[1:], rows.t1.to_numpy()[:-1])
        integral = float(((rows.t1 - rows.t0) * rows.power_w).sum())
        assert integral == pytest.approx(gpus.loc[g, [c for c in gpus if c.startswith("energy_") and
                                                      c.endswith("_j")]].sum(), rel=1e-12)
        assert sum(gpus.loc[g, [c for c in gpus if c.startswith("time_")]]) == pytest.approx(
            result.summary["horizon_s"])

    # Every request is accounted for exactly once; finished ones have consistent latencies.
    assert len(req) == len(trace)
    counts = req.status.value_counts()
    assert counts.sum() == len(trace) and result.summary["finished"] == counts.get("finished", 0)
    done = req[req.status == "finished"]
    assert (done.ttft_s >= 0).all() and (done.ttft_s <= done.e2e_s + 1e-12).all()
    assert done.e2e_s.notna().all() and req[req.status != "finished"].e2e_s.isna().all()
    assert (done.tbt_over_frac.fillna(0) <= 1).all()
    assert result.summary["output_tokens"] >= done.output_tokens.sum()
    # Nothing is left running long after the last arrival (the horizon leaves 400 s to drain).
    assert counts.get("unfinished", 0) == 0

    # Power stays between the parked floor and TDP in the per-interval timeline too.
    specs = [sim.specs[t] for t in p["types"]]
    line = result.timeline
    lo = np.array([specs[g].parked_w for g in line.gpu]) - 1e-9
    hi = np.array([specs[g].tdp_w for g in line.gpu]) + 1e-9
    assert ((line.power_w >= lo) & (line.power_w <= hi)).all()
    # The timeline covers the whole run, its last (shorter) interval included: it adds up to each
    # GPU's energy.
    booked = (line.power_w * line.interval_s).groupby(line.gpu).sum()
    energy = result.gpus[[f"energy_{s}_j" for s in STATES]].sum(axis=1)
    np.testing.assert_allclose(booked.to_numpy(), energy.to_numpy(), rtol=1e-9)
    assert line.groupby("gpu").interval_s.sum().to_numpy() == pytest.approx(sim.now)


@settings(max_examples=5, deadline=None)
@given(p=scenario)
def test_same_seed_same_results_bit_for_bit(p):
    first, second = simulate(p)[2], simulate(p)[2]
    for name in ("requests", "gpus", "timeline", "runs"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name), check_exact=True)
