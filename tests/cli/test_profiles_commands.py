from __future__ import annotations

import json

from festgym.cli.main import main
from festgym.profiles.profile import Profile
from festgym.resources import PROFILES


def test_list_json(capsys):
    assert main(["profiles", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 10
    assert {"gpu", "model", "weight_gb", "provenance"} <= set(rows[0])


def test_show_with_plot(tmp_path, capsys):
    assert main(["profiles", "show", "H100-SXM-80GB/Qwen3-8B", "--plot", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    png = tmp_path / "H100-SXM-80GB_Qwen3-8B.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert out["decode_b64_j_per_token_at_that_clock"] < out["decode_b64_j_per_token_at_default_clock"]


def test_check_json_without_data_still_reports_grid_fidelity(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FESTGYM_DATA", str(tmp_path))  # an empty data folder: no sources apply
    assert main(["profiles", "check", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["source"] for r in rows} == {"grid-vs-model"}
    assert len(rows) >= 10


def test_generate_any_dense_model(tmp_path, capsys):
    config = tmp_path / "Tiny" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 4,
                                  "intermediate_size": 4096, "num_hidden_layers": 8, "vocab_size": 32000}))
    out = tmp_path / "profile"
    gpu = PROFILES.shipped / "A100-SXM-80GB" / "gpu.yaml"
    assert main(["profiles", "generate", "--gpu", str(gpu), "--model-config", str(config),
                 "--out", str(out), "--no-check"]) == 0
    profile = Profile.load(out)
    assert profile.key == "A100-SXM-80GB/Tiny"
    assert profile.decode_time(1, 100) < 2e-3


def test_generate_reports_bad_config(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"hidden_size": 1024}))
    gpu = PROFILES.shipped / "A100-SXM-80GB" / "gpu.yaml"
    assert main(["profiles", "generate", "--gpu", str(gpu), "--model-config", str(config),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "num_attention_heads" in err
