"""Serving configuration of a model: its SLO and its vLLM-like engine settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from festgym.config import build_dataclass, check_ranges
from festgym.errors import SpecError


@dataclass(frozen=True)
class Slo:
    """Latency objectives of one model.

    A request meets its TTFT SLO if its first token comes within ``ttft_s + ttft_per_1k_tokens_s ×
    prompt_tokens / 1000``, and its TBT SLO if at most 10% of its inter-token gaps exceed
    ``tbt_s`` (its p90 gap, nearest rank, is within ``tbt_s``).
    """

    ttft_s: float = 0.5
    tbt_s: float = 0.15
    ttft_per_1k_tokens_s: float = 0.0
    tbt_quantile: float = 0.9

    def __post_init__(self):
        check_ranges(self, {"ttft_s": self.ttft_s > 0, "tbt_s": self.tbt_s > 0,
                      "ttft_per_1k_tokens_s": self.ttft_per_1k_tokens_s >= 0,
                      "tbt_quantile": 0 < self.tbt_quantile <= 1},
                     {"ttft_s": "> 0 s", "tbt_s": "> 0 s", "ttft_per_1k_tokens_s": "≥ 0 s",
                      "tbt_quantile": "in (0, 1]"})


@dataclass(frozen=True)
class EngineConfig:
    """vLLM-like engine settings of one model instance.

    KV cache is counted in tokens (``kv_cache_gb`` / bytes per token); block rounding (≤ 15 tokens
    per sequence with 16-token blocks) is ignored.
    """

    max_num_seqs: int = 256
    """Most sequences running at once (vLLM ``--max-num-seqs``); policies may lower it."""
    max_num_batched_tokens: int = 8192
    """Token budget per iteration; prompts longer than what is left are chunked."""
    kv_cache_gb: float = 16.0
    """GPU memory reserved for the KV cache, on top of the weights."""
    init_s: float | None = None
    """Engine start after the weights are on the GPU (memory profiling, KV cache, CUDA graphs,
    compile); None: the scenario's ``sim.init_s``."""

    def __post_init__(self):
        check_ranges(self, {"max_num_seqs": self.max_num_seqs >= 1,
                      "max_num_batched_tokens": self.max_num_batched_tokens > self.max_num_seqs,
                      "kv_cache_gb": self.kv_cache_gb > 0,
                      "init_s": self.init_s is None or 0 <= self.init_s < 1e6},
                     {"max_num_seqs": "≥ 1", "max_num_batched_tokens": f"> max_num_seqs ({self.max_num_seqs})",
                      "kv_cache_gb": "> 0 GB", "init_s": "≥ 0 s"})


@dataclass(frozen=True)
class ModelServing:
    """How one model is served: SLO and engine settings."""

    slo: Slo = field(default_factory=Slo)
    engine: EngineConfig = field(default_factory=EngineConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str = "<dict>") -> ModelServing:
        """``{"slo": {...}, "engine": {...}}``; unknown keys are an error naming the key."""
        data = dict(data or {})
        parts = {key: build_dataclass(kind, data.pop(key, None), f"{source}: {key}")
                 for key, kind in (("slo", Slo), ("engine", EngineConfig))}
        if data:
            raise SpecError(source, ", ".join(data), "unknown key; expected slo, engine")
        return cls(**parts)
