"""The curves have the shape physics demands, on every shipped profile."""

from __future__ import annotations

import numpy as np
import pytest

from festgym.profiles.profile import Profile, iter_profile_dirs

PROFILES = [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in iter_profile_dirs()]


@pytest.fixture(scope="module", params=PROFILES)
def profile(request) -> Profile:
    return Profile.load(request.param)


def single_gpu(profile: Profile) -> None:
    """Skip a multi-GPU engine: its collectives add time that neither clock nor share changes, so its
    prefill is not compute-bound end to end."""
    if profile.parallel.gpus > 1:
        pytest.skip("a multi-GPU engine's collectives do not scale with clock or share")


def memory_bound_decode(profile: Profile) -> None:
    """Skip what does not decode memory-bound: weights in a format the GPU dequantises on its CUDA cores
    (MXFP4 on Hopper), and models under 1B parameters, whose step is mostly fixed per-layer and host
    time (on HBM3e GPUs most of all), so that the clock hardly changes it."""
    model, gpu = profile.model, profile.gpu
    if not (gpu.native(model.weight_format) and gpu.native(model.expert_format)):
        pytest.skip(f"{gpu.name} dequantises {model.expert_format} weights on its CUDA cores: clock-bound")
    if model.num_params < 1e9:
        pytest.skip("under 1B parameters a decode step is mostly fixed time")


def test_a_multi_gpu_engine_still_prefills_faster_with_share_and_clock(profile):
    if profile.parallel.gpus == 1:
        pytest.skip("single-GPU engines: the tests above")
    fmax = profile.gpu.max_sm_clock_mhz
    t = profile.prefill_time(4096, np.array([0.5, 1.0, 1.0]), np.array([fmax, fmax, 0.5 * fmax]))
    assert t[0] > 1.15 * t[1] and t[2] > 1.15 * t[1]


def test_ten_profiles_cover_required_models():
    keys = {f"{p.parent.name}/{p.name}" for p in iter_profile_dirs()}
    for gpu in ("H100-SXM-80GB", "A100-SXM-80GB"):
        for model in ("Llama-3.1-8B", "Qwen3-8B", "Qwen3-14B", "Llama-3.2-3B", "Llama-3.2-1B"):
            assert f"{gpu}/{model}" in keys


def test_prefill_time_falls_with_clock_and_share(profile):
    time = profile.prefill_grid.fields["time_s"]
    assert (np.diff(time, axis=1) <= 1e-12).all(), "more SM share must never slow prefill"
    assert (np.diff(time, axis=2) <= 1e-12).all(), "a higher clock must never slow prefill"


def test_prefill_scales_nearly_in_proportion_to_share_times_clock(profile):
    # Below the power limit, prefill is compute-bound: time ∝ 1/(share · clock), up to the
    # clock-insensitive fraction of compute time.
    fmax = profile.gpu.max_sm_clock_mhz
    lo, hi = 0.5 * fmax, 0.75 * fmax
    t = profile.prefill_time(4096, np.array([0.25, 0.5, 0.25]), np.array([lo, lo, hi]))
    share_ratio = t[0] / t[1]
    clock_ratio = t[0] / t[2]
    assert 1.8 < share_ratio <= 2.05, share_ratio
    ideal = hi / lo
    assert 0.8 * ideal < clock_ratio <= ideal * 1.01, clock_ratio


def test_decode_changes_little_above_60_percent_clock(profile):
    memory_bound_decode(profile)
    # Memory-bound batches; at 64+ an A100 (ridge ~150 FLOP/byte) starts to turn compute-bound.
    fmax = profile.gpu.max_sm_clock_mhz
    for batch in (1, 8, 32):
        t = profile.decode_time(batch, 1024, 1.0, np.array([0.6 * fmax, fmax]))
        assert t[0] / t[1] < 1.10, (batch, t)
    # ...but it is not clock-free: far below, the SMs can no longer keep HBM busy.
    t = profile.decode_time(8, 1024, 1.0, np.array([0.3 * fmax, fmax]))
    assert t[0] / t[1] > 1.15


def test_decode_bandwidth_saturates_with_share_while_prefill_does_not(profile):
    single_gpu(profile)
    dec = profile.decode_time(8, 1024, np.array([0.5, 1.0]))
    pre = profile.prefill_time(4096, np.array([0.5, 1.0]), 0.6 * profile.gpu.max_sm_clock_mhz)
    assert dec[0] / dec[1] < 1.3
    assert pre[0] / pre[1] > 1.7


def test_power_rises_with_clock_and_stays_between_idle_and_tdp(profile):
    for grid in (profile.prefill_grid, profile.decode_grid):
        power = grid.fields["power_w"]
        assert (np.diff(power, axis=-1) >= -1e-9).all()
        assert power.min() >= profile.gpu.idle_w
        assert power.max() <= profile.gpu.tdp_w + 1e-9
    # The idle states: the empty floor, resident idle (rising with the clock up to resident_w at the
    # default clock), loading, all below TDP.
    gpu, states = profile.gpu, profile.gpu.states
    resident = np.array([gpu.resident_idle_w(c) for c in gpu.sm_clocks_mhz])
    assert (np.diff(resident) >= -1e-12).all()
    assert gpu.empty_w < resident[0]
    assert gpu.resident_idle_w(gpu.default_sm_clock_mhz) == pytest.approx(states.resident_w)
    assert states.resident_w <= states.loading_w < gpu.tdp_w


def test_decode_energy_per_token_is_u_shaped_in_clock(profile):
    memory_bound_decode(profile)
    clocks = profile.control_clocks_mhz()
    dec = profile.decode(64, 1024, 1.0, clocks)
    energy = dec["power_w"] * dec["time_s"] / 64
    best = int(np.argmin(energy))
    assert 0 < best < len(clocks) - 1, "the energy-optimal clock must be interior"
    # The high-clock arm is steep (V² above the voltage floor); the low-clock arm is shallower
    # (static and HBM power over a longer step), and shallowest for the smallest models, whose
    # steps are mostly clock-insensitive overhead (Qwen2.5-0.5B: +0.4% at the lowest control clock).
    assert energy[best] < 0.997 * energy[0]
    assert energy[best] < 0.85 * energy[-1]
    assert energy[0] - energy[best] < energy[-1] - energy[best]


def test_static_power_is_a_large_part_of_decode_power(profile):
    power = profile.decode_power(8, 1024)
    assert 0.1 < profile.gpu.idle_w / power < 0.5


def test_decode_time_grows_with_batch_and_context(profile):
    time = profile.decode_grid.fields["time_s"]
    assert (np.diff(time, axis=0) > 0).all()
    assert (np.diff(time, axis=1) >= 0).all()


def test_sustained_prefill_at_full_share_runs_into_the_power_limit(profile):
    # splitwise measures ~TDP for prompt phases; the limiter throttles the clock instead of
    # exceeding TDP, so asking for the top clocks changes nothing once it binds.
    single_gpu(profile)
    fmax = profile.gpu.max_sm_clock_mhz
    out = profile.prefill(8192, 1.0, np.array([0.92 * fmax, fmax]))
    assert out["power_w"][1] == pytest.approx(profile.gpu.tdp_w, rel=0.03)  # 15 MHz clock steps
    assert out["time_s"][0] == pytest.approx(out["time_s"][1], rel=0.02)
