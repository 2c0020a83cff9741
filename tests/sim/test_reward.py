"""Reward: closed-form gap accounting against brute force, SLO counters and EnergySLOReward."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from festgym.sim.ledger import Counters, over_limit
from festgym.sim.reward import EnergySLOReward, IntervalStats, RewardConfig

FIELDS = ("first_tokens", "ttft_over", "ttft_excess", "gaps", "gaps_over", "tbt_excess", "rejected")


def brute(g0: float, dg: float, n: int, limit: float) -> tuple[np.ndarray, int, float]:
    gaps = g0 + dg * np.arange(n, dtype=float)
    over = gaps > limit
    return gaps, int(over.sum()), float((gaps[over] - limit).sum())


# --- over_limit --------------------------------------------------------------------------------------

slopes = st.one_of(st.just(0.0), st.floats(1e-7, 0.05), st.floats(-0.05, -1e-7))


@settings(max_examples=400, deadline=None)
@given(g0=st.floats(1e-4, 1.0), dg=slopes, n=st.integers(0, 3000), limit=st.floats(1e-3, 1.0))
@example(g0=0.05, dg=0.01, n=10, limit=0.1)
@example(g0=0.2, dg=-0.01, n=10, limit=0.1)
@example(g0=0.2, dg=0.0, n=7, limit=0.1)
@example(g0=0.05, dg=0.0, n=7, limit=0.1)
@example(g0=0.05, dg=-0.001, n=100, limit=0.1)
def test_over_limit_matches_brute_force(g0, dg, n, limit):
    gaps, count, excess = brute(g0, dg, n, limit)
    # stay away from gaps that round onto the limit (float ties are not what this is about)
    assume(n == 0 or np.abs(gaps - limit).min() > 1e-9)
    got_count, got_excess = over_limit(g0, dg, n, limit)
    assert got_count == count
    scale = max(1.0, count * (abs(g0 - limit) + abs(dg) * n))
    assert math.isclose(got_excess, excess, rel_tol=1e-9, abs_tol=1e-12 * scale)
    assert got_excess >= -1e-12 * scale


@pytest.mark.parametrize("g0, dg, n, limit, count, excess", [
    (0.5, 0.25, 6, 1.0, 3, 0.25 + 0.5 + 0.75),  # j=2 lands exactly on the limit: not over
    (1.5, -0.25, 6, 1.0, 2, 0.5 + 0.25),  # j=2 exactly on the limit, decreasing
    (1.0, 0.0, 5, 1.0, 0, 0.0),  # flat at the limit
    (1.25, 0.0, 4, 1.0, 4, 1.0),  # flat above
    (0.5, 0.0, 4, 1.0, 0, 0.0),  # flat below
    (2.0, 0.5, 0, 1.0, 0, 0.0),  # no gaps
    (0.25, 0.25, 3, 1.0, 0, 0.0),  # rises to 0.75 only
    (2.0, -0.5, 8, 1.0, 2, 1.0 + 0.5),  # falls through the limit
])
def test_over_limit_exact_cases(g0, dg, n, limit, count, excess):
    assert over_limit(g0, dg, n, limit) == (count, excess)
    assert brute(g0, dg, n, limit)[1:] == (count, excess)


def test_over_limit_with_a_vanishing_slope_below_the_limit():
    assert over_limit(0.0, 1e-320, 5, 1.0) == (0, 0.0)
    assert over_limit(0.5, -1e-320, 5, 1.0) == (0, 0.0)


@pytest.mark.parametrize("dg", [1e-320, -1e-320])
def test_over_limit_with_a_vanishing_slope_above_the_limit(dg):
    count, excess = over_limit(2.0, dg, 5, 1.0)
    assert count == 5 and excess == pytest.approx(5.0)


def test_add_gaps_books_counts_and_excess():
    c = Counters()
    over = c.add_gaps(batch=3, g0=0.05, dg=0.01, n=10, tbt_s=0.1)
    assert over == 4
    assert c.gaps == 30 and c.gaps_over == 12
    assert c.tbt_excess == pytest.approx(3 * 0.1 / 0.1)
    assert c.first_tokens == c.ttft_over == 0 and c.ttft_excess == 0.0


# --- Counters -------------------------------------------------------------------------------------

def counters(**values) -> Counters:
    c = Counters()
    for k, v in values.items():
        setattr(c, k, v)
    return c


def as_dict(c: Counters) -> dict:
    return {k: getattr(c, k) for k in FIELDS}


def test_counters_start_at_zero():
    assert as_dict(Counters()) == dict.fromkeys(FIELDS, 0)


def test_counters_add_and_minus():
    a = counters(first_tokens=5, ttft_over=2, ttft_excess=1.5, gaps=100, gaps_over=7, tbt_excess=2.25, rejected=1)
    b = counters(first_tokens=1, ttft_over=1, ttft_excess=0.25, gaps=40, gaps_over=3, tbt_excess=0.75, rejected=0)
    before_b = as_dict(b)
    out = a.add(b)
    assert out is a  # in place, chainable
    assert as_dict(a) == {"first_tokens": 6, "ttft_over": 3, "ttft_excess": 1.75, "gaps": 140, "gaps_over": 10,
                          "tbt_excess": 3.0, "rejected": 1}
    assert as_dict(b) == before_b
    diff = a.minus(b)
    assert diff is not a and diff is not b
    assert as_dict(diff) == {"first_tokens": 5, "ttft_over": 2, "ttft_excess": 1.5, "gaps": 100, "gaps_over": 7,
                             "tbt_excess": 2.25, "rejected": 1}
    assert as_dict(a)["gaps"] == 140 and as_dict(b) == before_b  # minus leaves both alone
    assert as_dict(Counters().add(a).minus(a)) == dict.fromkeys(FIELDS, 0)


def test_a_rejection_is_a_late_first_token():
    c = Counters()
    c.add_rejected(40.0)
    assert as_dict(c) == {**dict.fromkeys(FIELDS, 0), "first_tokens": 1, "ttft_over": 1, "ttft_excess": 40.0,
                          "rejected": 1}
    _, terms = EnergySLOReward(RewardConfig(), reference_j=700.0)(IntervalStats(0.0, c))
    assert terms["rejected"] == 1 and terms["ttft_attainment"] == 0.0 and terms["cost"] == 40.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 10**6)), min_size=1, max_size=8))
def test_counters_telescoping(readings):
    """Summing interval differences of cumulative readings gives the last reading."""
    cumulative, total = Counters(), Counters()
    previous = Counters()
    for first, over, gaps in readings:
        cumulative.add(counters(first_tokens=first, ttft_over=min(over, first), gaps=gaps))
        snapshot = Counters().add(cumulative)
        total.add(snapshot.minus(previous))
        previous = snapshot
    assert as_dict(total) == as_dict(cumulative)


# --- EnergySLOReward ------------------------------------------------------------------------------

STATS = IntervalStats(energy_j=250.0, slo=counters(first_tokens=4, ttft_over=1, ttft_excess=0.5, gaps=100,
                                                      gaps_over=10, tbt_excess=3.0))


def test_smooth_mode_exact_numbers():
    reward = EnergySLOReward(RewardConfig(energy_weight=2.0, ttft_weight=0.5, tbt_weight=0.25), reference_j=1000.0)
    total, terms = reward(STATS)
    assert terms["reward_energy"] == -0.5  # -2 * 250 / 1000
    assert terms["reward_ttft"] == -0.25  # -0.5 * 0.5 (lateness in SLO units)
    assert terms["reward_tbt"] == -0.75  # -0.25 * 3.0 (gap excess in SLO units)
    assert total == -1.5
    assert terms["energy_j"] == 250.0
    assert terms["ttft_attainment"] == 0.75 and terms["tbt_attainment"] == 0.9
    assert (terms["first_tokens"], terms["ttft_over"], terms["ttft_excess"]) == (4, 1, 0.5)
    assert (terms["gaps"], terms["gaps_over"], terms["tbt_excess"]) == (100, 10, 3.0)


def test_count_mode_exact_numbers():
    reward = EnergySLOReward(RewardConfig(energy_weight=2.0, ttft_weight=0.5, tbt_weight=0.25, mode="count"),
                             reference_j=1000.0)
    total, terms = reward(STATS)
    assert terms["reward_energy"] == -0.5
    assert terms["reward_ttft"] == -0.5  # -0.5 * 1 late first token
    assert terms["reward_tbt"] == -2.5  # -0.25 * 10 gaps over
    assert total == -3.5
    assert terms["ttft_attainment"] == 0.75 and terms["tbt_attainment"] == 0.9


def test_default_weights():
    cfg = RewardConfig()
    assert (cfg.energy_weight, cfg.ttft_weight, cfg.tbt_weight, cfg.mode) == (1.0, 1.0, 0.01, "smooth")
    total, terms = EnergySLOReward(cfg, 700.0)(STATS)
    assert terms["reward_energy"] == pytest.approx(-250 / 700)
    assert terms["reward_tbt"] == pytest.approx(-0.03)
    assert total == pytest.approx(-250 / 700 - 0.5 - 0.03)


def test_zero_weights_and_clean_interval():
    total, terms = EnergySLOReward(RewardConfig(energy_weight=0, ttft_weight=0, tbt_weight=0), 100.0)(STATS)
    assert total == 0
    clean = IntervalStats(80.0, counters(first_tokens=3, gaps=50))
    total, terms = EnergySLOReward(RewardConfig(), 100.0)(clean)
    assert total == -0.8 and terms["reward_ttft"] == 0 and terms["reward_tbt"] == 0
    assert terms["ttft_attainment"] == 1.0 and terms["tbt_attainment"] == 1.0


@pytest.mark.parametrize("mode", ["smooth", "count"])
def test_attainment_is_one_without_tokens(mode):
    """Nothing to attain reads as nothing missed (NaN would break Gymnasium's info equality
    checks); the raw counts tell an empty interval apart."""
    reward = EnergySLOReward(RewardConfig(mode=mode), 100.0)
    total, terms = reward(IntervalStats(30.0, Counters()))
    assert terms["ttft_attainment"] == 1.0 and terms["tbt_attainment"] == 1.0
    assert terms["first_tokens"] == 0 and terms["gaps"] == 0
    assert total == -0.3
    _, terms = reward(IntervalStats(30.0, counters(gaps=10, gaps_over=5)))
    assert terms["ttft_attainment"] == 1.0 and terms["tbt_attainment"] == 0.5
    _, terms = reward(IntervalStats(30.0, counters(first_tokens=2, ttft_over=2)))
    assert terms["ttft_attainment"] == 0.0 and terms["tbt_attainment"] == 1.0


@pytest.mark.parametrize("reference", [0.0, -1.0, -1e-9])
def test_reference_energy_must_be_positive(reference):
    with pytest.raises(ValueError, match="reference energy"):
        EnergySLOReward(RewardConfig(), reference)


@pytest.mark.parametrize("kwargs, name", [({"mode": "sparse"}, "mode"), ({"mode": "Smooth"}, "mode"),
                                          ({"energy_weight": -1.0}, "energy_weight"),
                                          ({"ttft_weight": -0.1}, "ttft_weight"), ({"tbt_weight": -1}, "tbt_weight")])
def test_bad_reward_config_is_rejected(kwargs, name):
    with pytest.raises(ValueError, match=f"RewardConfig.{name}"):
        RewardConfig(**kwargs)
