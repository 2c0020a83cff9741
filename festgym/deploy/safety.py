"""What stands between a controller's wish and a GPU: clamping, rate limits, hysteresis and an
SLO watchdog, which also holds the default clocks while an engine's state is unknown (its metrics
were refused: :mod:`festgym.deploy.engine_metrics`). Pure logic over numbers, so it is tested
without a device."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from festgym.config import check_ranges
from festgym.control.levels import nearest_clock
from festgym.deploy.engine_metrics import EngineWindow
from festgym.deploy.observation import EngineSpec


@dataclass(frozen=True)
class SafetyConfig:
    """Limits on how the agent changes a GPU."""

    min_change_interval_s: float = 5.0
    """A new clock or share is held at least this long before the next change (rate limit)."""
    hysteresis_mhz: float = 50.0
    """Clock changes smaller than this are ignored (no flapping between neighbouring clocks)."""
    share_hysteresis: float = 0.05
    """Share changes smaller than this (per model) are ignored."""
    watchdog_intervals: int = 3
    """The watchdog trips after this many consecutive intervals in which some model misses an SLO."""
    watchdog_hold_s: float = 60.0
    """After tripping, the default clocks stay this long before the controller acts again."""

    def __post_init__(self):
        check_ranges(self, {"min_change_interval_s": self.min_change_interval_s >= 0,
                            "hysteresis_mhz": self.hysteresis_mhz >= 0,
                            "share_hysteresis": 0 <= self.share_hysteresis < 1,
                            "watchdog_intervals": self.watchdog_intervals >= 1,
                            "watchdog_hold_s": self.watchdog_hold_s >= 0},
                     {"min_change_interval_s": "≥ 0 s", "hysteresis_mhz": "≥ 0 MHz", "share_hysteresis": "in [0, 1)",
                      "watchdog_intervals": "≥ 1", "watchdog_hold_s": "≥ 0 s"})


def slo_missed(spec: EngineSpec, window: EngineWindow | None) -> bool:
    """Whether the interval's TTFT or inter-token latency, at the SLO quantile, exceeds the SLO."""
    if window is None:
        return False
    worst = ((window.ttft_s.quantile(spec.slo_quantile), spec.ttft_limit_s(window)),
             (window.itl_s.quantile(spec.slo_quantile), spec.tbt_slo_s))
    return any(not math.isnan(value) and value > slo for value, slo in worst)


class Guard:
    """Filters the controller's settings for one GPU.

    ``clock(target, now)`` and ``shares(target, now)`` return what to apply now, or None to keep
    the current setting; ``watch(windows, now, unknown)`` runs the watchdog and says whether the
    GPU must run at its default clocks now.
    """

    def __init__(self, config: SafetyConfig, supported_mhz: Sequence[int], engines: Sequence[EngineSpec]):
        self.config = config
        self.supported = tuple(sorted(supported_mhz))
        self.engines = tuple(engines)
        self.clock_set: int | None = None  # None: the driver's default (not locked)
        self.shares_set: dict[str, float] = {}
        self._clock_at = self._shares_at = -math.inf
        self._misses = 0
        self.tripped_until = -math.inf
        self.trips = 0
        self.unknown: frozenset[str] = frozenset()
        """The engines whose state was unknown at the last watch (the default clocks hold meanwhile)."""

    def clock(self, target_mhz: float, now: float) -> int | None:
        clamped = nearest_clock(self.supported, target_mhz)
        if self.clock_set is not None and (abs(clamped - self.clock_set) < self.config.hysteresis_mhz
                                           or now - self._clock_at < self.config.min_change_interval_s):
            return None
        self.clock_set, self._clock_at = clamped, now
        return clamped

    def shares(self, target: Mapping[str, float], now: float) -> dict[str, float] | None:
        moved = any(abs(target[m] - self.shares_set.get(m, -1.0)) >= max(self.config.share_hysteresis, 1e-9)
                    for m in target)
        if not moved or now - self._shares_at < self.config.min_change_interval_s:
            return None
        self.shares_set, self._shares_at = dict(target), now
        return dict(target)

    def watch(self, windows: Mapping[str, EngineWindow | None], now: float, unknown: Collection[str] = ()) -> bool:
        """Count consecutive intervals with an SLO miss; on the k-th, hold default clocks for
        ``watchdog_hold_s``. While any engine in ``unknown`` (its metrics refused) is, hold them
        too: the safe setting, never a decision from figures that cannot be trusted (it is not a
        trip). Returns whether the hold is on."""
        missed = any(slo_missed(spec, windows.get(spec.model)) for spec in self.engines)
        self._misses = self._misses + 1 if missed else 0
        if self._misses >= self.config.watchdog_intervals and now >= self.tripped_until:
            self.tripped_until = now + self.config.watchdog_hold_s
            self.trips += 1
            self._misses = 0
            self.clock_set = None  # the agent resets the clocks; the next setting is a change
        if unknown and not self.unknown:
            self.clock_set = None
        self.unknown = frozenset(unknown)
        return now < self.tripped_until or bool(self.unknown)


__all__ = ["Guard", "SafetyConfig", "slo_missed"]
