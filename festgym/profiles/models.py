"""Model specifications: what a Hugging Face ``config.json`` says of a decoder-only transformer.

A :class:`ModelSpec` derives parameter count, weight bytes and KV-cache bytes per token from the
architecture fields of the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from festgym.config import read_mapping, require_positive
from festgym.errors import SpecError
from festgym.profiles.specs import spec_path

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1, "fp8": 1}


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
