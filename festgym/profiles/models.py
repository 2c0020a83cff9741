"""Model specifications: what a Hugging Face ``config.json`` says of a decoder-only transformer.

A :class:`ModelSpec` derives parameter counts, weight bytes (each part at its storage format) and
KV-cache bytes from the architecture fields of the config: dense or mixture-of-experts MLPs,
grouped-query or multi-head latent attention (DeepSeek), full or sliding-window layers, 16-bit,
FP8 or MXFP4 weights, and a vision model's language model. An architecture it cannot model is
refused by name (:data:`MODELLED_TYPES`, :data:`UNMODELLED_FIELDS`), never read as a dense model.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from festgym.config import read_mapping, require, require_positive
from festgym.errors import SpecError
from festgym.profiles.specs import spec_path

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1, "fp8": 1}

FORMAT_BYTES = {"bf16": 2.0, "fp8": 1.0, "mxfp4": 4.25 / 8}
"""Bytes per weight by storage format, scales included. ``bf16`` is the unquantised format: 16-bit
(bfloat16 or float16; a float32 config's unquantised weights keep its 4 bytes). ``fp8`` is E4M3, one
byte; its scales (one per output channel for fbgemm and compressed-tensors, one per 128×128 block for
DeepSeek) add under 1% and are ignored. ``mxfp4`` is the OCP microscaling format: 4-bit E2M1 values
with one 8-bit E8M0 scale per 32 values, 4.25 bits a weight."""

KV_FORMATS = ("bf16", "fp8")
"""KV-cache formats: the activation dtype, or FP8 E4M3 (vLLM ``--kv-cache-dtype fp8``)."""

QUANT_FORMATS = {"fp8": "fp8", "fbgemm_fp8": "fp8", "compressed-tensors": "fp8", "mxfp4": "mxfp4"}
"""``quantization_config.quant_method`` -> weight format (compressed-tensors only with 8-bit float weights)."""

MOE_TYPES = frozenset({"mixtral", "gpt_oss", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"})
MLA_TYPES = frozenset({"deepseek_v2", "deepseek_v3"})
"""Multi-head latent attention (``kv_lora_rank``): DeepSeek-V2/V3."""
MODELLED_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"}) | MOE_TYPES
"""``model_type``s modelled. Falcon3 is ``llama``; a config without ``model_type`` reads as a dense
Llama-like decoder."""

EXPERTS_KEY = {"mixtral": "num_local_experts", "gpt_oss": "num_local_experts", "qwen2_moe": "num_experts",
               "qwen3_moe": "num_experts", "deepseek_v2": "n_routed_experts", "deepseek_v3": "n_routed_experts"}
"""Where each MoE model type keeps its routed-expert count."""
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")

TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma2": {"tie_word_embeddings": True},
    "gemma3_text": {"tie_word_embeddings": True, "vocab_size": 262208, "sliding_window_pattern": 6},
}
"""Fields whose transformers config-class default (Gemma2Config, Gemma3TextConfig) the published
config.json leaves out."""

INHERITED_KEYS = ("torch_dtype", "dtype", "tie_word_embeddings", "quantization_config")
"""Fields a vision model's ``text_config`` takes from the outer config when it does not give them."""

NOT_MODELLED = ("is not modelled: festgym models decoder-only transformers with full or sliding-window "
                "attention (dense or MoE)")
UNMODELLED_FIELDS = {
    "hybrid_override_pattern": "a hybrid Mamba-attention layer pattern (Nemotron-H)",
    "attn_layer_period": "a hybrid Mamba-attention layer period (Jamba)",
    "attn_type_list": "a linear-attention layer list (MiniMax)",
    "cross_attention_layers": "cross-attention layers (Llama-3.2-Vision)",
    "add_cross_attention": "cross-attention",
    "is_encoder_decoder": "an encoder-decoder model",
    "ssm_cfg": "a state-space (Mamba) model",
    "state_size": "a state-space (Mamba) model",
    "rescale_every": "a recurrent (RWKV) model",
}
"""Fields that reveal an architecture festgym does not model; besides these, any ``mamba_*`` field
(Jamba, Falcon-H1, Zamba) and ``linear_attention`` in ``layer_types`` (Qwen3-Next)."""


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, from the fields of its Hugging Face ``config.json``.

    Parameter counts follow the checkpoint's tensors. Left out, each under 0.01% of a model: Gemma's
    pre/post-feedforward norms, gpt-oss's attention sinks, Qwen2-MoE's shared-expert gate."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    """Query/key width of one head (for latent attention qk_nope_head_dim + qk_rope_head_dim)."""
    intermediate_size: int
    """Width of the dense MLP (the layers without experts)."""
    vocab_size: int
    tie_word_embeddings: bool
    qk_norm: bool
    """Per-head RMSNorm on queries and keys (Qwen3, Gemma-3): adds 2·head_dim weights per layer."""
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    dtype: str
    source: str = "<memory>"
    num_experts: int = 0
    """Routed experts of each MoE layer; 0 = dense."""
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    num_shared_experts: int = 0
    shared_expert_intermediate_size: int = 0
    """Total intermediate width of the shared expert(s), which every token of an MoE layer passes."""
    moe_layers: int = 0
    """Layers with an MoE MLP; the other layers use the dense ``intermediate_size`` MLP."""
    router_bias: bool = False
    expert_bias: bool = False
    weight_format: str = "bf16"
    """Storage format of the attention, dense-MLP and shared-expert weights (:data:`FORMAT_BYTES`);
    embeddings, LM head, router, norms and biases stay in ``dtype``."""
    expert_format: str = "bf16"
    """Storage format of the routed experts' weights."""
    kv_format: str = "bf16"
    sliding_window: int = 0
    """Tokens a sliding-window layer attends to (and caches); 0 = none."""
    sliding_layers: int = 0
    kv_lora_rank: int = 0
    """Multi-head latent attention: width of the compressed KV latent; 0 = grouped-query attention."""
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    not_modelled: tuple[str, ...] = ()
    """Parts of the checkpoint the profile leaves out (``"vision encoder"``)."""

    def __post_init__(self) -> None:
        for field, value, known in (("weight_format", self.weight_format, FORMAT_BYTES),
                                    ("expert_format", self.expert_format, FORMAT_BYTES),
                                    ("kv_format", self.kv_format, KV_FORMATS)):
            if value not in known:
                raise SpecError(self.source, field, f"unknown format {value!r}; one of {', '.join(known)}")

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def format_bytes(self, fmt: str) -> float:
        """Bytes per weight stored in ``fmt``: unquantised (``bf16``) weights are in the config dtype."""
        return self.dtype_bytes if fmt == "bf16" else FORMAT_BYTES[fmt]

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the K (and of the V) one layer caches per token; with latent attention the latent
        (kv_lora_rank + qk_rope_head_dim) that stands for both, as vLLM caches it."""
        if self.kv_lora_rank:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return self.num_kv_heads * self.head_dim

    @property
    def dense_layers(self) -> int:
        return self.num_layers - self.moe_layers

    @property
    def attn_params_per_layer(self) -> int:
        """Attention projection weights of one layer (no biases, no norms)."""
        h = self.hidden_size
        if not self.kv_lora_rank:
            return h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h
        q = self.q_lora_rank * (h + self.q_dim) if self.q_lora_rank else h * self.q_dim
        kv_down = h * (self.kv_lora_rank + self.qk_rope_head_dim)
        kv_up = self.kv_lora_rank * self.num_heads * (self.qk_nope_head_dim + self.v_head_dim)
        return q + kv_down + kv_up + self.num_heads * self.v_head_dim * h

    @property
    def dense_mlp_params(self) -> int:
        """The gated MLP (gate, up, down) of a dense layer."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def _expert_matrix_params(self) -> int:
        return 3 * self.hidden_size * self.expert_intermediate_size

    @property
    def expert_params(self) -> int:
        """One routed expert: its gated MLP and, for gpt-oss, its biases."""
        bias = 2 * self.expert_intermediate_size + self.hidden_size if self.expert_bias else 0
        return self._expert_matrix_params + bias

    @property
    def shared_expert_params(self) -> int:
        return 3 * self.hidden_size * self.shared_expert_intermediate_size

    @property
    def router_params(self) -> int:
        """The router of one MoE layer: hidden_size × num_experts (+ a bias per expert for gpt-oss)."""
        return self.num_experts * (self.hidden_size + self.router_bias)

    @property
    def _moe_token_matmul_params(self) -> int:
        """Weights one token multiplies in an MoE layer's MLP: its top-k experts, the shared ones, the router."""
        return (self.experts_per_token * self._expert_matrix_params + self.shared_expert_params
                + self.hidden_size * self.num_experts)

    @property
    def layer_matmul_params(self) -> int:
        """Weights multiplied per token in one layer: attention and the MLP (the gated dense MLP; in an
        MoE layer the top-k experts, shared experts and router), averaged over the layers (rounded down)."""
        mlp = self.dense_layers * self.dense_mlp_params + self.moe_layers * self._moe_token_matmul_params
        return self.attn_params_per_layer + mlp // self.num_layers

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def _embedding_params(self) -> int:
        """The embedding table and LM head, counted once when tied (as Hugging Face reports)."""
        return self.lm_head_params * (1 if self.tie_word_embeddings else 2)

    @property
    def _layer_common_params(self) -> int:
        """What every layer has: attention projections and biases, the two RMSNorms, the q/k (Qwen3) or
        latent (DeepSeek) norms."""
        h = self.hidden_size
        norms = 2 * h + (2 * self.head_dim if self.qk_norm else 0) + self.kv_lora_rank + self.q_lora_rank
        bias = (self.q_dim + 2 * self.kv_dim) * self.qkv_bias + h * self.o_bias
        return self.attn_params_per_layer + norms + bias

    @property
    def _dense_mlp_with_bias(self) -> int:
        return self.dense_mlp_params + (2 * self.intermediate_size + self.hidden_size) * self.mlp_bias

    def _layer_params(self, experts: int) -> int:
        """Parameters of all layers when each MoE layer holds ``experts`` routed experts."""
        moe = experts * self.expert_params + self.shared_expert_params + self.router_params
        return (self.num_layers * self._layer_common_params + self.dense_layers * self._dense_mlp_with_bias
                + self.moe_layers * moe)

    @property
    def num_params(self) -> int:
        """All parameters, counting a tied embedding/LM head once (as Hugging Face reports)."""
        return self._layer_params(self.num_experts) + self._embedding_params + self.hidden_size

    @property
    def active_params(self) -> int:
        """Parameters one token uses: attention, dense MLPs, its top-k experts, the shared experts and
        routers, the LM head and the norms; not the embedding table, from which it only gathers a row.
        (Qwen and Mistral publish active counts with the embedding table; OpenAI without.)"""
        return self._layer_params(self.experts_per_token) + self.lm_head_params + self.hidden_size

    @property
    def _non_expert_linear_params(self) -> int:
        """Weights stored in ``weight_format``: attention, dense MLPs, shared experts."""
        return (self.num_layers * self.attn_params_per_layer + self.dense_layers * self.dense_mlp_params
                + self.moe_layers * self.shared_expert_params)

    @property
    def expert_weight_bytes(self) -> float:
        """One routed expert's bytes: its matrices in ``expert_format``, its biases in ``dtype``."""
        bias = self.expert_params - self._expert_matrix_params
        return self._expert_matrix_params * self.format_bytes(self.expert_format) + bias * self.dtype_bytes

    @property
    def weight_bytes(self) -> float:
        """All weights at their formats (:attr:`weight_format`, :attr:`expert_format`, the rest in ``dtype``)."""
        experts = self.moe_layers * self.num_experts
        in_dtype = self.num_params - self._non_expert_linear_params - experts * self.expert_params
        return (self._non_expert_linear_params * self.format_bytes(self.weight_format)
                + experts * self.expert_weight_bytes + in_dtype * self.dtype_bytes)

    @property
    def streamed_weight_bytes(self) -> float:
        """Weights every iteration reads once: each layer's matrices (not the routed experts, which an
        iteration reads as its tokens touch them, :meth:`expected_experts`) and the LM head; not the
        embedding table, only gathered a row per token."""
        in_dtype = self.moe_layers * self.hidden_size * self.num_experts + self.lm_head_params
        return self._non_expert_linear_params * self.format_bytes(self.weight_format) + in_dtype * self.dtype_bytes

    def expected_experts(self, tokens: Any) -> np.ndarray:
        """Expected number of distinct routed experts one MoE layer touches when ``tokens`` tokens (an
        array) each pick ``experts_per_token`` of ``num_experts``.

        Model: uniform, independent routing, each token drawing k distinct experts, so one token misses
        a given expert with probability 1 - k/E and T tokens touch E·(1 - (1 - k/E)^T) experts in
        expectation: k at T = 1, saturating at E. Real routers are skewed and touch fewer, so this is an
        upper bound on the expert weights an iteration streams. 0 for a dense model."""
        t = np.asarray(tokens, dtype=float)
        if not self.is_moe:
            return np.zeros_like(t)
        e = float(self.num_experts)
        return e * (1.0 - (1.0 - self.experts_per_token / e) ** t)

    @property
    def _kv_bytes_per_layer_token(self) -> float:
        """KV-cache bytes one layer holds per token: K and V, or the one latent of latent attention."""
        elements = self.kv_dim if self.kv_lora_rank else 2 * self.kv_dim
        return elements * (FORMAT_BYTES["fp8"] if self.kv_format == "fp8" else self.dtype_bytes)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes of one token in every layer, in ``kv_format``, as full-attention layers hold it
        (:meth:`kv_bytes` caps the sliding-window layers)."""
        return int(self.num_layers * self._kv_bytes_per_layer_token)

    def kv_bytes(self, ctx: Any) -> np.ndarray:
        """KV-cache bytes one sequence of ``ctx`` tokens (an array) holds over all layers: a
        sliding-window layer holds at most its window."""
        c = np.asarray(ctx, dtype=float)
        full = self.num_layers - self.sliding_layers
        held = full * c + self.sliding_layers * np.minimum(c, self.sliding_window)
        return held * self._kv_bytes_per_layer_token

    def with_kv_format(self, fmt: str) -> ModelSpec:
        """This model served with a ``fmt`` KV cache (:data:`KV_FORMATS`)."""
        return dataclasses.replace(self, kv_format=fmt)

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str, source: str | Path = "<dict>") -> ModelSpec:
        """The model a Hugging Face config describes (a vision model's language model, from its
        ``text_config``); an architecture festgym cannot model raises :class:`SpecError` naming the field."""
        _refuse_unmodelled(config, source)
        text, src, not_modelled = _language_model(config, source)
        model_type = _model_type(text, src)
        text = {**TYPE_DEFAULTS.get(model_type or "", {}), **text}
        attention = _attention(text, model_type, src)
        layers = require_positive(text, "num_hidden_layers", src, int)
        dtype = str(text.get("torch_dtype") or text.get("dtype") or "bfloat16")
        if dtype not in DTYPE_BYTES:
            raise SpecError(src, "torch_dtype", f"unknown dtype {dtype!r}; one of {sorted(DTYPE_BYTES)}")
        act = text.get("hidden_act") or text.get("hidden_activation") or "silu"
        if act not in ("silu", "swiglu", "gelu", "gelu_pytorch_tanh"):
            raise SpecError(src, "hidden_act", f"{act!r}: only gated-MLP decoders are modelled")
        weight_format, expert_format = _formats(text, src)
        window, sliding = _window(text, model_type, layers, src)
        return cls(
            name=name,
            num_layers=layers,
            **attention,
            intermediate_size=require_positive(text, "intermediate_size", src, int),
            vocab_size=require_positive(text, "vocab_size", src, int),
            tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
            qk_norm=model_type in ("qwen3", "qwen3_moe", "gemma3_text"),
            # Llama/Qwen3 put `attention_bias` on q, k, v and o; Qwen2 always has q, k, v biases.
            qkv_bias=bool(text.get("attention_bias")) or model_type in ("qwen2", "qwen2_moe"),
            o_bias=bool(text.get("attention_bias")),
            mlp_bias=bool(text.get("mlp_bias")),
            dtype=dtype,
            source=str(source),
            **_experts(text, model_type, layers, src),
            weight_format=weight_format,
            expert_format=expert_format,
            sliding_window=window,
            sliding_layers=sliding,
            not_modelled=not_modelled,
        )

    @classmethod
    def load(cls, spec: str | Path, name: str | None = None) -> ModelSpec:
        """Read a ``config.json`` by path, or a shipped model's (``Llama-3.1-8B``) from the profile
        folders' ``model-configs/``, named as :func:`name_from_config` says."""
        path = spec_path(spec, "model")
        config = read_mapping(path)
        return cls.from_hf_config(config, name_from_config(config, name, path), path)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_params": self.num_params,
            "active_params": self.active_params,
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
            "num_experts": self.num_experts,
            "experts_per_token": self.experts_per_token,
            "weight_format": self.weight_format,
            "expert_format": self.expert_format,
            "kv_format": self.kv_format,
            "sliding_window": self.sliding_window,
            "sliding_layers": self.sliding_layers,
            "not_modelled": list(self.not_modelled),
        }


def _refuse_unmodelled(config: Mapping[str, Any], source: str | Path) -> None:
    """Raise naming the first field that reveals an architecture festgym does not model."""
    field = next((key for key in UNMODELLED_FIELDS if config.get(key)), None)
    if field is not None:
        raise SpecError(source, field, f"{UNMODELLED_FIELDS[field]} {NOT_MODELLED}")
    mamba = next((key for key in config if str(key).startswith("mamba_")), None)
    if mamba is not None:
        raise SpecError(source, mamba, f"Mamba (state-space) layers {NOT_MODELLED}")
    layer_types = config.get("layer_types")
    if isinstance(layer_types, list) and "linear_attention" in layer_types:
        raise SpecError(source, "layer_types", f"linear-attention layers (Qwen3-Next) {NOT_MODELLED}")


def _language_model(config: Mapping[str, Any], source: str | Path) -> tuple[dict[str, Any], str, tuple[str, ...]]:
    """The config of the language model (a vision model's ``text_config``, with the outer dtype and
    quantisation where it gives none), the name errors give its source, and what is left out."""
    text = config.get("text_config")
    left_out = ("vision encoder",) if text is not None or config.get("vision_config") else ()
    if text is None:
        return dict(config), str(source), left_out
    if not isinstance(text, Mapping):
        raise SpecError(source, "text_config", f"expected a mapping, got {text!r}")
    inherited = {key: config[key] for key in INHERITED_KEYS if key in config}
    src = f"{source}: text_config"
    _refuse_unmodelled(text, src)
    return {**inherited, **text}, src, left_out


def _model_type(config: Mapping[str, Any], source: str) -> str | None:
    model_type = config.get("model_type")
    if model_type is not None and (not isinstance(model_type, str) or model_type not in MODELLED_TYPES):
        raise SpecError(source, "model_type", f"{model_type!r} is not modelled; supported: "
                        f"{', '.join(sorted(MODELLED_TYPES))} (or none: a dense Llama-like decoder)")
    return model_type


def _attention(config: Mapping[str, Any], model_type: str | None, source: str) -> dict[str, Any]:
    """Head geometry; for latent attention (DeepSeek) also its ranks and head widths."""
    hidden = require_positive(config, "hidden_size", source, int)
    heads = require_positive(config, "num_attention_heads", source, int)
    kv_heads = require_positive(config, "num_key_value_heads", source, int) \
        if "num_key_value_heads" in config else heads
    if heads % kv_heads:
        raise SpecError(source, "num_key_value_heads", f"{kv_heads} does not divide {heads} heads")
    geometry = {"hidden_size": hidden, "num_heads": heads, "num_kv_heads": kv_heads}
    if model_type in MLA_TYPES:
        mla = {key: require_positive(config, key, source, int)
               for key in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")}
        mla["q_lora_rank"] = require_positive(config, "q_lora_rank", source, int) \
            if config.get("q_lora_rank") is not None else 0
        return {**geometry, **mla, "head_dim": mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]}
    if config.get("kv_lora_rank"):
        raise SpecError(source, "kv_lora_rank", f"latent attention in model_type {model_type!r}: modelled for "
                        f"{', '.join(sorted(MLA_TYPES))} only")
    if config.get("head_dim") is not None:
        head_dim = require_positive(config, "head_dim", source, int)
    elif hidden % heads:
        raise SpecError(source, "num_attention_heads", f"{heads} does not divide hidden_size {hidden}; "
                        "give head_dim")
    else:
        head_dim = hidden // heads
    return {**geometry, "head_dim": head_dim}


def _experts(config: Mapping[str, Any], model_type: str | None, layers: int, source: str) -> dict[str, Any]:
    """The MoE fields of an MoE model type; a dense type with experts is refused naming the field."""
    if model_type not in MOE_TYPES:
        key = next((k for k in EXPERT_KEYS if config.get(k)), None)
        if key is not None:
            raise SpecError(source, key, f"experts in a dense model type ({model_type or 'none given'}): "
                            f"mixture-of-experts is modelled for model_type {', '.join(sorted(MOE_TYPES))}")
        return {}
    experts = require_positive(config, EXPERTS_KEY[model_type], source, int)
    top_k = require_positive(config, "num_experts_per_tok", source, int)
    if top_k > experts:
        raise SpecError(source, "num_experts_per_tok", f"{top_k} exceeds the {experts} experts")
    # Mixtral and gpt-oss experts are `intermediate_size` wide (they have no dense MLP).
    width = require_positive(config, "intermediate_size" if model_type in ("mixtral", "gpt_oss")
                             else "moe_intermediate_size", source, int)
    shared, shared_width = 0, 0
    if model_type in MLA_TYPES and config.get("n_shared_experts"):
        shared = require_positive(config, "n_shared_experts", source, int)
        shared_width = shared * width
    elif model_type == "qwen2_moe" and config.get("shared_expert_intermediate_size"):
        shared, shared_width = 1, require_positive(config, "shared_expert_intermediate_size", source, int)
    return {"num_experts": experts, "experts_per_token": top_k, "expert_intermediate_size": width,
            "num_shared_experts": shared, "shared_expert_intermediate_size": shared_width,
            "moe_layers": _moe_layer_count(config, model_type, layers, source),
            "router_bias": model_type == "gpt_oss", "expert_bias": model_type == "gpt_oss"}


def _moe_layer_count(config: Mapping[str, Any], model_type: str, layers: int, source: str) -> int:
    """Layers with an MoE MLP: DeepSeek's from layer ``first_k_dense_replace`` every ``moe_layer_freq``;
    Qwen's every ``decoder_sparse_step``-th but ``mlp_only_layers``; Mixtral's and gpt-oss's all."""
    def whole(key: str, default: int) -> int:
        return require(config, key, source, int) if config.get(key) is not None else default

    if model_type in MLA_TYPES:
        first = whole("first_k_dense_replace", 0)
        freq = require_positive(config, "moe_layer_freq", source, int) if "moe_layer_freq" in config else 1
        return sum(1 for i in range(layers) if i >= first and i % freq == 0)
    if model_type in ("qwen2_moe", "qwen3_moe"):
        step = require_positive(config, "decoder_sparse_step", source, int) if "decoder_sparse_step" in config else 1
        dense = config.get("mlp_only_layers") or []
        if not isinstance(dense, list) or not all(isinstance(i, int) for i in dense):
            raise SpecError(source, "mlp_only_layers", f"expected a list of layer indices, got {dense!r}")
        return sum(1 for i in range(layers) if i not in dense and (i + 1) % step == 0)
    return layers


def _window(config: Mapping[str, Any], model_type: str | None, layers: int, source: str) -> tuple[int, int]:
    """(sliding window, layers using it). ``layer_types`` says which layers slide (gpt-oss alternates);
    without it Gemma-2 alternates, Gemma-3 slides all but every ``sliding_window_pattern``-th layer, Qwen
    slides from layer ``max_window_layers`` when ``use_sliding_window``, and other types (Mistral-7B
    v0.1) slide every layer. A window no shorter than ``max_position_embeddings`` never bites."""
    window = require_positive(config, "sliding_window", source, int) if config.get("sliding_window") else 0
    layer_types = config.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or len(layer_types) != layers:
            raise SpecError(source, "layer_types", f"expected a list of {layers} layer types, got {layer_types!r}")
        unknown = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
        if unknown:
            raise SpecError(source, "layer_types", f"{unknown[0]!r} {NOT_MODELLED}")
        sliding = layer_types.count("sliding_attention")
        if sliding and not window:
            raise SpecError(source, "sliding_window", "missing: layer_types has sliding_attention layers")
        return (window, sliding) if sliding else (0, 0)
    longest = require_positive(config, "max_position_embeddings", source, int) \
        if config.get("max_position_embeddings") is not None else None
    if not window or config.get("use_sliding_window") is False or (longest is not None and window >= longest):
        return 0, 0
    if model_type == "gemma2":
        return window, (layers + 1) // 2
    if model_type == "gemma3_text":
        return window, layers - layers // require_positive(config, "sliding_window_pattern", source, int)
    if "use_sliding_window" in config:
        first = require(config, "max_window_layers", source, int) if config.get("max_window_layers") is not None else 0
        return window, max(0, layers - first)
    return window, layers


def _formats(config: Mapping[str, Any], source: str) -> tuple[str, str]:
    """(weight_format, expert_format) from ``quantization_config``.

    A module class stays unquantised when ``modules_to_not_convert`` (or compressed-tensors' ``ignore``)
    names it for every layer: gpt-oss keeps attention, router and embeddings in bf16 and quantises
    only the experts. Entries naming one layer are ignored: Meta's Llama-3.1-405B-FP8 keeps layer 0
    (attention and MLP) and layer 125's MLP in bf16, 1.4% of its linear weights, counted here as FP8,
    which puts its weights 5.8 GB (1.4%) light. MXFP4 (transformers' Mxfp4 quantizer) converts only experts.
    Two formats cannot tell attention from dense MLPs: a checkpoint keeping attention in bf16 but
    quantising dense MLPs is counted all bf16."""
    quant = config.get("quantization_config")
    if not quant:
        return "bf16", "bf16"
    if not isinstance(quant, Mapping):
        raise SpecError(source, "quantization_config", f"expected a mapping, got {quant!r}")
    method = quant.get("quant_method")
    fmt = QUANT_FORMATS.get(str(method))
    if fmt is None or (method == "compressed-tensors" and not _float8_weights(quant)):
        raise SpecError(source, "quantization_config.quant_method",
                        f"{method!r} is not modelled; supported: fp8, fbgemm_fp8, compressed-tensors with "
                        "8-bit float weights (config_groups), mxfp4")
    kept = [str(m) for m in quant.get("modules_to_not_convert") or quant.get("ignore") or ()]
    weights = "bf16" if fmt == "mxfp4" or _kept_in_every_layer(kept, "attn") else fmt
    return weights, "bf16" if _kept_in_every_layer(kept, "experts") else fmt


def _float8_weights(quant: Mapping[str, Any]) -> bool:
    """Whether every compressed-tensors config group stores 8-bit float weights."""
    groups = quant.get("config_groups")
    if not isinstance(groups, Mapping) or not groups:
        return False
    return all(isinstance(g, Mapping) and isinstance(g.get("weights"), Mapping)
               and g["weights"].get("num_bits") == 8 and g["weights"].get("type") == "float"
               for g in groups.values())


def _kept_in_every_layer(modules: list[str], part: str) -> bool:
    """Whether an entry names ``part`` without a layer index (``model.layers.*.self_attn``)."""
    return any(part in m and not any(seg.isdigit() for seg in m.split(".")) for m in modules)


def model_name_of(hf_id: str) -> str:
    """``meta-llama/Llama-3.1-8B-Instruct`` -> ``Llama-3.1-8B``: a Hugging Face repository's last
    component without its ``-Instruct`` tag and the tag's release date (``Qwen3-30B-A3B-Instruct-2507``
    -> ``Qwen3-30B-A3B``, ``Llama-3.1-405B-Instruct-FP8`` -> ``Llama-3.1-405B-FP8``): the profile
    folders' model names. A local Hugging Face
    cache path (``.../models--org--name/snapshots/<hash>``) names its repository."""
    parts = [p for p in str(hf_id).strip().split("/") if p]
    cached = [p for p in parts if p.startswith("models--")]
    last = cached[-1].split("--")[-1] if cached else (parts[-1] if parts else "")
    return re.sub(r"-Instruct(-\d{4})?(?=-|$)", "", last)


def name_from_config(config: Mapping[str, Any], explicit: str | None = None, path: str | Path | None = None) -> str:
    """A model's name: ``explicit`` (``--name``); else, for a profile folder's
    ``model-configs/<Name>/config.json``, ``<Name>`` (a shipped model keeps its name however it is
    asked for); else the last component of ``_name_or_path`` without ``-Instruct``
    (:func:`model_name_of`); else ``model_type`` and size (``nemotron_h-8B``); else, for a bare
    config that names nothing, its folder. A name with "/" or whitespace is refused."""
    source = path or "<config>"
    if explicit is not None:
        return _checked_name(explicit, source, "--name")
    if path is not None and Path(path).name == "config.json" and Path(path).resolve().parent.parent.name == \
            "model-configs":
        return _checked_name(Path(path).resolve().parent.name, source, "--name")
    hf_id = config.get("_name_or_path")
    if isinstance(hf_id, str) and model_name_of(hf_id):
        return _checked_name(model_name_of(hf_id), source, "_name_or_path")
    model_type = config.get("model_type")
    if model_type:
        size = ModelSpec.from_hf_config(config, "unnamed", source).num_params
        return _checked_name(f"{model_type}-{_size_label(size)}", source, "model_type")
    folder = Path(path).resolve().parent.name if path is not None else ""
    if not folder:
        raise SpecError(source, "--name", "the config names no model (no _name_or_path or model_type): pass --name")
    return _checked_name(folder, source, "--name")


def _checked_name(name: str, source: str | Path, field: str) -> str:
    if not name or "/" in name or any(c.isspace() for c in name):
        raise SpecError(source, field, f"{name!r} cannot name a model (a profile folder): no '/' or whitespace; "
                        "pass --name")
    return name


def _size_label(params: int) -> str:
    """``16B``, ``8B``, ``1.2B``, ``0.5B``, ``50M``: a parameter count in two significant digits."""
    billions = params / 1e9
    if billions >= 10:
        return f"{billions:.0f}B"
    return f"{billions:.2g}B" if billions >= 0.1 else f"{params / 1e6:.2g}M"
