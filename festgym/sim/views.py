"""Read-only views of the simulator's live state: what a policy sees.

:class:`ClusterView`, :class:`GpuView` and :class:`InstanceView` are properties only, no copies,
so that a policy call costs microseconds; :class:`Request` is what a policy knows about an
arriving request (not its output length). Each view forwards to the documented members of the
entity it shows (:class:`~festgym.sim.instance.Instance`, :class:`~festgym.sim.gpu.SimGpu`,
:class:`~festgym.sim.simulator.Simulator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from festgym.control.states import PHASE_NAMES, STATES
from festgym.sim.node import NODE_STATES
from festgym.sim.observation import local_features

if TYPE_CHECKING:  # pragma: no cover
    from festgym.sim.gpu import SimGpu
    from festgym.sim.instance import Instance
    from festgym.sim.simulator import Simulator


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

    def __init__(self, inst: Instance):
        self._i = inst

    model = property(lambda self: self._i.name, doc="Model name.")
    gpu = property(lambda self: self._i.gpu.index, doc="GPU index (the lead GPU of a multi-GPU engine).")
    gpus = property(lambda self: tuple(g.index for g in self._i.group),
                    doc="Every GPU the engine spans, the lead first (one for a single-GPU engine).")
    phase = property(lambda self: PHASE_NAMES[self._i.phase],
                     doc="loading, idle, prefill, decode, restarting, unloaded or asleep.")
    ready = property(lambda self: self._i.ready, doc="Loaded, awake and able to run.")
    share = property(lambda self: self._i.share, doc="SM share in (0, 1] it runs at (of a multi-GPU engine: the "
                     "least its GPUs give it; GpuView.share_of gives one GPU's).")
    max_num_seqs = property(lambda self: self._i.max_num_seqs, doc="Batch limit in force (a policy may cap it).")
    engine_max_num_seqs = property(lambda self: self._i.serving.engine.max_num_seqs,
                                   doc="The engine's configured batch limit.")
    queue_len = property(lambda self: len(self._i.waiting), doc="Requests waiting for admission.")
    running = property(lambda self: len(self._i.decoding), doc="Sequences decoding.")
    prefilling = property(lambda self: len(self._i.prefilling), doc="Sequences with prompt tokens left.")
    prefill_tokens = property(lambda self: self._i.prompt_todo, doc="Prompt tokens not yet computed.")
    kv_used_frac = property(lambda self: self._i.kv_used / self._i.kv_tokens, doc="KV cache in use, 0..1.")
    kv_tokens = property(lambda self: self._i.kv_tokens, doc="KV cache capacity in tokens.")
    mean_ctx = property(lambda self: self._i.mean_ctx, doc="Mean context of the decoding sequences.")
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

    def __init__(self, gpu: SimGpu):
        self._g = gpu

    index = property(lambda self: self._g.index)
    spec = property(lambda self: self._g.spec, doc="The GpuSpec (type, clocks, memory, power).")
    state = property(lambda self: STATES[self._g.state],
                     doc="busy, loading, idle, asleep, empty, booting or off (festgym.control.states.STATES).")
    clock_mhz = property(lambda self: self._g.clock, doc="Effective device SM clock.")
    power_w = property(lambda self: self._g.power_w, doc="Current power draw.")
    mem_free_gb = property(lambda self: (self._g.mem_bytes - self._g.mem_used) / 1e9)
    parked = property(lambda self: self._g.parked, doc="Released: it may be powered off with its node.")
    node = property(lambda self: self._g.node.index if self._g.node is not None else 0, doc="Its node's index.")
    node_state = property(lambda self: NODE_STATES[self._g.node.state] if self._g.node is not None else "on",
                          doc="on, booting, shutting_down or off.")

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
        return local_features(self._g, list(slots), now, clock_lo_mhz, period_s)

    def instance(self, model: str) -> InstanceView | None:
        for inst in self._g.instances:
            if inst.name == model:
                return inst.view
        return None

    def share_of(self, model: str) -> float:
        """The SM share this GPU gives ``model`` (once a change under way is done): what its shares must
        sum to at most 1 with; a multi-GPU engine runs at the least of its GPUs' (``InstanceView.share``)."""
        for inst in self._g.instances:
            if inst.name == model:
                return inst.share_on(self._g)
        raise KeyError(f"{model!r} is not resident on GPU {self._g.index}")


class ClusterView:
    """Read-only view of the cluster."""

    __slots__ = ("_s",)

    def __init__(self, sim: Simulator):
        self._s = sim

    now = property(lambda self: self._s.now)
    control_interval_s = property(lambda self: self._s.config.control_interval_s)
    models = property(lambda self: self._s.model_names)
    share_mechanism = property(lambda self: self._s.config.share_mechanism,
                               doc="green-contexts (share changes are free) or mps (a change restarts the engine).")

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
        """Whether ``model`` is resident and awake on ``gpu``, or its weights and KV cache would fit
        there (to start it, or to wake it from sleep)."""
        return self._s.can_host(gpu, model)
