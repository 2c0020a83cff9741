from __future__ import annotations

import numpy as np
import pytest

from festgym.profiles.calibration.check import grid_fidelity
from festgym.profiles.grid import Grid


def roofline_like_grid() -> Grid:
    a = np.array([1.0, 2.0, 8.0, 64.0])
    b = np.array([0.1, 0.5, 1.0])
    aa, bb = np.meshgrid(a, b, indexing="ij")
    return Grid(("a", "b"), (a, b), {"y": (3.0 + 2.0 * aa) / bb, "z": aa + bb}, ("linear", "reciprocal"))


def test_nodes_are_reproduced_exactly():
    g = roofline_like_grid()
    aa, bb = np.meshgrid(*g.axes, indexing="ij")
    out = g(aa, bb)
    np.testing.assert_allclose(out["y"], g.fields["y"], rtol=1e-12)
    np.testing.assert_allclose(out["z"], g.fields["z"], rtol=1e-12)


def test_affine_over_share_is_exact_between_nodes_and_beyond():
    # Time affine in tokens and ∝ 1/share, as compute-bound prefill is.
    g = roofline_like_grid()
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 200.0, 1000)  # includes extrapolation on both ends
    b = rng.uniform(0.1, 1.0, 1000)
    np.testing.assert_allclose(g(a, b, fields=("y",))["y"], (3.0 + 2.0 * a) / b, rtol=1e-9)


def test_bad_axes_are_rejected():
    with pytest.raises(ValueError, match="strictly increasing"):
        Grid(("a",), (np.array([1.0, 1.0]),), {"y": np.ones(2)}, ("linear",))
    with pytest.raises(ValueError, match="unknown axis transform"):
        Grid(("a",), (np.array([1.0, 2.0]),), {"y": np.ones(2)}, ("log",))


def test_broadcasting_and_field_selection():
    g = roofline_like_grid()
    out = g(np.array([[1.0], [2.0]]), np.array([0.1, 0.5, 1.0]), fields=("z",))
    assert set(out) == {"z"} and out["z"].shape == (2, 3)
    with pytest.raises(KeyError, match="unknown field"):
        g(1.0, 1.0, fields=("nope",))
    with pytest.raises(TypeError, match="expected 2 coordinates"):
        g(1.0)


def test_shipped_grid_matches_the_model_off_grid(h100_llama8b):
    # Worst points sit at shares of 2-5%, where power is nearly linear in share while the grid
    # interpolates in 1/share (exact for time).
    for row in grid_fidelity(h100_llama8b):
        assert row["max_pct"] < (5.0 if row["metric"].endswith("time_s") else 8.0), row
        assert row["mape_pct"] < 1.0, row


def test_lookups_are_vectorised(h100_llama8b):
    n = 1000
    rng = np.random.default_rng(0)
    out = h100_llama8b.decode(rng.integers(1, 512, n), rng.uniform(16, 8000, n), rng.uniform(0.1, 1, n),
                              rng.uniform(600, 1980, n))
    assert all(v.shape == (n,) for v in out.values())
    scalar = h100_llama8b.decode(32, 1000, 0.5, 1500)
    assert float(scalar["time_s"]) > 0


def test_scalar_path_matches_vector_path(h100_llama8b):
    rng = np.random.default_rng(3)
    for _ in range(200):
        point = (float(rng.uniform(0.5, 2000)), float(rng.uniform(1, 40000)), float(rng.uniform(0.05, 1.2)),
                 float(rng.uniform(100, 2100)))
        scalar = h100_llama8b.decode_grid(*point)
        vector = h100_llama8b.decode_grid(*(np.array([c]) for c in point))
        for k in scalar:
            assert scalar[k] == pytest.approx(vector[k][0], rel=1e-12), (k, point)


def test_bounds_clip_share_and_clock(h100_llama8b):
    p = h100_llama8b
    assert p.decode_time(8, 512, 1.7, 3000) == pytest.approx(p.decode_time(8, 512, 1.0, 1980), rel=1e-12)
    assert p.decode_time(8, 512, 1.0, 50) == pytest.approx(p.decode_time(8, 512, 1.0, 210), rel=1e-12)
    # Tokens extrapolate upwards: twice the largest grid point takes about twice as long.
    big = p.prefill_time(np.array([16384.0, 32768.0]))
    assert 1.9 < big[1] / big[0] < 2.3
