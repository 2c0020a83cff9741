"""The power-split rule (festgym.control.attribution): parts add up, each part goes where the rule says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from festgym.control.attribution import split_power


def test_the_floor_by_share_the_rest_by_dynamic_power():
    parts = split_power(300.0, 100.0, [0.25, 0.75], [50.0, 150.0], [False, False])
    assert parts == [pytest.approx((25.0, 50.0, 0.0)), pytest.approx((75.0, 150.0, 0.0))]


def test_with_nothing_running_loaders_bear_what_is_above_the_floor():
    parts = split_power(150.0, 116.0, [0.5, 0.5], [0.0, 0.0], [True, False])
    assert parts == [pytest.approx((58.0, 0.0, 34.0)), pytest.approx((58.0, 0.0, 0.0))]


def test_a_runner_takes_the_rest_even_beside_a_loader():
    parts = split_power(200.0, 100.0, [0.5, 0.5], [80.0, 0.0], [False, True])
    assert parts == [pytest.approx((50.0, 100.0, 0.0)), pytest.approx((50.0, 0.0, 0.0))]


def test_below_the_floor_or_with_nobody_to_bear_the_rest_it_is_all_static():
    assert split_power(80.0, 116.0, [1.0], [30.0], [False]) == [pytest.approx((80.0, 0.0, 0.0))]
    assert split_power(130.0, 116.0, [0.0, 0.0], [0.0, 0.0], [False, False]) == [pytest.approx((65.0, 0.0, 0.0))] * 2
    assert split_power(130.0, 116.0, [], [], []) == []


@given(power=st.floats(0.0, 1e4), floor=st.floats(0.0, 1e3),
       engines=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1e3), st.booleans()), min_size=1, max_size=8))
def test_parts_are_never_negative_and_add_up_to_the_power(power, floor, engines):
    shares, dynamic, loading = (list(x) for x in zip(*engines))
    parts = split_power(power, floor, shares, dynamic, loading)
    assert len(parts) == len(engines)
    assert all(p >= 0.0 for triple in parts for p in triple)
    assert sum(sum(triple) for triple in parts) == pytest.approx(power, rel=1e-12, abs=1e-9)
