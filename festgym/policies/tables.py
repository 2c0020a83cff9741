"""Constant-time profile lookups for rule policies: one table per (GPU type, model).

A table holds, on a fixed grid of (SM share level, clock level), the decode step time and
energy per step at each of the profile's batch and context points, and the prefill time and
energy per prompt token at its token points. A lookup rounds batch, context and tokens *up* to
the next grid point (conservative for latency) and reads a (share × clock) slice, so a policy
decision costs a few small array operations whatever the load.

Energy here is dynamic energy (power above idle × time): the idle power of an awake GPU is paid
whatever the policy does between its wake and park decisions.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from festgym.control.levels import clock_levels, share_levels
from festgym.profiles.profile import Profile


@dataclass(frozen=True)
class ProfileTables:
    """Lookup tables of one profile at ``shares`` × ``clocks``."""

    profile: Profile
    shares: np.ndarray
    """Share levels, ascending."""
    clocks: np.ndarray
    """Clock levels (MHz), ascending."""
    batch_points: list[float]
    ctx_points: list[float]
    token_points: list[float]
    decode_s: np.ndarray
    """Decode step time, [share, clock, batch point, ctx point]."""
    decode_j: np.ndarray
    """Dynamic energy of one decode step, same axes."""
    prefill_s: np.ndarray
    """Prefill iteration time, [share, clock, token point]."""
    prefill_j: np.ndarray
    """Dynamic energy of that iteration, same axes."""

    share_list: list[float]
    """``shares`` as a list (plain-Python loops read it)."""
    clock_list: list[float]
    """``clocks`` as a list."""

    @classmethod
    def build(cls, profile: Profile, n_shares: int = 10, n_clocks: int = 10) -> ProfileTables:
        shares = np.asarray(share_levels(n_shares))
        clocks = np.asarray(clock_levels(profile.gpu.sm_clocks_mhz, n_clocks, profile.gpu.name))
        idle = profile.gpu.idle_w
        dgrid, pgrid = profile.decode_grid, profile.prefill_grid
        batch = dgrid.axes[dgrid.names.index("batch")]
        ctx = dgrid.axes[dgrid.names.index("ctx")]
        tokens = pgrid.axes[pgrid.names.index("tokens")]
        s, c, b, x = np.meshgrid(shares, clocks, batch, ctx, indexing="ij")
        dec = profile.decode(b, x, s, c)
        s2, c2, t2 = np.meshgrid(shares, clocks, tokens, indexing="ij")
        pre = profile.prefill(t2, s2, c2)
        return cls(profile, shares, clocks, batch.tolist(), ctx.tolist(), tokens.tolist(),
                   dec["time_s"], dec["time_s"] * (dec["power_w"] - idle),
                   pre["time_s"], pre["time_s"] * (pre["power_w"] - idle), shares.tolist(), clocks.tolist())

    def decode_index(self, batch: float, ctx: float) -> tuple[int, int]:
        """Grid indices at or above (batch, ctx), clipped to the grid."""
        return (min(bisect_left(self.batch_points, batch), len(self.batch_points) - 1),
                min(bisect_left(self.ctx_points, ctx), len(self.ctx_points) - 1))

    def prefill_index(self, tokens: float, chunk: int) -> tuple[int, int]:
        """(token point index, number of chunks) to prefill ``tokens`` in chunks of at most
        ``chunk`` tokens (the engine's token budget): ``prefill_s[..., i] * chunks`` is the time."""
        if tokens <= 0:
            return 0, 0
        chunks = -(-int(tokens) // chunk)
        per = tokens if chunks == 1 else chunk
        return min(bisect_left(self.token_points, per), len(self.token_points) - 1), chunks


class TableCache:
    """The :class:`ProfileTables` of each (GPU type, model) a policy meets, built on first use."""

    def __init__(self, n_shares: int, n_clocks: int):
        self.n_shares, self.n_clocks = n_shares, n_clocks
        self._tables: dict[tuple[str, str], ProfileTables] = {}

    def __deepcopy__(self, memo: dict) -> TableCache:
        """The cache itself: tables are pure functions of the profiles, which forked runs share."""
        return self

    def get(self, cluster, gpu, model: str) -> ProfileTables:
        """Tables of ``model`` on ``gpu``'s type (``cluster``: a ClusterView, ``gpu``: a GpuView)."""
        key = (gpu.spec.name, model)
        found = self._tables.get(key)
        if found is None:
            found = self._tables[key] = ProfileTables.build(cluster.profile(gpu.index, model),
                                                            self.n_shares, self.n_clocks)
        return found
