"""Rectilinear grids with fast vectorised multilinear interpolation.

Each axis is interpolated in a coordinate chosen so that the physics is close to linear in it:

* ``linear`` (tokens, batch, context): iteration time is affine in tokens, and in batch × context
  (KV reads), so bilinear interpolation in (batch, context) is exact in the memory-bound regime.
* ``reciprocal`` (SM share, SM clock): compute time ∝ 1/(share · clock), so interpolating in
  1/share and 1/clock is exact for the compute-bound regime.

Beyond the first or last grid point the end cell is extended linearly, which keeps time growing
with tokens past the largest grid point; share and clock are clipped to their physical range by
:class:`festgym.profile.Profile` before lookup.

Lookups cost O(1) per point: a uniform bucket table maps a coordinate to its cell without a
binary search, and each cell's 2^d corner values are stored contiguously, so one gather and one
weighted sum finish the interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TRANSFORMS = ("linear", "reciprocal")
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

    @classmethod
    def build(cls, values: np.ndarray, kind: str) -> "_Axis":
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown axis transform {kind!r}; one of {TRANSFORMS}")
        nodes = _transform(values, kind)
        if len(nodes) < 2 or not (np.diff(nodes) > 0).all():
            raise ValueError("an axis needs at least two strictly increasing values")
        width = np.diff(nodes)
        span = nodes[-1] - nodes[0]
        # Buckets no wider than the narrowest cell hold at most one cell boundary each.
        buckets = int(min(MAX_BUCKETS, np.ceil(span / width.min()) + 1))
        edges = nodes[0] + np.arange(buckets) * (span / buckets)
        cell = np.clip(np.searchsorted(nodes, edges, side="right") - 1, 0, len(nodes) - 2)
        scale = buckets / span
        return cls(kind, nodes, np.append(nodes[1:-1], np.inf), 1.0 / width, -nodes[0] * scale, scale,
                   cell.astype(np.intp))

    def locate(self, coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell index and fractional position (outside [0, 1] when extrapolating)."""
        u = _transform(coord, self.kind)
        b = (u * self.bucket_scale + self.bucket_offset).astype(np.intp)
        np.maximum(b, 0, out=b)
        np.minimum(b, len(self.bucket_cell) - 1, out=b)
        cell = self.bucket_cell[b]
        cell += u >= self.upper[cell]
        return cell, (u - self.nodes[cell]) * self.inv_width[cell]


@dataclass(frozen=True)
class Grid:
    """Several value fields sampled on one rectilinear grid."""

    names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    fields: dict[str, np.ndarray]
    transforms: tuple[str, ...]
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
        object.__setattr__(self, "_axes", tuple(_Axis.build(a, k) for a, k in zip(self.axes, self.transforms)))
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
        coords = [np.asarray(c, dtype=float) for c in coords]
        shape = np.broadcast_shapes(*(c.shape for c in coords))
        n = int(np.prod(shape))
        # A coordinate shared by all points (one clock, one share) is located once.
        located = [axis.locate(c.reshape(1)) if c.size == 1 else None for axis, c in zip(self._axes, coords)]
        flat = [None if c.size == 1 else np.broadcast_to(c, shape).ravel() for c in coords]
        out = {k: np.empty(n) for k in wanted}
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            cell, weights = 0, []
            for axis, stride, fixed, c in zip(self._axes, self._cell_strides, located, flat):
                i, w = fixed if fixed is not None else axis.locate(c[start:stop])
                cell = cell + i * stride
                weights.append(w)
            cell = np.broadcast_to(cell, (stop - start,))
            for k in wanted:
                out[k][start:stop] = self._reduce(np.take(self._corners[k], cell, axis=1), weights)
        return {k: v.reshape(shape) for k, v in out.items()}

    @staticmethod
    def _reduce(corners: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        """Collapse (2^d, n) corner values one axis at a time, last axis (fastest bit) first."""
        n = corners.shape[1]
        for w in reversed(weights):
            pairs = corners.reshape(-1, 2, n)
            lo = pairs[:, 0]
            corners = lo + w * (pairs[:, 1] - lo)
        return corners[0]

    def names_of(self, fields: tuple[str, ...] | None) -> tuple[str, ...]:
        if fields is None:
            return tuple(self.fields)
        unknown = [f for f in fields if f not in self.fields]
        if unknown:
            raise KeyError(f"unknown field {unknown[0]!r}; grid has {sorted(self.fields)}")
        return tuple(fields)
