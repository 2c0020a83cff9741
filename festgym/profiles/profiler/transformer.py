"""A decoder-only transformer of a model's architecture with random weights, in torch.

No download: latency and power do not depend on the weights' values, only on shapes and dtype.
The layers are those :mod:`festgym.profiles.roofline` counts (Llama / Qwen families): token embedding,
per layer RMSNorm, Q/K/V projections (optional biases and per-head Q/K RMSNorm), rotary
position embedding, grouped-query attention (``scaled_dot_product_attention``), output
projection, RMSNorm and a SwiGLU MLP; a final RMSNorm and the LM head on the last position of
each sequence (as serving engines compute logits only where they sample).

* **Prefill** runs ``prompts`` prompts of ``tokens`` tokens each, causal attention over itself.
* **Decode** runs one token for each of ``batch`` sequences whose contexts of ``ctx`` tokens sit
  in a contiguous KV cache (``batch × ctx`` slots per layer, filled with random values), writes
  the new token's K and V, and attends over ``ctx + 1`` positions. On a GPU the step is replayed
  from a CUDA graph, as serving engines run decode; prefill runs eager (engines do too).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from festgym.profiles.models import ModelSpec

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
"""GPU dtypes by config name; anything else (float32 configs) runs in bf16, as engines serve it."""
ROPE_BASE = 10000.0
"""Rotary base (its value changes no cost)."""


class RandomTransformer:
    """The model's weights on ``device`` (random, ``dtype``), and its prefill and decode steps."""

    def __init__(self, spec: ModelSpec, device: torch.device | str, dtype: torch.dtype, seed: int = 0):
        """Weights drawn on ``device`` from a seeded generator (no host copy of a large model)."""
        self.spec, self.device, self.dtype = spec, torch.device(device), dtype
        self._gen = torch.Generator(device=self.device).manual_seed(seed)
        h, q, kv, inter = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size
        self.embed = self._weight(spec.vocab_size, h)
        self.layers = [{
            "norm1": self._ones(h), "wq": self._weight(q, h), "wk": self._weight(kv, h), "wv": self._weight(kv, h),
            "bq": self._bias(q, spec.qkv_bias), "bk": self._bias(kv, spec.qkv_bias),
            "bv": self._bias(kv, spec.qkv_bias),
            "q_norm": self._ones(spec.head_dim) if spec.qk_norm else None,
            "k_norm": self._ones(spec.head_dim) if spec.qk_norm else None,
            "wo": self._weight(h, q), "bo": self._bias(h, spec.o_bias), "norm2": self._ones(h),
            "w_gate": self._weight(inter, h), "w_up": self._weight(inter, h), "w_down": self._weight(h, inter),
            "b_gate": self._bias(inter, spec.mlp_bias), "b_up": self._bias(inter, spec.mlp_bias),
            "b_down": self._bias(h, spec.mlp_bias),
        } for _ in range(spec.num_layers)]
        self.final_norm = self._ones(h)
        self.lm_head = self.embed if spec.tie_word_embeddings else self._weight(spec.vocab_size, h)
        half = spec.head_dim // 2
        self.inv_freq = torch.exp(-math.log(ROPE_BASE) * torch.arange(half, device=self.device) / half)
        self.cache: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._decode_ids = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self._decode_rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def tensors(self) -> list[torch.Tensor]:
        """Every weight once (a tied LM head is the embedding)."""
        found = [self.embed, self.final_norm, self.lm_head] + [t for layer in self.layers for t in layer.values()
                                                                if t is not None]
        return list({id(t): t for t in found}.values())

    def _weight(self, rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=self._gen, device=self.device, dtype=self.dtype) / math.sqrt(cols)

    def _ones(self, n: int) -> torch.Tensor:
        return torch.ones(n, device=self.device, dtype=self.dtype)

    def _bias(self, n: int, present: bool) -> torch.Tensor | None:
        return torch.zeros(n, device=self.device, dtype=self.dtype) if present else None

    # --- steps ---------------------------------------------------------------------------------

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary cos and sin at ``positions`` (computed once per step, shared by the layers)."""
        angles = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        return angles.cos().to(self.dtype), angles.sin().to(self.dtype)

    @torch.inference_mode()
    def prefill(self, prompts: int, tokens: int) -> torch.Tensor:
        """Logits of the last position of each of ``prompts`` prompts of ``tokens`` tokens."""
        ids = torch.randint(0, self.spec.vocab_size, (prompts, tokens), generator=self._gen, device=self.device)
        x = F.embedding(ids, self.embed)
        rope = self.rope(torch.arange(tokens, device=self.device))
        for layer in self.layers:
            x = self._block(layer, x, rope, None)
        return self._logits(x[:, -1])

    def allocate_cache(self, batch: int, ctx: int) -> None:
        """A KV cache of ``batch`` sequences with ``ctx`` tokens each (plus one new slot)."""
        self.cache = None  # free the old one first
        shape = (batch, self.spec.num_kv_heads, ctx + 1, self.spec.head_dim)
        keys = [torch.randn(shape, generator=self._gen, device=self.device, dtype=self.dtype)
                for _ in range(self.spec.num_layers)]
        values = [torch.randn(shape, generator=self._gen, device=self.device, dtype=self.dtype)
                  for _ in range(self.spec.num_layers)]
        self.cache = (keys, values)
        self._decode_ids = torch.randint(0, self.spec.vocab_size, (batch, 1), generator=self._gen, device=self.device)
        self._decode_rope = self.rope(torch.full((1,), ctx, device=self.device))

    @torch.inference_mode()
    def decode(self) -> torch.Tensor:
        """One decode step of every sequence of the allocated cache: logits of the new tokens.
        Inputs are static (allocated with the cache), so that the step can be captured in a CUDA
        graph (:meth:`decode_step`)."""
        if self.cache is None or self._decode_rope is None:
            raise RuntimeError("allocate_cache(batch, ctx) before decode()")
        x = F.embedding(self._decode_ids, self.embed)
        for layer, k_cache, v_cache in zip(self.layers, *self.cache):
            x = self._block(layer, x, self._decode_rope, (k_cache, v_cache))
        return self._logits(x[:, -1])

    def decode_step(self, stream: torch.cuda.Stream | None = None) -> Callable[[], object]:
        """The decode step as serving engines run it: on a GPU replayed from a CUDA graph (one
        launch, no per-kernel host overhead, as vLLM's CUDA graphs), on the CPU eager.

        ``stream`` is where the graph is warmed up and captured: pass the stream the steps will
        run on when it belongs to a green context, because a captured kernel runs in the context
        of the stream that captured it, so a graph captured elsewhere would replay on every SM.
        None: a side stream of the device (capture is not allowed on the default stream)."""
        if self.device.type != "cuda":
            return self.decode
        stream = stream if stream is not None else torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm up outside the capture, as torch requires
            for _ in range(2):
                self.decode()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            self.decode()
        return graph.replay

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.rms_norm(x, (x.shape[-1],), self.final_norm), self.lm_head)

    def _block(self, layer: dict, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
               cache: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        spec = self.spec
        b, t, h = x.shape
        y = F.rms_norm(x, (h,), layer["norm1"])
        q = F.linear(y, layer["wq"], layer["bq"]).view(b, t, spec.num_heads, spec.head_dim).transpose(1, 2)
        k = F.linear(y, layer["wk"], layer["bk"]).view(b, t, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
        v = F.linear(y, layer["wv"], layer["bv"]).view(b, t, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
        if layer["q_norm"] is not None:
            q = F.rms_norm(q, (spec.head_dim,), layer["q_norm"])
            k = F.rms_norm(k, (spec.head_dim,), layer["k_norm"])
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        if cache is None:
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k_cache, v_cache = cache
            k_cache[:, :, -1:] = k  # the new token's slot
            v_cache[:, :, -1:] = v
            attn = F.scaled_dot_product_attention(q, k_cache, v_cache, enable_gqa=True)
        x = x + F.linear(attn.transpose(1, 2).reshape(b, t, -1), layer["wo"], layer["bo"])
        y = F.rms_norm(x, (h,), layer["norm2"])
        gate = F.silu(F.linear(y, layer["w_gate"], layer["b_gate"]))
        return x + F.linear(gate * F.linear(y, layer["w_up"], layer["b_up"]), layer["w_down"], layer["b_down"])


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (the half-split form) with precomputed tables."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


__all__ = ["DTYPES", "RandomTransformer"]
