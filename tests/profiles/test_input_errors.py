"""Bad input gets a clear error naming the argument, file or field (review findings)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml

from festgym.cli.main import main
from festgym.errors import SpecError
from festgym.profiles.grid import Grid
from festgym.profiles.models import ModelSpec
from festgym.profiles.specs import GpuSpec
from festgym.resources import PROFILES

H100_YAML = PROFILES.shipped / "H100-SXM-80GB" / "gpu.yaml"


@pytest.mark.parametrize("args, name", [
    ((64, 1024, -0.5), "sm_share"), ((64, 1024, 0.0), "sm_share"), ((64, 1024, 1.0, np.nan), "sm_clock_mhz"),
    ((np.array([1.0, np.inf]), 1024), "batch"), ((8, np.array([1.0, np.nan])), "ctx"),
    ((np.array([1.0, 2.0]), 1024, np.array([0.5, -1.0])), "sm_share"),
])
def test_bad_lookup_coordinates_are_rejected(h100_llama8b, args, name):
    with pytest.raises(ValueError, match=name):
        h100_llama8b.decode(*args)


def test_numpy_scalars_and_field_names(h100_llama8b):
    a = h100_llama8b.decode(np.int64(8), np.float32(512.0), 1, 1500, fields="time_s")
    b = h100_llama8b.decode(8.0, 512.0, 1.0, 1500.0, fields=("time_s",))
    assert float(a["time_s"]) == pytest.approx(float(b["time_s"]), rel=1e-6)


def test_too_uneven_axis_is_rejected():
    with pytest.raises(ValueError, match="too uneven"):
        Grid(("x",), (np.array([0.0, 1.0, 2.0, 1e6]),), {"y": np.zeros(4)}, ("linear",))


def spec_data() -> dict:
    return yaml.safe_load(H100_YAML.read_text())


@pytest.mark.parametrize("section, name, value", [
    ("latency", "gemm_peak_frac", 0.0), ("latency", "bw_saturation_share", 0.0),
    ("latency", "roofline_sharpness", 0.5), ("latency", "clock_insensitive_frac", 2.0),
    ("power", "v_floor", 3.0), ("power", "idle_w", 0.0), ("latency", "kv_frac", True),
])
def test_constants_outside_their_physical_range(section, name, value):
    data = spec_data()
    data["constants"][section][name] = value
    with pytest.raises(SpecError) as err:
        GpuSpec.from_dict(data, "gpu.yaml")
    assert err.value.field == f"{section}.{name}"


def test_idle_must_lie_below_tdp():
    data = spec_data()
    data["tdp_w"] = 50
    with pytest.raises(SpecError, match="idle_w < tdp_w"):
        GpuSpec.from_dict(data, "gpu.yaml")


def test_constants_section_must_be_a_mapping():
    data = spec_data()
    data["constants"]["latency"] = 5
    with pytest.raises(SpecError) as err:
        GpuSpec.from_dict(data, "gpu.yaml")
    assert err.value.field == "latency"


@pytest.mark.parametrize("change, field", [
    ({"num_hidden_layers": 1.5}, "num_hidden_layers"), ({"hidden_size": True}, "hidden_size"),
    ({"intermediate_size": "lots"}, "intermediate_size"),
])
def test_whole_numbers_are_not_truncated(change, field):
    config = json.loads((PROFILES.shipped / "model-configs" / "Llama-3.2-1B" / "config.json").read_text())
    config.update(change)
    with pytest.raises(SpecError) as err:
        ModelSpec.from_hf_config(config, "m", "config.json")
    assert err.value.field == field


def test_clock_step_must_be_whole():
    data = spec_data()
    data["sm_clock_mhz"] = {**data["sm_clock_mhz"], "step": 15.7}
    with pytest.raises(SpecError) as err:
        GpuSpec.from_dict(copy.deepcopy(data), "gpu.yaml")
    assert err.value.field == "step"


def test_qwen2_style_biases_are_counted():
    base = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
            "num_hidden_layers": 2, "vocab_size": 100}
    plain = ModelSpec.from_hf_config(base, "m").num_params
    qwen2 = ModelSpec.from_hf_config({**base, "model_type": "qwen2"}, "m").num_params
    llama_bias = ModelSpec.from_hf_config({**base, "attention_bias": True}, "m").num_params
    assert qwen2 - plain == 2 * (64 + 2 * 32)  # q, k, v biases per layer
    assert llama_bias - plain == 2 * (64 + 2 * 32 + 64)  # and the output projection's


def test_check_with_missing_data_folder_is_an_error(capsys):
    assert main(["profiles", "check", "--data", "/nonexistent/data"]) == 2
    assert "--data /nonexistent/data" in capsys.readouterr().err


def test_list_with_missing_root_is_an_error(capsys):
    assert main(["profiles", "list", "--root", "/nonexistent/profiles"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_generate_names_model_from_resolved_folder(tmp_path, monkeypatch, capsys):
    work = tmp_path / "Tiny-0.1B"
    work.mkdir()
    (work / "config.json").write_text(json.dumps({"hidden_size": 256, "num_attention_heads": 4,
                                                  "intermediate_size": 512, "num_hidden_layers": 2,
                                                  "vocab_size": 1000}))
    monkeypatch.chdir(work)
    assert main(["profiles", "generate", "--gpu", str(H100_YAML), "--model-config", "config.json",
                 "--out", str(tmp_path / "out"), "--no-check"]) == 0
    assert "H100-SXM-80GB/Tiny-0.1B" in capsys.readouterr().out


def test_plot_into_a_file_path_is_an_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["profiles", "show", "H100-SXM-80GB/Llama-3.2-1B", "--plot", str(blocker / "sub")]) == 2
    assert "festgym: error" in capsys.readouterr().err
