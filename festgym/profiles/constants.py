"""The calibrated physics constants of a GPU type, as its spec (``gpu.yaml``) holds them.

:class:`LatencyConstants` and :class:`PowerConstants` are the numbers :mod:`festgym.profiles.roofline`
turns FLOPs and bytes into seconds and watts with; each is read with its physical range checked,
and each GPU spec names its source in ``provenance``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from festgym.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Self


@dataclass(frozen=True)
class _Constants:
    """Named float constants read from and written to a GPU spec's ``constants`` mapping.

    ``ranges`` gives each constant's physical range as (low, high, low_is_open); a constant not
    listed must be finite and >= 0."""

    section: ClassVar[str] = ""
    """The spec's ``constants`` sub-section holding them."""
    ranges: ClassVar[dict[str, tuple[float, float, bool]]] = {}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> Self:
        if not isinstance(data, Mapping):
            raise SpecError(source, cls.section, f"expected a mapping of constants, got {data!r}")
        values = {}
        for f in dataclasses.fields(cls):
            field = f"{cls.section}.{f.name}"
            if f.name not in data:
                raise SpecError(source, field, "missing")
            value = data[f.name]
            try:
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
            except (TypeError, ValueError):
                raise SpecError(source, field, f"expected a number, got {value!r}") from None
            if not np.isfinite(value):
                raise SpecError(source, field, f"must be finite, got {value!r}")
            lo, hi, open_lo = cls.ranges.get(f.name, (0.0, np.inf, False))
            if not ((value > lo if open_lo else value >= lo) and value <= hi):
                raise SpecError(source, field, f"must lie in {'(' if open_lo else '['}{lo:g}, {hi:g}], "
                                f"got {value!r}")
            values[f.name] = value
        unknown = set(data) - set(values)
        if unknown:
            raise SpecError(source, f"{cls.section}.{sorted(unknown)[0]}", "unknown constant")
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: float) -> Self:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class LatencyConstants(_Constants):
    section: ClassVar[str] = "latency"
    ranges: ClassVar[dict[str, tuple[float, float, bool]]] = {
        **{n: (0.0, 1.0, True) for n in ("gemm_peak_frac", "attn_compute_frac", "hbm_frac", "kv_frac",
                                        "bw_saturation_share")},
        "clock_insensitive_frac": (0.0, 0.99, False), "roofline_sharpness": (1.0, 64.0, False),
        "kernel_floor_s": (0.0, 1.0, False), "seq_overhead_s": (0.0, 1.0, False),
    }
    gemm_peak_frac: float
    """Achieved fraction of peak dense BF16 throughput for large GEMMs."""
    attn_compute_frac: float
    """Achieved fraction of peak throughput for attention FLOPs (FlashAttention prefill)."""
    hbm_frac: float
    """Achieved fraction of peak HBM bandwidth streaming weights and activations."""
    kv_frac: float
    """Achieved fraction of peak HBM bandwidth for paged-attention KV-cache reads in decode."""
    kernel_floor_s: float
    """Time per layer that does not shrink with work (the least time of its small kernels, launch gaps
    and tails; it also absorbs fixed per-iteration engine time: fitted on 32-40-layer models, the data
    prefer a per-layer floor to a per-iteration one)."""
    seq_overhead_s: float
    """Host-side engine time per scheduled sequence per iteration (sampling, detokenising)."""
    clock_insensitive_frac: float
    """Part of compute-bound time that does not scale with the SM clock."""
    bw_saturation_share: float
    """``share · f/f_max`` above which a kernel's HBM bandwidth saturates."""
    roofline_sharpness: float
    """Exponent p of the smooth maximum between compute and memory time (1 = no overlap)."""


@dataclass(frozen=True)
class PowerConstants(_Constants):
    section: ClassVar[str] = "power"
    ranges: ClassVar[dict[str, tuple[float, float, bool]]] = {"idle_w": (0.0, np.inf, True),
                                                              "v_floor": (0.0, 1.0, True)}
    idle_w: float
    """Static term of the busy-power model: what the fitted power equation gives with every
    activity term at zero. It is a fit's intercept (splitwise's constant model), not a state a GPU
    sits in; the idle states are :class:`PowerStates`."""
    active_w: float
    """Extra power of all SMs running kernels at the top clock, beyond arithmetic and memory."""
    compute_w: float
    """Extra power at full tensor-core throughput at the top clock."""
    memory_w: float
    """Extra power at full HBM bandwidth."""
    attention_w: float
    """Extra SM power of decode attention at full KV-read bandwidth (gathers, softmax)."""
    v_floor: float
    """Relative core voltage at the lowest clocks (V/V_max)."""
    v_slope: float
    """d(V/V_max)/d(f/f_max) above the floor."""

    def relative_voltage(self, clock_frac: Any) -> np.ndarray:
        """Core voltage V/V_max at the relative clock f/f_max (the spec's V-f curve)."""
        return np.clip(1.0 - self.v_slope * (1.0 - np.asarray(clock_frac, dtype=float)), self.v_floor, 1.0)


@dataclass(frozen=True)
class PowerStates(_Constants):
    """Power of a GPU that runs no iteration, by what it holds (a spec's top-level ``states``).

    Data-centre SXM parts stay in P0 when idle and cannot be powered off one by one on an HGX board,
    so ``empty_w`` is the floor of a GPU whose node is on; below it there is only the node off
    (:class:`festgym.profiles.specs.NodeSpec`). A CUDA context (an engine resident, idle or asleep)
    keeps the GPU out of its lowest idle state: ``resident_w`` at the default clock, falling towards
    ``empty_w`` as the clock is locked lower (dynamic power ∝ V(f)²·f with the spec's V-f curve;
    ``resident_floor_frac`` of the difference does not fall).
    """

    section: ClassVar[str] = "states"
    ranges: ClassVar[dict[str, tuple[float, float, bool]]] = {"empty_w": (0.0, np.inf, True),
                                                              "resident_floor_frac": (0.0, 1.0, False)}
    empty_w: float
    """Driver loaded, no process: an empty GPU of a node that is on."""
    resident_w: float
    """A CUDA context and an engine resident (weights loaded or asleep), no request, default clock."""
    resident_floor_frac: float
    """Part of ``resident_w − empty_w`` that stays when the SM clock is locked at its lowest."""
    loading_w: float
    """Mean power while weights are copied in and the engine initialises (allocation, warm-up,
    CUDA-graph capture)."""
