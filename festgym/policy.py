"""The control interface between the simulator and every policy (rule-based, learned, or an env).

The simulator calls a :class:`Policy` at three moments:

* ``place(request, cluster)`` on each arrival: the GPU index to serve it on, or ``None`` to
  reject it. If the model has no instance on that GPU a cold start begins there (waking the GPU
  if parked) and the request waits for it; otherwise it joins that instance's queue.
* ``control(gpu, now)`` every control interval, for each GPU that is not parked: a
  :class:`GpuControl` (device clock, SM share per resident model, batch limits), or ``None`` to
  keep the current settings.
* ``consolidate(cluster, now)`` every consolidation interval: a list of :class:`Migrate`,
  :class:`Park`, :class:`Wake` and :class:`Unload` actions.

Policies see read-only views of live state (:class:`ClusterView`, :class:`GpuView`,
:class:`InstanceView`): properties only, no copies, so that a call costs microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence, runtime_checkable

from festgym.state_names import PHASE_NAMES, STATES

if TYPE_CHECKING:  # pragma: no cover
    from festgym.cluster_gpu import Gpu
    from festgym.instance import Instance
    from festgym.simulator import Simulator


# --- actions -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuControl:
    """Settings for one GPU; ``None`` fields keep their current value.

    ``clock_mhz`` snaps to the nearest supported clock. ``shares`` maps resident model names to
    SM shares in (0, 1] summing to at most 1. ``max_num_seqs`` caps each model's running batch
    (new admissions only; running sequences are not preempted for it).
    """

    clock_mhz: float | None = None
    shares: Mapping[str, float] | None = None
    max_num_seqs: Mapping[str, int] | None = None


@dataclass(frozen=True)
class Migrate:
    """Move ``model`` from GPU ``src`` to GPU ``dst``: the destination cold-starts while the
    source keeps serving, then the source's queue and running requests move over and the running
    ones are recomputed there (prompt and generated tokens prefilled again; KV is not copied)."""

    model: str
    src: int
    dst: int


@dataclass(frozen=True)
class Park:
    """Park the GPU as soon as it holds no instances (now, if empty)."""

    gpu: int


@dataclass(frozen=True)
class Wake:
    """Wake a parked GPU (it is awake after ``GpuSpec.wake_s``)."""

    gpu: int


@dataclass(frozen=True)
class Unload:
    """Unload ``model`` from ``gpu`` once its queue and batch are empty (no keep-alive wait)."""

    model: str
    gpu: int


Action = Migrate | Park | Wake | Unload


# --- views ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """What a policy knows about an arriving request (not its output length)."""

    rid: int
    model: str
    prompt_tokens: int
    arrival_s: float


class InstanceView:
    """Read-only view of one model instance."""

    __slots__ = ("_i",)

    def __init__(self, inst: "Instance"):
        self._i = inst

    model = property(lambda self: self._i.name, doc="Model name.")
    gpu = property(lambda self: self._i.gpu.index, doc="GPU index.")
    phase = property(lambda self: PHASE_NAMES[self._i.phase],
                     doc="loading, idle, prefill, decode, restarting or unloaded.")
    ready = property(lambda self: self._i.phase not in (0, 5), doc="Loaded and able to run.")
    share = property(lambda self: self._i.share, doc="SM share in (0, 1].")
    max_num_seqs = property(lambda self: self._i.max_num_seqs, doc="Batch limit in force (a policy may cap it).")
    engine_max_num_seqs = property(lambda self: self._i.serving.engine.max_num_seqs,
                                   doc="The engine's configured batch limit.")
    queue_len = property(lambda self: len(self._i.waiting), doc="Requests waiting for admission.")
    running = property(lambda self: len(self._i.decoding), doc="Sequences decoding.")
    prefilling = property(lambda self: len(self._i.prefilling), doc="Sequences with prompt tokens left.")
    prefill_tokens = property(lambda self: self._i.prompt_todo, doc="Prompt tokens not yet computed.")
    kv_used_frac = property(lambda self: self._i.kv_used / self._i.kv_tokens, doc="KV cache in use, 0..1.")
    kv_tokens = property(lambda self: self._i.kv_tokens, doc="KV cache capacity in tokens.")
    mean_ctx = property(lambda self: (self._i.ctx_base + len(self._i.decoding) * self._i.tok)
                        / max(len(self._i.decoding), 1), doc="Mean context of the decoding sequences.")
    slo = property(lambda self: self._i.serving.slo)
    token_budget = property(lambda self: self._i.serving.engine.max_num_batched_tokens,
                            doc="Engine token budget per iteration (prompt chunk size).")
    profile = property(lambda self: self._i.slices.profile)
    peak_ttft_ratio = property(lambda self: self._i.peak_ttft_ratio,
                               doc="Largest TTFT / TTFT SLO among first tokens since the last control tick.")
    peak_gap_s = property(lambda self: self._i.peak_gap_s, doc="Longest inter-token gap since the last control tick.")
    last_arrival_s = property(lambda self: self._i.last_arrival_s, doc="Time of the last request routed here.")

class GpuView:
    """Read-only view of one GPU."""

    __slots__ = ("_g",)

    def __init__(self, gpu: "Gpu"):
        self._g = gpu

    index = property(lambda self: self._g.index)
    spec = property(lambda self: self._g.spec, doc="The GpuSpec (type, clocks, memory, power).")
    state = property(lambda self: STATES[self._g.state], doc="busy, loading, idle, waking or parked.")
    clock_mhz = property(lambda self: self._g.clock, doc="Effective device SM clock.")
    power_w = property(lambda self: self._g.power_w, doc="Current power draw.")
    mem_free_gb = property(lambda self: (self._g.mem_bytes - self._g.mem_used) / 1e9)
    parked = property(lambda self: self._g.parked)

    @property
    def instances(self) -> tuple[InstanceView, ...]:
        return tuple(i.view for i in self._g.instances)

    @property
    def models(self) -> list[str]:
        """Names of the resident models (loading ones included)."""
        return [i.name for i in self._g.instances]

    def observe(self, slots: Sequence[int], now: float, clock_lo_mhz: float, period_s: float) -> list[float]:
        """This GPU as ``LocalGPU-v0`` observes it, with the models numbered ``slots`` (-1: an
        empty slot) as its model slots: how a trained local controller sees any GPU."""
        from festgym.envs.features import local_features  # the environments' feature definitions

        return local_features(self._g, list(slots), now, clock_lo_mhz, period_s)

    def instance(self, model: str) -> InstanceView | None:
        for inst in self._g.instances:
            if inst.name == model:
                return inst.view
        return None


class ClusterView:
    """Read-only view of the cluster."""

    __slots__ = ("_s",)

    def __init__(self, sim: "Simulator"):
        self._s = sim

    now = property(lambda self: self._s.now)
    control_interval_s = property(lambda self: self._s.config.control_interval_s)
    models = property(lambda self: self._s.model_names)

    @property
    def gpus(self) -> tuple[GpuView, ...]:
        return tuple(g.view for g in self._s.gpus)

    def gpu(self, index: int) -> GpuView:
        """One GPU's view (cheaper than indexing ``gpus``, which builds the whole tuple)."""
        return self._s.gpus[index].view

    @property
    def n_gpus(self) -> int:
        return len(self._s.gpus)

    def instances_of(self, model: str) -> tuple[InstanceView, ...]:
        """Instances of ``model`` (loading ones included), in GPU order."""
        return tuple(i.view for i in self._s.instances_of(model))

    def profile(self, gpu: int, model: str):
        """The profile of ``model`` on GPU ``gpu``'s type."""
        return self._s.slice_cache(self._s.gpus[gpu].spec.name, model).profile

    def slo(self, model: str):
        """The SLO ``model`` is served under."""
        return self._s.serving[model].slo

    def can_host(self, gpu: int, model: str) -> bool:
        """Whether ``model`` is resident on ``gpu`` or its weights and KV cache would fit there."""
        return self._s.can_host(gpu, model)


# --- the protocol --------------------------------------------------------------------------------

@runtime_checkable
class Policy(Protocol):
    """What the simulator calls. Subclass :class:`BasePolicy` to get no-op defaults.

    A policy may also set ``queue_order`` (``"fcfs"``, the default, or ``"llf"``: least laxity
    first), the discipline of every instance's waiting queue for the run.
    """

    name: str

    def reset(self, cluster: ClusterView) -> None: ...

    def place(self, request: Request, cluster: ClusterView) -> int | None: ...

    def control(self, gpu: GpuView, now: float) -> GpuControl | None: ...

    def consolidate(self, cluster: ClusterView, now: float) -> Sequence[Action]: ...


class BasePolicy:
    """No control and no consolidation; placement must be given by a subclass."""

    name = "base"
    queue_order = "fcfs"

    def reset(self, cluster: ClusterView) -> None:
        """Called at the start of every run."""

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        raise NotImplementedError

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        return None

    def consolidate(self, cluster: ClusterView, now: float) -> Sequence[Action]:
        return ()


def load_score(inst: InstanceView) -> float:
    """Outstanding work of an instance, in sequences (queued + running), over its batch limit."""
    return (inst.queue_len + inst.running + inst.prefilling) / inst.max_num_seqs


class LeastLoaded(BasePolicy):
    """Route to the least-loaded instance of the model; when every instance is over ``spawn_at``
    of its batch limit (or none exists), cold-start one on the emptiest GPU that can host it.
    Default clock, SM shares split evenly among resident models every control interval.

    It is the simulator's reference rule policy (tests, benchmarks, ``serve-bench``); the
    published baselines live in :mod:`festgym.policies`.
    """

    name = "least-loaded"

    def __init__(self, spawn_at: float = 0.75, clock_mhz: float | None = None):
        self.spawn_at = spawn_at
        self.clock_mhz = clock_mhz

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        best, best_score = None, float("inf")
        for inst in cluster.instances_of(request.model):
            score = load_score(inst)
            if score < best_score:
                best, best_score = inst.gpu, score
        if best is not None and best_score < self.spawn_at:
            return best
        spare = [g for g in cluster.gpus if g.instance(request.model) is None
                 and cluster.can_host(g.index, request.model)]
        if spare:
            return min(spare, key=lambda g: (len(g.instances), g.parked, g.index)).index
        return best

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        instances = gpu.instances
        share = 1.0 / max(len(instances), 1)
        shares = {i.model: share for i in instances if i.share != share}
        clock = self.clock_mhz or gpu.spec.default_sm_clock_mhz
        if not shares and clock == gpu.clock_mhz:
            return None
        return GpuControl(clock_mhz=clock, shares={i.model: share for i in instances} if shares else None)
