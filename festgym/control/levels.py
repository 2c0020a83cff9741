"""Quantised control levels shared by the rule policies and the environments.

Clock levels are evenly spaced over the controllable range (``Profile.control_clocks_mhz``:
from 30% of the top clock up, the range DVFS controllers use) and snapped to supported clocks.
SM shares are multiples of ``SHARE_STEP``: a finite set keeps the simulator's per-(share, clock)
slice cache small and makes every share an exact, repeatable float.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import numpy as np

from festgym.errors import RangeError

CONTROL_CLOCK_FRAC = 0.3
"""Below 0.3·f_max no serving controller goes (decode bandwidth collapses); reports and plots
start there, while lookups cover every supported clock."""

SHARE_STEP = 0.05
"""Granularity of SM shares (MPS takes whole percentages; 5% keeps the set small)."""
STEPS_PER_GPU = 20
"""1 / SHARE_STEP: a share is a whole number of steps over this (exact, repeatable floats)."""


def nearest_clock(ladder: Sequence[int], clock_mhz: float) -> int:
    """The clock of the ascending ``ladder`` nearest to ``clock_mhz`` (ties go down); outside the
    ladder, its end. What a GPU runs when asked for a clock between its supported steps."""
    i = bisect_left(ladder, clock_mhz)
    if i == len(ladder) or (i > 0 and clock_mhz - ladder[i - 1] <= ladder[i] - clock_mhz):
        i -= 1
    return ladder[i]


def clock_levels(supported_mhz: Sequence[int], n: int, gpu: str = "this GPU") -> tuple[float, ...]:
    """``n`` of the ``supported_mhz`` clocks evenly spaced from the lowest control clock to the
    top clock (``gpu`` names the GPU in errors)."""
    ladder = np.unique(np.asarray(supported_mhz, dtype=float))
    usable = ladder[ladder >= CONTROL_CLOCK_FRAC * ladder[-1]]
    picked: tuple[float, ...] = ()
    if 2 <= n <= len(usable):  # checked first: the distance matrix below is n × len(usable)
        targets = np.linspace(usable[0], usable[-1], n)
        picked = tuple(dict.fromkeys(usable[np.abs(usable[None, :] - targets[:, None]).argmin(axis=1)].tolist()))
    if len(picked) < n or n < 2:
        raise RangeError("levels", "clock_levels", n, f"at least 2 and at most {len(usable)}: {gpu} has "
                         f"{len(usable)} supported clocks in its control range ({usable[0]:.0f}-{usable[-1]:.0f} MHz)")
    return picked


def share_levels(n: int) -> tuple[float, ...]:
    """``n`` SM shares evenly spaced in (0, 1], each a multiple of ``SHARE_STEP``."""
    if not 1 <= n <= round(1 / SHARE_STEP):
        raise RangeError("levels", "share_levels", n, f"in 1..{round(1 / SHARE_STEP)} (shares are multiples of "
                         f"{SHARE_STEP:g})")
    return tuple(dict.fromkeys([quantize_share(k / n) for k in range(1, n + 1)]))


def quantize_share(share: float) -> float:
    """Round down to a multiple of ``SHARE_STEP`` (at least one step)."""
    return max(int(share / SHARE_STEP + 1e-9), 1) / STEPS_PER_GPU


def normalize_shares(weights: Sequence[float]) -> list[float]:
    """Shares from non-negative weights: scaled down to sum to at most 1 when they exceed it,
    then quantised down (so the sum stays ≤ 1). Zero weights get zero share (the caller keeps
    such a model at its minimum)."""
    total = float(sum(weights))
    scale = 1.0 / total if total > 1.0 else 1.0
    shares = [quantize_share(w * scale) if w > 0 else 0.0 for w in weights]
    while sum(shares) > 1.0 + 1e-9:  # each share floors at one step; take steps from the largest
        k = max(range(len(shares)), key=shares.__getitem__)
        shares[k] = (round(shares[k] * STEPS_PER_GPU) - 1) / STEPS_PER_GPU
    return shares
