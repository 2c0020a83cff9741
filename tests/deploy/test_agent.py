"""The deploy agent end to end on a simulated host: energy bookkeeping, restore on every exit
path, dry run, the safety guard, the observation against the environment's, the numpy-only
import path, and the CLI."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from isolation import blocking

from festgym.cli.main import main
from festgym.control.checkpoint import LocalController
from festgym.control.decoder import LevelDecoder
from festgym.control.levels import nearest_clock
from festgym.control.numpy_policy import PolicyFileError
from festgym.deploy.agent import DeployAgent, DeployConfig
from festgym.deploy.deciders import CheckpointDecider
from festgym.deploy.engine_metrics import (
    Histogram,
    parse_metrics,
    render_metrics,
    window,
)
from festgym.deploy.observation import EngineSpec, host_observation
from festgym.deploy.safety import Guard, SafetyConfig
from festgym.deploy.telemetry import Telemetry
from festgym.devices.device import NoPermission
from festgym.errors import FestgymError
from festgym.scenario import load_scenario
from festgym.simhost.host import SimulatedHost, gap_histogram

REPO = Path(__file__).resolve().parents[2]
QUICK = load_scenario("default", sim={"init_s": 2.0})
"""The default scenario with engines that start in seconds (vLLM's 14 s would leave a 30 s run
little time with both engines up)."""


def agent_on(host: SimulatedHost, duration_s: float, apply: bool = True, policy: str = "ppo-local",
             safety: SafetyConfig | None = None) -> tuple[DeployAgent, io.StringIO]:
    log = io.StringIO()
    config = DeployConfig(interval_s=1.0, duration_s=duration_s, apply=apply, safety=safety or SafetyConfig())
    return DeployAgent(host.host, CheckpointDecider.for_gpu(LocalController(policy), host.engine_specs(), host.gpu),
                       host.engine_specs(), config, Telemetry(stream=log)), log


def records(log: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


# --- end to end --------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["ppo-local", "sac-local"])
def test_the_logs_energy_is_the_simulators(policy):
    host = SimulatedHost("default", seed=1, duration_s=61.0)
    agent, log = agent_on(host, 60.0, policy=policy)
    assert agent.run() == "duration"
    out = records(log)
    intervals = [r for r in out if r["event"] == "interval"]
    assert len(intervals) == 60 and out[0]["event"] == "start" and out[-1]["event"] == "stop"
    logged_j = sum(r.get("energy_j", 0.0) for r in out)
    result = host.sim.result()
    assert host.sim.now == pytest.approx(60.0)
    assert logged_j == pytest.approx(result.gpus.energy_kwh.sum() * 3.6e6, abs=1e-3)  # mJ counter resolution
    assert result.summary["requests"] > 100  # the engines served the workload
    # the controller acted: clocks other than the default, within the supported ladder
    assert {r["sm_clock_mhz"] for r in intervals} - {1980}
    assert all(c["nvml"] for r in intervals for c in r["calls"])
    assert out[-1]["still_changed"] == [] and host.gpu.changed() == ()


def test_cli_apply_on_the_simulated_host_logs_the_simulators_energy(tmp_path, capsys):
    log = tmp_path / "apply.jsonl"
    assert main(["deploy", "--simulate", "default", "--apply", "--duration", "60", "--log", str(log)]) == 0
    out = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(r["event"] == "interval" for r in out) == 60
    simulator = next(r for r in out if r["event"] == "simulator")
    assert sum(r.get("energy_j", 0.0) for r in out if r["event"] != "simulator") == \
        pytest.approx(simulator["energy_j"], abs=1e-3)
    assert "60 intervals" in capsys.readouterr().out
    assert main(["deploy", "report", str(log)]) == 0
    assert "simulator_energy_kj" in capsys.readouterr().out


def test_a_dry_run_changes_nothing_even_without_privileges():
    host = SimulatedHost("default", seed=0, duration_s=31.0, privileged=False)
    agent, log = agent_on(host, 30.0, apply=False)
    agent.run()
    intervals = [r for r in records(log) if r["event"] == "interval"]
    assert {r["sm_clock_mhz"] for r in intervals} == {1980}
    assert not any(r["applied"] for r in intervals)
    planned = [c["call"] for r in intervals for c in r["calls"]]
    assert "set_locked_sm_clocks_mhz" in planned  # it says what it would do


def test_applying_without_privileges_fails_clearly_and_restores():
    host = SimulatedHost("default", seed=0, duration_s=31.0, privileged=False)
    agent, log = agent_on(host, 30.0)
    with pytest.raises(NoPermission, match="no permission"):
        agent.run()
    assert records(log)[-1]["reason"].startswith("crash: NoPermission")


class Boom(RuntimeError):
    pass


def test_a_crash_restores_the_gpu_and_propagates(monkeypatch):
    host = SimulatedHost("default", seed=0, duration_s=61.0)
    agent, log = agent_on(host, 60.0, safety=SafetyConfig(min_change_interval_s=0.0))
    levels, calls = agent.decider.controller.levels, []

    def flaky(obs):
        calls.append(1)
        if len(calls) == 20:
            raise Boom("controller failed")
        return [0] + levels(obs)[1:]  # the lowest clock: a change to undo

    monkeypatch.setattr(agent.decider.controller, "levels", flaky)
    with pytest.raises(Boom):
        agent.run()
    stop = records(log)[-1]
    assert stop["reason"].startswith("crash: Boom") and "locked_sm_clocks" in stop["reset"]
    assert host.gpu.changed() == () and stop["still_changed"] == []
    host.sim.advance(host.sim.now + 1.0)
    assert host.gpu.sm_clock_mhz() == host.gpu.spec.default_sm_clock_mhz


@pytest.mark.parametrize("signum, reason", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT"),
                                            (signal.SIGHUP, "SIGHUP")])
def test_a_signal_stops_the_loop_and_restores(signum, reason, monkeypatch):
    host = SimulatedHost("default", seed=0, duration_s=121.0)
    agent, log = agent_on(host, 120.0, safety=SafetyConfig(min_change_interval_s=0.0))
    poll, polls = host.engines["Llama-3.2-3B"].poll, []

    def poll_then_signal():
        polls.append(1)
        if len(polls) == 15:
            os.kill(os.getpid(), signum)
        return poll()

    monkeypatch.setattr(host.engines["Llama-3.2-3B"], "poll", poll_then_signal)
    previous = signal.getsignal(signal.SIGTERM)
    assert agent.run() == reason
    assert signal.getsignal(signal.SIGTERM) is previous  # the agent's handler is gone again
    stop = records(log)[-1]
    assert stop["reason"] == reason and stop["still_changed"] == [] and host.gpu.changed() == ()
    assert host.sim.now < 20.0


def test_a_second_signal_cannot_cut_the_restore_short(monkeypatch):
    host = SimulatedHost(QUICK, seed=0, duration_s=31.0)
    agent, log = agent_on(host, 30.0, safety=SafetyConfig(min_change_interval_s=0.0))
    restore = host.gpu.restore

    def impatient_restore():
        os.kill(os.getpid(), signal.SIGTERM)  # the service manager insists
        os.kill(os.getpid(), signal.SIGINT)
        return restore()

    monkeypatch.setattr(host.gpu, "restore", impatient_restore)
    assert agent.run() == "duration"
    stop = records(log)[-1]
    assert stop["event"] == "stop" and "locked_sm_clocks" in stop["reset"] and stop["still_changed"] == []


def test_device_restore_tries_every_part():
    from fake_gpu import FakeGpu

    from festgym.devices.device import GpuError

    class Stubborn(FakeGpu):
        def reset_locked_sm_clocks(self) -> None:
            raise GpuError("reset locked SM clocks: GPU is busy")

        def changed(self) -> tuple[str, ...]:
            return ("locked_sm_clocks", "power_limit")

    gpu = Stubborn()
    with pytest.raises(GpuError, match="busy"):
        gpu.restore()
    assert gpu.writes == [("reset_limit",)]  # the power limit was still reset


def test_the_actuator_takes_its_own_gpu_option():
    from festgym.cli.main import build_parser

    args = build_parser().parse_args(["deploy", "--gpu", "1", "actuator", "--socket", "/tmp/s", "--gpu", "2"])
    assert (args.gpu, args.actuator_gpu) == (1, "2")


def test_sigterm_to_the_process_restores(tmp_path):
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "festgym", "deploy", "--simulate", "default", "--apply",
                             "--duration", "100000", "--log", str(log), "--min-change-interval", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # wait until it has acted
            if proc.poll() is not None or (log.exists() and '"set_locked_sm_clocks_mhz"' in log.read_text()):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    stop = next(r for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "stop")
    assert proc.returncode == 0, err
    assert stop["event"] == "stop" and stop["reason"] == "SIGTERM" and stop["still_changed"] == []
    assert "stopped (SIGTERM)" in out


# --- safety ---------------------------------------------------------------------------------------------


def test_nearest_clock_snaps_to_supported_clocks():
    ladder = [210, 225, 240, 1980]
    assert [nearest_clock(ladder, x) for x in (0, 217.5, 218, 232, 5000, 1100)] == [210, 210, 225, 225, 1980, 240]


def spec(model="m"):
    return EngineSpec(model, "sim://m", 64, ttft_slo_s=0.5, tbt_slo_s=0.1)


def latency_window(ttft: list[float], itl: list[float]):
    text = render_metrics("vllm", "m", {"running": 1, "waiting": 0}, {},
                          {"ttft_s": Histogram.from_values((0.1, 0.25, 0.5, 1.0), ttft),
                           "itl_s": Histogram.from_values((0.05, 0.1, 0.2), itl)})
    return window(None, parse_metrics(text))


def test_guard_rate_limits_and_ignores_small_moves():
    guard = Guard(SafetyConfig(min_change_interval_s=5.0, hysteresis_mhz=50.0), range(210, 1981, 15), [spec()])
    assert guard.clock(1402, now=0.0) == 1395  # first setting: at once, clamped
    assert guard.clock(1200, now=2.0) is None  # too soon
    assert guard.clock(1425, now=10.0) is None  # too small a move
    assert guard.clock(1200, now=10.0) == 1200
    assert guard.shares({"a": 0.5, "b": 0.5}, now=0.0) == {"a": 0.5, "b": 0.5}
    assert guard.shares({"a": 0.52, "b": 0.48}, now=20.0) is None  # within the share hysteresis
    assert guard.shares({"a": 0.75, "b": 0.25}, now=1.0) is None  # too soon
    assert guard.shares({"a": 0.75, "b": 0.25}, now=6.0) == {"a": 0.75, "b": 0.25}


def test_watchdog_trips_after_k_missed_intervals_and_holds():
    guard = Guard(SafetyConfig(watchdog_intervals=3, watchdog_hold_s=10.0), range(210, 1981, 15), [spec()])
    good, late_ttft, late_itl = latency_window([0.2] * 9, [0.02] * 9), latency_window([0.9] * 9, []), \
        latency_window([], [0.15] * 9)
    assert not guard.watch({"m": late_ttft}, 0.0) and not guard.watch({"m": late_itl}, 1.0)
    assert not guard.watch({"m": good}, 2.0)  # the streak is broken
    assert [guard.watch({"m": late_itl}, t) for t in (3.0, 4.0, 5.0)] == [False, False, True]
    assert guard.trips == 1 and guard.watch({"m": good}, 14.0) and not guard.watch({"m": good}, 15.0)
    assert not guard.watch({"m": None}, 16.0)  # an engine that did not answer is not a miss


def test_the_watchdog_resets_clocks_in_the_agent():
    host = SimulatedHost("default", seed=0, duration_s=41.0, rate_rps=40.0)  # overload: SLOs fail
    agent, log = agent_on(host, 40.0, safety=SafetyConfig(min_change_interval_s=0.0, watchdog_hold_s=15.0))
    agent.run()
    intervals = [r for r in records(log) if r["event"] == "interval"]
    held = [r for r in intervals if r["watchdog"]]
    assert held and agent.guard.trips >= 1
    first = held[0]
    assert [c["call"] for c in first["calls"]] == ["reset_locked_sm_clocks"]
    assert all(not r["calls"] for r in held[1:15])  # no controller changes while held


# --- the observation ---------------------------------------------------------------------------------


def test_the_host_observation_matches_the_environments_where_both_know_the_figure():
    host = SimulatedHost("default", seed=3, duration_s=50.0)
    controller = LocalController("ppo-local")
    engines = host.engine_specs()
    host.sim.advance(29.0)  # loaded by now
    for e in host.engines.values():
        e.poll()
    host.sim.advance(30.0)
    windows = {m: e.poll() for m, e in host.engines.items()}
    gpu = host.sim.gpus[0]
    decoder = LevelDecoder({"h": gpu.spec.sm_clocks_mhz}, controller.interface.clock_levels, 4)
    shares = {i.name: i.share for i in gpu.instances}
    ours = host_observation(engines, windows, shares, {m: 1.0 for m in shares}, host.gpu.read(), gpu.spec.tdp_w,
                            decoder.clock_lo["h"], gpu.spec.max_sm_clock_mhz, host.sim.now,
                            controller.interface.period_s)
    env = gpu.view.observe([0, 1], host.sim.now, decoder.clock_lo["h"], controller.interface.period_s)
    assert len(ours) == len(env) == controller.interface.n_obs
    exact = [k * 10 + f for k in range(2) for f in (0, 1, 2, 3, 6)] + [20, 21, 28, 29]  # resident, ready, share,
    # queue, kv_used per slot; power, clock; time of day
    assert np.allclose(np.array(ours)[exact], np.array(env)[exact], atol=1e-6)


def test_gap_histogram_counts_every_gap_in_closed_form():
    rng = np.random.default_rng(0)
    rows = np.zeros((200, 6))
    rows[:, 1] = rng.uniform(0.002, 0.2, 200)  # g0
    rows[:, 2] = np.where(rng.random(200) < 0.3, 0.0, rng.uniform(0, 1e-3, 200))  # dg
    rows[:, 3] = rng.integers(1, 40, 200)  # n
    rows[:, 4] = rng.integers(1, 9, 200)  # batch
    bounds = (0.01, 0.025, 0.05, 0.1, 0.2)
    gaps = np.concatenate([np.repeat(g0 + dg * np.arange(int(n)), int(b)) for _, g0, dg, n, b, _ in rows])
    assert gap_histogram(rows, bounds) == pytest.approx(Histogram.from_values(bounds, gaps))


# --- numpy alone ---------------------------------------------------------------------------------------

NUMPY_ALONE = blocking()
"""A script prefix that makes everything but numpy, nvidia-ml-py and prometheus-client unimportable."""

NUMPY_ONLY = NUMPY_ALONE + """
import io
from festgym.control.checkpoint import LocalController
from festgym.deploy.agent import DeployAgent, DeployConfig, Host
from festgym.deploy.deciders import CheckpointDecider
from festgym.deploy.engine_metrics import EngineScraper, parse_metrics, render_metrics
from festgym.deploy.observation import EngineSpec
from festgym.deploy.telemetry import Telemetry
from festgym.devices.nvml import NvmlDevice
from festgym.devices.shares import AdvisoryShares
from tests.fake_gpu import FakeGpu
import festgym.deploy.actuator
class Engine(EngineScraper):
    def scrape(self):
        return parse_metrics(render_metrics("vllm", "m", {"running": 3, "waiting": 1}, {}, {}))
log = io.StringIO()
host = Host(FakeGpu(), {"m": Engine("sim://m")}, AdvisoryShares(), sleep=lambda s: None)
engines = [EngineSpec("m", "sim://m", 64, 0.5, 0.1)]
agent = DeployAgent(host, CheckpointDecider.for_gpu(LocalController("ppo-local"), engines, host.gpu), engines,
                    DeployConfig(duration_s=0.0), Telemetry(stream=log))
agent.step(); agent.step()
print(json.loads(log.getvalue().splitlines()[-1])["levels"])
"""


REAL_HOST_CLI = NUMPY_ALONE + """
from festgym.devices import nvml
from tests.fake_gpu import FakeGpu, serve_metrics
url = serve_metrics()
gpu = FakeGpu()
nvml.open_gpus = lambda indices=None: [gpu]  # the host's GPU, without a driver
from festgym.cli.main import main
code = main(["deploy", "--policy", "ppo-local", "--engine", f"Llama-3.1-8B={url}", "--slo",
             "Llama-3.1-8B=0.5,0.1", "--max-num-seqs", "Llama-3.1-8B=64", "--apply", "--interval", "0.1",
             "--duration", "0.5", "--min-change-interval", "0", "--log", sys.argv[1], "--json"])
print(json.dumps({"code": code, "writes": gpu.writes, "changed": gpu.changed()}))
"""


def test_festgym_deploy_on_a_real_host_needs_numpy_alone(tmp_path):
    """The CLI path of a real host running a checkpoint (NVML faked, a live HTTP metrics
    endpoint) with pandas, YAML, Gymnasium and torch made unimportable."""
    log = tmp_path / "host.jsonl"
    done = subprocess.run([sys.executable, "-c", REAL_HOST_CLI, str(log)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result, totals = json.loads(lines[-1]), json.loads(lines[-2])
    assert result["code"] == 0 and totals["stopped"] == "duration" and totals["intervals"] == 5
    assert result["writes"][0][0] == "lock" and result["writes"][-1] == ["reset"] and result["changed"] == []
    intervals = [json.loads(line) for line in log.read_text().splitlines() if '"interval"' in line]
    assert all(r["engines"]["Llama-3.1-8B"]["ready"] for r in intervals)


def test_the_shipped_service_files_pin_the_shipped_controller():
    import yaml

    digest = LocalController("ppo-local").sha256
    unit = (REPO / "docs" / "deploy" / "festgym-deploy.service").read_text()
    assert f"--policy ppo-local --sha256 {digest}" in unit
    pod = yaml.safe_load((REPO / "docs" / "deploy" / "daemonset.yaml").read_text())
    policy = next(c for c in pod["spec"]["template"]["spec"]["containers"] if c["name"] == "policy")
    assert policy["command"][policy["command"].index("--sha256") + 1] == digest
    assert policy["securityContext"]["runAsNonRoot"] and policy["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_the_deploy_path_runs_with_numpy_alone():
    done = subprocess.run([sys.executable, "-c", NUMPY_ONLY], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout.splitlines()[-1])) == 3


# --- CLI and checkpoints --------------------------------------------------------------------------------


def test_cli_deploy_simulated_and_gpu_info(tmp_path, capsys):
    log = tmp_path / "d.jsonl"
    assert main(["deploy", "--simulate", "default", "--duration", "10", "--log", str(log)]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "10 intervals" in out and "calls planned" in out and "Llama-3.1-8B" in out
    assert main(["gpu", "info", "--simulate", "default", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["name"] == "H100-SXM-80GB" and info["sm_count"] == 132 and info["power_limit_w"] == 700.0


def test_without_a_policy_deploy_runs_the_controller_the_comparison_chooses(tmp_path):
    from festgym.cli.deploy import DEPLOYED

    log = tmp_path / "d.jsonl"
    assert main(["deploy", "--simulate", "default", "--duration", "5", "--log", str(log)]) == 0
    start = json.loads(log.read_text().splitlines()[0])
    assert DEPLOYED == "festina" and start["controller"] == DEPLOYED and start["controller_sha256"] is None


def test_a_residual_checkpoint_is_refused_on_a_host_by_name():
    from types import SimpleNamespace

    from festgym.control.checkpoint import ControllerInterface

    face = ControllerInterface(2, 8, 4, (), 86400.0, "box", residual_steps=2)
    residual = SimpleNamespace(interface=face, name="ppo-residual", sha256=None)
    with pytest.raises(FestgymError, match="ppo-residual is a residual controller"):
        CheckpointDecider(residual, [], [990, 1980], 700.0)


def test_a_pinned_hash_that_differs_is_refused(tmp_path, capsys):
    assert main(["deploy", "--simulate", "default", "--policy", "ppo-local", "--sha256", "0" * 64,
                 "--log", str(tmp_path / "x")]) == 2
    assert "is not the pinned" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_tampered_export_is_refused(tmp_path):
    import shutil

    folder = shutil.copytree(LocalController("ppo-local").folder, tmp_path / "ppo")
    spec = json.loads((folder / "numpy" / "policy.json").read_text())
    spec["layers"][0] = "relu"  # a changed network description, weights untouched
    (folder / "numpy" / "policy.json").write_text(json.dumps(spec))
    with pytest.raises(PolicyFileError, match="SHA-256 differs"):
        LocalController(folder)


@pytest.mark.parametrize("argv", [["deploy", "--simulate", "default"], ["gpu", "info", "--simulate", "default"],
                                  ["deploy", "--help"], ["deploy", "actuator", "--help"]])
def test_without_the_deploy_extra_the_error_says_how_to_install_it(argv):
    """Reading engine metrics needs prometheus-client; the help and the other commands do not."""
    code = blocking(("prometheus_client",)) + f"from festgym.cli.main import main\nsys.exit(main({argv!r}))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    if "--help" in argv:
        assert done.returncode == 0 and "usage: festgym deploy" in done.stdout, done.stderr
        return
    assert done.returncode == 2, done.stderr
    assert "needs the deploy extra (prometheus_client is missing): pip install 'festgym[deploy]'" in done.stderr


def test_bad_settings_are_named(capsys):
    assert main(["deploy", "--simulate", "default", "--interval", "0"]) == 2
    assert "--interval: out of range (0.0); expected > 0 s" in capsys.readouterr().err
    assert main(["deploy", "--simulate", "default", "--watchdog-intervals", "0"]) == 2
    assert "--watchdog-intervals: out of range (0)" in capsys.readouterr().err


def test_a_deploy_host_needs_only_the_card_and_the_export(tmp_path):
    import shutil

    shipped = LocalController("ppo-local").folder
    folder = tmp_path / "ppo"
    shutil.copytree(shipped / "numpy", folder / "numpy")
    shutil.copy(shipped / "card.json", folder / "card.json")  # no model.zip, no pickle
    assert LocalController(folder).sha256 == LocalController("ppo-local").sha256


def test_real_hosts_need_engines_and_a_driver(capsys, monkeypatch):
    assert main(["deploy", "--duration", "1"]) == 2
    assert "--engine MODEL=http" in capsys.readouterr().err
    assert main(["deploy", "--engine", "Nope-7B=http://localhost:1"]) == 2
    assert "not in scenario" in capsys.readouterr().err
    import pynvml

    from festgym.devices import nvml

    missing = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with mock.patch("pynvml.nvmlInit", autospec=True, side_effect=missing):
        monkeypatch.setattr(nvml, "_initialised", False)  # as on a host whose driver is missing
        for argv in (["gpu", "info"], ["deploy", "--engine", "Llama-3.1-8B=http://127.0.0.1:1", "--duration", "1"]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert "no NVIDIA driver was found" in err and "festgym deploy --simulate" in err


# --- rule policies on a host ------------------------------------------------------------------------


def test_festina_through_the_agent_tracks_festina_in_the_simulator():
    """Festina deciding from engine metrics (estimated views) against Festina deciding inside the
    simulator (exact views), on the same one-GPU workload, safety layer off. Ten minutes: over the
    first five (engines start in 18 s) the estimated views' lag is 5% of the energy, over ten 1.5%."""
    from festgym.policies import make_policy
    from festgym.policies.on_host import RuleDecider

    native = SimulatedHost("default", seed=0, duration_s=601.0, control=make_policy("festina"))
    native.sim.advance(600.0)
    host = SimulatedHost("default", seed=0, duration_s=601.0)
    specs = host.engine_specs()
    decider = RuleDecider(make_policy("festina"), "H100-SXM-80GB", specs, host.scenario.models, 1.0)
    free = SafetyConfig(min_change_interval_s=0, hysteresis_mhz=0, share_hysteresis=0, watchdog_intervals=10**6)
    log = io.StringIO()
    DeployAgent(host.host, decider, specs, DeployConfig(duration_s=600.0, apply=True, safety=free),
                Telemetry(stream=log)).run()
    # GPU energy: the host's own power is the same whoever sets the clocks
    ours, theirs = host.sim.result().summary, native.sim.result().summary
    assert ours["gpu_energy_kwh"] == pytest.approx(theirs["gpu_energy_kwh"], rel=0.05)
    assert abs(ours["slo_attainment"] - theirs["slo_attainment"]) < 0.03
    untouched = SimulatedHost("default", seed=0, duration_s=601.0)
    untouched.sim.advance(600.0)
    assert ours["gpu_energy_kwh"] < 0.85 * untouched.sim.result().summary["gpu_energy_kwh"]  # it does save energy
    assert ours["host_energy_kwh"] == untouched.sim.result().summary["host_energy_kwh"]
    levels = [json.loads(line).get("levels", 0) for line in log.getvalue().splitlines() if '"interval"' in line]
    assert levels and all(x is None for x in levels)  # a rule policy has no action levels


def test_host_views_estimate_what_the_metrics_do_not_say():
    from festgym.policies.on_host import HostInstance
    from festgym.profiles.profile import load_profile
    from festgym.scenario import load_scenario

    serving = load_scenario("default").models["Llama-3.1-8B"]
    spec = EngineSpec("Llama-3.1-8B", "sim://x", 256, 0.3, 0.1, ttft_per_1k_tokens_s=0.1)
    text = render_metrics("vllm", "Llama-3.1-8B", {"running": 8, "waiting": 3, "kv_used": 0.25},
                          {"prompt_tokens": 4000.0},
                          {"ttft_s": Histogram.from_values((0.1, 0.5, 1.0), [0.2, 0.2]), "itl_s": Histogram.empty(())})
    w = window(None, parse_metrics(text))
    assert spec.ttft_limit_s(w) == pytest.approx(0.3 + 0.1 * 2000 / 1000)  # mean prompt 4000 / 2 first tokens
    inst = HostInstance(spec, serving, load_profile("H100-SXM-80GB/Llama-3.1-8B"))
    inst.update(w, 0.5, mean_prompt=2000.0)
    assert (inst.running, inst.queue_len, inst.prefill_tokens, inst.share) == (8, 3, 6000, 0.5)
    assert inst.kv_seq == 0 and inst.mean_ctx == pytest.approx(0.25 * inst.kv_tokens / 8)
    assert inst.slo.ttft_per_1k_tokens_s == 0.1 and inst.ready


def test_the_host_reads_a_sliding_window_engines_context_as_the_simulator_counts_it():
    from festgym.deploy.engine_metrics import Histogram, parse_metrics, render_metrics, window
    from festgym.deploy.observation import EngineSpec
    from festgym.policies.on_host import HostInstance
    from festgym.profiles.profile import load_profile
    from festgym.sim.serving import EngineConfig, ModelServing

    serving = ModelServing(engine=EngineConfig(kv_cache_gb=10.0))
    spec = EngineSpec("gpt-oss-20b", "sim://x", 256, 0.3, 0.1)
    inst = HostInstance(spec, serving, load_profile("H100-SXM-80GB/gpt-oss-20b"))
    # 100 sequences of 2000 tokens hold their context in the full-attention layers and 128 tokens' worth
    # in the window layers: that is the KV use the engine reports, and the host reads 2000 back.
    used = 100 * (2000 + inst.kv_seq) / inst.kv_tokens
    text = render_metrics("vllm", "gpt-oss-20b", {"running": 100, "waiting": 0, "kv_used": used},
                          {"prompt_tokens": 0.0}, {"ttft_s": Histogram.empty(()), "itl_s": Histogram.empty(())})
    inst.update(window(None, parse_metrics(text)), 1.0, mean_prompt=300.0)
    assert inst.kv_seq == 128 and inst.mean_ctx == pytest.approx(2000.0)


def test_cli_runs_a_rule_policy_on_the_simulated_host(tmp_path, capsys):
    log = tmp_path / "festina.jsonl"
    assert main(["deploy", "--simulate", "default", "--policy", "festina", "--apply", "--duration", "20",
                 "--log", str(log)]) == 0
    out = capsys.readouterr().out
    assert "festina (rule policy)" in out and "20 intervals" in out
    assert main(["deploy", "--simulate", "default", "--policy", "festina", "--sha256", "0" * 64]) == 2
    assert "pins a checkpoint" in capsys.readouterr().err
