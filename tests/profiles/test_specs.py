"""GPU specs and model configs: shipped files load, derived figures match published ones, and
bad values raise a SpecError naming the field."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from festgym.errors import SpecError
from festgym.profiles.models import ModelSpec
from festgym.profiles.specs import GpuSpec
from festgym.resources import PROFILES

GPUS = ["H100-SXM-80GB", "A100-SXM-80GB"]

# Parameter counts as published on the models' Hugging Face pages / model cards.
PUBLISHED_PARAMS = {
    "Llama-3.1-8B": 8.03e9,
    "Llama-3.2-1B": 1.236e9,
    "Llama-3.2-3B": 3.213e9,
    "Qwen3-8B": 8.19e9,
    "Qwen3-14B": 14.77e9,
}


def config_path(model: str) -> Path:
    return PROFILES.shipped / "model-configs" / model / "config.json"


def hf_config(model: str) -> dict:
    return json.loads(config_path(model).read_text())


def gpu_dict(gpu: str) -> dict:
    with (PROFILES.shipped / gpu / "gpu.yaml").open() as fh:
        return yaml.safe_load(fh)


def spec_error(func, *args, field: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        func(*args)
    err = info.value
    assert err.field == field, err.field
    assert f"'{field}'" in str(err), str(err)
    return err


# --- ModelSpec -----------------------------------------------------------------------------


@pytest.mark.parametrize("model, published", sorted(PUBLISHED_PARAMS.items()))
def test_param_count_matches_published(model, published):
    spec = ModelSpec.load(config_path(model))
    assert spec.name == model
    assert spec.num_params == pytest.approx(published, rel=0.005)
    assert spec.weight_bytes == 2 * spec.num_params  # bfloat16


@pytest.mark.parametrize("model", sorted(PUBLISHED_PARAMS))
def test_param_count_exact(model):
    """Every weight tensor of a Llama/Qwen3 decoder, counted from the config fields."""
    c = hf_config(model)
    h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    head_dim = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim
    per_layer = (
        h * q + 2 * h * kv + q * h  # q, k, v, o projections
        + 3 * h * c["intermediate_size"]  # gate, up, down
        + 2 * h  # input and post-attention RMSNorm
        + (2 * head_dim if c["model_type"] == "qwen3" else 0)  # q_norm, k_norm
        + ((q + 2 * kv + h) if c.get("attention_bias") else 0)
    )
    embeddings = vocab * h * (1 if c.get("tie_word_embeddings") else 2)
    assert ModelSpec.load(config_path(model)).num_params == layers * per_layer + embeddings + h


def test_param_count_llama_8b_matches_safetensors():
    # the exact total Hugging Face reports for meta-llama/Llama-3.1-8B(-Instruct)
    assert ModelSpec.load(config_path("Llama-3.1-8B")).num_params == 8_030_261_248


@pytest.mark.parametrize("model", sorted(PUBLISHED_PARAMS))
def test_kv_bytes_per_token(model):
    config = hf_config(model)
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    expected = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 2
    assert ModelSpec.load(config_path(model)).kv_bytes_per_token == expected


def test_kv_bytes_per_token_llama_8b():
    # 2 (K and V) x 32 layers x 8 KV heads x 128 head dim x 2 bytes
    assert ModelSpec.load(config_path("Llama-3.1-8B")).kv_bytes_per_token == 131072


def test_kv_bytes_follow_dtype():
    config = hf_config("Llama-3.1-8B")
    config["torch_dtype"] = "float32"
    assert ModelSpec.from_hf_config(config, "fp32").kv_bytes_per_token == 2 * 131072


def test_head_dim_defaults_to_hidden_over_heads():
    config = hf_config("Llama-3.1-8B")
    del config["head_dim"]
    spec = ModelSpec.from_hf_config(config, "x")
    assert spec.head_dim == 4096 // 32


@pytest.mark.parametrize("key", ["num_local_experts", "num_experts", "n_routed_experts"])
def test_moe_config_rejected(key):
    config = hf_config("Llama-3.1-8B")
    config[key] = 8
    err = spec_error(ModelSpec.from_hf_config, config, "moe", "cfg.json", field=key)
    assert "cfg.json" in str(err)


def test_moe_config_file_rejected(tmp_path):
    config = hf_config("Qwen3-8B")
    config["num_local_experts"] = 8
    path = tmp_path / "Qwen3-8B-MoE" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    err = spec_error(ModelSpec.load, path, field="num_local_experts")
    assert "config.json" in str(err)


def test_missing_hidden_size():
    config = hf_config("Llama-3.2-1B")
    del config["hidden_size"]
    err = spec_error(ModelSpec.from_hf_config, config, "x", field="hidden_size")
    assert "missing" in err.problem


@pytest.mark.parametrize("kv_heads", [5, 7, 64])
def test_kv_heads_must_divide_heads(kv_heads):
    config = hf_config("Llama-3.1-8B")  # 32 attention heads
    config["num_key_value_heads"] = kv_heads
    spec_error(ModelSpec.from_hf_config, config, "x", field="num_key_value_heads")


@pytest.mark.parametrize("dtype", ["int3", "bf16", "float64"])
def test_unknown_dtype(dtype):
    config = hf_config("Llama-3.2-3B")
    config["torch_dtype"] = dtype
    err = spec_error(ModelSpec.from_hf_config, config, "x", field="torch_dtype")
    assert dtype in err.problem


# --- GpuSpec -------------------------------------------------------------------------------


@pytest.mark.parametrize("gpu", GPUS)
def test_shipped_gpu_spec_loads(gpu):
    raw = gpu_dict(gpu)
    spec = GpuSpec.load(PROFILES.shipped / gpu / "gpu.yaml")
    assert spec.name == gpu
    clocks = np.asarray(spec.sm_clocks_mhz)
    assert len(clocks) > 2
    assert np.all(np.diff(clocks) > 0)
    assert np.all(np.diff(clocks) == raw["sm_clock_mhz"]["step"])
    assert clocks[0] == raw["sm_clock_mhz"]["min"]
    assert clocks[-1] == raw["sm_clock_mhz"]["max"] == spec.max_sm_clock_mhz
    assert spec.default_sm_clock_mhz == raw["sm_clock_mhz"]["default"]
    assert spec.default_sm_clock_mhz in spec.sm_clocks_mhz
    assert spec.tdp_w == raw["tdp_w"]
    assert spec.idle_w == raw["constants"]["power"]["idle_w"]
    assert spec.states.to_dict() == raw["states"] and spec.empty_w == raw["states"]["empty_w"]
    assert 0 < spec.empty_w <= spec.states.resident_w <= spec.states.loading_w < spec.tdp_w
    assert spec.idle_w < spec.tdp_w
    assert "wake_s" not in raw and "parked_w" not in raw["constants"]["power"]


@pytest.mark.parametrize("gpu", GPUS)
def test_resident_idle_power_follows_the_v_f_curve(gpu):
    """Resident idle: resident_w at the default clock, falling as V(f)²·f towards the empty floor
    plus the clock-independent part of the context's extra."""
    spec = GpuSpec.from_dict(gpu_dict(gpu))
    st, pw = spec.states, spec.power
    assert spec.resident_idle_w(spec.default_sm_clock_mhz) == pytest.approx(st.resident_w, rel=1e-12)
    low = spec.sm_clocks_mhz[0]
    x, top = low / spec.max_sm_clock_mhz, spec.default_sm_clock_mhz / spec.max_sm_clock_mhz
    dyn = (float(pw.relative_voltage(x)) ** 2 * x) / (float(pw.relative_voltage(top)) ** 2 * top)
    extra = st.resident_w - st.empty_w
    assert spec.resident_idle_w(low) == pytest.approx(
        st.empty_w + extra * (st.resident_floor_frac + (1 - st.resident_floor_frac) * dyn), rel=1e-12)
    assert st.empty_w + st.resident_floor_frac * extra < spec.resident_idle_w(low) < st.resident_w
    clocks = np.asarray(spec.sm_clocks_mhz, dtype=float)
    assert (np.diff([spec.resident_idle_w(c) for c in clocks]) > 0).all()
    assert spec.device_figures()["states.resident_w"] == st.resident_w


@pytest.mark.parametrize("change, match", [
    ({"empty_w": 120.0}, "empty_w <= resident_w <= loading_w < tdp_w"),
    ({"loading_w": 100.0}, "empty_w <= resident_w <= loading_w < tdp_w"),
    ({"loading_w": 800.0}, "empty_w <= resident_w <= loading_w < tdp_w"),
])
def test_idle_states_must_be_ordered_below_tdp(change, match):
    data = copy.deepcopy(gpu_dict("H100-SXM-80GB"))  # empty 70, resident 116, loading 150, TDP 700
    data["states"].update(change)
    err = spec_error(GpuSpec.from_dict, data, "h100.yaml", field="states")
    assert match in err.problem


@pytest.mark.parametrize("name, value", [("empty_w", 0.0), ("resident_floor_frac", 1.5), ("loading_w", "hot")])
def test_state_constant_outside_its_range(name, value):
    data = copy.deepcopy(gpu_dict("H100-SXM-80GB"))
    data["states"][name] = value
    spec_error(GpuSpec.from_dict, data, field=f"states.{name}")


def test_a_spec_from_before_power_states_says_what_to_change():
    data = copy.deepcopy(gpu_dict("H100-SXM-80GB"))
    del data["states"]
    data["wake_s"] = 1.0
    err = spec_error(GpuSpec.from_dict, data, "old.yaml", field="states")
    assert "predates power states" in err.problem and "wake_s" in err.problem
    del data["wake_s"]
    assert "missing" in spec_error(GpuSpec.from_dict, data, field="states").problem


@pytest.mark.parametrize("gpu", GPUS)
def test_gpu_spec_round_trips(gpu):
    spec = GpuSpec.from_dict(gpu_dict(gpu))
    again = GpuSpec.from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict()
    assert again.sm_clocks_mhz == spec.sm_clocks_mhz


def test_known_ladders():
    h100 = GpuSpec.from_dict(gpu_dict("H100-SXM-80GB"))
    a100 = GpuSpec.from_dict(gpu_dict("A100-SXM-80GB"))
    assert (h100.sm_clocks_mhz[0], h100.sm_clocks_mhz[-1]) == (210, 1980)
    assert (a100.sm_clocks_mhz[0], a100.sm_clocks_mhz[-1]) == (210, 1410)
    assert len(h100.sm_clocks_mhz) == (1980 - 210) // 15 + 1


@pytest.mark.parametrize("default", [1000, 2100, 195])
def test_default_clock_off_ladder(default):
    data = copy.deepcopy(gpu_dict("H100-SXM-80GB"))  # ladder 210..1980 in 15 MHz steps
    data["sm_clock_mhz"]["default"] = default
    err = spec_error(GpuSpec.from_dict, data, "h100.yaml", field="sm_clock_mhz.default")
    assert str(default) in err.problem
    assert "h100.yaml" in str(err)


@pytest.mark.parametrize("tdp", [-700, 0])
def test_non_positive_tdp(tdp):
    data = copy.deepcopy(gpu_dict("A100-SXM-80GB"))
    data["tdp_w"] = tdp
    spec_error(GpuSpec.from_dict, data, field="tdp_w")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan"])
def test_non_finite_constant(value):
    data = copy.deepcopy(gpu_dict("H100-SXM-80GB"))
    data["constants"]["latency"]["hbm_frac"] = value
    err = spec_error(GpuSpec.from_dict, data, field="latency.hbm_frac")
    assert "finite" in err.problem


def test_nan_power_constant():
    data = copy.deepcopy(gpu_dict("A100-SXM-80GB"))
    data["constants"]["power"]["compute_w"] = float("nan")
    spec_error(GpuSpec.from_dict, data, field="power.compute_w")


def test_nan_datasheet_figure():
    data = copy.deepcopy(gpu_dict("H100-SXM-80GB"))
    data["hbm_bandwidth_gbps"] = float("nan")
    spec_error(GpuSpec.from_dict, data, field="hbm_bandwidth_gbps")


def test_unknown_constant():
    data = copy.deepcopy(gpu_dict("H100-SXM-80GB"))
    data["constants"]["power"]["fan_w"] = 10.0
    spec_error(GpuSpec.from_dict, data, field="power.fan_w")


def test_gpu_yaml_nan_from_file(tmp_path):
    """YAML's own ``.nan`` in a spec file is caught when loading from disk, naming the file."""
    text = (PROFILES.shipped / "H100-SXM-80GB" / "gpu.yaml").read_text()
    text, count = re.subn(r"(?m)^    kv_frac: [0-9.e+-]+$", "    kv_frac: .nan", text)
    assert count == 1
    path = tmp_path / "gpu.yaml"
    path.write_text(text)
    err = spec_error(GpuSpec.load, path, field="latency.kv_frac")
    assert str(path) in str(err)


@pytest.mark.parametrize(
    "change, field",
    [({"num_key_value_heads": 0}, "num_key_value_heads"), ({"num_key_value_heads": -8}, "num_key_value_heads"),
     ({"head_dim": 0}, "head_dim"), ({"hidden_size": 4100, "head_dim": None}, "num_attention_heads")],
)
def test_bad_head_geometry_rejected(change, field):
    config = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
              "intermediate_size": 14336, "num_hidden_layers": 32, "vocab_size": 128256}
    config.update(change)
    with pytest.raises(SpecError) as err:
        ModelSpec.from_hf_config(config, "bad", "bad/config.json")
    assert err.value.field == field
