"""festgym profile: the whole pipeline on the CPU with a tiny model and a fake energy meter, clock
sweeps and their restore, the measured profile's format and provenance, and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from festgym.cli.main import main  # noqa: E402
from festgym.errors import FestgymError  # noqa: E402
from festgym.profiles.calibration.measured import MEASUREMENTS  # noqa: E402
from festgym.profiles.models import ModelSpec  # noqa: E402
from festgym.profiles.profile import Profile  # noqa: E402
from festgym.profiles.profiler.measure import (  # noqa: E402
    ConstantPower,
    Device,
    measure,
    measure_point,
    partition_sms,
)
from festgym.profiles.profiler.plan import Plan, ProfileRun  # noqa: E402
from festgym.profiles.profiler.run import profile  # noqa: E402
from festgym.profiles.profiler.transformer import RandomTransformer  # noqa: E402
from festgym.resources import PROFILES  # noqa: E402

CONFIG = PROFILES.shipped / "model-configs" / "Llama-3.2-3B" / "config.json"
TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "vocab_size": 256, "tie_word_embeddings": True, "torch_dtype": "float32", "hidden_act": "silu"}


class Ticks:
    """A clock that advances 10 ms per reading: a fake meter's energy is then known exactly."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.01
        return self.t


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("prof") / "H100-SXM-80GB" / "Llama-3.2-3B-tiny"
    return profile(ProfileRun(CONFIG, out, dry_run=True), meter=ConstantPower(300.0))


def test_the_pipeline_writes_a_loadable_profile_marked_measured(measured):
    assert measured.key == "H100-SXM-80GB/Llama-3.2-3B-tiny" and measured.model.hidden_size == 64
    kinds = {k: v["kind"] for k, v in measured.provenance.items()}
    assert kinds["prefill_time_vs_tokens"] == kinds["decode_time_vs_batch_and_ctx"] == kinds["power"] == "measured"
    assert kinds["time_vs_sm_clock"] == kinds["time_vs_sm_share"] == "modelled"  # one clock, one share
    setup = measured.provenance["measurement"]
    assert setup["device"].startswith("cpu") and setup["share_mechanism"] == "none" and setup["dry_run"] is True
    assert setup["energy"] == "ConstantPower"
    assert {r["metric"] for r in measured.fit_errors} == {"prefill_time_s", "prefill_power_w", "decode_time_s",
                                                          "decode_power_w"}


def test_grid_nodes_that_were_measured_hold_the_measurement(measured):
    raw = pd.read_csv(measured.path / MEASUREMENTS)
    assert len(raw) == 3 + 4 and raw["skipped"].isna().all()
    clock = measured.gpu.default_sm_clock_mhz
    pre = raw[(raw.phase == "prefill") & raw.tokens.isin([32, 64])]  # grid nodes
    assert np.allclose(measured.prefill_time(pre.tokens.to_numpy(), 1.0, clock), pre.time_s, rtol=1e-4)
    dec = raw[(raw.phase == "decode") & (raw.ctx == 16)]
    assert np.allclose(measured.decode_time(dec.batch.to_numpy(), 16, 1.0, clock), dec.time_s, rtol=1e-4)
    # the constant 300 W meter: measured power is 300 W, and the grid holds it at measured nodes
    assert np.allclose(raw.power_w, 300.0, rtol=0.02)
    assert np.allclose(measured.prefill_power(pre.tokens.to_numpy(), 1.0, clock), pre.power_w, rtol=1e-3)
    # between and beyond the measured points the generated shape carries over: time grows with tokens
    times = measured.prefill_time(np.array([64, 512, 4096]), 1.0, clock)
    assert np.all(np.diff(times) > 0)


def test_profiles_check_reports_measured_against_generated(measured, capsys):
    assert main(["profiles", "check", "--root", str(measured.path.parents[1]), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mine = [r for r in rows if r["source"] == "measured-vs-generated"]
    assert {r["metric"] for r in mine} == {"prefill_time_s", "prefill_power_w", "decode_time_s", "decode_power_w"}
    assert all(r["n"] in (3, 4) and r["mape_pct"] >= 0 for r in mine)


def spec():
    return ModelSpec.from_hf_config(TINY, "tiny", "<test>")


def test_energy_comes_from_the_meter_over_a_window():
    plan = Plan(warmup=0, repeats=3, min_window_s=1e-4)
    ticks = Ticks()
    row = measure_point(Device(torch.device("cpu")), ConstantPower(200.0, clock=ticks), lambda: None, plan)
    assert row["window_steps"] >= plan.repeats
    assert row["energy_j"] == pytest.approx(200.0 * 0.01)  # one 10 ms tick between the window's readings
    assert row["power_w"] == pytest.approx(row["energy_j"] / row["window_s"])


def test_clock_sweeps_lock_each_clock_and_restore_even_on_failure():
    from fake_gpu import FakeGpu

    gpu = FakeGpu()
    model = RandomTransformer(spec(), "cpu", torch.float32)
    plan = replace(Plan.tiny(), tokens=(8,), batches=(1,), ctxs=(16,), clocks_mhz=(1980, 1200))
    rows = measure(model, Device(torch.device("cpu"), gpu), plan, None, 132)
    assert sorted({r["clock_mhz"] for r in rows}) == [1200, 1980]
    assert gpu.writes == [("lock", 1980, 1980), ("reset",), ("lock", 1200, 1200), ("reset",)]
    assert gpu.changed() == ()

    def broken(prompts, tokens):
        raise RuntimeError("CUDA out of memory")

    model.prefill = broken
    with pytest.raises(RuntimeError):
        measure(model, Device(torch.device("cpu"), gpu), plan, None, 132)
    assert gpu.writes[-2:] == [("lock", 1980, 1980), ("reset",)] and gpu.changed() == ()


def test_shares_need_green_contexts_and_clocks_need_a_gpu():
    model = RandomTransformer(spec(), "cpu", torch.float32)
    with pytest.raises(FestgymError, match="green contexts"):
        measure(model, Device(torch.device("cpu")), replace(Plan.tiny(), shares=(1.0, 0.5)), None, 132)
    with pytest.raises(FestgymError, match="needs a GPU"):
        measure(model, Device(torch.device("cpu")), replace(Plan.tiny(), clocks_mhz=(1200,)), None, 132)


def test_decode_graphs_are_captured_on_the_partitions_stream():
    """A graph replays in the context that captured it: under a share, decode must be captured on
    the green context's stream, on the whole GPU on a side stream (None)."""
    from contextlib import contextmanager

    class Partitioned(Device):
        @contextmanager
        def share(self, share, sm_count):
            self.stream = f"stream of {share:g}" if share < 1 else None
            try:
                yield share
            finally:
                self.stream = None

    model = RandomTransformer(spec(), "cpu", torch.float32)
    captured = []
    eager = model.decode_step

    def decode_step(stream=None):
        captured.append(stream)
        return eager(stream)

    model.decode_step = decode_step
    plan = replace(Plan.tiny(), tokens=(8,), batches=(1,), ctxs=(16,), shares=(1.0, 0.5))
    device = Partitioned(torch.device("cpu"))
    measure(model, device, plan, None, 132)
    assert captured == [None, "stream of 0.5"] and device.stream is None


def test_decode_points_that_do_not_fit_are_skipped_and_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(Device, "free_bytes", lambda self: 200_000)  # room for small caches only
    plan = replace(Plan.tiny(), batches=(1, 64), ctxs=(16, 64))
    out = profile(ProfileRun(CONFIG, tmp_path / "p", dry_run=True, plan=plan))
    raw = pd.read_csv(out.path / MEASUREMENTS)
    skipped = raw[raw.skipped.notna()]
    assert len(skipped) >= 1 and skipped.skipped.str.contains("does not fit").all()
    assert out.provenance["measurement"]["skipped"] == len(skipped)
    assert out.provenance["power"]["kind"] == "modelled"  # no meter on the CPU


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False, "model_type": "qwen3",
                                        "architectures": ["Qwen3ForCausalLM"]}, {"attention_bias": True}])
def test_the_model_has_the_parameters_the_roofline_counts(overrides):
    tiny = ModelSpec.from_hf_config({**TINY, **overrides}, "tiny", "<test>")
    model = RandomTransformer(tiny, "cpu", torch.float32)
    assert sum(t.numel() for t in model.tensors()) == tiny.num_params
    assert model.prefill(2, 8).shape == (2, 256)
    model.allocate_cache(3, 16)
    assert model.decode().shape == (3, 256)


def test_cli_dry_run_and_clear_errors(tmp_path, capsys):
    out = tmp_path / "H100-SXM-80GB" / "tiny"
    assert main(["profile", "--model-config", str(CONFIG), "--out", str(out), "--dry-run", "--tokens", "8,16",
                 "--json"]) == 0
    printed = capsys.readouterr().out
    assert "measured: prefill_time_vs_tokens, decode_time_vs_batch_and_ctx" in printed
    assert Profile.load(out).provenance["measurement"]["plan"]["tokens"] == [8, 16]
    assert main(["profile", "--model-config", str(tmp_path / "nope.json"), "--out", str(out), "--dry-run"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["profile", "--model-config", str(CONFIG), "--out", str(out), "--dry-run", "--tokens", "a"]) == 2
    assert "--tokens: expected comma-separated int values, got 'a'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["profile", "--model-config", str(CONFIG), "--out", str(out)]) == 2
        assert "--dry-run" in capsys.readouterr().err


def test_an_unlocked_run_takes_the_clock_read_under_load():
    from fake_gpu import FakeGpu

    class Boosting(FakeGpu):
        def sm_clock_mhz(self) -> int:
            return 1755  # what the GPU reads while the steps run

    model = RandomTransformer(spec(), "cpu", torch.float32)
    plan = replace(Plan.tiny(), tokens=(8,), batches=(1,), ctxs=(16,))
    rows = measure(model, Device(torch.device("cpu"), Boosting()), plan, ConstantPower(250.0), 132)
    assert [r["clock_mhz"] for r in rows] == [1755, 1755]


@pytest.mark.parametrize("name, spec_name", [("NVIDIA H100 80GB HBM3", "H100-SXM-80GB"),
                                             ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"),
                                             ("NVIDIA H100 PCIe", None), ("NVIDIA GH200 480GB", None),
                                             ("NVIDIA H200", "H200-SXM-141GB")])
def test_the_gpu_spec_follows_the_gpu_name(name, spec_name, tmp_path):
    from festgym.profiles.profiler.run import gpu_spec_for

    run = ProfileRun(CONFIG, tmp_path)
    if spec_name is None:
        with pytest.raises(FestgymError, match="pass --gpu-spec"):
            gpu_spec_for(run, name)
    else:
        assert gpu_spec_for(run, name).name == spec_name


def test_step_times_are_summarised_by_median_and_interpolated_percentiles(monkeypatch):
    monkeypatch.setattr(Device, "time_steps", lambda self, step, n: [float(t) for t in range(1, 11)])
    row = measure_point(Device(torch.device("cpu")), None, lambda: None, replace(Plan.tiny(), repeats=10))
    assert (row["time_s"], row["time_p10_s"], row["time_p90_s"]) == (5.5, pytest.approx(1.9), pytest.approx(9.1))


@pytest.mark.parametrize("share, group, expected", [(0.25, 8, 40), (0.01, 8, 8), (0.5, 8, 72), (0.99, 8, 132),
                                                    (0.25, 2, 34)])
def test_green_context_partitions_take_whole_sm_groups(share, group, expected):
    assert partition_sms(share, 132, group) == expected
