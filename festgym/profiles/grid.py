"""Rectilinear grids with fast vectorised multilinear interpolation.

Each axis is interpolated in a coordinate chosen so that the physics is close to linear in it:

* ``linear`` (tokens, batch, context): iteration time is affine in tokens, and in batch × context
  (KV reads), so bilinear interpolation in (batch, context) is exact in the memory-bound regime.
* ``reciprocal`` (SM share, SM clock): compute time ∝ 1/(share · clock), so interpolating in
  1/share and 1/clock is exact for the compute-bound regime.

Beyond the first or last grid point the end cell is extended linearly, which keeps time growing
with tokens past the largest grid point, unless the axis has bounds: then coordinates are clipped
(SM share to ≤ 1, SM clock to the supported range).

Lookups cost O(1) per point: a uniform bucket table maps a coordinate to its cell without a
binary search, and each cell's 2^d corner values are stored contiguously, so one gather and one
weighted sum finish the interpolation.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

TRANSFORMS = ("linear", "reciprocal")
SCALARS = (int, float, np.integer, np.floating)
"""Point lookups with only these take the plain-Python path."""
MAX_BUCKETS = 1 << 16
CHUNK = 8192
"""Points per inner pass: small temporaries stay in cache and are reused by the allocator,
which makes a 10^5-point lookup several times faster than one pass over all points."""


def _transform(values, kind: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values if kind == "linear" else -1.0 / values


@dataclass(frozen=True)
class _Axis:
    """One axis in its interpolation coordinate, with a bucket table for O(1) cell lookup."""

    kind: str
    nodes: np.ndarray
    upper: np.ndarray
    """Upper node of each cell, +inf for the last so that extrapolation stays in it."""
    inv_width: np.ndarray
    bucket_offset: float
    bucket_scale: float
    bucket_cell: np.ndarray
    lower: float
    upper_bound: float
    """Coordinates are clipped to [lower, upper_bound] (in the interpolation coordinate)."""
    node_list: tuple[float, ...]
    """The nodes as Python floats, for the scalar path."""

    @classmethod
    def build(cls, values: np.ndarray, kind: str, bounds: tuple[float | None, float | None]) -> _Axis:
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown axis transform {kind!r}; one of {TRANSFORMS}")
        nodes = _transform(values, kind)
        if len(nodes) < 2 or not (np.diff(nodes) > 0).all():
            raise ValueError("an axis needs at least two strictly increasing values")
        width = np.diff(nodes)
        span = nodes[-1] - nodes[0]
        # Buckets no wider than the narrowest cell hold at most one cell boundary each.
        buckets = int(np.ceil(span / width.min()) + 1)
        if buckets > MAX_BUCKETS:
            raise ValueError(f"axis spacing too uneven for O(1) lookup: the narrowest cell is 1/{buckets - 1} "
                             f"of the span (at most 1/{MAX_BUCKETS - 1}); add points or narrow the range")
        edges = nodes[0] + np.arange(buckets) * (span / buckets)
        cell = np.clip(np.searchsorted(nodes, edges, side="right") - 1, 0, len(nodes) - 2)
        scale = buckets / span
        lo, hi = (float(_transform(b, kind)) if b is not None else None for b in bounds)
        return cls(kind, nodes, np.append(nodes[1:-1], np.inf), 1.0 / width, -nodes[0] * scale, scale,
                   cell.astype(np.intp), -np.inf if lo is None else lo, np.inf if hi is None else hi,
                   tuple(nodes.tolist()))

    def locate(self, coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell index and fractional position (outside [0, 1] when extrapolating)."""
        u = np.array(_transform(coord, self.kind), dtype=float)  # owned: clipped in place
        if self.lower > -np.inf:
            np.maximum(u, self.lower, out=u)
        if self.upper_bound < np.inf:
            np.minimum(u, self.upper_bound, out=u)
        bucket = u * self.bucket_scale + self.bucket_offset
        np.maximum(bucket, -1.0, out=bucket)  # keep far-out points inside the integer range
        np.minimum(bucket, len(self.bucket_cell), out=bucket)
        # take(mode="clip") clamps out-of-range buckets to the end cells and skips bounds checks.
        cell = self.bucket_cell.take(bucket.astype(np.intp), mode="clip")
        cell += u >= self.upper.take(cell, mode="clip")
        return cell, (u - self.nodes.take(cell, mode="clip")) * self.inv_width.take(cell, mode="clip")

    def reject(self, name: str, value: float) -> None:
        """Coordinates must be finite, and positive on reciprocal axes (share, clock)."""
        need = "finite" if self.kind == "linear" else "finite and > 0"
        raise ValueError(f"{name} must be {need}, got {float(value)!r}")

    def locate_scalar(self, coord: float) -> tuple[int, float]:
        """The same for one point, in plain Python (a numpy call costs more than this)."""
        u = coord if self.kind == "linear" else -1.0 / coord
        u = min(max(u, self.lower), self.upper_bound)
        nodes = self.node_list
        cell = min(max(bisect_right(nodes, u) - 1, 0), len(nodes) - 2)
        return cell, (u - nodes[cell]) / (nodes[cell + 1] - nodes[cell])


@dataclass(frozen=True)
class Grid:
    """Several value fields sampled on one rectilinear grid."""

    names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    fields: dict[str, np.ndarray]
    transforms: tuple[str, ...]
    bounds: tuple[tuple[float | None, float | None], ...] | None = None
    """Per axis, the (low, high) range that coordinates are clipped to; None extrapolates."""
    limits: dict[str, tuple[float, float]] | None = None
    """Per field, the physical (low, high) range that interpolated values are clipped to."""
    _axes: tuple[_Axis, ...] = field(init=False, repr=False)
    _corners: dict[str, np.ndarray] = field(init=False, repr=False)
    _cell_strides: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        shape = tuple(len(a) for a in self.axes)
        if len(self.transforms) != len(self.axes) or len(self.names) != len(self.axes):
            raise ValueError("names, axes and transforms must have one entry per axis")
        for name, values in self.fields.items():
            if values.shape != shape:
                raise ValueError(f"field {name!r} has shape {values.shape}, axes give {shape}")
        bounds = self.bounds or ((None, None),) * len(self.axes)
        object.__setattr__(self, "_axes", tuple(_Axis.build(a, k, b) for a, k, b in zip(self.axes, self.transforms,
                                                                                        bounds)))
        cells = tuple(n - 1 for n in shape)
        strides = np.cumprod((1,) + cells[:0:-1])[::-1]
        object.__setattr__(self, "_cell_strides", np.asarray(strides, dtype=np.intp))
        object.__setattr__(self, "_corners", {k: self._corner_table(v) for k, v in self.fields.items()})

    @staticmethod
    def _corner_table(values: np.ndarray) -> np.ndarray:
        """(2^d, cells) array: the corner values of every cell, first axis as the slowest bit."""
        d = values.ndim
        corners = []
        for corner in range(1 << d):
            index = tuple(slice(1, None) if corner >> (d - 1 - k) & 1 else slice(None, -1) for k in range(d))
            corners.append(values[index].ravel())
        return np.ascontiguousarray(np.stack(corners, axis=0))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    def __call__(self, *coords, fields: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Interpolate ``fields`` (all by default) at points given one array per axis."""
        if len(coords) != len(self._axes):
            raise TypeError(f"expected {len(self._axes)} coordinates ({', '.join(self.names)})")
        wanted = self.names_of(fields)
        if all(isinstance(c, SCALARS) for c in coords):
            return self._point([float(c) for c in coords], wanted)
        arrays = [np.asarray(c, dtype=float) for c in coords]
        for name, axis, c in zip(self.names, self._axes, arrays):
            # One reduction per axis: a sum is finite unless some value is not (or it overflows).
            if not np.isfinite(c.sum()) or (axis.kind == "reciprocal" and c.min() <= 0):
                bad = ~np.isfinite(c) | ((c <= 0) if axis.kind == "reciprocal" else False)
                if bad.any():
                    axis.reject(name, c[bad].ravel()[0])
        shape = np.broadcast_shapes(*(c.shape for c in arrays))
        n = int(np.prod(shape))
        # A coordinate shared by all points (one clock, one share) is located once.
        located = [axis.locate(c.reshape(1)) if c.size == 1 else None for axis, c in zip(self._axes, arrays)]
        flat = [c.reshape(1) if c.size == 1 else np.broadcast_to(c, shape).ravel() for c in arrays]
        out = {k: np.empty(n) for k in wanted}
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            cell = np.zeros((), dtype=np.intp)
            weights = []
            for axis, stride, fixed, c in zip(self._axes, self._cell_strides, located, flat):
                i, w = fixed if fixed is not None else axis.locate(c[start:stop])
                cell = cell + i * stride
                weights.append(w)
            cells = np.broadcast_to(cell, (stop - start,))
            for k in wanted:
                out[k][start:stop] = self._reduce(np.take(self._corners[k], cells, axis=1, mode="clip"), weights)
        for k, (lo, hi) in self._limits(wanted):
            np.clip(out[k], lo, hi, out=out[k])
        return {k: v.reshape(shape) for k, v in out.items()}

    def _limits(self, wanted) -> list[tuple[str, tuple[float, float]]]:
        return [(k, self.limits[k]) for k in wanted if self.limits and k in self.limits]

    def _point(self, coords, wanted) -> dict[str, np.ndarray]:
        """One point from Python scalars: bisect and a 2^d-term sum, no array work."""
        cell, weights = 0, []
        for name, axis, coord, stride in zip(self.names, self._axes, coords, self._cell_strides.tolist()):
            if not (math.isfinite(coord) and (axis.kind == "linear" or coord > 0)):
                axis.reject(name, coord)
            i, w = axis.locate_scalar(coord)
            cell += i * stride
            weights.append(w)
        out = {}
        for k in wanted:
            values = self._corners[k][:, cell].tolist()
            for w in weights:
                half = len(values) // 2
                values = [lo + w * (hi - lo) for lo, hi in zip(values[:half], values[half:])]
            out[k] = np.float64(values[0])
        for k, (lo, hi) in self._limits(wanted):
            out[k] = np.float64(min(max(out[k], lo), hi))
        return out

    @staticmethod
    def _reduce(corners: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        """Collapse (2^d, n) corner values in place, one axis at a time, first axis (the
        slowest bit) first, so that both halves stay contiguous blocks."""
        for w in weights:
            half = len(corners) // 2
            lo, hi = corners[:half], corners[half:]
            hi -= lo
            hi *= w
            lo += hi
            corners = lo
        return corners[0]

    def names_of(self, fields: str | tuple[str, ...] | None) -> tuple[str, ...]:
        if fields is None:
            return tuple(self.fields)
        if isinstance(fields, str):
            fields = (fields,)
        unknown = [f for f in fields if f not in self.fields]
        if unknown:
            raise KeyError(f"unknown field {unknown[0]!r}; grid has {sorted(self.fields)}")
        return tuple(fields)
