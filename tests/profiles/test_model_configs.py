"""Every shipped model config (``model-configs/<name>/config.json``): its derived parameter count
matches the model card, and the memory figures a serving scenario sizes GPUs with (weights, KV
cache per token) are plausible. A folder added without a published count fails here.

The configs added for multi-GPU and MoE serving are public config.json files: Llama-3.1-70B from a
verbatim copy of meta-llama/Llama-3.1-70B-Instruct's (huggingface.co/mlabonne/Llama-3.1-70B-Instruct-
lorablated), Llama-3.1-405B-FP8 from sgl-project/ome pkg/hf_model_config/testdata/llama3_1_405b.json,
gpt-oss-20b from jihengzhang/jihz-gpt-oss-20b gpt-oss-20b/config.json with the quantization_config of
sgl-project/ome pkg/hfutil/modelconfig/testdata/gpt_oss_20b.json, Qwen3-30B-A3B from
NVIDIA-NeMo/Megatron-Bridge tests/functional_tests/models/qwen/test_qwen3_moe_conversion.py (the
2507 config, its layers and experts restored to the model card's 48 and 128); ``_name_or_path`` set
to the Hugging Face repository."""

from __future__ import annotations

import json

import pytest

from festgym.profiles.models import DTYPE_BYTES, ModelSpec
from festgym.profiles.specs import GpuSpec, spec_path
from festgym.resources import PROFILES

# Folder -> (Hugging Face repo its config.json is from, parameters in billions as its model card or
# Hugging Face page publishes them).
PUBLISHED = {
    "Falcon3-7B": ("tiiuae/Falcon3-7B-Instruct", 7.46),
    "Llama-2-7B": ("meta-llama/Llama-2-7b-hf", 6.74),
    "Llama-2-13B": ("meta-llama/Llama-2-13b-hf", 13.0),
    "Llama-3.1-8B": ("meta-llama/Llama-3.1-8B-Instruct", 8.03),
    "Llama-3.2-1B": ("meta-llama/Llama-3.2-1B-Instruct", 1.24),
    "Llama-3.2-3B": ("meta-llama/Llama-3.2-3B-Instruct", 3.21),
    "Mistral-7B-v0.3": ("mistralai/Mistral-7B-Instruct-v0.3", 7.25),
    "Qwen2.5-0.5B": ("Qwen/Qwen2.5-0.5B-Instruct", 0.49),
    "Qwen2.5-1.5B": ("Qwen/Qwen2.5-1.5B-Instruct", 1.54),
    "Qwen2.5-3B": ("Qwen/Qwen2.5-3B-Instruct", 3.09),
    "Qwen2.5-7B": ("Qwen/Qwen2.5-7B-Instruct", 7.61),
    "Qwen2.5-14B": ("Qwen/Qwen2.5-14B", 14.7),
    "Qwen3-0.6B": ("Qwen/Qwen3-0.6B", 0.6),
    "Qwen3-1.7B": ("Qwen/Qwen3-1.7B", 1.7),
    "Qwen3-4B": ("Qwen/Qwen3-4B", 4.0),
    "Qwen3-8B": ("Qwen/Qwen3-8B", 8.2),
    "Qwen3-14B": ("Qwen/Qwen3-14B", 14.8),
    "Llama-3.1-70B": ("meta-llama/Llama-3.1-70B-Instruct", 70.6),
    "Llama-3.1-405B-FP8": ("meta-llama/Llama-3.1-405B-Instruct-FP8", 405.9),  # the bf16 model's count
    "Qwen3-30B-A3B": ("Qwen/Qwen3-30B-A3B-Instruct-2507", 30.5),
    "gpt-oss-20b": ("openai/gpt-oss-20b", 20.9),
}

SHIPPED = sorted(p.parent.name for p in (PROFILES.shipped / "model-configs").glob("*/config.json"))

KV_BYTES_PER_TOKEN_RANGE = (8 * 1024, 1024 * 1024)
"""0.5B-405B decoders in 16-bit, every layer counted at full attention: from a few KV heads
(Qwen2.5-0.5B, 12 KiB) to full multi-head attention (Llama-2-13B, 800 KiB)."""

NODE_GPUS = 8
"""The largest engine a profile serves: one 8-GPU node (DGX H100)."""


def hf_config(model: str) -> dict:
    return json.loads(spec_path(model, "model").read_text())


def test_every_shipped_model_has_a_published_count():
    assert sorted(PUBLISHED) == SHIPPED


@pytest.mark.parametrize("model", SHIPPED)
def test_config_names_its_repository(model):
    assert hf_config(model)["_name_or_path"] == PUBLISHED[model][0]


@pytest.mark.parametrize("model", SHIPPED)
def test_param_count_matches_model_card(model):
    spec = ModelSpec.load(model)
    assert spec.name == model
    assert spec.num_params == pytest.approx(PUBLISHED[model][1] * 1e9, rel=0.03)


@pytest.mark.parametrize("model", SHIPPED)
def test_weights_are_the_params_in_their_formats(model):
    """Unquantised weights are the params in the config dtype; quantised ones (gpt-oss's MXFP4 experts,
    405B's FP8 layers) are fewer bytes than that, more than a byte a weight over the quantised part."""
    spec = ModelSpec.load(model)
    weight_gb = spec.summary()["weight_gb"]
    full_gb = PUBLISHED[model][1] * DTYPE_BYTES[hf_config(model).get("torch_dtype", "bfloat16")]
    if "quantization_config" in hf_config(model):
        assert 0.25 * full_gb < weight_gb < 0.6 * full_gb
    else:
        assert weight_gb == pytest.approx(full_gb, rel=0.03)
    # A serving scenario places each model in one node, with room left for its KV cache.
    assert 0 < weight_gb < 0.8 * NODE_GPUS * GpuSpec.load("H100-SXM-80GB").memory_gb


@pytest.mark.parametrize("model", SHIPPED)
def test_kv_bytes_per_token(model):
    """K and V of every layer, counted from the raw config fields (head_dim given or implied)."""
    c = hf_config(model)
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads", c["num_attention_heads"])
    expected = 2 * c["num_hidden_layers"] * kv_heads * head_dim * DTYPE_BYTES[c.get("torch_dtype", "bfloat16")]
    kv_bytes = ModelSpec.load(model).kv_bytes_per_token
    assert kv_bytes == expected
    lo, hi = KV_BYTES_PER_TOKEN_RANGE
    assert lo <= kv_bytes <= hi
