"""One model instance (an engine) on one GPU or a group of GPUs: vLLM-like continuous batching,
advanced event by event.

Iteration model (vLLM V1 scheduler):

* Each iteration first gives every decoding sequence one token, then fills what is left of the
  token budget with prompt chunks, oldest admitted first (chunked prefill).
* A waiting request is admitted (head-of-line, in the order of the run's queue discipline,
  :mod:`festgym.sim.queues`) when a sequence slot is free and the KV cache can hold its prompt
  plus one iteration of growth for everyone.
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

Energy: the instance integrates the power its GPUs allot it (:meth:`allot`; the rule is in
:mod:`festgym.sim.gpu`), in three parts: static, dynamic and loading. Each iteration's energy (all
parts, over its duration, on every GPU of the engine) goes to the requests it ran, in proportion to
the tokens each put through it: a prompt chunk its length, a decoding sequence one. A decode run's
sequences share alike, through a cumulative energy per decoding sequence (differences again, as for
the gaps). What the instance draws between iterations (idle, asleep, loading) stays its model's.

An engine spanning several GPUs (tensor or expert parallel, :mod:`festgym.profiles.parallel`) is
resident on each of them: its profile gives the engine's iteration time and each GPU's power, so
every GPU of the group books the same dynamic power and bandwidth. Its iterations run at the lowest
clock of the group (the collectives make every GPU wait for the slowest; assumption: the faster
GPUs' power is taken at that clock too) and are stretched by the worst bandwidth contention on any
of its GPUs. Each of its GPUs gives it an SM share of its own (its policy decides per GPU); the engine
runs at the least of them, in lockstep.

What an instance holds of its surroundings: its GPUs (sibling entities; the first one leads: requests
and SLO counters are booked there), the run's
:class:`~festgym.sim.events.EventQueue` (to schedule its own events), the run's
:class:`~festgym.sim.ledger.Ledger` (to book what it serves) and an :class:`InstanceHost`, the
declared interface of the two things only the simulator can do for it: unload it, and hand its
requests over to a migration target.
"""
from __future__ import annotations

import math
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Protocol

from mypy_extensions import mypyc_attr

from festgym.control.states import (
    PHASE_ASLEEP,
    PHASE_DECODE,
    PHASE_IDLE,
    PHASE_LOADING,
    PHASE_PREFILL,
    PHASE_RESTARTING,
    PHASE_UNLOADED,
)
from festgym.profiles.parallel import kv_cache_tokens
from festgym.sim.events import EventQueue
from festgym.sim.ledger import Counters, Ledger
from festgym.sim.queues import WaitingQueue
from festgym.sim.serving import ModelServing
from festgym.sim.slices import SliceCache
from festgym.sim.views import InstanceView

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.gpu import SimGpu


@mypyc_attr(allow_interpreted_subclasses=True)
class Seq:
    """A request inside an instance."""

    __slots__ = ("rid", "prompt", "todo", "out", "gen", "join_tok", "base", "cum0", "over0", "t_last", "order",
                 "key", "deadline_s", "ttft_slo_s", "e0", "energy_j")

    def __init__(self, rid: int, prompt: int, out: int, deadline_s: float, ttft_slo_s: float):
        self.rid = rid
        self.deadline_s = deadline_s  # when its first token is due: arrival + its TTFT SLO
        self.ttft_slo_s = ttft_slo_s  # its TTFT SLO (its model's, growing with its prompt)
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
        self.e0 = 0.0  # the instance's energy per decoding sequence when it joined the decoding set
        self.energy_j = 0.0  # its share of the iterations it ran in so far (the ledger takes it when it ends)


class InstanceHost(Protocol):
    """What an instance asks of the simulator that holds it: the cluster-wide changes it cannot
    make itself."""

    def unload(self, inst: Instance, now: float) -> None:
        """Remove ``inst`` from its GPU (drained, or handed over)."""

    def expired(self, inst: Instance, now: float) -> None:
        """``inst``'s keep-alive ran out: unload it, unless its policy keeps it resident."""

    def sleep(self, inst: Instance, now: float) -> None:
        """Put ``inst`` to sleep: its GPU memory is freed, its CUDA context stays."""

    def hand_over(self, src: Instance, now: float) -> None:
        """End ``src``'s migration: its requests move to its ready target, and ``src`` goes."""


@mypyc_attr(allow_interpreted_subclasses=True)
class Instance:
    """A model served on one GPU or a group of them, with its own queue, batch and KV cache."""

    __slots__ = ("host", "events", "ledger", "gpu", "peers", "shares_on", "model", "name", "serving", "slices",
                 "kv_tokens", "kv_seq", "weight_bytes", "share", "max_num_seqs", "phase", "version", "waiting",
                 "prefilling", "decoding", "heap", "tok", "ctx_base", "kv_prefill", "cum_gap", "cum_over", "t0", "n",
                 "g0", "dg", "chunk", "factor", "dyn_w", "hbm", "idle_version", "pending_share", "migrate_to",
                 "migrate_from", "drain", "cut", "orders", "prompt_todo", "counters", "peak_ttft_ratio", "peak_gap_s",
                 "last_arrival_s", "ready_at", "view", "tbt_s", "idle_w", "share_change_s", "keep_alive_s",
                 "sleep_after_s", "e_static_j", "e_dynamic_j", "e_loading_j", "a_static_w", "a_dynamic_w",
                 "a_loading_w", "peer_j", "peer_w", "t_energy", "energy_mark", "cum_energy")

    def __init__(self, host: InstanceHost, events: EventQueue, ledger: Ledger, group: list[SimGpu], model: int,
                 name: str, serving: ModelServing, slices: SliceCache, share: float, waiting: WaitingQueue,
                 share_change_s: float, keep_alive_s: float, sleep_after_s: float):
        self.host = host
        self.events = events
        self.ledger = ledger
        self.gpu = gpu = group[0]  # the lead
        self.peers = group[1:]  # the other GPUs of a multi-GPU engine
        self.shares_on = [share] * len(group)  # the share each of its GPUs gives it; it runs at the least
        self.model = model
        self.name = name
        self.serving = serving
        self.slices = slices
        spec = slices.profile.model
        self.weight_bytes = spec.weight_bytes
        # KV tokens of the full-attention layers; each sequence also reserves kv_seq for its window layers
        self.kv_tokens, self.kv_seq = kv_cache_tokens(slices.profile, serving.engine.kv_cache_gb * 1e9)
        self.share = share
        self.max_num_seqs = serving.engine.max_num_seqs
        self.tbt_s = serving.slo.tbt_s
        self.idle_w = gpu.spec.idle_w
        self.share_change_s = share_change_s  # an MPS engine restart for a new SM share (0: green contexts)
        self.keep_alive_s = keep_alive_s  # unloaded after this long with nothing to do (inf: never)
        self.sleep_after_s = sleep_after_s  # asleep after this long with nothing to do (inf: never)
        self.phase = PHASE_LOADING
        self.version = 0
        self.waiting = waiting
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
        self.counters = Counters()
        self.peak_ttft_ratio = 0.0  # largest TTFT / SLO since the last control tick
        self.peak_gap_s = 0.0  # longest inter-token gap since the last control tick
        self.last_arrival_s = -1.0
        self.ready_at = 0.0
        self.view = InstanceView(self)  # what policies see of it
        # Energy in ENERGY_PARTS (static, dynamic, loading), integrated up to t_energy, and the power
        # allotted now: the lead GPU's in floats (the hot path), the peers' in lists, three per GPU.
        self.e_static_j = self.e_dynamic_j = self.e_loading_j = 0.0
        self.a_static_w = self.a_dynamic_w = self.a_loading_w = 0.0
        self.peer_j = [0.0] * (3 * len(self.peers))
        self.peer_w = [0.0] * (3 * len(self.peers))
        self.t_energy = 0.0
        self.energy_mark = 0.0  # energy_at() when the iteration in flight started
        self.cum_energy = 0.0  # energy per decoding sequence, summed over the iterations so far

    # --- queries ----------------------------------------------------------------------------

    @property
    def group(self) -> list[SimGpu]:
        """Every GPU the engine spans, the lead first."""
        return [self.gpu] + self.peers

    @property
    def clock(self) -> float:
        """The clock its iterations run at: the lowest of its GPUs'."""
        clock = self.gpu.clock
        for gpu in self.peers:
            if gpu.clock < clock:
                clock = gpu.clock
        return clock

    def share_on(self, gpu: SimGpu) -> float:
        """The SM share ``gpu`` gives it (once a change under way is done); it runs at the least of its GPUs'."""
        return self.shares_on[self.group.index(gpu)] if self.peers else self.current_share

    def energy_at(self, now: float) -> float:
        """Energy drawn so far (J, every part, on every GPU of the engine)."""
        dt = now - self.t_energy
        total = (self.e_static_j + self.e_dynamic_j + self.e_loading_j
                 + (self.a_static_w + self.a_dynamic_w + self.a_loading_w) * dt)
        if self.peers:
            for e, w in zip(self.peer_j, self.peer_w):
                total += e + w * dt
        return total

    def allot(self, now: float, gpu: SimGpu, static_w: float, dynamic_w: float, loading_w: float) -> None:
        """``gpu`` gives it these parts of its power from ``now`` on (what it gave before is integrated)."""
        dt = now - self.t_energy
        if dt > 0.0:
            self.e_static_j += self.a_static_w * dt
            self.e_dynamic_j += self.a_dynamic_w * dt
            self.e_loading_j += self.a_loading_w * dt
            if self.peers:
                energy, watts = self.peer_j, self.peer_w
                for j in range(len(energy)):
                    energy[j] += watts[j] * dt
            self.t_energy = now
        if gpu is self.gpu:
            self.a_static_w, self.a_dynamic_w, self.a_loading_w = static_w, dynamic_w, loading_w
        else:
            i = 3 * self.peers.index(gpu)
            watts = self.peer_w
            watts[i], watts[i + 1], watts[i + 2] = static_w, dynamic_w, loading_w

    def energy_parts(self) -> list[float]:
        """Its ``ENERGY_PARTS`` on each GPU of the group, the lead first, up to its last allotment (J)."""
        return [self.e_static_j, self.e_dynamic_j, self.e_loading_j, *self.peer_j]

    def touch(self, now: float, changed: bool) -> None:
        """Bring every GPU of the engine up to ``now`` (``changed``: its running state changed)."""
        self.gpu.update(now, self if changed else None)
        for gpu in self.peers:
            gpu.update(now, self if changed else None)

    @property
    def kv_used(self) -> int:
        """KV-cache tokens in use: reserved for prompts being prefilled, the decoding contexts, and each
        sequence's window layers."""
        return (self.kv_prefill + self.ctx_base + len(self.decoding) * self.tok
                + (len(self.decoding) + len(self.prefilling)) * self.kv_seq)

    @property
    def ready(self) -> bool:
        """Loaded, awake and able to run."""
        return self.phase != PHASE_LOADING and self.phase != PHASE_UNLOADED and self.phase != PHASE_ASLEEP

    @property
    def mean_ctx(self) -> float:
        """Mean context of the decoding sequences (0 when none decodes)."""
        return (self.ctx_base + len(self.decoding) * self.tok) / max(len(self.decoding), 1)

    @property
    def current_share(self) -> float:
        """The SM share in force once a change under way is done."""
        return self.pending_share if self.pending_share is not None else self.share

    @property
    def empty(self) -> bool:
        return not (self.waiting or self.prefilling or self.decoding)

    def ttft_overdue(self, now: float) -> float:
        """Lateness so far of the requests here still waiting for their first token, in TTFT-SLO
        units (each request's own SLO)."""
        total = 0.0
        for queue in (self.waiting, self.prefilling):
            for seq in queue:
                if seq.gen == 0 and now > seq.deadline_s:
                    total += (now - seq.deadline_s) / seq.ttft_slo_s
        return total

    def prefill_time_s(self, tokens: float) -> float:
        """The time to prefill ``tokens`` prompt tokens alone at the current share and clock."""
        pre = self.slices.prefill(self.share, self.clock)
        return pre.at(pre.time_s, tokens)

    def book_gaps(self, batch: int, g0: float, dg: float, n: int) -> int:
        """Count ``batch`` sequences' gaps g0 + dg·j (j < n); return the steps over the TBT SLO."""
        top = g0 + dg * (n - 1) if dg > 0 else g0
        if top > self.peak_gap_s:
            self.peak_gap_s = top
        return self.counters.add_gaps(batch, g0, dg, n, self.tbt_s)

    # --- inputs -----------------------------------------------------------------------------

    def enqueue(self, seq: Seq, now: float) -> None:
        self._queue(seq)
        if self.phase == PHASE_IDLE:
            self.plan(now)
        elif self.phase == PHASE_DECODE:
            self.interrupt(now)

    def _queue(self, seq: Seq) -> None:
        """Join the waiting queue, where its discipline puts it."""
        self.prompt_todo += seq.todo
        self.waiting.push(seq, self)

    def interrupt(self, now: float) -> None:
        """Re-plan at the end of the iteration in flight (or now, if idle)."""
        if self.phase == PHASE_IDLE:
            self.plan(now)
        elif self.phase == PHASE_DECODE and not self.cut:
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
                self.events.schedule(self.t0 + self.n * g0 + dg * self.n * j / 2, self.on_event, self.version)

    # --- the event loop's entry ---------------------------------------------------------------

    def on_event(self, version: int, now: float) -> None:
        if version != self.version:
            return  # superseded by a cut
        if self.phase == PHASE_DECODE:
            self._end_decode(now)
        elif self.phase == PHASE_PREFILL:
            self._end_mixed(now)
        self.plan(now)

    def plan(self, now: float) -> None:
        """At an iteration boundary: hand over, pause or admit, then start the next iteration(s)."""
        if self.migrate_to is not None and self.migrate_to.phase != PHASE_LOADING:
            self.host.hand_over(self, now)
            return
        if self.pending_share is not None and self.share_change_s > 0:
            self._restart(now)
            return
        if self.pending_share is not None:
            self.share, self.pending_share = self.pending_share, None
        self._admit()
        if self.prefilling:
            self._start_mixed(now)
        elif self.decoding:
            self._start_decode(now)
        else:
            self._go(PHASE_IDLE, now)
            if self.empty:
                self.idle_version += 1
                if self.drain:
                    self.host.unload(self, now)
                elif self.migrate_from is None:  # a migration target waits for its hand-over
                    if self.sleep_after_s < self.keep_alive_s:
                        self.events.schedule(now + self.sleep_after_s, self.on_sleep, self.idle_version)
                    if self.keep_alive_s < math.inf:
                        self.events.schedule(now + self.keep_alive_s, self.on_expire, self.idle_version)

    def on_ready(self, _arg: object, now: float) -> None:
        """Cold start done."""
        self.phase = PHASE_IDLE
        self.touch(now, False)
        source = self.migrate_from
        if source is not None and source.phase != PHASE_UNLOADED:
            source.interrupt(now)  # hands over at its next boundary (now if it is idle)
        if self.phase == PHASE_IDLE:
            self.plan(now)

    def on_resume(self, _version: int, now: float) -> None:
        if self.pending_share is not None:
            self.share, self.pending_share = self.pending_share, None
        self.phase = PHASE_IDLE
        self.plan(now)

    def on_expire(self, idle_version: int, now: float) -> None:
        if idle_version == self.idle_version and (self.phase == PHASE_IDLE or self.phase == PHASE_ASLEEP) \
                and self.empty:
            self.host.expired(self, now)

    def on_sleep(self, idle_version: int, now: float) -> None:
        # A migration source stays awake: it hands over as soon as its target is ready.
        if idle_version == self.idle_version and self.phase == PHASE_IDLE and self.empty and not self.drain \
                and self.migrate_to is None:
            self.host.sleep(self, now)

    def _restart(self, now: float) -> None:
        """Restart the engine for its new SM share (MPS): its running requests lose their KV cache
        and are recomputed afterwards, ahead of the waiting queue."""
        running = list(self.decoding.values()) + list(self.prefilling)
        for seq in reversed(running):  # pushed to the front one by one: they keep their order
            self.ledger.recomputed(self.recompute(seq, now))
            self.waiting.push_front(seq)
            self.prompt_todo += seq.todo
        self.heap.clear()
        self._go(PHASE_RESTARTING, now)
        self.events.schedule(now + self.share_change_s, self.on_resume, self.version)

    # --- iterations ----------------------------------------------------------------------------

    def _go(self, phase: int, now: float, dyn_w: float = 0.0, hbm: float = 0.0) -> None:
        self.phase = phase
        self.dyn_w = dyn_w
        self.hbm = hbm
        self.touch(now, True)

    def _admit(self) -> None:
        waiting = self.waiting
        if not waiting:
            return
        limit = self.max_num_seqs
        batch = len(self.decoding)
        free = self.kv_tokens - self.kv_used - batch - len(self.prefilling)
        while waiting and batch + len(self.prefilling) < limit:
            seq = waiting.head()
            need = seq.prompt + 1 + self.kv_seq
            if need > free:
                break  # head-of-line: the head waits for KV space
            waiting.pop()
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
        clock = self.clock
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
        self._run(PHASE_PREFILL, now, time, power, hbm)
        self.events.schedule(now + self.g0, self.on_event, self.version)

    def _run(self, phase: int, now: float, time: float, power: float, hbm: float) -> None:
        """Start an iteration or a run whose first step takes ``time`` at contention factor 1."""
        self.hbm = hbm
        factor = self.gpu.hbm_demand(self)
        for gpu in self.peers:
            other = gpu.hbm_demand(self)
            if other > factor:
                factor = other
        factor = factor if factor > 1.0 else 1.0
        self.factor = factor
        self.t0 = now
        self.energy_mark = self.energy_at(now)
        self.g0 = time * factor
        self.version += 1
        self.cut = False
        self.phase = phase
        # Contention stretches the step; the same work's dynamic energy is spread over it.
        self.dyn_w = (power - self.idle_w) / factor
        self.touch(now, True)

    def _start_decode(self, now: float) -> None:
        heap, decoding = self.heap, self.decoding
        while not self._live(heap[0]):
            heappop(heap)  # left by a preemption
        batch = len(decoding)
        total = self.ctx_base + batch * self.tok
        room = (self.kv_tokens - self.kv_used) // batch
        if room < 1:
            self._preempt(now)
            self.plan(now)
            return
        ctx = total / batch
        dec = self.slices.decode(self.share, self.clock)
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
        self._run(PHASE_DECODE, now, a + b * c, pa + pb * c, ha + hb * c)
        self.dg = b * self.factor
        self.n = n
        self.events.schedule(now + n * self.g0 + self.dg * n * (n - 1) / 2, self.on_event, self.version)

    def _end_decode(self, now: float) -> None:
        n, g0, dg = self.n, self.g0, self.dg
        batch = len(self.decoding)
        self.tok += n
        self.cum_gap += n * g0 + dg * n * (n - 1) / 2
        self.cum_over += self.book_gaps(batch, g0, dg, n)
        self.cum_energy += (self.energy_at(now) - self.energy_mark) / batch
        self.ledger.decode_run(self.t0, g0, dg, n, batch, self.model)
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
        tokens = batch
        for _, take in self.chunk:
            tokens += take
        per_token = (self.energy_at(now) - self.energy_mark) / tokens
        if batch:
            self.cum_energy += per_token
            self.tok += 1
            self.cum_gap += duration
            self.cum_over += self.book_gaps(batch, duration, 0.0, 1)
            self.ledger.decode_run(self.t0, duration, 0.0, 1, batch, self.model)
            self._retire(now)
        for seq, take in self.chunk:
            seq.energy_j += take * per_token
            seq.todo -= take
            self.prompt_todo -= take
            if seq.todo == 0:
                self.prefilling.remove(seq)
                self.kv_prefill -= seq.prompt
                self._first_token(seq, now)
        self.chunk = []

    def _first_token(self, seq: Seq, now: float) -> None:
        if seq.gen == 0:
            self.ledger.first_token(seq.rid, now)
            late = (now - seq.deadline_s) / seq.ttft_slo_s
            if late + 1.0 > self.peak_ttft_ratio:
                self.peak_ttft_ratio = late + 1.0
            self.counters.add_first_token(late)
        else:  # resumed after a recompute: the gap since its last token counts
            gap = now - seq.t_last
            self.ledger.resumed(seq.rid, gap, self.book_gaps(1, gap, 0.0, 1))
        seq.gen += 1
        if seq.gen >= seq.out:
            self.ledger.finished(seq.rid, now, 0.0, 0, seq.energy_j)
            return
        tok = self.tok
        seq.join_tok = tok
        seq.base = seq.prompt + 1 - tok
        self.ctx_base += seq.base
        seq.cum0 = self.cum_gap
        seq.over0 = self.cum_over
        seq.e0 = self.cum_energy
        self.orders += 1
        seq.order = self.orders
        self.decoding[seq.rid] = seq
        heappush(self.heap, (tok + seq.out - seq.gen, seq.order, seq))

    def _leave(self, seq: Seq) -> tuple[float, int]:
        """Remove a decoding sequence and charge it its energy since it joined; return its gap sum and
        over-SLO count since then."""
        del self.decoding[seq.rid]
        self.ctx_base -= seq.base
        seq.energy_j += self.cum_energy - seq.e0
        return self.cum_gap - seq.cum0, self.cum_over - seq.over0

    def _finish(self, seq: Seq, now: float) -> None:
        gaps, over = self._leave(seq)
        seq.gen += self.tok - seq.join_tok
        self.ledger.finished(seq.rid, now, gaps, over, seq.energy_j)

    def _preempt(self, now: float) -> None:
        victim = next(reversed(self.decoding.values()))
        self.ledger.preempted(victim.rid, self.recompute(victim, now))
        self.waiting.push_front(victim)
        self.prompt_todo += victim.todo

    def recompute(self, seq: Seq, now: float) -> int:
        """Take a running sequence out so that it prefills its whole context again (vLLM's
        recompute; the gap until its next token counts as one inter-token gap). Returns the tokens
        whose work is lost."""
        if self.decoding.get(seq.rid) is seq:
            context = seq.base + self.tok
            gaps, over = self._leave(seq)
            seq.gen += self.tok - seq.join_tok
            self.ledger.gaps(seq.rid, gaps, over)
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
            self.ledger.recomputed(self.recompute(seq, now))
        out = running + list(self.waiting)
        self.waiting.clear()
        self.prompt_todo = 0
        self.heap.clear()
        return out
