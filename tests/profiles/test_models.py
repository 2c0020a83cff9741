"""ModelSpec beyond dense bf16 decoders: mixture-of-experts counts and routing, weight formats, KV
formats, sliding windows, multi-head latent attention, vision models' language models, refusals by
name, and model names.

Fixtures under ``configs/`` are public config.json files of models festgym accepts or refuses but does
not ship: mistralai/Mixtral-8x7B-v0.1, deepseek-ai/DeepSeek-V2-Lite, Qwen/Qwen1.5-MoE-A2.7B (qwen2_moe),
google/gemma-3-27b-it (from sgl-project/ome pkg/hfutil/modelconfig/testdata/gemma3.json) and
nvidia/Nemotron-H-8B-Base-8K (from NVIDIA-NeMo/Megatron-Bridge's NemotronH bridge test).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from festgym.cli.main import main
from festgym.errors import SpecError
from festgym.profiles.calibration.sources import mlenergy_model_name
from festgym.profiles.models import FORMAT_BYTES, ModelSpec, model_name_of, name_from_config
from festgym.profiles.profile import Profile
from festgym.resources import PROFILES

CONFIGS = Path(__file__).parent / "configs"
SHIPPED = sorted(p.parent.name for p in (PROFILES.shipped / "model-configs").glob("*/config.json"))
NOT_MODELLED = "is not modelled: festgym models decoder-only transformers"


def fixture(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def shipped(name: str) -> dict:
    return json.loads((PROFILES.shipped / "model-configs" / name / "config.json").read_text())


def spec_of(model: str) -> ModelSpec:
    """A shipped model by name, or a fixture."""
    if model in SHIPPED:
        return ModelSpec.load(model)
    return ModelSpec.from_hf_config(fixture(model), model, CONFIGS / f"{model}.json")


def refusal(config: dict, source: str = "cfg.json") -> SpecError:
    with pytest.raises(SpecError) as info:
        ModelSpec.from_hf_config(config, "m", source)
    assert source in str(info.value)
    return info.value


# --- parameter counts -----------------------------------------------------------------------

# (model, total and active parameters in billions as published, whether the publisher counts the
# embedding table in the active figure). Qwen's model cards and Mistral count it; OpenAI's gpt-oss
# card and DeepSeek do not; ModelSpec.active_params never does (a token only gathers a row of it).
PUBLISHED_MOE = [
    ("Qwen3-30B-A3B", 30.5, 3.3, True),
    ("gpt-oss-20b", 20.9, 3.6, False),
    ("mixtral-8x7b", 46.7, 12.9, True),
    ("deepseek-v2-lite", 15.7, 2.4, False),
    ("qwen1.5-moe-a2.7b", 14.3, 2.7, True),
]


@pytest.mark.parametrize("model, total, active, with_embedding", PUBLISHED_MOE)
def test_moe_totals_and_active_counts_match_the_model_cards(model, total, active, with_embedding):
    spec = spec_of(model)
    assert spec.is_moe
    assert spec.num_params == pytest.approx(total * 1e9, rel=0.02)
    counted = spec.active_params + (spec.lm_head_params if with_embedding else 0)
    # DeepSeek-V2-Lite's 2.45B is published rounded to 2.4B.
    assert counted == pytest.approx(active * 1e9, rel=0.025 if model == "deepseek-v2-lite" else 0.02)


def test_qwen3_moe_counts_exactly():
    """Every weight tensor of Qwen3-30B-A3B, counted from its config fields."""
    s = ModelSpec.load("Qwen3-30B-A3B")
    h, layers = 2048, 48
    attn = h * 32 * 128 + 2 * h * 4 * 128 + 32 * 128 * h
    expert, router = 3 * h * 768, h * 128
    per_layer = attn + 128 * expert + router + 2 * h + 2 * 128  # experts, router, 2 RMSNorms, q/k norms
    assert (s.moe_layers, s.num_experts, s.experts_per_token) == (48, 128, 8)
    assert (s.attn_params_per_layer, s.expert_params, s.router_params) == (attn, expert, router)
    assert s.num_params == layers * per_layer + 2 * 151936 * h + h
    assert s.active_params == s.num_params - 120 * layers * expert - 151936 * h
    assert s.layer_matmul_params == attn + 8 * expert + router


def test_gpt_oss_has_biased_experts_and_router():
    s = ModelSpec.load("gpt-oss-20b")
    assert s.router_bias and s.expert_bias and s.qkv_bias and s.o_bias
    assert s.expert_params == 3 * 2880 * 2880 + 2 * 2880 + 2880
    assert s.router_params == 2880 * 32 + 32


def test_deepseek_latent_attention_and_shared_experts():
    s = spec_of("deepseek-v2-lite")
    h = 2048
    q = h * 16 * (128 + 64)  # no q_lora_rank: a full query projection
    kv = h * (512 + 64) + 512 * 16 * (128 + 128)  # down to the latent and its rope key, up to K and V
    assert s.attn_params_per_layer == q + kv + 16 * 128 * h
    assert (s.head_dim, s.kv_dim) == (192, 512 + 64)
    assert (s.moe_layers, s.dense_layers) == (26, 1)  # first_k_dense_replace = 1
    assert (s.num_shared_experts, s.shared_expert_params) == (2, 3 * h * 2 * 1408)


@pytest.mark.parametrize("change, moe_layers", [({}, 24), ({"mlp_only_layers": [0, 5]}, 22),
                                                ({"decoder_sparse_step": 2}, 12)])
def test_qwen_moe_layers_follow_sparse_step_and_mlp_only_layers(change, moe_layers):
    s = ModelSpec.from_hf_config({**fixture("qwen1.5-moe-a2.7b"), **change}, "m")
    assert s.moe_layers == moe_layers
    dense = s.num_layers - moe_layers
    assert s.num_params - ModelSpec.from_hf_config(fixture("qwen1.5-moe-a2.7b"), "m").num_params == \
        dense * (s.dense_mlp_params - 60 * s.expert_params - s.shared_expert_params - s.router_params)


@pytest.mark.parametrize("model", SHIPPED)
def test_dense_models_keep_their_figures(model):
    s = ModelSpec.load(model)
    if s.is_moe:
        return
    assert s.layer_matmul_params == s.attn_params_per_layer + s.dense_mlp_params
    embedding = 0 if s.tie_word_embeddings else s.lm_head_params
    assert s.active_params == s.num_params - embedding
    if s.weight_format == "bf16":
        assert s.weight_bytes == s.num_params * s.dtype_bytes
        assert s.streamed_weight_bytes == (s.layer_matmul_params * s.num_layers + s.lm_head_params) * s.dtype_bytes
    assert s.kv_bytes_per_token == 2 * s.num_layers * s.num_kv_heads * s.head_dim * s.dtype_bytes


# --- weight formats -------------------------------------------------------------------------


def test_format_bytes():
    assert FORMAT_BYTES == {"bf16": 2.0, "fp8": 1.0, "mxfp4": 4.25 / 8}


def test_gpt_oss_weights_are_mxfp4_experts_and_bf16_rest():
    s = ModelSpec.load("gpt-oss-20b")
    assert (s.weight_format, s.expert_format) == ("bf16", "mxfp4")
    assert s.expert_weight_bytes == 3 * 2880 * 2880 * 4.25 / 8 + (2 * 2880 + 2880) * 2
    assert 12.8e9 < s.weight_bytes < 13.8e9
    # The checkpoint's safetensors index: total_size 13,761,264,768 bytes (attention sinks aside).
    assert s.weight_bytes == pytest.approx(13_761_264_768, rel=1e-4)


def test_llama_405b_fp8_weights():
    s = ModelSpec.load("Llama-3.1-405B-FP8")
    assert (s.weight_format, s.dtype) == ("fp8", "bfloat16")
    assert s.weight_bytes == pytest.approx(410e9, rel=0.05)
    # FP8 linear layers, embedding table and LM head in bf16.
    assert s.weight_bytes == pytest.approx(s.num_params - 2 * s.lm_head_params + 2 * 2 * s.lm_head_params, rel=1e-3)


def test_streamed_weights_leave_out_routed_experts_and_embeddings():
    s = ModelSpec.load("Qwen3-30B-A3B")
    experts = s.moe_layers * s.num_experts * s.expert_weight_bytes
    rest = s.weight_bytes - s.streamed_weight_bytes - experts - s.lm_head_params * s.dtype_bytes
    assert 0 <= rest < 1e-3 * s.weight_bytes  # norms only
    assert s.streamed_weight_bytes < 0.1 * s.weight_bytes


@pytest.mark.parametrize("quant", [
    {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]},
    {"quant_method": "compressed-tensors", "ignore": ["lm_head"],
     "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}, "targets": ["Linear"]}}},
])
def test_fp8_checkpoints(quant):
    s = ModelSpec.from_hf_config({**shipped("Qwen3-30B-A3B"), "quantization_config": quant}, "m")
    assert (s.weight_format, s.expert_format) == ("fp8", "fp8")
    assert s.expert_weight_bytes == 3 * 2048 * 768


@pytest.mark.parametrize("quant", [
    {"quant_method": "awq", "bits": 4}, {"quant_method": "gptq", "bits": 4},
    {"quant_method": "bitsandbytes", "load_in_4bit": True}, {"quant_method": "modelopt", "quant_algo": "NVFP4"},
    {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int"}}}},
])
def test_unsupported_quantisation_is_refused_by_name(quant):
    err = refusal({**shipped("Llama-3.1-8B"), "quantization_config": quant})
    assert err.field == "quantization_config.quant_method"
    assert repr(quant["quant_method"]) in err.problem and "fbgemm_fp8" in err.problem and "mxfp4" in err.problem


def test_unknown_format_is_refused():
    with pytest.raises(SpecError) as info:
        ModelSpec.load("Llama-3.1-8B").with_kv_format("int4")
    assert info.value.field == "kv_format"


# --- expected experts -----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["Qwen3-30B-A3B", "gpt-oss-20b"])
def test_expected_experts_model(model):
    s = ModelSpec.load(model)
    e, k = s.num_experts, s.experts_per_token
    tokens = np.arange(0, 65)
    touched = s.expected_experts(tokens)
    assert touched.shape == tokens.shape
    assert touched[0] == 0 and touched[1] == pytest.approx(k)
    assert np.all(np.diff(touched) > 0) and np.all(np.diff(touched, 2) < 0)  # grows, concave
    many = s.expected_experts(np.array([1024, 16384]))
    assert many == pytest.approx(e, rel=1e-6) and np.all(many <= e)


@pytest.mark.parametrize("model", ["Qwen3-30B-A3B", "gpt-oss-20b"])
@pytest.mark.parametrize("tokens", [1, 4, 16, 64])
def test_expected_experts_matches_monte_carlo(model, tokens):
    s = ModelSpec.load(model)
    e, k, trials = s.num_experts, s.experts_per_token, 2000
    rng = np.random.default_rng(0)
    picks = np.argsort(rng.random((trials, tokens, e)), axis=-1)[..., :k]  # k distinct experts per token
    touched = np.zeros((trials, e), dtype=bool)
    touched[np.arange(trials)[:, None], picks.reshape(trials, -1)] = True
    assert float(s.expected_experts(tokens)) == pytest.approx(touched.sum(axis=1).mean(), rel=0.02)


def test_a_dense_model_touches_no_experts():
    assert np.all(ModelSpec.load("Llama-3.1-8B").expected_experts(np.array([0, 1, 64])) == 0)


# --- KV cache -------------------------------------------------------------------------------


def test_gpt_oss_sliding_layers_cap_at_the_window():
    s = ModelSpec.load("gpt-oss-20b")
    assert (s.sliding_window, s.sliding_layers) == (128, 12)
    per_layer = s.kv_bytes_per_token / s.num_layers
    assert s.kv_bytes(8192) == per_layer * (12 * 8192 + 12 * 128)
    assert s.kv_bytes(8192) / (8192 * s.kv_bytes_per_token) == pytest.approx(0.5, rel=0.02)
    assert s.kv_bytes(64) == 64 * s.kv_bytes_per_token  # inside the window every layer holds it all


@pytest.mark.parametrize("model", ["Llama-3.1-8B", "Qwen3-30B-A3B", "Llama-3.1-405B-FP8"])
def test_full_attention_kv_is_linear_in_ctx(model):
    s = ModelSpec.load(model)
    ctx = np.array([0, 1, 100, 32768])
    assert np.array_equal(s.kv_bytes(ctx), ctx * s.kv_bytes_per_token)


def test_fp8_kv_halves_the_bytes():
    s = ModelSpec.load("gpt-oss-20b")
    fp8 = s.with_kv_format("fp8")
    assert (fp8.kv_format, s.kv_format) == ("fp8", "bf16")
    assert fp8.kv_bytes_per_token * 2 == s.kv_bytes_per_token
    assert fp8.kv_bytes(4096) * 2 == s.kv_bytes(4096)
    assert fp8.weight_bytes == s.weight_bytes


def test_latent_attention_caches_the_latent():
    s = spec_of("deepseek-v2-lite")
    # vLLM caches kv_lora_rank + qk_rope_head_dim elements per token per layer, not K and V per head.
    assert s.kv_bytes_per_token == 27 * (512 + 64) * 2
    assert s.kv_bytes_per_token * 7 < 2 * 27 * 16 * 128 * 2


@pytest.mark.parametrize("change, window, sliding", [
    ({"sliding_window": 4096}, 4096, 32),  # Mistral-7B v0.1: every layer
    ({"sliding_window": None}, 0, 0),
    ({"sliding_window": 131072}, 0, 0),  # no shorter than max_position_embeddings: never bites
    ({"sliding_window": 4096, "use_sliding_window": False}, 0, 0),  # Qwen's configs carry an unused window
    ({"sliding_window": 4096, "use_sliding_window": True, "max_window_layers": 28}, 4096, 4),
    ({"sliding_window": 4096, "layer_types": ["sliding_attention", "full_attention"] * 16}, 4096, 16),
])
def test_sliding_window_layers(change, window, sliding):
    s = ModelSpec.from_hf_config({**shipped("Llama-3.1-8B"), **change}, "m")
    assert (s.sliding_window, s.sliding_layers) == (window, sliding)


def test_layer_types_must_cover_every_layer():
    err = refusal({**shipped("Llama-3.1-8B"), "sliding_window": 64, "layer_types": ["sliding_attention"] * 3})
    assert err.field == "layer_types"


# --- vision models --------------------------------------------------------------------------


def test_gemma3_profiles_its_language_model():
    config = {**fixture("gemma-3-27b-it"), "_name_or_path": "google/gemma-3-27b-it"}
    s = ModelSpec.from_hf_config(config, name_from_config(config), "gemma3.json")
    assert s.name == "gemma-3-27b-it"
    assert s.not_modelled == ("vision encoder",)
    assert s.summary()["not_modelled"] == ["vision encoder"]
    # Gemma 3 report, Table 1: 1,416M embedding + 25,600M non-embedding parameters (vision apart).
    assert s.num_params == pytest.approx(27.0e9, rel=0.01)
    assert (s.dtype, s.tie_word_embeddings, s.qk_norm) == ("bfloat16", True, True)
    assert (s.sliding_window, s.sliding_layers) == (1024, 62 - 62 // 6)  # 5 local layers : 1 global


def test_llava_style_config_names_the_outer_model():
    text = {**shipped("Llama-2-7B"), "model_type": "llama"}
    del text["_name_or_path"], text["torch_dtype"]
    config = {"_name_or_path": "llava-hf/llava-1.5-7b-hf", "model_type": "llava", "torch_dtype": "float16",
              "text_config": text, "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024}}
    s = ModelSpec.from_hf_config(config, name_from_config(config), "llava.json")
    assert s.name == "llava-1.5-7b-hf" and s.not_modelled == ("vision encoder",) and s.dtype == "float16"
    assert s.num_params == ModelSpec.load("Llama-2-7B").num_params
    assert ModelSpec.load("Llama-2-7B").not_modelled == ()


# --- refusals -------------------------------------------------------------------------------


def test_nemotron_h_is_refused_not_read_as_dense():
    with pytest.raises(SpecError) as info:
        ModelSpec.load(CONFIGS / "nemotron-h-8b.json")
    assert info.value.field == "hybrid_override_pattern"
    assert NOT_MODELLED in info.value.problem and "nemotron-h-8b.json" in str(info.value)


LLAMA = {"hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 4, "intermediate_size": 4096,
         "num_hidden_layers": 8, "vocab_size": 32000}


@pytest.mark.parametrize("extra, field", [
    ({"model_type": "jamba", "attn_layer_period": 8, "attn_layer_offset": 4, "mamba_d_state": 16},
     "attn_layer_period"),
    ({"model_type": "falcon_h1", "mamba_d_ssm": 1024, "mamba_n_heads": 16}, "mamba_d_ssm"),
    ({"model_type": "zamba2", "mamba_d_state": 64}, "mamba_d_state"),
    ({"model_type": "mamba", "state_size": 16, "conv_kernel": 4}, "state_size"),
    ({"model_type": "rwkv", "attention_hidden_size": 1024, "rescale_every": 6}, "rescale_every"),
    ({"model_type": "qwen3_next", "layer_types": ["linear_attention"] * 3 + ["full_attention"]}, "layer_types"),
    ({"model_type": "minimax", "attn_type_list": [0, 1]}, "attn_type_list"),
    ({"model_type": "t5", "is_encoder_decoder": True}, "is_encoder_decoder"),
])
def test_unmodelled_architectures_are_refused_by_name(extra, field):
    err = refusal({**LLAMA, **extra})
    assert err.field == field and NOT_MODELLED in err.problem


def test_cross_attention_in_a_text_config_is_refused():
    config = {"model_type": "mllama", "text_config": {**LLAMA, "model_type": "mllama_text_model",
                                                      "cross_attention_layers": [3, 8]}}
    err = refusal(config)
    assert err.field == "cross_attention_layers" and "text_config" in err.source


def test_unknown_model_type_is_refused_listing_the_supported():
    err = refusal({**LLAMA, "model_type": "falcon"})
    assert err.field == "model_type"
    assert "'falcon'" in err.problem and "llama" in err.problem and "qwen3_moe" in err.problem
    assert refusal({**LLAMA, "model_type": ["llama"]}).field == "model_type"


def test_a_config_without_model_type_reads_as_dense_llama_unless_it_has_experts():
    assert not ModelSpec.from_hf_config({**LLAMA, "is_encoder_decoder": False}, "m").is_moe
    err = refusal({**LLAMA, "n_routed_experts": 64})
    assert err.field == "n_routed_experts" and "deepseek_v2" in err.problem


# --- names ----------------------------------------------------------------------------------


def test_model_name_of_hugging_face_ids():
    assert model_name_of("meta-llama/Llama-3.1-8B-Instruct") == "Llama-3.1-8B"
    assert model_name_of("/cache/models--meta-llama--Llama-3.1-70B-Instruct/snapshots/33101ce6/") == "Llama-3.1-70B"
    assert mlenergy_model_name is model_name_of


@pytest.mark.parametrize("model", SHIPPED)
def test_shipped_names_do_not_change(model):
    path = PROFILES.shipped / "model-configs" / model / "config.json"
    assert ModelSpec.load(model).name == model
    assert ModelSpec.load(path).name == model  # by path too: `festgym profiles calibrate` regenerates from paths


def test_three_configs_in_one_folder_get_three_names(tmp_path):
    configs = {"a.json": shipped("Qwen3-8B"), "b.json": fixture("mixtral-8x7b"),
               "c.json": {**shipped("Llama-2-7B"), "_name_or_path": "/data/ckpt/Llama-2-7b-chat-hf/"}}
    names = []
    for file, config in configs.items():
        (tmp_path / file).write_text(json.dumps(config))
        names.append(ModelSpec.load(tmp_path / file).name)
    assert names == ["Qwen3-8B", "mixtral-47B", "Llama-2-7b-chat-hf"]


def test_an_explicit_name_wins_and_must_be_one_folder_name():
    config = shipped("Qwen3-8B")
    assert name_from_config(config, "mine") == "mine"
    assert ModelSpec.load("Qwen3-8B", "mine").name == "mine"
    for bad in ("a/b", "my model", ""):
        with pytest.raises(SpecError) as info:
            name_from_config(config, bad)
        assert info.value.field == "--name"


def test_generate_names_the_profile_from_the_config(tmp_path, capsys):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "qwen.json").write_text(json.dumps(shipped("Qwen3-0.6B")))
    gpu = PROFILES.shipped / "H100-SXM-80GB" / "gpu.yaml"
    assert main(["profiles", "generate", "--gpu", str(gpu), "--model-config", str(folder / "qwen.json"),
                 "--out", str(tmp_path / "out"), "--no-check"]) == 0
    assert Profile.load(tmp_path / "out").key == "H100-SXM-80GB/Qwen3-0.6B"
    assert main(["profiles", "generate", "--gpu", str(gpu), "--model-config", str(folder / "qwen.json"),
                 "--out", str(tmp_path / "bad"), "--no-check", "--name", "a b"]) == 2
    assert "--name" in capsys.readouterr().err


def test_summary_reports_the_new_fields():
    summary = ModelSpec.load("gpt-oss-20b").summary()
    assert {k: summary[k] for k in ("num_experts", "experts_per_token", "weight_format", "expert_format",
                                    "kv_format", "sliding_window", "sliding_layers", "not_modelled")} == {
        "num_experts": 32, "experts_per_token": 4, "weight_format": "bf16", "expert_format": "mxfp4",
        "kv_format": "bf16", "sliding_window": 128, "sliding_layers": 12, "not_modelled": []}
    assert summary["active_params"] == ModelSpec.load("gpt-oss-20b").active_params
