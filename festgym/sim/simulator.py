"""The cluster simulator: an event loop over arrivals, iteration boundaries and control ticks.

Events wait in an :class:`~festgym.sim.events.EventQueue` ordered by (time, insertion number), so
ties resolve in a fixed order and a run is deterministic: the same trace and policy give
bit-identical results. Cost grows with events (arrivals, prefill iterations, completions,
context-grid crossings, control calls), not with tokens: decode runs are advanced in closed form
(:mod:`festgym.sim.instance`).

The parts: the loop and the cluster's structure (placement, cold starts, unloading, migration,
carrying out policies' actions) are here; the entities (:class:`~festgym.sim.instance.Instance`,
:class:`~festgym.sim.gpu.SimGpu`) hold the event queue, the run's
:class:`~festgym.sim.ledger.Ledger` and, for instances, the simulator as an
:class:`~festgym.sim.instance.InstanceHost` (unload, hand over), nothing more of it.

Modelling assumptions are stated where they act: iteration timing in :mod:`festgym.sim.instance`,
power, states and bandwidth contention in :mod:`festgym.sim.gpu`, nodes and host power in
:mod:`festgym.sim.node`, cold starts, sleep and keep-alive in :mod:`festgym.sim.lifecycle`, actions in
:mod:`festgym.control.actions`. The policy's :class:`~festgym.sim.lifecycle.Mechanisms` (its
``mechanisms`` attribute; default: vLLM reload, no sleep) say how its engines load, sleep and expire.

Physics overrides (``physics``: GPU type → ``{latency|power|states: {constant: value}}``) replace
constants of the GPU specs for one run: a changed latency or power constant rebuilds the modelled
profiles' grids from it, a changed state constant only the idle states (the sensitivity analysis
runs through them, :mod:`festgym.jobs.sensitivity`).
"""

from __future__ import annotations

import copy
import time as wallclock
from array import array
from collections.abc import Callable, Mapping, Sequence
from heapq import heappop
from pathlib import Path
from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from festgym.control.actions import Action, GpuControl, Migrate, Park, Unload, Wake
from festgym.control.states import PHASE_ASLEEP, PHASE_IDLE, PHASE_LOADING, PHASE_UNLOADED
from festgym.errors import RangeError
from festgym.profiles.generate import with_physics
from festgym.profiles.parallel import kv_cache_tokens, weight_bytes_per_gpu
from festgym.profiles.profile import Profile, gpu_type_spec, load_profile
from festgym.profiles.specs import GpuSpec, NodeSpec
from festgym.sim.config import SimConfig
from festgym.sim.events import EventQueue
from festgym.sim.gpu import SimGpu
from festgym.sim.instance import Instance, Seq
from festgym.sim.ledger import (
    REJECTED_MEMORY,
    REJECTED_POLICY,
    REJECTED_TOO_LONG,
    Ledger,
)
from festgym.sim.lifecycle import Mechanisms, cold_start_s, wake_s
from festgym.sim.node import SimNode
from festgym.sim.policy import ActionError, Policy
from festgym.sim.queues import QUEUE_ORDERS, WaitingQueue
from festgym.sim.results import Result
from festgym.sim.serving import ModelServing
from festgym.sim.slices import SliceCache
from festgym.sim.views import ClusterView, Request
from festgym.sim.workload import Trace

TIMELINE_COLUMNS = ("t_s", "interval_s", "gpu", "power_w", "clock_mhz", "state", "instances")
"""The timeline's columns: per GPU and control interval (ending at ``t_s``, of ``interval_s``; the
last one of a run may be shorter), its mean power and, at the interval's end, its state."""
MAX_TIMELINE_ROWS = 50_000_000
"""Most GPU control intervals one run may book (about 2.8 GB of timeline): a guard against a
duration typed in the wrong unit, which would otherwise exhaust memory."""


def _column(typecode: str, values: np.ndarray) -> array[Any]:
    """A per-request column as a compact ``array``: the event loop reads it one item at a time,
    which costs less than a numpy scalar and takes less memory than a list."""
    out: array[Any] = array(typecode)
    out.frombytes(np.ascontiguousarray(values, dtype=np.float64 if typecode == "d" else np.int64).tobytes())
    return out


def _longest(profile: Profile, cache_bytes: float) -> int:
    """The longest request (prompt and output tokens) one engine's KV cache holds alone."""
    capacity, per_sequence = kv_cache_tokens(profile, cache_bytes)
    return capacity - per_sequence


@mypyc_attr(allow_interpreted_subclasses=True)
class Simulator:
    """A cluster of GPUs serving several models.

    Args:
        gpus: GPU type per GPU (profile folder names such as ``"H100-SXM-80GB"``).
        models: serving settings per model name; every (GPU type, model) pair needs a profile.
        config: simulator settings.
        profiles_root: profile folder (default: the user's profile folders, then the shipped ones).
        node: the node spec (name or :class:`NodeSpec`; default ``dgx-h100``); the GPUs form nodes of
            its ``gpus_per_node``, in order.
        physics: overrides of the GPU specs' constants, GPU type → section → constant → value.
        profiles: profiles built in memory (``festgym serve-bench --model-config``), used before the
            folders' for their keys.
    """

    def __init__(self, gpus: Sequence[str], models: Mapping[str, ModelServing] | Sequence[str],
                 config: SimConfig | None = None, profiles_root: str | Path | None = None,
                 node: NodeSpec | str = "dgx-h100", physics: Mapping[str, Mapping[str, Any]] | None = None,
                 profiles: Sequence[Profile] = ()):
        if not gpus:
            raise ValueError("Simulator needs at least one GPU")
        if not models:
            raise ValueError("Simulator needs at least one model")
        if not isinstance(models, Mapping):
            models = {name: ModelServing() for name in models}
        self.config = config or SimConfig()
        self.gpu_types = tuple(gpus)
        self.model_names = tuple(models)
        self.serving = dict(models)
        self.node_spec = node if isinstance(node, NodeSpec) else NodeSpec.load(node)
        physics = dict(physics or {})
        unknown = sorted(set(physics) - set(self.gpu_types))
        if unknown:
            raise ValueError(f"physics overrides for {', '.join(unknown)}: not a GPU type of this cluster "
                             f"({', '.join(dict.fromkeys(self.gpu_types))})")
        self._slices: dict[tuple[str, str], SliceCache] = {}
        given = {p.key: p for p in profiles}
        for gpu_type in dict.fromkeys(self.gpu_types):
            for model in self.model_names:
                key = f"{gpu_type}/{model}"
                profile = given[key] if key in given else load_profile(key, profiles_root)
                if gpu_type in physics:
                    profile = with_physics(profile, physics[gpu_type])
                self._slices[(gpu_type, model)] = SliceCache(profile)
        self._span = {key: c.profile.parallel.gpus for key, c in self._slices.items()}
        self._check_groups()
        # One GPU type, one device: its models' profiles must agree on it (not the first one's memory_gb for all).
        self.specs: dict[str, GpuSpec] = {t: gpu_type_spec([self._slices[(t, m)].profile for m in self.model_names])
                                          for t in self.gpu_types}
        self._kv_tokens = {key: _longest(c.profile, self.serving[key[1]].engine.kv_cache_gb * 1e9)
                           for key, c in self._slices.items()}
        # Per GPU of an engine: its share of the weights, and of the KV cache (kv_cache_gb is the engine's).
        self._memory = {(t, i): float(weight_bytes_per_gpu(self._slices[(t, m)].profile)
                                      + self.serving[m].engine.kv_cache_gb * 1e9 / self._span[(t, m)])
                        for t in self.specs for i, m in enumerate(self.model_names)}
        self.view = ClusterView(self)

    def _check_groups(self) -> None:
        """Every block of GPUs a multi-GPU engine may take lies in one node and is of one GPU type."""
        per = self.node_spec.gpus_per_node
        for (gpu_type, model), span in self._span.items():
            if span == 1:
                continue
            if per % span:
                raise ValueError(f"{model} spans {span} GPUs, which does not divide the {per} GPUs of a "
                                 f"{self.node_spec.name} node: an engine's GPUs must lie in one node")
            for start in range(0, len(self.gpu_types), span):
                types = set(self.gpu_types[start:start + span])
                if gpu_type in types and (len(types) > 1 or start + span > len(self.gpu_types)):
                    raise ValueError(f"{model} spans {span} GPUs: GPUs {start}..{start + span - 1} are not "
                                     f"{span} GPUs of type {gpu_type} (the cluster lists {len(self.gpu_types)}: "
                                     "give a multiple of the span, one type per block)")

    # --- public -------------------------------------------------------------------------------

    def slice_cache(self, gpu_type: str, model: str) -> SliceCache:
        return self._slices[(gpu_type, model)]

    def profile(self, gpu_type: str, model: str) -> Profile:
        return self._slices[(gpu_type, model)].profile

    def run(self, trace: Trace, policy: Policy, progress: Callable[[float], None] | None = None) -> Result:
        """Serve ``trace`` under ``policy`` for the trace's duration plus ``drain_s``."""
        self.start(trace, policy)
        self.advance(self.end, progress=progress)
        return self.result()

    def start(self, trace: Trace, policy: Policy) -> None:
        """Begin a run; then :meth:`advance` it (in steps, as environments do) and take its :meth:`result`."""
        missing = [m for m in trace.models if m not in self.serving]
        if missing:
            raise ValueError(f"trace models {', '.join(missing)} are not served; served: {', '.join(self.model_names)}")
        self._wall = 0.0
        self._reset(trace, policy)

    def advance(self, until: float, hold_arrivals: bool = False,
                progress: Callable[[float], None] | None = None) -> int | None:
        """Process every event before ``until`` (capped at the horizon), then stop at ``until``.

        With ``hold_arrivals`` it stops *before* the next arrival instead and returns its request
        index (``self.now`` is then that arrival's time); the next call places it with the
        policy first. Returns ``None`` when it reached ``until``.
        """
        started = wallclock.perf_counter()
        try:
            return self._loop(min(until, self.end), hold_arrivals, progress)
        finally:
            self._wall += wallclock.perf_counter() - started

    def result(self) -> Result:
        """Integrate energy up to now and build the :class:`Result` (the run covers 0..now)."""
        self.end = self.now
        self._close_interval(self.now)  # the last, possibly shorter, interval (it updates every GPU)
        return Result.build(self, self.trace, getattr(self.policy, "name", type(self.policy).__name__), self._wall)

    # --- set-up --------------------------------------------------------------------------------

    def _reset(self, trace: Trace, policy: Policy) -> None:
        cfg = self.config
        self.now = 0.0
        self.end = trace.duration_s + cfg.drain_s
        intervals = self.end / cfg.control_interval_s
        if intervals * len(self.gpu_types) > MAX_TIMELINE_ROWS:
            raise RangeError("Simulator", "horizon_s", self.end,
                             f"at most {MAX_TIMELINE_ROWS:,} GPU control intervals in all ({intervals:.3g} intervals "
                             f"of {cfg.control_interval_s:g} s on {len(self.gpu_types)} GPUs asked): a shorter "
                             "duration, or a longer sim.control_interval_s")
        self.events = EventQueue()
        self.policy = policy
        order = getattr(policy, "queue_order", "fcfs")
        if order not in QUEUE_ORDERS:
            raise ValueError(f"policy {getattr(policy, 'name', policy)!r}: queue_order {order!r}; "
                             f"expected one of {', '.join(QUEUE_ORDERS)}")
        self.queue_type: type[WaitingQueue] = QUEUE_ORDERS[order]
        self.trace = trace
        self._arrivals: array[float] = _column("d", trace.arrival_s)
        self._next = 0  # index of the next arrival
        self._held = -1  # an arrival returned by advance(hold_arrivals=True), placed on the next call
        self.gpus = [SimGpu(self.events, i, self.specs[t], cfg.gpu_memory_utilization, cfg.contention_tol)
                     for i, t in enumerate(self.gpu_types)]
        per = self.node_spec.gpus_per_node
        self.nodes = [SimNode(self.events, k, self.node_spec, self.gpus[k * per:(k + 1) * per], cfg.node_off_after_s)
                      for k in range((len(self.gpus) + per - 1) // per)]
        mechanisms = getattr(policy, "mechanisms", Mechanisms())
        if not isinstance(mechanisms, Mechanisms):
            raise ValueError(f"policy {getattr(policy, 'name', policy)!r}: mechanisms must be a "
                             f"festgym.sim.lifecycle.Mechanisms, got {mechanisms!r}")
        self.mechanisms = mechanisms
        self.sleeps = self.wakes = 0
        self.by_model: dict[int, list[Instance]] = {i: [] for i in range(len(self.model_names))}
        # trace model index -> simulator model index
        self.trace_model = np.array([self.model_names.index(m) for m in trace.models], dtype=np.int64)
        self.ledger = Ledger(trace)
        # TTFT SLO of every request (its model's, growing with its prompt), computed once
        slo = [self.serving[m].slo for m in self.model_names]
        model = self.trace_model[trace.model]
        base = np.array([x.ttft_s for x in slo])[model] if len(trace) else np.zeros(0)
        per_1k = np.array([x.ttft_per_1k_tokens_s for x in slo])[model] if len(trace) else np.zeros(0)
        limit = base + per_1k * trace.prompt_tokens / 1000
        self.ttft_limit_s: array[float] = _column("d", limit)
        self.deadline_s: array[float] = _column("d", trace.arrival_s + limit)
        self._req_model: array[int] = _column("q", model)
        self._req_prompt: array[int] = _column("q", trace.prompt_tokens)
        self._req_out: array[int] = _column("q", trace.output_tokens)
        self.timeline = {k: array("d") for k in TIMELINE_COLUMNS}
        self._tick_energy = [0.0] * len(self.gpus)
        self._tick_s = 0.0  # start of the control interval under way
        self._foreseeing = False  # inside the policy's foresee hook (fork() then runs the tick in the copy)
        self.events.schedule(0.0, self._tick, None)
        self.events.schedule(self.config.consolidate_interval_s, self._consolidate, None)
        policy.reset(self.view)

    # --- forks -------------------------------------------------------------------------------

    def fork(self, policy: Policy) -> Simulator:
        """A copy of this run at this moment that goes on on its own under a copy of ``policy``:
        what a planner with foresight rolls candidate actions forward in
        (:mod:`festgym.policies.clairvoyant`). ``policy`` is copied together with the run, so that
        what it holds of the run (views, instances) is the copy's (the run's own policy, copied
        too, is then replaced by it). The profiles, their slice caches (of pure functions), the
        trace, the settings and the per-request constants are shared, not copied; the copy's
        timeline starts empty (the intervals booked so far stay here).

        Call it between events: from :meth:`advance`'s caller, or from the hook
        ``policy.foresee(simulator, now)`` that the run calls at the start of every control tick
        when its policy has one. From the hook, the copy has already run that tick under its own
        policy, so that it stands where this run will stand after the tick. Either way the copy
        then advances exactly as this run would under the same decisions (tested bit for bit).
        """
        memo: dict[int, Any] = {id(x): x for x in self._read_only()}
        timeline = self.timeline
        self.timeline = {k: array("d") for k in TIMELINE_COLUMNS}
        try:
            twin, twin_policy = copy.deepcopy((self, policy), memo)
        finally:
            self.timeline = timeline
        twin.policy = twin_policy
        if self._foreseeing:  # the tick under way: the copy runs it with its policy
            twin._foreseeing = False
            twin._tick(None, self.now)
        return twin

    def _read_only(self) -> list[object]:
        """What a fork shares with this run: nothing changes these during a run, or they cache pure functions."""
        shared: list[object] = [self.trace, self.config, self.node_spec, self.serving, self.specs, self._slices,
                                self._arrivals, self.ttft_limit_s, self.deadline_s, self._req_model, self._req_prompt,
                                self._req_out, self.trace_model, self.mechanisms, self.queue_type,
                                *self.serving.values(), *self.specs.values()]
        for cache in self._slices.values():
            shared += [cache, cache.profile, *cache.held()]
        return shared

    # --- the loop ---------------------------------------------------------------------------------

    def _loop(self, until: float, hold: bool, progress: Callable[[float], None] | None) -> int | None:
        heap = self.events.heap
        arrivals = self._arrivals
        n = len(arrivals)
        i = self._next
        next_report = self.now
        inf = float("inf")
        try:
            while True:
                t_arr = arrivals[i] if i < n else inf
                if heap and heap[0][0] <= t_arr:
                    t = heap[0][0]
                    if t >= until:
                        break
                    _, _, fn, arg = heappop(heap)
                    self.now = t
                    fn(arg, t)
                else:
                    if t_arr >= until:
                        break
                    self.now = t_arr
                    if hold and self._held != i:
                        self._held = i
                        return i
                    self._arrive(i, t_arr)
                    i += 1
                    self._next = i  # current for a fork taken inside an event (Simulator.fork)
                if self.ledger.open == 0 and i == n and self.config.stop_when_done:
                    until = self.now
                    break
                if progress is not None and self.now >= next_report:
                    progress(min(self.now / self.end, 1.0))
                    next_report = self.now + self.end / 200
            self.now = until
        finally:
            self._next = i
        if progress is not None:
            progress(1.0)
        return None

    def _arrive(self, rid: int, now: float) -> None:
        ledger = self.ledger
        model = self._req_model[rid]
        name = self.model_names[model]
        prompt, out = self._req_prompt[rid], self._req_out[rid]
        ledger.arrived(rid, model)
        target = self.policy.place(Request(rid, name, prompt, now), self.view)
        if target is None:
            ledger.rejected(rid, self._refusal(model, prompt + out))
            return
        gpu = self.lead(self._gpu(target, "place"), model)
        inst = gpu.instance_of(model)
        if prompt + out > self._kv_tokens[(gpu.spec.name, name)]:
            self._turned_away(rid, gpu, model, REJECTED_TOO_LONG)
            return
        if inst is not None and inst.phase == PHASE_ASLEEP and not self.wake_instance(inst, now):
            self.unload(inst, now)  # its memory was taken: start afresh
            inst = None
        if inst is None:
            inst = self.cold_start(gpu, model, now)
            if inst is None:
                self._turned_away(rid, gpu, model, REJECTED_MEMORY)
                return
        ledger.placed(rid, gpu.index, inst.phase == PHASE_LOADING)
        inst.last_arrival_s = now
        inst.enqueue(Seq(rid, prompt, out, self.deadline_s[rid], self.ttft_limit_s[rid]), now)

    def _turned_away(self, rid: int, gpu: SimGpu, model: int, status: int) -> None:
        """The GPU a request was sent to cannot serve it. Its SLO counters book it as a first token
        a cold start of its model there past its deadline (what waiting for an engine to start
        costs), so that refusing never avoids lateness; in ``count`` mode it is one late first
        token, as a served late one is. A refusal by the policy itself (``place`` returned None) is
        booked on no GPU: no environment's agent refuses, only background policies do."""
        self.ledger.rejected(rid, status)
        gpu.retired.add_rejected(self.load_time_s(gpu, model) / self.ttft_limit_s[rid])

    def _refusal(self, model: int, tokens: int) -> int:
        """Why a request the policy turned away could not be served: a cause of the cluster's
        (too long for every GPU's KV cache, no GPU with an instance or the memory for one) where there
        is one, so that every policy books the same request under the same reason; else the policy's."""
        name = self.model_names[model]
        fits = [g for g in self.gpus if tokens <= self._kv_tokens[(g.spec.name, name)]]
        if not fits:
            return REJECTED_TOO_LONG
        if not any(self.can_host(g.index, name) for g in fits):
            return REJECTED_MEMORY
        return REJECTED_POLICY

    def _gpu(self, index: object, what: str) -> SimGpu:
        if isinstance(index, (bool, float)) or not isinstance(index, (int, np.integer)) \
                or not 0 <= index < len(self.gpus):
            raise ActionError(f"{what}: GPU index {index!r} is not one of 0..{len(self.gpus) - 1}")
        return self.gpus[int(index)]

    # --- instances ----------------------------------------------------------------------------

    def instances_of(self, model: str) -> list[Instance]:
        return self.by_model[self.model_names.index(model)]

    def memory_of(self, gpu: SimGpu, model: int) -> float:
        """Bytes ``model`` takes on ``gpu`` (on each GPU of a multi-GPU engine): weights plus KV cache."""
        return self._memory[(gpu.spec.name, model)]

    def block(self, gpu: SimGpu, model: int) -> list[SimGpu]:
        """The GPUs an engine of ``model`` placed on ``gpu`` spans: ``gpu`` alone, or the aligned block of
        its node holding it (GPUs 0-3 or 4-7 of a node for 4; checked at construction to be one type)."""
        span = self._span[(gpu.spec.name, self.model_names[model])]
        if span == 1:
            return [gpu]
        start = gpu.index - gpu.index % span
        return self.gpus[start:start + span]

    def lead(self, gpu: SimGpu, model: int) -> SimGpu:
        """The GPU leading the block of ``gpu`` for ``model`` (where its engine is booked)."""
        return self.block(gpu, model)[0]

    def _fits(self, group: list[SimGpu], model: int) -> bool:
        return all(g.mem_used + self.memory_of(g, model) <= g.mem_bytes for g in group)

    def can_host(self, gpu_index: int, model: str) -> bool:
        """Whether a request for ``model`` on the GPU finds an awake instance there, or the memory
        to wake an asleep one or to start one (on every GPU of its block, for a multi-GPU engine)."""
        index = self.model_names.index(model)
        group = self.block(self.gpus[gpu_index], index)
        inst = group[0].instance_of(index)
        return (inst is not None and inst.phase != PHASE_ASLEEP) or self._fits(group, index)

    def load_time_s(self, gpu: SimGpu, model: int, source: str | None = None) -> float:
        """How long ``model`` takes to start on ``gpu`` (any GPU of its block) once it is awake: its
        weights in from ``source`` (default: the scenario's ``weights_from``), then the engine's
        initialisation. Each GPU of an engine loads its own slice over its own link; from disk
        they share the node's drive, so the whole model is read."""
        name = self.model_names[model]
        profile = self._slices[(gpu.spec.name, name)].profile
        cfg = self.config
        source = cfg.weights_from if source is None else source
        init_s = self.serving[name].engine.init_s
        init_s = cfg.init_s if init_s is None else init_s
        weights = weight_bytes_per_gpu(profile) if source == "dram" else float(profile.model.weight_bytes)
        return cold_start_s(weights, self.mechanisms.loader, source, gpu.spec.host_to_gpu_gbps, init_s)

    def cold_start(self, gpu: SimGpu, model: int, now: float) -> Instance | None:
        """Load ``model`` on ``gpu``'s block (waking its GPUs if parked); ``None`` if it does not fit."""
        group = self.block(gpu, model)
        gpu = group[0]
        if not self._fits(group, model):
            return None
        name = self.model_names[model]
        awake = max(g.wake(now) for g in group)
        slices = self._slices[(gpu.spec.name, name)]
        crowd = max(len(g.instances) for g in group)
        share = 1.0 / (crowd + 1)
        cfg, mech = self.config, self.mechanisms
        # MPS: a new share restarts the engine (weights again from the page cache, initialisation again)
        restart_s = self.load_time_s(gpu, model, "dram") if cfg.share_mechanism == "mps" else 0.0
        inst = Instance(self, self.events, self.ledger, group, model, name, self.serving[name], slices, share,
                        self.queue_type(), restart_s, mech.keep_alive(cfg.keep_alive_s),
                        mech.sleep_after_s if mech.sleep_level else float("inf"))
        for g in group:  # make room on each GPU: scale the others down
            taken = sum(i.share_on(g) for i in g.instances)
            if taken > 1.0 - share + 1e-12:
                for other in g.instances:
                    self.set_share_on(other, g, other.share_on(g) * (1.0 - share) / taken, now)
        for g in group:
            g.instances.append(inst)
            g.mem_used += self.memory_of(g, model)
        gpu.cold_starts += 1
        self.by_model[model].append(inst)
        inst.ready_at = awake + self.load_time_s(gpu, model)
        self.events.schedule(inst.ready_at, inst.on_ready, None)
        inst.touch(now, False)
        return inst

    def expired(self, inst: Instance, now: float) -> None:
        if self.mechanisms.always_resident and len(self.by_model[inst.model]) == 1:
            return  # its policy keeps one engine per model loaded
        self.unload(inst, now)

    def sleep(self, inst: Instance, now: float) -> None:
        inst.phase = PHASE_ASLEEP
        inst.version += 1
        for gpu in inst.group:
            gpu.mem_used -= self.memory_of(gpu, inst.model)
        inst.touch(now, False)
        self.sleeps += 1

    def wake_instance(self, inst: Instance, now: float) -> bool:
        """Wake an asleep instance (its memory back, its weights copied in); False if the memory
        it freed has been taken meanwhile."""
        group = inst.group
        if not self._fits(group, inst.model):
            return False
        for gpu in group:
            gpu.mem_used += self.memory_of(gpu, inst.model)
        mech = self.mechanisms
        inst.phase = PHASE_LOADING
        # Each GPU copies its own slice of the weights back over its own link, at once.
        inst.ready_at = now + wake_s(weight_bytes_per_gpu(inst.slices.profile), mech.sleep_level, mech.loader,
                                     inst.gpu.spec.host_to_gpu_gbps)
        self.events.schedule(inst.ready_at, inst.on_ready, None)
        inst.touch(now, False)
        self.wakes += 1
        return True

    def unload(self, inst: Instance, now: float) -> None:
        if inst.migrate_from is not None:  # a migration target unloaded early: the source stays
            inst.migrate_from.migrate_to = None
            inst.migrate_from = None
        target = inst.migrate_to
        if target is not None:  # a source gone before its hand-over: the target serves on its own
            inst.migrate_to, target.migrate_from = None, None
            if target.phase == PHASE_IDLE:
                target.plan(now)  # its idle timers start now
        asleep = inst.phase == PHASE_ASLEEP  # asleep, it holds no memory
        inst.phase = PHASE_UNLOADED
        inst.version += 1
        inst.gpu.retired.add(inst.counters)
        self.by_model[inst.model].remove(inst)
        for gpu in inst.group:
            if not asleep:
                gpu.mem_used -= self.memory_of(gpu, inst.model)
            inst.allot(now, gpu, 0.0, 0.0, 0.0)  # its energy there ends now
            gpu.instances.remove(inst)
            gpu.update(now, inst)
        self.ledger.instance_gone(inst.model, [g.index for g in inst.group], inst.energy_parts())
        for gpu in inst.group:
            if gpu.park_when_empty and not gpu.instances:
                gpu.park(now)

    def hand_over(self, src: Instance, now: float) -> None:
        """End of a migration: the source's requests move to the destination (recomputed)."""
        dst = src.migrate_to
        assert dst is not None  # hand_over runs only while a migration is under way
        seqs = src.take_all(now)
        self.ledger.migrated([seq.rid for seq in seqs], dst.gpu.index)
        dst.receive(seqs)
        dst.migrate_from = None
        self.unload(src, now)
        if dst.phase == PHASE_IDLE:
            dst.plan(now)

    def set_share_on(self, inst: Instance, gpu: SimGpu, share: float, now: float) -> None:
        """``gpu`` gives ``inst`` ``share``; a multi-GPU engine then runs at the least of its GPUs' shares."""
        if inst.peers:
            inst.shares_on[inst.group.index(gpu)] = share
            share = min(inst.shares_on)
        self.set_share(inst, share, now)

    def set_share(self, inst: Instance, share: float, now: float) -> None:
        if inst.phase == PHASE_LOADING:  # it starts with this share: nothing pending is left to apply
            inst.share, inst.pending_share = share, None
        elif share != inst.share or inst.pending_share is not None:
            inst.pending_share = share
            inst.interrupt(now)

    # --- policy calls -------------------------------------------------------------------------

    def _close_interval(self, now: float) -> None:
        """Bring every GPU up to ``now`` and book its power over the control interval ending then."""
        for gpu in self.gpus:
            gpu.update(now)
        for node in self.nodes:
            node.update(now)
        length = now - self._tick_s
        if length <= 0:
            return
        line = self.timeline
        for gpu in self.gpus:
            total = gpu.energy_total_j
            line["t_s"].append(now)
            line["interval_s"].append(length)
            line["gpu"].append(gpu.index)
            line["power_w"].append((total - self._tick_energy[gpu.index]) / length)
            line["clock_mhz"].append(gpu.clock)
            line["state"].append(gpu.state)
            line["instances"].append(len(gpu.instances))
            self._tick_energy[gpu.index] = total
        self._tick_s = now

    def _tick(self, _arg: object, now: float) -> None:
        foresee = getattr(self.policy, "foresee", None)
        if foresee is not None:  # a planner with foresight: it may fork the run here, before the tick
            self._foreseeing = True
            try:
                foresee(self, now)
            finally:
                self._foreseeing = False
        interval = self.config.control_interval_s
        self._close_interval(now)  # updates every GPU to now
        for gpu in self.gpus:
            if not gpu.parked:
                control = self.policy.control(gpu.view, now)
                if control is not None:
                    self.apply_control(gpu, control, now)
        for gpu in self.gpus:  # after every GPU's control: each GPU of a multi-GPU engine sees its peaks
            for inst in gpu.instances:
                inst.peak_ttft_ratio = inst.peak_gap_s = 0.0
        if now + interval <= self.end + 1e-9:
            self.events.schedule(now + interval, self._tick, None)

    def apply_control(self, gpu: SimGpu, control: GpuControl, now: float) -> None:
        if control.shares is not None:
            resident = {i.name: i for i in gpu.instances}
            for name, share in control.shares.items():
                if name not in resident:
                    raise ActionError(f"GpuControl.shares: model {name!r} is not resident on GPU {gpu.index} "
                                      f"(resident: {', '.join(resident) or 'none'})")
                if not 0 < share <= 1:
                    raise ActionError(f"GpuControl.shares[{name!r}] = {share!r}: must lie in (0, 1]")
            final = {n: control.shares.get(n, i.share_on(gpu)) for n, i in resident.items()}
            if sum(final.values()) > 1 + 1e-9:
                raise ActionError(f"GpuControl.shares on GPU {gpu.index}: shares sum to "
                                  f"{sum(final.values()):.4f} > 1 ({final})")
            # Shrink before growing, so that the shares never sum above 1 on the way.
            for name, share in sorted(control.shares.items(),
                                      key=lambda kv: kv[1] - resident[kv[0]].share_on(gpu)):
                self.set_share_on(resident[name], gpu, float(share), now)
        if control.max_num_seqs is not None:
            for name, limit in control.max_num_seqs.items():
                inst = next((i for i in gpu.instances if i.name == name), None)
                if inst is None or not isinstance(limit, (int, np.integer)) or limit < 1:
                    raise ActionError(f"GpuControl.max_num_seqs[{name!r}] = {limit!r}: needs a resident model "
                                      "and a whole number ≥ 1")
                raised = limit > inst.max_num_seqs
                inst.max_num_seqs = int(limit)
                if raised and inst.waiting:
                    inst.interrupt(now)
        if control.clock_mhz is not None:
            try:
                gpu.request_clock(float(control.clock_mhz), now, self.config.clock_change_s)
            except ValueError as exc:
                raise ActionError(f"GpuControl.clock_mhz: {exc}") from None

    def _consolidate(self, _arg: object, now: float) -> None:
        for action in self.policy.consolidate(self.view, now) or ():
            self.apply_action(action, now)
        self.events.schedule(now + self.config.consolidate_interval_s, self._consolidate, None)

    def apply_action(self, action: Action, now: float) -> None:
        if isinstance(action, Park):
            self._gpu(action.gpu, "Park").park(now)
        elif isinstance(action, Wake):
            self._gpu(action.gpu, "Wake").wake(now)
        elif isinstance(action, Unload):
            inst = self._resident(action.model, action.gpu, "Unload")
            inst.drain = True
            if (inst.phase == PHASE_IDLE or inst.phase == PHASE_ASLEEP) and inst.empty:
                self.unload(inst, now)
        elif isinstance(action, Migrate):
            src = self._resident(action.model, action.src, "Migrate")
            dst = self.lead(self._gpu(action.dst, "Migrate"), src.model)
            if src.phase == PHASE_ASLEEP:  # nothing runs or waits there: the move is an unload
                self.unload(src, now)
                return
            if dst.instance_of(src.model) is not None:
                last = dst.index + len(self.block(dst, src.model)) - 1
                raise ActionError(f"{action}: {action.model} is already on GPU {action.dst}"
                                  + (f" (its engine spans GPUs {dst.index}..{last})" if src.peers else ""))
            if src.migrate_to is not None:
                return  # already moving
            target = self.cold_start(dst, src.model, now)
            if target is None:
                self.ledger.action_refused()
                return
            target.migrate_from, src.migrate_to = src, target
        else:
            raise ActionError(f"unknown action {action!r}; expected Migrate, Park, Wake or Unload")

    def _resident(self, model: str, gpu_index: int, what: str) -> Instance:
        gpu = self._gpu(gpu_index, what)
        if model not in self.model_names:
            raise ActionError(f"{what}: unknown model {model!r}")
        inst = gpu.instance_of(self.model_names.index(model))
        if inst is None:
            raise ActionError(f"{what}: model {model!r} is not resident on GPU {gpu_index}")
        return inst
