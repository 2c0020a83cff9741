"""GPU and model specifications: what a datasheet and a Hugging Face ``config.json`` say.

A :class:`GpuSpec` holds the hardware figures of one GPU type plus the calibrated physics
constants (:class:`festgym.profiles.constants.LatencyConstants`, :class:`festgym.profiles.constants.PowerConstants`)
that turn FLOPs and bytes into seconds and watts. A :class:`ModelSpec` derives parameter count,
weight bytes and KV-cache bytes per token from the architecture fields of a dense decoder-only
transformer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from festgym.config import read_mapping, require, require_positive
from festgym.errors import SpecError
from festgym.profiles.constants import LatencyConstants, PowerConstants, PowerStates
from festgym.resources import PROFILES

GPU_TYPES = {("H100", "HBM3"): "H100-SXM-80GB", ("A100", "SXM4", "80GB"): "A100-SXM-80GB"}
"""NVML name fragments -> festgym GPU type (a folder of the profile folders). Others need an explicit
spec: a PCIe H100, for one, has another TDP and clock range."""


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


DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1, "fp8": 1}


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
    source: str = "<memory>"

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
        spec = cls(
            name=require(data, "name", source, str),
            sm_count=require_positive(data, "sm_count", source, int),
            sm_clocks_mhz=ladder,
            default_sm_clock_mhz=default,
            memory_gb=require_positive(data, "memory_gb", source),
            hbm_bandwidth_gbps=require_positive(data, "hbm_bandwidth_gbps", source),
            peak_bf16_tflops=require_positive(data, "peak_bf16_tflops", source),
            tdp_w=require_positive(data, "tdp_w", source),
            host_to_gpu_gbps=require_positive(data, "host_to_gpu_gbps", source),
            latency=LatencyConstants.from_dict(constants.get("latency", {}), f"{source}: constants"),
            power=PowerConstants.from_dict(constants.get("power", {}), f"{source}: constants"),
            states=states,
            provenance=dict(provenance),
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
    provenance: Mapping[str, Any]
    source: str = "<memory>"

    FIELDS: ClassVar[tuple[str, ...]] = ("gpus_per_node", "host_w", "off_w", "boot_s", "shutdown_s")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path = "<dict>") -> NodeSpec:
        unknown = sorted(set(data) - {"name", "provenance", *cls.FIELDS})
        if unknown:
            raise SpecError(source, unknown[0],
                            f"unknown node setting; expected name, provenance, {', '.join(cls.FIELDS)}")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise SpecError(source, "provenance", f"expected a mapping, got {provenance!r}")
        spec = cls(name=require(data, "name", source, str),
                   gpus_per_node=require_positive(data, "gpus_per_node", source, int),
                   host_w=require(data, "host_w", source, float), off_w=require(data, "off_w", source, float),
                   boot_s=require(data, "boot_s", source, float), shutdown_s=require(data, "shutdown_s", source, float),
                   provenance=dict(provenance), source=str(source))
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
        data = {"name": self.name, "provenance": self.provenance,
                **{k: getattr(self, k) for k in self.FIELDS}, **changes}
        return NodeSpec.from_dict(data, f"{self.source} (with {', '.join(changes)})")


def _states(data: Mapping[str, Any], source: str | Path) -> Mapping[str, Any]:
    states = data.get("states")
    if states is None and "wake_s" in data:  # a spec written before festgym modelled idle states
        raise SpecError(source, "states", "missing (this spec predates power states: add empty_w, resident_w, "
                        "resident_floor_frac and loading_w from the shipped gpu.yaml of its type, and drop wake_s "
                        "and constants.power.parked_w)")
    if not isinstance(states, Mapping):
        raise SpecError(source, "states", "missing: expected {empty_w, resident_w, resident_floor_frac, loading_w}")
    return states


@dataclass(frozen=True)
class ModelSpec:
    """A dense decoder-only transformer, from the fields of its Hugging Face ``config.json``."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    qk_norm: bool
    """Per-head RMSNorm on queries and keys (Qwen3): adds 2·head_dim weights per layer."""
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    dtype: str
    source: str = "<memory>"

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def layer_matmul_params(self) -> int:
        """Weights multiplied per token in one layer: QKV, O, and the gated MLP (gate, up, down)."""
        h = self.hidden_size
        attn = h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h
        return attn + 3 * h * self.intermediate_size

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def streamed_weight_bytes(self) -> int:
        """Weights every iteration reads once: each layer's matrices and the LM head (the embedding
        table is only gathered, a row per token)."""
        return (self.layer_matmul_params * self.num_layers + self.lm_head_params) * self.dtype_bytes

    @property
    def num_params(self) -> int:
        """All parameters, counting a tied embedding/LM head once (as Hugging Face reports)."""
        h = self.hidden_size
        norms = 2 * h + (2 * self.head_dim if self.qk_norm else 0)
        bias = ((self.q_dim + 2 * self.kv_dim) * self.qkv_bias + h * self.o_bias
                + (2 * self.intermediate_size + h) * self.mlp_bias)
        per_layer = self.layer_matmul_params + norms + bias
        heads = self.lm_head_params * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + heads + h

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer, in the model dtype (no KV quantisation)."""
        return 2 * self.num_layers * self.kv_dim * self.dtype_bytes

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str, source: str | Path = "<dict>"):
        for key in ("num_experts", "num_local_experts", "n_routed_experts"):
            if config.get(key):
                raise SpecError(source, key, "mixture-of-experts models are not supported (dense only)")
        hidden = require_positive(config, "hidden_size", source, int)
        heads = require_positive(config, "num_attention_heads", source, int)
        kv_heads = require_positive(config, "num_key_value_heads", source, int) \
            if "num_key_value_heads" in config else heads
        if config.get("head_dim") is not None:
            head_dim = require_positive(config, "head_dim", source, int)
        elif hidden % heads:
            raise SpecError(source, "num_attention_heads", f"{heads} does not divide hidden_size {hidden}; "
                            "give head_dim")
        else:
            head_dim = hidden // heads
        if heads % kv_heads:
            raise SpecError(source, "num_key_value_heads", f"{kv_heads} does not divide {heads} heads")
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        if dtype not in DTYPE_BYTES:
            raise SpecError(source, "torch_dtype", f"unknown dtype {dtype!r}; one of {sorted(DTYPE_BYTES)}")
        act = config.get("hidden_act", "silu")
        if act not in ("silu", "swiglu", "gelu", "gelu_pytorch_tanh"):
            raise SpecError(source, "hidden_act", f"{act!r}: only gated-MLP decoders are modelled")
        return cls(
            name=name,
            num_layers=require_positive(config, "num_hidden_layers", source, int),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=require_positive(config, "intermediate_size", source, int),
            vocab_size=require_positive(config, "vocab_size", source, int),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qk_norm=str(config.get("model_type", "")).startswith("qwen3"),
            # Llama/Qwen3 put `attention_bias` on q, k, v and o; Qwen2 always has q, k, v biases.
            qkv_bias=bool(config.get("attention_bias")) or config.get("model_type") == "qwen2",
            o_bias=bool(config.get("attention_bias")),
            mlp_bias=bool(config.get("mlp_bias")),
            dtype=dtype,
            source=str(source),
        )

    @classmethod
    def load(cls, spec: str | Path, name: str | None = None) -> ModelSpec:
        """Read a ``config.json`` by path, or a shipped model's (``Llama-3.1-8B``) from the profile
        folders' ``model-configs/``; the model is named after its folder unless ``name`` is given."""
        path = spec_path(spec, "model")
        return cls.from_hf_config(read_mapping(path), name or path.parent.name, path)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_params": self.num_params,
            "weight_gb": self.weight_bytes / 1e9,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "dtype": self.dtype,
        }
