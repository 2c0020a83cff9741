"""benchmarks/gpu_check.py: options, budget, spec figures and the report without torch; with torch,
the dry run end to end, the GPU sequence on a fake NVML GPU, and an interrupted check."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_gpu import FakeGpu

from festgym.errors import FestgymError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "vocab_size": 256, "torch_dtype": "float32", "hidden_act": "silu"}
SMALL = ["--batches", "1,2", "--ctx", "16", "--capture-batches", "1,2", "--warmup-tokens", "8", "--settle", "0",
         "--empty-window", "0.05", "--resident-window", "0.05", "--decode-window", "0.05", "--warmup", "1",
         "--repeats", "2"]


@pytest.fixture(scope="module")
def gc():
    """The script as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and the option builder look the module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


# --- without torch ---------------------------------------------------------------------------------

def test_help_runs_without_torch():
    blocked = "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['gpu_check.py', '--help']; " \
              f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--dry-run" in done.stdout and "--budget" in done.stdout and "--empty-window" in done.stdout


def test_options_default_to_the_gpu_plan_and_dry_run_to_the_tiny_one(gc):
    run, plan = gc.parse_args([])
    assert run.model == "Llama-3.1-8B" and not run.dry_run and run.out is None
    assert plan.batches == (1, 8, 32, 128) and plan.ctx == 1024 and plan.budget_s == 480
    assert plan.capture_batches[:5] == (1, 2, 4, 8, 16) and plan.capture_batches[-1] == 512  # vLLM's, 256 seqs
    run, plan = gc.parse_args(["--dry-run", "--batches", "2,3", "--out", "x.json"])
    assert run.dry_run and run.out == Path("x.json")
    assert plan.batches == (2, 3) and plan.empty_window_s == gc.CheckPlan.dry().empty_window_s  # the rest stays tiny
    with pytest.raises(SystemExit):
        gc.parse_args(["--repeats", "0"])


def test_budget_shortens_windows_down_to_their_floors(gc):
    plan = gc.CheckPlan()
    assert plan.fitted() == plan  # the defaults fit 480 s
    short = gc.CheckPlan(budget_s=140.0).fitted()
    assert short.empty_window_s < plan.empty_window_s and short.decode_window_s < plan.decode_window_s
    assert short.empty_window_s >= gc.MIN_IDLE_WINDOW_S and short.decode_window_s >= gc.MIN_DECODE_WINDOW_S
    windows = short.empty_window_s + short.resident_window_s + 4 * short.decode_window_s
    spent = gc.SETUP_S + 2 * short.settle_s + 4 * gc.POINT_S + windows
    assert spent == pytest.approx(140.0)
    with pytest.raises(FestgymError, match="too short"):
        gc.CheckPlan(budget_s=60.0).fitted()


def test_spec_is_the_gpus_own_or_the_nearest_shipped(gc):
    spec, label = gc.spec_for("NVIDIA H100 80GB HBM3")
    assert spec.name == "H100-SXM-80GB" and "this GPU" in label
    spec, label = gc.spec_for("NVIDIA GH200 480GB")
    assert spec.name == gc.NEAREST_SPEC and "nearest" in label and "NVIDIA GH200 480GB" in label
    figures = gc.spec_figures(spec, label)
    assert figures.empty_w == spec.states.empty_w and figures.loading_w == spec.states.loading_w
    assert figures.init_s > 0


def test_init_figure_is_the_scenarios_default(gc):
    from festgym.sim.config import SimConfig

    value, source = gc.init_figure()
    assert value == SimConfig().init_s > 0 and source.endswith(".init_s")


def test_nvml_reads_of_a_fake_gpu_and_what_they_flag(gc):
    gpu = FakeGpu()
    host = gc.read_host(gpu)
    assert host.gpu == "Fake H100" and host.power_limit_w == 700 and host.max_sm_clock_mhz == 1980
    window = gc.idle_window(gpu.total_energy_mj, 0.05, gpu)
    assert window.power_w == pytest.approx(100e3 / 1e3 / window.window_s)  # 100 J per reading
    assert window.sm_clock_mhz == 1980 and window.nvml_average_power_w == 100
    notes = gc.host_notes(gc.Host(gpu="x", uuid="GPU-x", other_processes=[{"pid": 7, "used_mib": 900}]), window)
    assert any("other compute process" in n for n in notes) and any("in use before" in n for n in notes)
    assert gpu.writes == []  # reads only


def _fake_report(gc):
    run, plan = gc.parse_args(["--out", "x.json"])
    spec, label = gc.spec_for("NVIDIA GH200 480GB")
    report = gc.CheckReport(run=run, plan=plan, spec=gc.spec_figures(spec, label),
                            host=gc.Host(gpu="NVIDIA GH200 480GB", driver="580.1", torch="2.11.0", cuda="13.0",
                                         dtype="bfloat16"),
                            empty=gc.Window(power_w=72.25, window_s=20.0, sm_clock_mhz=345),
                            start=gc.EngineStart(context_s=0.5, weights_s=0.8, weights_gb=16.1, warmup_s=1.2,
                                                 graphs=51, graph_capture_s=2.0, kv_cache_s=0.05, kv_cache_gb=17.2,
                                                 init_s=3.75, power_w=160.0),
                            resident=gc.Window(power_w=118.5, window_s=20.0, sm_clock_mhz=345),
                            decode=[gc.DecodePoint(1, 1024, time_s=0.00712, time_p10_s=0.0071, time_p90_s=0.0072,
                                                   power_w=310.0, clock_mhz=1980, predicted_time_s=0.0074,
                                                   predicted_power_w=300.0),
                                    gc.DecodePoint(128, 1024, skipped="time budget spent")],
                            notes=["something to say"], elapsed_s=123.4)
    gc.compare(report, spec, "no-such-model")  # the spec at the decode clock; no profile for it
    return report


def test_report_sets_measurements_beside_the_spec(gc):
    report = _fake_report(gc)
    text = gc.format_report(report)
    assert "NVIDIA GH200 480GB, driver 580.1" in text and "nearest shipped spec" in text
    assert "72.2" in text and "118.5" in text and "3.75" in text and "51 graphs" in text
    assert "7.12" in text and "0.96" in text and "skipped: time budget spent" in text
    assert "no predictions" in text and "note: something to say" in text
    assert report.spec.resident_at_clock_w == pytest.approx(report.spec.resident_w)  # 1980 MHz is the default clock
    data = json.loads(report.to_json())
    assert data["host"]["driver"] == "580.1" and data["decode"][1]["skipped"] == "time budget spent"
    assert data["start"]["init_s"] == 3.75 and data["elapsed_s"] == 123.4 and data["spec"]["gpu_type"]


def test_an_aborted_report_still_prints(gc):
    run, plan = gc.parse_args([])
    report = gc.CheckReport(run=run, plan=plan, aborted="interrupted")
    text = gc.format_report(report)
    assert "ABORTED: interrupted" in text and "not measured" in text


# --- with torch -------------------------------------------------------------------------------------

def test_dry_run_end_to_end(gc, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "check.json"
    assert gc.main(["--dry-run", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["aborted"] is None and data["run"]["dry_run"]
    assert data["empty"]["power_w"] == pytest.approx(gc.DRY_POWER_W["empty"], rel=0.05)
    assert data["resident"]["power_w"] == pytest.approx(gc.DRY_POWER_W["resident"], rel=0.05)
    start = data["start"]
    assert start["graphs"] == 3 and start["init_s"] > 0 and start["weights_gb"] > 0
    assert [p["batch"] for p in data["decode"]] == [1, 4]
    assert all(p["time_s"] > 0 and p["power_w"] == pytest.approx(gc.DRY_POWER_W["decode"], rel=0.05)
               for p in data["decode"])
    shown = capsys.readouterr().out
    assert "festgym GPU check" in shown and "dry run" in shown and "decode, ctx 64" in shown


def test_the_gpu_sequence_on_a_fake_nvml_gpu(gc, tmp_path, monkeypatch):
    """The GPU path (NVML reads, the device's energy counter, clocks read under load) with NVML faked
    and torch on the CPU: what differs on a real GPU is only CUDA (graphs, events)."""
    pytest.importorskip("torch")
    import torch

    from festgym.profiles.profiler import run as profiler_run
    from festgym.profiles.profiler.measure import Device, DeviceEnergy

    gpu = FakeGpu()
    config = tmp_path / "Tiny" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps(TINY))
    monkeypatch.setattr(gc, "open_gpu", lambda run: gpu)
    monkeypatch.setattr(profiler_run, "_device", lambda run: (Device(torch.device("cpu"), gpu), DeviceEnergy(gpu)))
    out = tmp_path / "check.json"
    assert gc.main(["--model", str(config), "--out", str(out), *SMALL]) == 0
    data = json.loads(out.read_text())
    assert data["host"]["gpu"] == "Fake H100" and "nearest" in data["spec"]["label"]
    assert data["empty"]["sm_clock_mhz"] == 1980 and data["empty"]["power_w"] > 0
    assert [p["clock_mhz"] for p in data["decode"]] == [1980, 1980]
    assert all(p["power_w"] > 0 and p["clock_events"] == "gpu_idle" for p in data["decode"])
    assert data["spec"]["profile_note"].startswith("no predictions")  # no shipped profile of "Tiny"
    assert gpu.writes == []  # no setting changed


def test_an_interrupted_check_reports_what_it_measured(gc, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    real = gc.idle_window
    calls = []

    def interrupted_second_time(*args):
        calls.append(args)
        if len(calls) == 2:  # the resident window: the engine is up
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(gc, "idle_window", interrupted_second_time)
    out = tmp_path / "check.json"
    assert gc.main(["--dry-run", "--out", str(out)]) == 130
    data = json.loads(out.read_text())
    assert data["aborted"] == "interrupted" and data["empty"]["power_w"] > 0 and data["start"]["init_s"] > 0
    assert data["resident"] is None and data["decode"] == []
