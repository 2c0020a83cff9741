"""Properties of profile lookups at arbitrary points (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from festgym.profiles.profile import load_profile

PROFILE = load_profile("H100-SXM-80GB/Qwen3-8B")
share = st.floats(0.05, 1.5)
clock = st.floats(100.0, 2500.0)


@settings(max_examples=300, deadline=None)
@given(batch=st.floats(1.0, 4096.0), ctx=st.floats(0.0, 131072.0), share=share, clock=clock)
def test_decode_lookup_is_physical_anywhere(batch, ctx, share, clock):
    out = PROFILE.decode(batch, ctx, share, clock)
    assert out["time_s"] > 0
    assert PROFILE.gpu.idle_w - 1e-6 <= out["power_w"] <= PROFILE.gpu.tdp_w + 1e-6
    assert out["hbm_util"] >= 0


@settings(max_examples=300, deadline=None)
@given(tokens=st.floats(1.0, 65536.0), share=share, clock=clock)
def test_prefill_lookup_is_physical_anywhere(tokens, share, clock):
    out = PROFILE.prefill(tokens, share, clock)
    assert out["time_s"] > 0
    assert PROFILE.gpu.idle_w - 1e-6 <= out["power_w"] <= PROFILE.gpu.tdp_w + 1e-6


@settings(max_examples=100, deadline=None)
@given(tokens=st.floats(1.0, 16384.0), lo=st.floats(0.1, 1.0), hi=st.floats(0.1, 1.0), clock=clock)
def test_prefill_never_slower_with_more_share(tokens, lo, hi, clock):
    lo, hi = sorted((lo, hi))
    t = PROFILE.prefill_time(tokens, np.array([lo, hi]), clock)
    assert t[1] <= t[0] * (1 + 1e-9)
