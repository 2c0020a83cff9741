"""What a run books: per-request outcomes, the decode-run log, and run-wide counters.

Instances book into a :class:`Ledger` as they serve (a first token, the gaps of a request, its
end, a preemption, a decode run); the simulator books arrivals, rejections, migrations and refused
actions. :class:`~festgym.sim.results.Result` is built from it. Per-instance SLO counters, which
the environments' rewards read as differences, are :class:`Counters`.

Token-level latency costs O(1) per request and per decode run, not per token: each decode run
(and each mixed iteration with decodes) is logged as (start, first gap, gap increment, steps,
batch, model), so the run-wide gap distribution is exact in closed form, and each request's gap
sum and over-SLO count arrive as differences of its instance's cumulative sums.

Energy: a finished request's share of the energy of the iterations it ran in (:mod:`festgym.sim.instance`
charges its sequence as it runs) is booked when it finishes; each model's whole energy
(:data:`ENERGY_PARTS`, the rule in :mod:`festgym.sim.gpu`) per GPU when one of its instances goes.
"""

from __future__ import annotations

import math
from array import array
from typing import TYPE_CHECKING

import numpy as np
from mypy_extensions import mypyc_attr

from festgym.control.attribution import ENERGY_PARTS

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.workload import Trace

STATUS_NAMES = ("unfinished", "finished", "rejected_policy", "rejected_memory", "rejected_too_long")
"""Request statuses, in index order: every request of a trace ends the run with one of them."""
UNFINISHED, FINISHED, REJECTED_POLICY, REJECTED_MEMORY, REJECTED_TOO_LONG = range(5)

RUN_COLUMNS = ("t0", "g0", "dg", "n", "batch", "model")
"""Columns of the decode-run log: start time, first gap, gap slope, steps, batch, model index."""
RUN_BUFFER = 6 * 1024
"""Run-log values gathered in a list before they move to the compact array."""


@mypyc_attr(allow_interpreted_subclasses=True)
class RequestLog:
    """Per-request outcome arrays, indexed by request number in the trace."""

    def __init__(self, trace: Trace):
        n = len(trace)
        self.arrival_s = trace.arrival_s
        self.prompt = trace.prompt_tokens
        self.model = np.full(n, -1, dtype=np.int32)
        self.gpu = np.full(n, -1, dtype=np.int32)
        self.status = np.zeros(n, dtype=np.int8)
        self.cold = np.zeros(n, dtype=bool)
        self.first_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.gap_sum = np.zeros(n)
        self.gap_over = np.zeros(n, dtype=np.int64)
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.energy_j = np.zeros(n)
        """A finished request's share of the energy of the iterations it ran in (J)."""


def over_limit(g0: float, dg: float, n: int, limit: float) -> tuple[int, float]:
    """How many of the gaps g0 + dg·j (j = 0..n−1) exceed ``limit``, and the sum of their excess
    (gap − limit). The gaps over the limit form one contiguous range of j, so both are closed form."""
    if g0 <= limit and g0 + dg * (n - 1) <= limit:  # the common case: none over (gaps are monotone)
        return 0, 0.0
    ratio = (limit - g0) / dg if dg != 0.0 else math.inf
    if not math.isfinite(ratio):  # flat (or a slope too small to move any gap across the limit)
        return (n, n * (g0 - limit)) if g0 > limit else (0, 0.0)
    # first index above the limit (dg > 0) / last index above it (dg < 0)
    k = math.floor(ratio) + 1 if dg > 0 else math.ceil(ratio)
    k = min(max(k, 0), n)
    lo, hi = (k, n) if dg > 0 else (0, k)  # the over-limit indices: lo..hi−1
    m = hi - lo
    return m, m * (g0 - limit) + dg * (lo + hi - 1) * m / 2


@mypyc_attr(allow_interpreted_subclasses=True)
class Counters:
    """Cumulative SLO counters of an instance (and, for unloaded instances, of their GPU).

    Consumers take differences between two readings (:meth:`minus`). Gaps are counted per
    sequence (a decode step of batch b gives b gaps) and booked when the iteration or closed-form
    run that produced them ends. A first token later than its SLO books its whole lateness in
    TTFT-SLO units; :meth:`Instance.ttft_overdue` gives the lateness so far of requests still
    waiting, so that (booked + waiting) grows continuously while a queue starves. A request the GPU
    it was sent to turned away (:meth:`add_rejected`) books a late first token, so that refusing
    never avoids lateness (:meth:`festgym.sim.simulator.Simulator._turned_away` says how late).
    """

    __slots__ = ("first_tokens", "ttft_over", "ttft_excess", "gaps", "gaps_over", "tbt_excess", "rejected")

    def __init__(self) -> None:
        self.first_tokens = 0
        """First tokens produced."""
        self.ttft_over = 0
        """First tokens later than the TTFT SLO."""
        self.ttft_excess = 0.0
        """Sum of max(0, TTFT − SLO) / SLO over first tokens."""
        self.gaps = 0
        """Inter-token gaps (one per sequence per decode step)."""
        self.gaps_over = 0
        """Gaps longer than the TBT SLO."""
        self.tbt_excess = 0.0
        """Sum over gaps of max(0, gap − TBT SLO) / TBT SLO."""
        self.rejected = 0
        """Requests turned away (each also booked as a late first token)."""

    def add_first_token(self, late: float) -> None:
        """Book a first token ``late`` TTFT-SLO units after its deadline (≤ 0: on time)."""
        self.first_tokens += 1
        if late > 0:
            self.ttft_over += 1
            self.ttft_excess += late

    def add_rejected(self, late: float) -> None:
        """Book a request turned away as a first token ``late`` (> 0) TTFT-SLO units after its deadline."""
        self.rejected += 1
        self.add_first_token(late)

    def add_gaps(self, batch: int, g0: float, dg: float, n: int, tbt_s: float) -> int:
        """Book ``batch`` sequences' gaps g0 + dg·j (j < n); return the steps over ``tbt_s``."""
        over, excess = over_limit(g0, dg, n, tbt_s)
        self.gaps += batch * n
        self.gaps_over += batch * over
        self.tbt_excess += batch * excess / tbt_s
        return over

    def add(self, other: Counters) -> Counters:
        self.first_tokens += other.first_tokens
        self.ttft_over += other.ttft_over
        self.ttft_excess += other.ttft_excess
        self.gaps += other.gaps
        self.gaps_over += other.gaps_over
        self.tbt_excess += other.tbt_excess
        self.rejected += other.rejected
        return self

    def minus(self, other: Counters) -> Counters:
        out = Counters().add(self)
        out.first_tokens -= other.first_tokens
        out.ttft_over -= other.ttft_over
        out.ttft_excess -= other.ttft_excess
        out.gaps -= other.gaps
        out.gaps_over -= other.gaps_over
        out.tbt_excess -= other.tbt_excess
        out.rejected -= other.rejected
        return out


@mypyc_attr(allow_interpreted_subclasses=True)
class Ledger:
    """A run's book: :class:`RequestLog`, the decode-run log and the run-wide counters."""

    __slots__ = ("log", "runs", "run_buf", "open", "tokens_out", "migrations", "preemptions", "recomputed_tokens",
                 "rejected_actions", "energy_gone_j")

    def __init__(self, trace: Trace) -> None:
        self.log = RequestLog(trace)
        self.energy_gone_j: dict[tuple[int, int], list[float]] = {}
        """Per (GPU, model index): the energy parts (``ENERGY_PARTS``) its instances gone so far drew there."""
        self.runs: array[float] = array("d")
        """Interleaved rows of ``RUN_COLUMNS`` (see :meth:`run_rows`)."""
        self.run_buf: list[float] = []
        """The newest rows (a list takes them cheaper than the array)."""
        self.open = 0
        """Requests placed and not yet finished."""
        self.tokens_out = 0
        self.migrations = 0
        self.preemptions = 0
        self.recomputed_tokens = 0
        self.rejected_actions = 0

    # --- booked by the simulator ---------------------------------------------------------------

    def arrived(self, rid: int, model: int) -> None:
        self.log.model[rid] = model

    def placed(self, rid: int, gpu: int, cold: bool) -> None:
        """Request ``rid`` joins a queue on ``gpu`` (``cold``: behind a cold start)."""
        log = self.log
        if cold:
            log.cold[rid] = True
        log.gpu[rid] = gpu
        self.open += 1

    def rejected(self, rid: int, status: int) -> None:
        self.log.status[rid] = status

    def migrated(self, rids: list[int], gpu: int) -> None:
        """A migration handed requests ``rids`` over to ``gpu``."""
        log = self.log
        for rid in rids:
            log.gpu[rid] = gpu
        self.migrations += 1

    def instance_gone(self, model: int, gpus: list[int], energy_j: list[float]) -> None:
        """An instance of ``model`` left ``gpus``, having drawn ``energy_j`` there (``ENERGY_PARTS`` per GPU)."""
        parts = len(ENERGY_PARTS)
        for k, gpu in enumerate(gpus):
            total = self.energy_gone_j.setdefault((gpu, model), [0.0] * parts)
            for i in range(parts):
                total[i] += energy_j[k * parts + i]

    def action_refused(self) -> None:
        """A consolidation action the cluster could not carry out (no memory on the target)."""
        self.rejected_actions += 1

    # --- booked by instances -----------------------------------------------------------------------

    def first_token(self, rid: int, now: float) -> None:
        self.log.first_s[rid] = now
        self.tokens_out += 1

    def resumed(self, rid: int, gap_s: float, over: int) -> None:
        """The first token after a recompute: one more token, and the gap since the last one."""
        self.tokens_out += 1
        self.gaps(rid, gap_s, over)

    def gaps(self, rid: int, gaps_s: float, over: int) -> None:
        """``rid``'s inter-token gaps since it joined the decoding batch: their sum and how many
        were over its TBT SLO."""
        log = self.log
        log.gap_sum[rid] += gaps_s
        log.gap_over[rid] += over

    def finished(self, rid: int, now: float, gaps_s: float, over: int, energy_j: float) -> None:
        """``rid`` is done: its last gaps since it joined the decoding batch and its energy (J)."""
        log = self.log
        log.energy_j[rid] = energy_j
        log.gap_sum[rid] += gaps_s
        log.gap_over[rid] += over
        log.finish_s[rid] = now
        log.status[rid] = FINISHED
        self.open -= 1

    def preempted(self, rid: int, lost_tokens: int) -> None:
        self.log.preemptions[rid] += 1
        self.preemptions += 1
        self.recomputed_tokens += lost_tokens

    def recomputed(self, lost_tokens: int) -> None:
        """Tokens whose work a migration threw away (they are prefilled again on the target)."""
        self.recomputed_tokens += lost_tokens

    def decode_run(self, t0: float, g0: float, dg: float, n: int, batch: int, model: int) -> None:
        """``n`` decode steps of ``batch`` sequences from ``t0``, with gaps g0 + dg·j."""
        buf = self.run_buf
        buf.extend((t0, g0, dg, n, batch, model))
        if len(buf) >= RUN_BUFFER:
            self.flush_runs()
        self.tokens_out += n * batch

    # --- read -----------------------------------------------------------------------------------

    def flush_runs(self) -> None:
        self.runs.fromlist(self.run_buf)
        self.run_buf.clear()

    def run_rows(self) -> np.ndarray:
        """The run log so far: one row of ``RUN_COLUMNS`` per decode run or mixed iteration,
        logged when it ends (a view; copy it to keep it)."""
        self.flush_runs()
        return np.frombuffer(self.runs, dtype=float).reshape(-1, len(RUN_COLUMNS))
