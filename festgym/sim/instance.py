"""One model instance on one GPU: vLLM-like continuous batching, advanced event by event.

Iteration model (vLLM V1 scheduler):

* Each iteration first gives every decoding sequence one token, then fills what is left of the
  token budget with prompt chunks, oldest admitted first (chunked prefill).
* A waiting request is admitted (FCFS, head-of-line) when a sequence slot is free and the KV
  cache can hold its prompt plus one iteration of growth for everyone.
* When decoding would overflow the KV cache, the most recently admitted sequence is preempted
  and later recomputed (vLLM's recompute mode): its prompt and generated tokens are prefilled again.

Timing:

* An iteration with prompt tokens ("mixed") is timed as the prefill of (prompt tokens + decode
  tokens) in one pass (weights are read once; every token goes through the matmuls), plus the
  decodes' KV reads: decode time at the batch's context minus decode time at the smallest
  context. Assumption: the chunk's prompts are timed as one sequence, which over-states
  prompt attention for chunks of many short prompts (a few % below 2k tokens).
* Between events, decode iterations are identical but for context, which grows by one token per
  sequence per step. Step time is affine in context within a profile grid cell, so a run of n steps
  is advanced in closed form (``n·g0 + dg·n(n−1)/2``) without a Python step per token. A run ends
  at the first completion, the next context grid point, a full KV cache, or an interruption.
  An interruption (arrival, clock, share or contention change) takes effect at the end of the
  iteration in flight, as in a real engine.

Per-request inter-token gaps are accounted for by differences of the instance's cumulative gap
sum and over-SLO gap count, so a request's TBT statistics cost O(1) per request, not per token.
"""

from __future__ import annotations

import math
from collections import deque
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

from festgym.sim.serving import ModelServing
from festgym.sim.slices import SliceCache

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.gpu import SimGpu
    from festgym.sim.simulator import Simulator

# phases
LOADING, IDLE, MIXED, DECODE, PAUSED, GONE = range(6)  # indices into festgym.state_names.PHASE_NAMES


class Seq:
    """A request inside an instance."""

    __slots__ = ("rid", "prompt", "todo", "out", "gen", "join_tok", "base", "cum0", "over0", "t_last", "order",
                 "key")

    def __init__(self, rid: int, prompt: int, out: int):
        self.rid = rid
        self.prompt = prompt  # tokens to prefill (original prompt + tokens generated before a recompute)
        self.todo = prompt
        self.out = out
        self.gen = 0  # output tokens generated when it (re)joined the decoding set
        self.join_tok = 0
        self.base = 0  # context minus the instance's iteration count while decoding
        self.cum0 = 0.0
        self.over0 = 0
        self.t_last = -1.0  # time of its last token before a preemption or migration
        self.order = 0
        self.key = 0.0  # least-laxity order: TTFT deadline minus estimated prefill time


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


class Counters:
    """Cumulative SLO counters of an instance (and, for unloaded instances, of their GPU).

    Consumers take differences between two readings (:meth:`minus`). Gaps are counted per
    sequence (a decode step of batch b gives b gaps) and booked when the iteration or closed-form
    run that produced them ends. A first token later than its SLO books its whole lateness in
    TTFT-SLO units; :meth:`Instance.ttft_overdue` gives the lateness so far of requests still
    waiting, so that (booked + waiting) grows continuously while a queue starves.
    """

    __slots__ = ("first_tokens", "ttft_over", "ttft_excess", "gaps", "gaps_over", "tbt_excess")

    def __init__(self):
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

    def add_gaps(self, batch: int, g0: float, dg: float, n: int, tbt_s: float) -> int:
        """Book ``batch`` sequences' gaps g0 + dg·j (j < n); return the steps over ``tbt_s``."""
        over, excess = over_limit(g0, dg, n, tbt_s)
        self.gaps += batch * n
        self.gaps_over += batch * over
        self.tbt_excess += batch * excess / tbt_s
        return over

    def add(self, other: "Counters") -> "Counters":
        self.first_tokens += other.first_tokens
        self.ttft_over += other.ttft_over
        self.ttft_excess += other.ttft_excess
        self.gaps += other.gaps
        self.gaps_over += other.gaps_over
        self.tbt_excess += other.tbt_excess
        return self

    def minus(self, other: "Counters") -> "Counters":
        out = Counters().add(self)
        out.first_tokens -= other.first_tokens
        out.ttft_over -= other.ttft_over
        out.ttft_excess -= other.ttft_excess
        out.gaps -= other.gaps
        out.gaps_over -= other.gaps_over
        out.tbt_excess -= other.tbt_excess
        return out


class Instance:
    """A model served on one GPU, with its own queue, batch and KV cache."""

    __slots__ = ("sim", "gpu", "model", "name", "serving", "slices", "kv_tokens", "weight_bytes", "share",
                 "max_num_seqs", "phase", "version", "waiting", "prefilling", "decoding", "heap", "tok",
                 "ctx_base", "kv_prefill", "cum_gap", "cum_over", "t0", "n", "g0", "dg", "chunk", "factor",
                 "dyn_w", "hbm", "idle_version", "pending_share", "migrate_to", "migrate_from", "drain",
                 "cut", "orders", "prompt_todo", "llf", "counters", "peak_ttft_ratio", "peak_gap_s", "last_arrival_s", "ready_at", "view", "tbt_s", "idle_w")

    def __init__(self, sim: "Simulator", gpu: "SimGpu", model: int, name: str, serving: ModelServing,
                 slices: SliceCache, share: float):
        self.sim = sim
        self.gpu = gpu
        self.model = model
        self.name = name
        self.serving = serving
        self.slices = slices
        spec = slices.profile.model
        self.weight_bytes = spec.weight_bytes
        self.kv_tokens = int(serving.engine.kv_cache_gb * 1e9 // spec.kv_bytes_per_token)
        self.share = share
        self.max_num_seqs = serving.engine.max_num_seqs
        self.tbt_s = serving.slo.tbt_s
        self.idle_w = gpu.spec.idle_w
        self.phase = LOADING
        self.version = 0
        self.waiting: deque[Seq] = deque()
        self.prefilling: list[Seq] = []
        self.decoding: dict[int, Seq] = {}
        self.heap: list[tuple[int, int, Seq]] = []
        self.tok = 0
        self.ctx_base = 0
        self.kv_prefill = 0
        self.cum_gap = 0.0
        self.cum_over = 0
        self.t0 = self.g0 = self.dg = 0.0
        self.n = 0
        self.chunk: list[tuple[Seq, int]] = []
        self.factor = 1.0
        self.dyn_w = 0.0
        self.hbm = 0.0
        self.idle_version = 0
        self.pending_share: float | None = None
        self.migrate_to: Instance | None = None
        self.migrate_from: Instance | None = None
        self.drain = False
        self.cut = False  # the current decode run has been cut to the iteration in flight
        self.orders = 0
        self.prompt_todo = 0  # prompt tokens not yet computed, over waiting and prefilling
        self.llf = sim.llf  # waiting queue in least-laxity order (else FCFS)
        self.counters = Counters()
        self.peak_ttft_ratio = 0.0  # largest TTFT / SLO since the last control tick
        self.peak_gap_s = 0.0  # longest inter-token gap since the last control tick
        self.last_arrival_s = -1.0
        self.ready_at = 0.0
        self.view: Any = None  # its InstanceView, set by the simulator

    # --- queries ----------------------------------------------------------------------------

    @property
    def kv_used(self) -> int:
        return self.kv_prefill + self.ctx_base + len(self.decoding) * self.tok

    @property
    def empty(self) -> bool:
        return not (self.waiting or self.prefilling or self.decoding)

    def ttft_overdue(self, now: float) -> float:
        """Lateness so far of the requests here still waiting for their first token, in TTFT-SLO
        units (each request's own SLO)."""
        sim = self.sim
        total = 0.0
        for queue in (self.waiting, self.prefilling):
            for seq in queue:
                if seq.gen == 0:
                    deadline, slo = sim.ttft_deadline(seq.rid)
                    if now > deadline:
                        total += (now - deadline) / slo
        return total

    def book_gaps(self, batch: int, g0: float, dg: float, n: int) -> int:
        """Count ``batch`` sequences' gaps g0 + dg·j (j < n); return the steps over the TBT SLO."""
        top = g0 + dg * (n - 1) if dg > 0 else g0
        if top > self.peak_gap_s:
            self.peak_gap_s = top
        return self.counters.add_gaps(batch, g0, dg, n, self.tbt_s)

    # --- inputs -----------------------------------------------------------------------------

    def enqueue(self, seq: Seq, now: float) -> None:
        self._queue(seq)
        if self.phase == IDLE:
            self.plan(now)
        elif self.phase == DECODE:
            self.interrupt(now)

    def _queue(self, seq: Seq) -> None:
        """Join the waiting queue: at the back (FCFS), or by laxity. Laxity is the TTFT deadline
        minus the prompt's prefill time at the current share and clock (an estimate; the order
        is fixed on arrival, as a priority queue's is)."""
        self.prompt_todo += seq.todo
        waiting = self.waiting
        if not self.llf:
            waiting.append(seq)
            return
        pre = self.slices.prefill(self.share, self.gpu.clock)
        seq.key = self.sim.deadline_s[seq.rid] - pre.at(pre.time_s, seq.todo)
        i = len(waiting)
        while i > 0 and waiting[i - 1].key > seq.key:  # arrivals come roughly in key order: scan from the back
            i -= 1
        waiting.insert(i, seq)

    def interrupt(self, now: float) -> None:
        """Re-plan at the end of the iteration in flight (or now, if idle)."""
        if self.phase == IDLE:
            self.plan(now)
        elif self.phase == DECODE and not self.cut:
            elapsed = now - self.t0
            g0, dg = self.g0, self.dg
            if dg > 1e-18:
                half = dg / 2
                lin = g0 - half
                j = int((-lin + math.sqrt(lin * lin + 4 * half * elapsed)) / (2 * half))
            else:
                j = int(elapsed / g0)
            j = min(max(j, 0), self.n - 1)
            while j > 0 and j * g0 + dg * j * (j - 1) / 2 > elapsed:
                j -= 1
            while j + 1 < self.n and (j + 1) * g0 + dg * (j + 1) * j / 2 <= elapsed:
                j += 1
            self.cut = True
            if j + 1 < self.n:
                self.n = j + 1
                self.version += 1
                self.sim.schedule(self.t0 + self.n * g0 + dg * self.n * j / 2, self.on_event, self.version)

    # --- the event loop's entry ---------------------------------------------------------------

    def on_event(self, version: int, now: float) -> None:
        if version != self.version:
            return  # superseded by a cut
        if self.phase == DECODE:
            self._end_decode(now)
        elif self.phase == MIXED:
            self._end_mixed(now)
        self.plan(now)

    def plan(self, now: float) -> None:
        """At an iteration boundary: hand over, pause or admit, then start the next iteration(s)."""
        sim = self.sim
        if self.migrate_to is not None and self.migrate_to.phase != LOADING:
            sim.hand_over(self, now)
            return
        if self.pending_share is not None and sim.config.share_change_s > 0:
            self._go(PAUSED, now)
            sim.schedule(now + sim.config.share_change_s, self.on_resume, self.version)
            return
        if self.pending_share is not None:
            self.share, self.pending_share = self.pending_share, None
        self._admit()
        if self.prefilling:
            self._start_mixed(now)
        elif self.decoding:
            self._start_decode(now)
        else:
            self._go(IDLE, now)
            if self.empty:
                self.idle_version += 1
                if self.drain:
                    sim.unload(self, now)
                elif self.migrate_from is None:  # a migration target waits for its hand-over
                    sim.schedule(now + sim.config.keep_alive_s, self.on_expire, self.idle_version)

    def on_ready(self, _arg, now: float) -> None:
        """Cold start done."""
        self.phase = IDLE
        self.gpu.update(now)
        source = self.migrate_from
        if source is not None and source.phase != GONE:
            source.interrupt(now)  # hands over at its next boundary (now if it is idle)
        if self.phase == IDLE:
            self.plan(now)

    def on_resume(self, _version: int, now: float) -> None:
        if self.pending_share is not None:
            self.share, self.pending_share = self.pending_share, None
        self.phase = IDLE
        self.plan(now)

    def on_expire(self, idle_version: int, now: float) -> None:
        if idle_version == self.idle_version and self.phase == IDLE and self.empty:
            self.sim.unload(self, now)

    # --- iterations ----------------------------------------------------------------------------

    def _go(self, phase: int, now: float, dyn_w: float = 0.0, hbm: float = 0.0) -> None:
        self.phase = phase
        self.dyn_w = dyn_w
        self.hbm = hbm
        self.gpu.update(now, self)

    def _admit(self) -> None:
        waiting = self.waiting
        if not waiting:
            return
        limit = self.max_num_seqs
        batch = len(self.decoding)
        free = self.kv_tokens - self.kv_used - batch - len(self.prefilling)
        while waiting and batch + len(self.prefilling) < limit:
            seq = waiting[0]
            need = seq.prompt + 1
            if need > free:
                break  # FCFS: the head waits for KV space
            waiting.popleft()
            free -= need
            self.kv_prefill += seq.prompt
            self.prefilling.append(seq)

    def _start_mixed(self, now: float) -> None:
        batch = len(self.decoding)
        budget = self.serving.engine.max_num_batched_tokens - batch
        chunk = []
        tokens = 0
        for seq in self.prefilling:
            if budget <= 0:
                break
            take = seq.todo if seq.todo < budget else budget
            chunk.append((seq, take))
            tokens += take
            budget -= take
        self.chunk = chunk
        clock = self.gpu.clock
        pre = self.slices.prefill(self.share, clock)
        time = pre.at(pre.time_s, tokens + batch)
        power = pre.at(pre.power_w, tokens + batch)
        hbm = pre.at(pre.hbm_util, tokens + batch)
        if batch:
            dec = self.slices.decode(self.share, clock)
            ctx = (self.ctx_base + batch * self.tok) / batch
            kv_time = dec.at(dec.time_s, batch, ctx) - dec.at(dec.time_s, batch, dec.ctx[0])
            if kv_time > 0:
                kv_power = dec.at(dec.power_w, batch, ctx)
                power = (power * time + kv_power * kv_time) / (time + kv_time)
                time += kv_time
        self._run(MIXED, now, time, power, hbm)
        self.sim.schedule(now + self.g0, self.on_event, self.version)

    def _run(self, phase: int, now: float, time: float, power: float, hbm: float) -> None:
        """Start an iteration or a run whose first step takes ``time`` at contention factor 1."""
        gpu = self.gpu
        self.hbm = hbm
        factor = gpu.hbm_demand(self)
        factor = factor if factor > 1.0 else 1.0
        self.factor = factor
        self.t0 = now
        self.g0 = time * factor
        self.version += 1
        self.cut = False
        self.phase = phase
        # Contention stretches the step; the same work's dynamic energy is spread over it.
        self.dyn_w = (power - self.idle_w) / factor
        gpu.update(now, self)

    def _start_decode(self, now: float) -> None:
        heap, decoding = self.heap, self.decoding
        while not self._live(heap[0]):
            heappop(heap)  # left by a preemption
        batch = len(decoding)
        total = self.ctx_base + batch * self.tok
        room = (self.kv_tokens - self.kv_prefill - total) // batch
        if room < 1:
            self._preempt(now)
            self.plan(now)
            return
        ctx = total / batch
        dec = self.slices.decode(self.share, self.gpu.clock)
        cell = dec.cell(ctx)
        points = dec.ctx
        n = heap[0][0] - self.tok
        if room < n:
            n = room
        if cell < len(points) - 2:  # the last cell extends upwards
            to_edge = math.ceil(points[cell + 1] - ctx)
            if to_edge < 1:
                to_edge = 1
            if to_edge < n:
                n = to_edge
        a, b = dec.affine(dec.time_s, batch, cell)
        c = ctx if ctx > points[0] else points[0]
        pa, pb = dec.affine(dec.power_w, batch, cell)
        ha, hb = dec.affine(dec.hbm_util, batch, cell)
        self._run(DECODE, now, a + b * c, pa + pb * c, ha + hb * c)
        self.dg = b * self.factor
        self.n = n
        self.sim.schedule(now + n * self.g0 + self.dg * n * (n - 1) / 2, self.on_event, self.version)

    def _end_decode(self, now: float) -> None:
        n, g0, dg = self.n, self.g0, self.dg
        batch = len(self.decoding)
        self.tok += n
        self.cum_gap += n * g0 + dg * n * (n - 1) / 2
        self.cum_over += self.book_gaps(batch, g0, dg, n)
        self.sim.log_run(self, g0, dg, n, batch)
        self._retire(now)

    def _live(self, entry: tuple[int, int, Seq]) -> bool:
        """Whether a finish-heap entry belongs to its sequence's current decoding stint."""
        seq = entry[2]
        return entry[1] == seq.order and self.decoding.get(seq.rid) is seq

    def _retire(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= self.tok:
            entry = heappop(heap)
            if self._live(entry):
                self._finish(entry[2], now)

    def _end_mixed(self, now: float) -> None:
        duration = self.g0
        batch = len(self.decoding)
        sim = self.sim
        if batch:
            self.tok += 1
            self.cum_gap += duration
            self.cum_over += self.book_gaps(batch, duration, 0.0, 1)
            sim.log_run(self, duration, 0.0, 1, batch)
            self._retire(now)
        for seq, take in self.chunk:
            seq.todo -= take
            self.prompt_todo -= take
            if seq.todo == 0:
                self.prefilling.remove(seq)
                self.kv_prefill -= seq.prompt
                self._first_token(seq, now)
        self.chunk = []

    def _first_token(self, seq: Seq, now: float) -> None:
        sim = self.sim
        if seq.gen == 0:
            sim.first_token(self, seq.rid, now)
        else:  # resumed after a recompute: the gap since its last token counts
            sim.add_gap(self, seq.rid, now - seq.t_last)
        seq.gen += 1
        if seq.gen >= seq.out:
            sim.finish(self, seq, now, 0.0, 0)
            return
        tok = self.tok
        seq.join_tok = tok
        seq.base = seq.prompt + 1 - tok
        self.ctx_base += seq.base
        seq.cum0 = self.cum_gap
        seq.over0 = self.cum_over
        self.orders += 1
        seq.order = self.orders
        self.decoding[seq.rid] = seq
        heappush(self.heap, (tok + seq.out - seq.gen, seq.order, seq))

    def _leave(self, seq: Seq) -> tuple[float, int]:
        """Remove a decoding sequence; return its gap sum and over-SLO count since it joined."""
        del self.decoding[seq.rid]
        self.ctx_base -= seq.base
        return self.cum_gap - seq.cum0, self.cum_over - seq.over0

    def _finish(self, seq: Seq, now: float) -> None:
        gaps, over = self._leave(seq)
        seq.gen += self.tok - seq.join_tok
        self.sim.finish(self, seq, now, gaps, over)

    def _preempt(self, now: float) -> None:
        victim = next(reversed(self.decoding.values()))
        self.sim.preempted(victim.rid, self.recompute(victim, now))
        self.waiting.appendleft(victim)
        self.prompt_todo += victim.todo

    def recompute(self, seq: Seq, now: float) -> int:
        """Take a running sequence out so that it prefills its whole context again (vLLM's
        recompute; the gap until its next token counts as one inter-token gap). Returns the tokens
        whose work is lost."""
        if self.decoding.get(seq.rid) is seq:
            context = seq.base + self.tok
            gaps, over = self._leave(seq)
            seq.gen += self.tok - seq.join_tok
            self.sim.add_gaps(self, seq.rid, gaps, over)
            seq.t_last = now
            seq.prompt = lost = context
        else:  # still prefilling: its KV reservation is released and its prefill restarts
            self.prefilling.remove(seq)
            self.kv_prefill -= seq.prompt
            self.prompt_todo -= seq.todo
            lost = seq.prompt - seq.todo
        seq.todo = seq.prompt
        return lost

    def receive(self, seqs: list[Seq]) -> None:
        """Queue sequences handed over by a migration (behind any waiting here, or by laxity)."""
        for seq in seqs:
            self._queue(seq)

    def take_all(self, now: float) -> list[Seq]:
        """Every sequence, running ones first (for recompute), then the waiting queue."""
        running = list(self.decoding.values()) + list(self.prefilling)
        for seq in running:
            self.sim.recomputed_tokens += self.recompute(seq, now)
        out = running + list(self.waiting)
        self.waiting.clear()
        self.prompt_todo = 0
        self.heap.clear()
        return out
