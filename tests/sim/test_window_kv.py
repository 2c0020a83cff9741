"""A sliding-window model's KV cache in the simulator: each sequence reserves its window layers' share
once, and the cache is never over-committed however tight it is (gpt-oss-20b: 12 of its 24 layers
slide over 128 tokens)."""

from __future__ import annotations

import numpy as np
import pytest

from festgym.policies.least_loaded import LeastLoaded
from festgym.profiles.parallel import kv_cache_tokens
from festgym.profiles.profile import load_profile
from festgym.sim.config import SimConfig
from festgym.sim.serving import EngineConfig, ModelServing
from festgym.sim.simulator import Simulator
from festgym.sim.workload import Trace

H100, MODEL = "H100-SXM-80GB", "gpt-oss-20b"


@pytest.mark.parametrize("kv_cache_gb", [0.05, 0.3])
def test_a_tight_window_kv_cache_is_never_over_committed(kv_cache_gb):
    engine = EngineConfig(max_num_seqs=64, kv_cache_gb=kv_cache_gb)
    sim = Simulator([H100], {MODEL: ModelServing(engine=engine)}, SimConfig(drain_s=600.0))
    rng = np.random.default_rng(0)
    n = 300
    trace = Trace.build(np.sort(rng.uniform(0, 20, n)), np.zeros(n, dtype=np.int32), rng.integers(16, 400, n),
                        rng.integers(16, 600, n), (MODEL,), 20.0)
    sim.start(trace, LeastLoaded(spawn_at=float("inf")))
    capacity, per_seq = kv_cache_tokens(load_profile(f"{H100}/{MODEL}"), kv_cache_gb * 1e9)
    peak = 0.0
    for t in np.arange(0.05, sim.end, 0.05):
        sim.advance(t)
        for inst in sim.instances_of(MODEL):
            assert (inst.kv_tokens, inst.kv_seq) == (capacity, per_seq) and per_seq == 128
            assert inst.kv_used <= inst.kv_tokens
            peak = max(peak, inst.kv_used / inst.kv_tokens)
    sim.advance(sim.end)
    result = sim.result()
    status = result.requests.status.value_counts()
    assert status.sum() == n and status["finished"] + status["rejected_too_long"] == n
    assert peak > 0.9  # the cache was the limit, not the batch
    assert result.summary["preemptions"] > 0 or kv_cache_gb > 0.1
