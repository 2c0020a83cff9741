"""Time of the NCCL collectives an instance spanning several GPUs of one node runs per iteration.

A tensor-parallel instance all-reduces its activations after the attention and MLP blocks of
every layer; an expert-parallel one exchanges tokens all-to-all before and after its experts.
Each collective among ``k`` workers takes ``t = latency + size / bandwidth`` (the alpha-beta
model), with ``size`` each worker's message in bytes and both coefficients per worker count.

Why this form: on vidur's NVLink measurements inside a DGX node
(``vidur-network/{h100_dgx,a100_dgx}``, 2 KB to 64 MB) the fixed cost is flat up to ~1 MB and the
bandwidth settles above ~10 MB; a two-coefficient fit that minimises the relative error is within
2-14 % MAPE per worker count (each node file's ``collectives.provenance.fit`` records it), and
most of what remains is the run-to-run scatter of small messages, which no smooth form removes.
The fit is :mod:`festgym.profiles.calibration.network`.

A tensor-parallel engine's all-reduce is not always NCCL's: vLLM and SGLang run their own one-shot
all-reduce over NVLink peer memory for small messages (``custom_all_reduce``, optional in a node
spec), and NCCL above; the engine's all-reduce takes whichever of the two is faster at each size
(:meth:`Collectives.engine_all_reduce_s`), which is what their size-based dispatch approximates.

Worker counts between two listed ones are interpolated linearly in log2(k), both the latency and
the time per byte (a ring all-reduce moves ``2(k-1)/k`` of the message: about linear in log2 k
for k = 2..8). A count outside the listed range is an error naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from festgym.config import require, require_positive
from festgym.errors import SpecError

OPS = ("all_reduce", "all_to_all")
"""The collectives a node spec times, in its ``collectives`` section."""
OPTIONAL_OPS = ("custom_all_reduce",)
"""Collectives a node spec may time: without them an engine uses NCCL's."""


@dataclass(frozen=True)
class AlphaBeta:
    """One collective at one worker count: ``t = latency + size / bandwidth``."""

    latency_us: float
    """Fixed time per call, µs (launch, synchronisation, the first hop)."""
    busbw_gbps: float
    """Effective bandwidth on the message size, GB/s (10^9 bytes): bytes / (t - latency)."""

    def time_s(self, size_bytes: Any) -> np.ndarray:
        return self.latency_us * 1e-6 + np.asarray(size_bytes, dtype=float) / (self.busbw_gbps * 1e9)

    @classmethod
    def from_dict(cls, data: Any, source: str, field: str) -> AlphaBeta:
        if not isinstance(data, Mapping):
            raise SpecError(source, field, f"expected {{latency_us, busbw_gbps}}, got {data!r}")
        unknown = sorted(set(data) - {"latency_us", "busbw_gbps"})
        if unknown:
            raise SpecError(source, f"{field}.{unknown[0]}", "unknown coefficient; expected latency_us, busbw_gbps")
        named = {f"{field}.{k}": v for k, v in data.items()}  # errors name the whole field
        latency = require(named, f"{field}.latency_us", source, float)
        if latency < 0:
            raise SpecError(source, f"{field}.latency_us", f"must be ≥ 0 µs, got {latency!r}")
        return cls(latency, require_positive(named, f"{field}.busbw_gbps", source))

    def to_dict(self) -> dict[str, float]:
        return {"latency_us": self.latency_us, "busbw_gbps": self.busbw_gbps}


@dataclass(frozen=True)
class Collectives:
    """Time of the collectives an instance spanning k GPUs of a node runs per iteration."""

    all_reduce: Mapping[int, AlphaBeta]
    """Per worker count (2, 4, 8): ``size`` is the buffer each worker reduces."""
    all_to_all: Mapping[int, AlphaBeta]
    """Per worker count: ``size`` is each worker's whole send buffer, ``1/k`` of which stays local."""
    provenance: Mapping[str, Any]
    source: str = dataclasses.field(default="<memory>", compare=False)
    """The file it was read from, for messages (not part of what the coefficients are)."""
    custom_all_reduce: Mapping[int, AlphaBeta] = dataclasses.field(default_factory=dict)
    """Per worker count: the serving engine's own all-reduce (vLLM's one-shot custom all-reduce over
    NVLink peer memory; fitted on 512 B-1 MB: it is the faster up to 0.6-0.7 MB on dgx-h100 and dgx-h200,
    and, with the bandwidth scaled, up to 0.8-1.8 MB on dgx-a100 and dgx-b200, a little beyond the fit);
    empty: the engine all-reduces with NCCL only."""

    def table(self, op: str) -> Mapping[int, AlphaBeta]:
        if op not in OPS + OPTIONAL_OPS:
            raise SpecError(self.source, "collectives", f"unknown collective {op!r}; expected "
                            f"{', '.join(OPS + OPTIONAL_OPS)}")
        table: Mapping[int, AlphaBeta] = getattr(self, op)
        return table

    def alpha_beta(self, op: str, workers: int) -> AlphaBeta:
        """The coefficients of ``op`` among ``workers`` (≥ 2), interpolated in log2(workers)
        between the listed counts."""
        table = self.table(op)
        counts = sorted(table)
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 2:
            raise SpecError(self.source, f"collectives.{op}", f"workers must be a whole number ≥ 2, got {workers!r}")
        if workers in table:
            return table[workers]
        if not counts[0] < workers < counts[-1]:
            raise SpecError(self.source, f"collectives.{op}", f"no worker count {workers} (listed: "
                            f"{', '.join(map(str, counts))}): add its coefficients")
        x = np.log2(counts)
        latency = np.interp(np.log2(workers), x, [table[k].latency_us for k in counts])
        per_byte = np.interp(np.log2(workers), x, [1.0 / table[k].busbw_gbps for k in counts])
        return AlphaBeta(float(latency), float(1.0 / per_byte))

    def time_s(self, op: str, size_bytes: Any, workers: int) -> np.ndarray:
        """Seconds of one ``op`` call of ``size_bytes`` per worker (broadcasts) among ``workers``
        GPUs; an instance on one GPU runs none (0 s)."""
        if workers == 1:
            self.table(op)  # an unknown op is still an error
            return np.zeros_like(np.asarray(size_bytes, dtype=float))
        return self.alpha_beta(op, workers).time_s(size_bytes)

    def engine_all_reduce_s(self, size_bytes: Any, workers: int) -> np.ndarray:
        """Seconds of one tensor-parallel all-reduce of ``size_bytes`` per worker (broadcasts) in a serving
        engine: the faster of NCCL's and the engine's own (``custom_all_reduce``, where the node lists it)."""
        nccl = self.time_s("all_reduce", size_bytes, workers)
        if workers == 1 or not self.custom_all_reduce:
            return nccl
        return np.minimum(nccl, self.time_s("custom_all_reduce", size_bytes, workers))

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "<dict>") -> Collectives:
        """A node spec's ``collectives`` section: ``{all_reduce: {k: {latency_us, busbw_gbps}},
        all_to_all: {...}, provenance: {...}}``."""
        source = str(source)
        if not isinstance(data, Mapping):
            raise SpecError(source, "collectives", "missing: expected {all_reduce: {workers: {latency_us, "
                            "busbw_gbps}}, all_to_all: {...}, provenance: {...}}")
        unknown = sorted(set(data) - {*OPS, *OPTIONAL_OPS, "provenance"})
        if unknown:
            raise SpecError(source, f"collectives.{unknown[0]}", f"unknown section; expected "
                            f"{', '.join(OPS + OPTIONAL_OPS)}, provenance")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise SpecError(source, "collectives.provenance", f"expected a mapping, got {provenance!r}")
        tables = {op: _table(data.get(op), source, f"collectives.{op}")
                  for op in (*OPS, *(op for op in OPTIONAL_OPS if op in data))}
        return cls(tables["all_reduce"], tables["all_to_all"], dict(provenance), source,
                   tables.get("custom_all_reduce", {}))

    def to_dict(self) -> dict[str, Any]:
        ops = (*OPS, *(op for op in OPTIONAL_OPS if self.table(op)))
        return {**{op: {k: ab.to_dict() for k, ab in sorted(self.table(op).items())} for op in ops},
                "provenance": dict(self.provenance)}


def _table(data: Any, source: str, field: str) -> dict[int, AlphaBeta]:
    if not isinstance(data, Mapping) or not data:
        raise SpecError(source, field, f"missing: expected {{workers: {{latency_us, busbw_gbps}}}}, got {data!r}")
    table = {}
    for key, value in data.items():
        workers = require({f"{field}.{key}": key}, f"{field}.{key}", source, int)
        if workers < 2:
            raise SpecError(source, f"{field}.{key}", "worker counts start at 2 (one GPU runs no collective)")
        table[workers] = AlphaBeta.from_dict(value, source, f"{field}.{key}")
    return dict(sorted(table.items()))


__all__ = ["OPS", "OPTIONAL_OPS", "AlphaBeta", "Collectives"]
