"""Profile slices at one (SM share, SM clock): the simulator's constant-time step-time lookups.

The simulator asks for step times millions of times but changes share and clock only when a
policy acts. A :class:`DecodeSlice` therefore evaluates the profile's decode grid once per
(share, clock) at the grid's batch and context points (one vectorised lookup) and keeps plain
Python tuples (tuples of floats drop out of the garbage collector's tracking, so thousands of
cached rows cost its full collections nothing); the row of each batch size seen is interpolated
once. A step time is then two tuple reads and an affine interpolation in context, which is
exactly how the grid interpolates (linearly in context). So a run of decode iterations, whose
mean context grows by one token per step, has step times affine in the step index within a
context cell. That allows closed-form advancement.

:class:`PrefillSlice` does the same over prompt tokens. Slices are cached per profile in a
bounded cache keyed by (share, clock).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
from mypy_extensions import mypyc_attr

from festgym.profiles.profile import Profile

CACHE_SIZE = 512
Vector = tuple[float, ...]


@mypyc_attr(allow_interpreted_subclasses=True)
class DecodeSlice:
    """Decode step time (s), power (W) and HBM use over (batch, context) at one (share, clock).

    Tables hold the grid's batch points; the row of an integer batch size is interpolated
    linearly between them (as the grid does) on first use and kept.
    """

    __slots__ = ("ctx", "batch", "time_s", "power_w", "hbm_util")

    def __init__(self, ctx: Vector, batch: Vector, tables: dict[str, tuple[Vector, ...]]):
        self.ctx = ctx
        self.batch = batch
        self.time_s = _Rows(batch, tables["time_s"])
        self.power_w = _Rows(batch, tables["power_w"])
        self.hbm_util = _Rows(batch, tables["hbm_util"])

    def cell(self, ctx: float) -> int:
        """Index i of the context cell [ctx[i], ctx[i+1]) holding ``ctx``; the last cell extends
        upwards and ``-1`` marks contexts below the first point (clipped there)."""
        return min(bisect_right(self.ctx, ctx), len(self.ctx) - 1) - 1

    def affine(self, table: _Rows, batch: int, cell: int) -> tuple[float, float]:
        """(value at ctx 0, slope per context token) of ``table`` for ``batch`` within ``cell``."""
        row = table.row(batch)
        if cell < 0:
            return row[0], 0.0
        c0, c1 = self.ctx[cell], self.ctx[cell + 1]
        slope = (row[cell + 1] - row[cell]) / (c1 - c0)
        return row[cell] - slope * c0, slope

    def at(self, table: _Rows, batch: int, ctx: float) -> float:
        a, b = self.affine(table, batch, self.cell(ctx))
        return a + b * max(ctx, self.ctx[0])


@mypyc_attr(allow_interpreted_subclasses=True)
class _Rows:
    """Rows over context for integer batch sizes, interpolated from the grid's batch points
    (linearly; extrapolated from the last cell above the grid) when first asked for."""

    __slots__ = ("points", "table", "rows")

    def __init__(self, points: Vector, table: tuple[Vector, ...]):
        self.points, self.table = points, table
        self.rows: dict[int, Vector] = {}

    def row(self, batch: int) -> Vector:
        found = self.rows.get(batch)
        if found is not None:
            return found
        x = self.points
        i = min(max(bisect_right(x, batch) - 1, 0), len(x) - 2)
        w = (max(batch, 1) - x[i]) / (x[i + 1] - x[i])
        lo, hi = self.table[i], self.table[i + 1]
        row = self.rows[batch] = tuple([a + (b - a) * w for a, b in zip(lo, hi)])
        return row


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class PrefillSlice:
    """Prefill iteration time (s), power (W) and HBM use over prompt tokens."""

    tokens: Vector
    time_s: Vector
    power_w: Vector
    hbm_util: Vector

    def at(self, table: Vector, tokens: float) -> float:
        """Linear interpolation in tokens; extrapolated from the last cell above the grid."""
        x = self.tokens
        i = min(max(bisect_right(x, tokens) - 1, 0), len(x) - 2)
        t = max(tokens, x[0])
        return table[i] + (table[i + 1] - table[i]) * (t - x[i]) / (x[i + 1] - x[i])


@mypyc_attr(allow_interpreted_subclasses=True)
class SliceCache:
    """Slices of one profile, computed on first use for each (share, clock); the oldest goes
    first when more than ``CACHE_SIZE`` are held."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self._decode: dict[tuple[float, float], DecodeSlice] = {}
        self._prefill: dict[tuple[float, float], PrefillSlice] = {}

    def decode(self, share: float, clock_mhz: float) -> DecodeSlice:
        found = self._decode.get((share, clock_mhz))
        if found is None:
            found = self._decode[(share, clock_mhz)] = self._build_decode(share, clock_mhz)
            _bound(self._decode)
        return found

    def prefill(self, share: float, clock_mhz: float) -> PrefillSlice:
        found = self._prefill.get((share, clock_mhz))
        if found is None:
            found = self._prefill[(share, clock_mhz)] = self._build_prefill(share, clock_mhz)
            _bound(self._prefill)
        return found

    def held(self) -> list[DecodeSlice | PrefillSlice]:
        """The slices computed so far (a forked run shares them, :meth:`Simulator.fork`)."""
        return [*self._decode.values(), *self._prefill.values()]

    def _build_decode(self, share: float, clock_mhz: float) -> DecodeSlice:
        grid = self.profile.decode_grid
        ctx = grid.axes[grid.names.index("ctx")]
        batch = grid.axes[grid.names.index("batch")]
        b, c = np.meshgrid(batch, ctx, indexing="ij")
        out = self.profile.decode(b, c, share, clock_mhz)
        tables = {k: tuple(map(tuple, v.reshape(b.shape).tolist())) for k, v in out.items()}
        return DecodeSlice(tuple(ctx.tolist()), tuple(batch.tolist()), tables)

    def _build_prefill(self, share: float, clock_mhz: float) -> PrefillSlice:
        grid = self.profile.prefill_grid
        tokens = grid.axes[grid.names.index("tokens")]
        out = self.profile.prefill(tokens, share, clock_mhz)
        return PrefillSlice(*(tuple(v.tolist()) for v in (tokens, out["time_s"], out["power_w"], out["hbm_util"])))


def _bound(cache: dict[tuple[float, float], DecodeSlice] | dict[tuple[float, float], PrefillSlice]) -> None:
    if len(cache) > CACHE_SIZE:
        del cache[next(iter(cache))]
