"""How one engine spreads a model over the GPUs of a node: tensor and expert parallelism.

A :class:`Parallel` plan is part of a profile (``profile.yaml``'s ``parallel``): the profile's
grids give the time of one iteration of the whole engine and the power of *each* of its GPUs (they
all run the same kernels on their slice). Conventions, as vLLM's:

* **Tensor parallel** ``tp``: every layer's weights, its attention heads and the KV cache are split
  over ``tp`` GPUs; two all-reduces of the layer's activations per layer. KV heads fewer than ``tp``
  are replicated (a GPU holds at least one).
* **Expert parallel** ``ep`` (MoE only; 1: the experts are split by tensor parallelism like the rest):
  the routed experts are split over ``ep`` GPUs; attention and
  the dense layers run data-parallel on ``ep / tp`` replicas of ``tp`` GPUs each, each replica
  holding a full copy of the non-expert weights and its own share of the batch; tokens travel to
  their experts and back by two all-to-alls per MoE layer.

An engine spans ``gpus = max(tp, ep)`` GPUs, always of one node (collectives run on its NVLink).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from festgym.errors import SpecError
from festgym.profiles.collectives import Collectives
from festgym.profiles.specs import GpuSpec, NodeSpec

if TYPE_CHECKING:  # pragma: no cover
    from festgym.profiles.models import ModelSpec
    from festgym.profiles.profile import Profile

MAX_GPUS = 8
"""GPUs one engine may span: one HGX/DGX board (multi-node engines are not modelled)."""


@dataclass(frozen=True)
class Parallel:
    """Tensor- and expert-parallel degrees of one engine."""

    tp: int = 1
    ep: int = 1

    def __post_init__(self) -> None:
        for name in ("tp", "ep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
                raise SpecError("parallel", name, f"must be a power of two ≥ 1, got {value!r}")
        if self.ep > 1 and self.ep % self.tp:
            raise SpecError("parallel", "ep", f"{self.ep} is not a multiple of tp {self.tp} (experts are split "
                            "over whole tensor-parallel replicas)")
        if self.gpus > MAX_GPUS:
            raise SpecError("parallel", "tp" if self.tp > MAX_GPUS else "ep",
                            f"an engine spans at most {MAX_GPUS} GPUs of one node, got {self.gpus}")

    @property
    def gpus(self) -> int:
        return max(self.tp, self.ep)

    @property
    def replicas(self) -> int:
        """Data-parallel attention replicas (``ep / tp`` with expert parallelism, else 1)."""
        return self.gpus // self.tp

    @property
    def suffix(self) -> str:
        """What the plan adds to a model's name in a profile key: ``-tp4``, ``-ep2``, ``-tp2-ep4``."""
        return (f"-tp{self.tp}" if self.tp > 1 else "") + (f"-ep{self.ep}" if self.ep > 1 else "")

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "ep": self.ep}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str | Path = "<dict>") -> Parallel:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise SpecError(source, "parallel", f"expected {{tp, ep}}, got {data!r}")
        unknown = sorted(set(data) - {"tp", "ep"})
        if unknown:
            raise SpecError(source, f"parallel.{unknown[0]}", "unknown setting; expected tp, ep")
        try:
            return cls(**{k: data[k] for k in ("tp", "ep") if k in data})
        except SpecError as exc:
            raise SpecError(source, f"parallel.{exc.field}", exc.problem) from None


NODE_OF = {"H100-SXM-80GB": "dgx-h100", "H200-SXM-141GB": "dgx-h200", "B200-SXM-180GB": "dgx-b200",
           "A100-SXM-80GB": "dgx-a100"}
"""The node (:class:`NodeSpec`) a GPU type's multi-GPU engines are profiled in: its NVLink collectives."""


@dataclass(frozen=True)
class Plan:
    """How a profile's engine spans GPUs, and the node whose collectives time its communication."""

    parallel: Parallel = field(default_factory=Parallel)
    node: NodeSpec | None = None

    def __post_init__(self) -> None:
        if self.parallel.gpus > 1 and self.node is None:
            raise SpecError("plan", "node", f"a {self.parallel.gpus}-GPU engine needs a node to time its collectives")
        if self.node is not None and self.parallel.gpus > self.node.gpus_per_node:
            raise SpecError(self.node.source, "gpus_per_node", f"{self.node.name} has {self.node.gpus_per_node} GPUs; "
                            f"the engine spans {self.parallel.gpus}: an engine's GPUs must lie in one node")

    @property
    def collectives(self) -> Collectives | None:
        return self.node.collectives if self.node is not None else None

    @classmethod
    def of(cls, gpu: GpuSpec, tp: int = 1, ep: int = 1, node: str | None = None) -> Plan:
        """``tp``/``ep`` on ``gpu``'s type, in ``node`` (default: its type's :data:`NODE_OF`)."""
        parallel = Parallel(tp, ep)
        if parallel.gpus == 1:
            return cls(parallel)
        name = node or NODE_OF.get(gpu.name)
        if name is None:
            raise SpecError(gpu.source, "name", f"no default node for {gpu.name}: give the node (--node)")
        return cls(parallel, NodeSpec.load(name))


SINGLE_GPU = Plan()


def kv_split(model: ModelSpec, tp: int) -> int:
    """How many ways tensor parallelism splits a token's KV cache: by KV heads, at most one head per GPU
    (fewer heads than GPUs are replicated); a latent (MLA) cache is not split."""
    return 1 if model.kv_lora_rank else min(tp, model.num_kv_heads)


def kv_bytes_per_token(profile: Profile) -> float:
    """KV-cache bytes one token takes over all the GPUs of an engine (more than the model's per-token
    figure where heads are replicated), so that an engine's ``kv_cache_gb`` holds that many tokens."""
    return profile.model.kv_bytes_per_token * profile.parallel.tp / kv_split(profile.model, profile.parallel.tp)


def kv_cache_tokens(profile: Profile, cache_bytes: float) -> tuple[int, int]:
    """How many tokens an engine's KV cache of ``cache_bytes`` (over all its GPUs) holds, and the tokens
    each sequence reserves besides its own: ``(capacity, per_sequence)``.

    A sliding-window layer holds at most its window (vLLM's hybrid KV-cache manager frees the blocks
    behind it), so a sequence of ``c`` tokens takes ``full·c + sliding·min(c, W)`` layer-tokens. Counted in
    tokens of the full-attention layers, that is ``c`` plus at most ``sliding·W/full`` per sequence, which
    each sequence reserves whole (exact from ``c ≥ W`` on; shorter ones hold a little less). Without
    sliding layers the reservation is 0 and the capacity is the cache over the whole per-token figure; a
    model whose every layer slides is counted the same way (an upper bound on its use)."""
    model = profile.model
    full = model.num_layers - model.sliding_layers
    if not model.sliding_layers or full == 0:
        return int(cache_bytes // kv_bytes_per_token(profile)), 0
    per_token = kv_bytes_per_token(profile) * full / model.num_layers
    return int(cache_bytes // per_token), math.ceil(model.sliding_layers * model.sliding_window / full)


def weight_bytes_per_gpu(profile: Profile) -> float:
    """Weight bytes each GPU of one engine holds: a ``tp``-th of the non-expert weights (norms, a
    negligible part, are replicated and counted split), and an ``ep``-th of the routed experts."""
    model, plan = profile.model, profile.parallel
    experts = float(model.num_experts * model.moe_layers * model.expert_weight_bytes)
    return (model.weight_bytes - experts) / plan.tp + experts / (plan.ep if plan.ep > 1 else plan.tp)
