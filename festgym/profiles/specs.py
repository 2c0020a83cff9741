"""GPU and node specifications: what a datasheet says.

A :class:`GpuSpec` holds the hardware figures of one GPU type plus the calibrated physics
constants (:class:`festgym.profiles.constants.LatencyConstants`, :class:`festgym.profiles.constants.PowerConstants`)
that turn FLOPs and bytes into seconds and watts; a :class:`NodeSpec` describes the server around
them. Models (a Hugging Face ``config.json``) are :mod:`festgym.profiles.models`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from festgym.config import read_mapping, require, require_positive
from festgym.errors import SpecError
from festgym.profiles.collectives import OPS, OPTIONAL_OPS, Collectives
from festgym.profiles.constants import LatencyConstants, PowerConstants, PowerStates
from festgym.resources import PROFILES

GPU_TYPES = {("H100", "HBM3"): "H100-SXM-80GB", ("A100", "SXM4", "80GB"): "A100-SXM-80GB",
             ("NVIDIA H200",): "H200-SXM-141GB", ("NVIDIA B200",): "B200-SXM-180GB"}
"""NVML name fragments -> festgym GPU type (a folder of the profile folders). Others need an explicit
spec: a PCIe H100, for one, has another TDP and clock range. NVML names the SXM parts "NVIDIA H200"
and "NVIDIA B200" (with the prefix, so that a Grace superchip's "NVIDIA GH200 ..." or "NVIDIA GB200"
does not match); an "NVIDIA H200 NVL" (the 600 W PCIe card) does match the H200 type, whose TDP it
does not share: give it a spec of its own."""

WEIGHT_FORMATS = ("bf16", "fp8", "mxfp4")
"""Weight formats a GEMM may run in (:meth:`GpuSpec.peak_tflops`)."""


def gpu_type_of(name: str) -> str | None:
    """The festgym GPU type of a GPU named ``name`` by NVML (or already a type), if known."""
    if name in GPU_TYPES.values():
        return name
    return next((t for fragments, t in GPU_TYPES.items() if all(f in name for f in fragments)), None)


SPEC_ENTRIES = {"gpu": "{}/gpu.yaml", "model": "model-configs/{}/config.json", "node": "nodes/{}.yaml"}
"""Where the profile folders keep a GPU type's spec, a model's Hugging Face config and a node's spec."""


def spec_path(spec: str | Path, kind: str) -> Path:
    """A ``gpu`` spec or ``model`` config by path, or by name in the profile folders
    (:data:`festgym.resources.PROFILES`, :data:`SPEC_ENTRIES`)."""
    return PROFILES.resolve(spec, SPEC_ENTRIES[kind], kind)


@dataclass(frozen=True)
class GpuSpec:
    """One GPU type: datasheet figures (units in the names) and calibrated constants."""

    name: str
    sm_count: int
    sm_clocks_mhz: tuple[int, ...]
    """Supported SM (graphics) clocks, ascending, as ``nvidia-smi -q -d SUPPORTED_CLOCKS`` lists."""
    default_sm_clock_mhz: int
    memory_gb: float
    hbm_bandwidth_gbps: float
    """Peak HBM bandwidth, GB/s (10^9 bytes)."""
    peak_bf16_tflops: float
    """Peak dense BF16 tensor throughput at the highest SM clock, 10^12 FLOP/s."""
    tdp_w: float
    host_to_gpu_gbps: float
    """Sustained host-to-GPU copy bandwidth from pinned host memory (PCIe/NVLink-C2C), GB/s: the
    link's ceiling on any weight load, and the rate of a sleep-mode offload and its wake."""
    latency: LatencyConstants
    power: PowerConstants
    states: PowerStates
    """Power when no iteration runs: empty, resident idle (clock-dependent), loading."""
    provenance: Mapping[str, Any]
    peak_fp8_tflops: float = 0.0
    """Peak dense FP8 tensor throughput at the highest SM clock, 10^12 FLOP/s; 0: no native FP8
    tensor cores (FP8 weights are dequantised to BF16 in the kernel and run at the BF16 peak)."""
    peak_fp4_tflops: float = 0.0
    """Peak dense FP4 (MXFP4/NVFP4) tensor throughput at the highest SM clock, 10^12 FLOP/s; 0: no
    native FP4 (MXFP4 weights run dequantised to BF16, as vLLM's Marlin/Triton MoE kernels do on Hopper)."""
    source: str = "<memory>"

    def native(self, fmt: str) -> bool:
        """Whether the tensor cores run GEMMs with weights in ``fmt`` (one of :data:`WEIGHT_FORMATS`) natively."""
        return self._peaks(fmt)[0] > 0

    def peak_tflops(self, fmt: str) -> float:
        """The tensor peak a GEMM with weights in ``fmt`` runs at: the format's own if native, else
        BF16's (the weights are dequantised to BF16 in the kernel; MXFP4 on Hopper runs as BF16, not FP8)."""
        own, bf16 = self._peaks(fmt)
        return own if own > 0 else bf16

    def _peaks(self, fmt: str) -> tuple[float, float]:
        peaks = {"bf16": self.peak_bf16_tflops, "fp8": self.peak_fp8_tflops, "mxfp4": self.peak_fp4_tflops}
        if fmt not in peaks:
            raise SpecError(self.source, "format",
                            f"unknown weight format {fmt!r}; expected {', '.join(WEIGHT_FORMATS)}")
        return peaks[fmt], self.peak_bf16_tflops

    @property
    def max_sm_clock_mhz(self) -> int:
        return self.sm_clocks_mhz[-1]

    @property
    def idle_w(self) -> float:
        return self.power.idle_w

    @property
    def empty_w(self) -> float:
        return self.states.empty_w

    def resident_idle_w(self, clock_mhz: float) -> float:
        """Power of a GPU holding an engine (loaded or asleep) with no request, at ``clock_mhz``:
        ``empty_w`` plus the context's extra, whose clock-dependent part scales as V(f)²·f."""
        st = self.states
        x = clock_mhz / self.max_sm_clock_mhz
        top = self.default_sm_clock_mhz / self.max_sm_clock_mhz
        dyn = float(self.power.relative_voltage(x)) ** 2 * x / (float(self.power.relative_voltage(top)) ** 2 * top)
        return st.empty_w + (st.resident_w - st.empty_w) * (st.resident_floor_frac + (1 - st.resident_floor_frac) * dyn)

    def device_figures(self) -> dict[str, Any]:
        """What a GPU of this type is, whichever model it serves: the datasheet figures and the
        constants the simulated GPU itself uses (its idle states, the busy-power intercept, the
        V-f curve its resident idle power follows, the achievable HBM fraction its bandwidth
        contention counts in). The other constants only shape each model's grids."""
        return {"name": self.name, "sm_count": self.sm_count, "sm_clocks_mhz": self.sm_clocks_mhz,
                "default_sm_clock_mhz": self.default_sm_clock_mhz, "memory_gb": self.memory_gb,
                "hbm_bandwidth_gbps": self.hbm_bandwidth_gbps, "peak_bf16_tflops": self.peak_bf16_tflops,
                "peak_fp8_tflops": self.peak_fp8_tflops, "peak_fp4_tflops": self.peak_fp4_tflops,
                "tdp_w": self.tdp_w, "host_to_gpu_gbps": self.host_to_gpu_gbps,
                "constants.power.idle_w": self.idle_w, "constants.power.v_floor": self.power.v_floor,
                "constants.power.v_slope": self.power.v_slope, "constants.latency.hbm_frac": self.latency.hbm_frac,
                **{f"states.{k}": v for k, v in self.states.to_dict().items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path = "<dict>") -> GpuSpec:
        clocks = data.get("sm_clock_mhz")
        if not isinstance(clocks, Mapping):
            raise SpecError(source, "sm_clock_mhz", "missing: expected {min, max, step, default}")
        lo, hi, step = (require_positive(clocks, k, source, int) for k in ("min", "max", "step"))
        if lo >= hi:
            raise SpecError(source, "sm_clock_mhz.min", f"must be below max ({lo} >= {hi})")
        ladder = tuple(int(c) for c in np.arange(lo, hi + 1, step))
        if ladder[-1] != hi:
            raise SpecError(source, "sm_clock_mhz.step", f"({hi}-{lo}) is not a multiple of {step}")
        default = require_positive(clocks, "default", source, int)
        if default not in ladder:
            raise SpecError(source, "sm_clock_mhz.default", f"{default} is not a supported clock")
        constants = data.get("constants")
        if not isinstance(constants, Mapping):
            raise SpecError(source, "constants", "missing: calibrated latency and power constants")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise SpecError(source, "provenance", f"expected a mapping, got {provenance!r}")
        states = PowerStates.from_dict(_states(data, source), str(source))  # before constants: names an old spec
        bf16 = require_positive(data, "peak_bf16_tflops", source)
        spec = cls(
            name=require(data, "name", source, str),
            sm_count=require_positive(data, "sm_count", source, int),
            sm_clocks_mhz=ladder,
            default_sm_clock_mhz=default,
            memory_gb=require_positive(data, "memory_gb", source),
            hbm_bandwidth_gbps=require_positive(data, "hbm_bandwidth_gbps", source),
            peak_bf16_tflops=bf16,
            tdp_w=require_positive(data, "tdp_w", source),
            host_to_gpu_gbps=require_positive(data, "host_to_gpu_gbps", source),
            latency=LatencyConstants.from_dict(constants.get("latency", {}), f"{source}: constants"),
            power=PowerConstants.from_dict(constants.get("power", {}), f"{source}: constants"),
            states=states,
            provenance=dict(provenance),
            peak_fp8_tflops=_low_precision_peak(data, "peak_fp8_tflops", bf16, source),
            peak_fp4_tflops=_low_precision_peak(data, "peak_fp4_tflops", bf16, source),
            source=str(source),
        )
        if not spec.idle_w < spec.tdp_w:
            raise SpecError(source, "constants.power.idle_w", f"need idle_w < tdp_w, got "
                            f"{spec.idle_w:g} / {spec.tdp_w:g} W")
        st = spec.states
        if not st.empty_w <= st.resident_w <= st.loading_w < spec.tdp_w:
            raise SpecError(source, "states", "need empty_w <= resident_w <= loading_w < tdp_w, got "
                            f"{st.empty_w:g} / {st.resident_w:g} / {st.loading_w:g} / {spec.tdp_w:g} W")
        return spec

    @classmethod
    def load(cls, spec: str | Path) -> GpuSpec:
        """Read a ``gpu.yaml`` by path, or a GPU type's (``H100-SXM-80GB``) from the profile folders."""
        path = spec_path(spec, "gpu")
        return cls.from_dict(read_mapping(path), path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sm_count": self.sm_count,
            "sm_clock_mhz": {
                "min": self.sm_clocks_mhz[0],
                "max": self.sm_clocks_mhz[-1],
                "step": self.sm_clocks_mhz[1] - self.sm_clocks_mhz[0],
                "default": self.default_sm_clock_mhz,
            },
            "memory_gb": self.memory_gb,
            "hbm_bandwidth_gbps": self.hbm_bandwidth_gbps,
            "peak_bf16_tflops": self.peak_bf16_tflops,
            "peak_fp8_tflops": self.peak_fp8_tflops,
            "peak_fp4_tflops": self.peak_fp4_tflops,
            "tdp_w": self.tdp_w,
            "host_to_gpu_gbps": self.host_to_gpu_gbps,
            "constants": {"latency": self.latency.to_dict(), "power": self.power.to_dict()},
            "states": self.states.to_dict(),
            "provenance": dict(self.provenance),
        }


@dataclass(frozen=True)
class NodeSpec:
    """One server (an HGX/DGX board and its host): what it draws beside its GPUs, and how long it
    takes to power off and back on. The GPUs of a node can only be powered off together, with it.

    Its power is counted in the cluster's energy and reported apart from the GPUs' (``host_*``), so
    that both GPU-only and wall-plug figures are visible.
    """

    name: str
    gpus_per_node: int
    """GPUs on one board: the cluster's GPUs form nodes of this many, in order."""
    host_w: float
    """Everything but the GPUs while the node is on: CPUs, DRAM, NICs, NVSwitches, fans, power-supply losses."""
    off_w: float
    """A powered-off node (standby: the BMC and its network stay up)."""
    boot_s: float
    """From power-on until its GPUs can start engines (firmware, memory training, OS, driver, fabric manager)."""
    shutdown_s: float
    """From the decision to power off until the node draws ``off_w`` (at ``host_w`` and empty GPUs meanwhile)."""
    nvlink_gbps: float
    """NVLink bandwidth of one GPU, one direction, GB/s (NVLink3 300, NVLink4 450, NVLink5 900)."""
    collectives: Collectives
    """Time of the collectives among k GPUs of this node (tensor and expert parallelism)."""
    provenance: Mapping[str, Any]
    source: str = "<memory>"

    FIELDS: ClassVar[tuple[str, ...]] = ("gpus_per_node", "host_w", "off_w", "boot_s", "shutdown_s", "nvlink_gbps")
    """The number fields (a scenario's ``cluster.node`` may override them)."""
    SECTIONS: ClassVar[tuple[str, ...]] = ("collectives",)
    """The mapping sections (a file's, or :meth:`replace`'s, but not a scenario override's)."""

    def collective_time_s(self, op: str, size_bytes: Any, workers: int) -> np.ndarray:
        """Seconds of one collective among ``workers`` GPUs of this node (:meth:`Collectives.time_s`)."""
        if workers > self.gpus_per_node:
            raise SpecError(self.source, "gpus_per_node", f"an instance on {workers} GPUs does not fit a node of "
                            f"{self.gpus_per_node}: collectives across nodes are not modelled")
        return self.collectives.time_s(op, size_bytes, workers)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path = "<dict>") -> NodeSpec:
        known = ("name", "provenance", *cls.FIELDS, *cls.SECTIONS)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SpecError(source, unknown[0], f"unknown node setting; expected {', '.join(known)}")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise SpecError(source, "provenance", f"expected a mapping, got {provenance!r}")
        collectives = data.get("collectives")
        spec = cls(name=require(data, "name", source, str),
                   gpus_per_node=require_positive(data, "gpus_per_node", source, int),
                   host_w=require(data, "host_w", source, float), off_w=require(data, "off_w", source, float),
                   boot_s=require(data, "boot_s", source, float), shutdown_s=require(data, "shutdown_s", source, float),
                   nvlink_gbps=require_positive(data, "nvlink_gbps", source),
                   collectives=collectives if isinstance(collectives, Collectives)
                   else Collectives.from_dict(collectives, source),
                   provenance=dict(provenance), source=str(source))
        _check_coverage(spec)
        if not 0 <= spec.off_w <= spec.host_w:
            raise SpecError(source, "off_w", f"need 0 <= off_w <= host_w, got {spec.off_w:g} / {spec.host_w:g} W")
        for name in ("boot_s", "shutdown_s"):
            if not getattr(spec, name) >= 0:
                raise SpecError(source, name, f"must be ≥ 0 s, got {getattr(spec, name)!r}")
        return spec

    @classmethod
    def load(cls, spec: str | Path) -> NodeSpec:
        """A node spec by path, or by name (``dgx-h100``) from the profile folders' ``nodes/``."""
        path = spec_path(spec, "node")
        return cls.from_dict(read_mapping(path), path)

    def replace(self, **changes: Any) -> NodeSpec:
        """This spec with ``changes`` (node fields), checked as a file's would be."""
        return NodeSpec.from_dict({**self.to_dict(), **changes}, f"{self.source} (with {', '.join(changes)})")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: getattr(self, k) for k in self.FIELDS},
                "collectives": self.collectives.to_dict(), "provenance": dict(self.provenance)}


def _check_coverage(spec: NodeSpec) -> None:
    """Every instance width a node can host (2..gpus_per_node GPUs) needs coefficients for each
    collective: listed, or between two listed worker counts."""
    if spec.gpus_per_node < 2:
        return
    for op in (*OPS, *(op for op in OPTIONAL_OPS if spec.collectives.table(op))):
        counts = sorted(spec.collectives.table(op))
        missing = 2 if counts[0] > 2 else spec.gpus_per_node if counts[-1] < spec.gpus_per_node else None
        if missing is not None:
            raise SpecError(spec.source, f"collectives.{op}", f"no worker count {missing} (gpus_per_node is "
                            f"{spec.gpus_per_node}; listed: {', '.join(map(str, counts))}): add its coefficients")


def _low_precision_peak(data: Mapping[str, Any], key: str, bf16_tflops: float, source: str | Path) -> float:
    """An optional FP8/FP4 peak: absent or 0 means no native support; else at least the BF16 peak
    (a narrower format never runs slower on tensor cores that support it)."""
    if data.get(key) is None:
        return 0.0
    value = require(data, key, source, float)
    if value < 0:
        raise SpecError(source, key, f"must be ≥ 0 (0: no native support), got {value!r}")
    if 0 < value < bf16_tflops:
        raise SpecError(source, key, f"{value:g} TFLOP/s is below peak_bf16_tflops ({bf16_tflops:g}): give the "
                        "dense (not sparse) peak of the format, or 0 if the tensor cores lack it")
    return value


def _states(data: Mapping[str, Any], source: str | Path) -> Mapping[str, Any]:
    states = data.get("states")
    if states is None and "wake_s" in data:  # a spec written before festgym modelled idle states
        raise SpecError(source, "states", "missing (this spec predates power states: add empty_w, resident_w, "
                        "resident_floor_frac and loading_w from the shipped gpu.yaml of its type, and drop wake_s "
                        "and constants.power.parked_w)")
    if not isinstance(states, Mapping):
        raise SpecError(source, "states", "missing: expected {empty_w, resident_w, resident_floor_frac, loading_w}")
    return states
