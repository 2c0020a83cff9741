"""Rectilinear grids with vectorised log-log multilinear interpolation.

Latency and power are close to power laws in every profile axis (time ∝ 1/share, ∝ 1/clock in
the compute-bound regime, ∝ tokens at scale), so interpolating ``log(value)`` linearly in
``log(coordinate)`` is exact for a power law and accurate in between. Beyond the first or last
grid point the end segment is extended (log-log linear extrapolation), which keeps
``time ∝ tokens`` growing past the largest tokens axis point; axes with a physical range
(SM share, SM clock) are clipped to it by :class:`festgym.profile.Profile` before lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Several value fields sampled on one rectilinear grid of positive coordinates."""

    names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    fields: dict[str, np.ndarray]
    _log_axes: tuple[np.ndarray, ...] = field(init=False, repr=False)
    _log_fields: dict[str, np.ndarray] = field(init=False, repr=False)
    _strides: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        shape = tuple(len(a) for a in self.axes)
        for name, values in self.fields.items():
            if values.shape != shape:
                raise ValueError(f"field {name!r} has shape {values.shape}, axes give {shape}")
        object.__setattr__(self, "_log_axes", tuple(np.log(a) for a in self.axes))
        object.__setattr__(self, "_log_fields", {k: np.log(v).ravel() for k, v in self.fields.items()})
        strides = np.cumprod((1,) + shape[:0:-1])[::-1]
        object.__setattr__(self, "_strides", np.asarray(strides, dtype=np.intp))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    def _locate(self, coords) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if len(coords) != len(self.axes):
            raise TypeError(f"expected {len(self.axes)} coordinates ({', '.join(self.names)})")
        coords = np.broadcast_arrays(*(np.asarray(c, dtype=float) for c in coords))
        index, weight = [], []
        for log_axis, c in zip(self._log_axes, coords):
            lc = np.log(c)
            i = np.clip(np.searchsorted(log_axis, lc, side="right") - 1, 0, len(log_axis) - 2)
            lo = log_axis[i]
            index.append(i)
            weight.append((lc - lo) / (log_axis[i + 1] - lo))
        return index, weight

    def __call__(self, *coords, fields: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Interpolate ``fields`` (all by default) at points given one array per axis."""
        index, weight = self._locate(coords)
        wanted = self.names_of(fields)
        acc = {k: 0.0 for k in wanted}
        base = sum(i * s for i, s in zip(index, self._strides))
        for corner in range(1 << len(index)):
            flat, w = base, 1.0
            for d, (wd, sd) in enumerate(zip(weight, self._strides)):
                if corner >> d & 1:
                    flat = flat + sd
                    w = w * wd
                else:
                    w = w * (1.0 - wd)
            for k in wanted:
                acc[k] = acc[k] + w * self._log_fields[k][flat]
        return {k: np.exp(v) for k, v in acc.items()}

    def names_of(self, fields: tuple[str, ...] | None) -> tuple[str, ...]:
        if fields is None:
            return tuple(self.fields)
        unknown = [f for f in fields if f not in self.fields]
        if unknown:
            raise KeyError(f"unknown field {unknown[0]!r}; grid has {sorted(self.fields)}")
        return tuple(fields)
