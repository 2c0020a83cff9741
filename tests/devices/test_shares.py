"""SM-share actuators (festgym.devices.shares and festgym.simhost.device.SimulatedShares): AdvisoryShares
only records, MpsShares drives a (fake) ``nvidia-cuda-mps-control`` with exact command lines, errors
come back typed, and SimulatedShares sets the simulated GPU's instance shares (scaled to fit)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from festgym.devices.device import GpuError, NotSupported
from festgym.devices.shares import MPS_CONTROL, AdvisoryShares, MpsShares, ShareActuator
from festgym.scenario import load_scenario
from festgym.simhost.device import SimulatedShares
from festgym.simhost.host import SimulatedHost

BIG, SMALL = "Llama-3.1-8B", "Llama-3.2-3B"  # the default scenario's local.models
SERVERS = {"a": 111, "b": 222}


# --- AdvisoryShares -----------------------------------------------------------------------------------

def test_advisory_records_and_never_applies(monkeypatch):
    shares = AdvisoryShares()
    assert isinstance(shares, ShareActuator) and shares.applies is False
    applied = []
    monkeypatch.setattr(shares, "_apply_one", lambda model, share: applied.append((model, share)))
    shares.set_shares({"a": 0.5, "b": 0.25})
    assert shares.shares == {"a": 0.5, "b": 0.25}
    assert applied == [("a", 0.5), ("b", 0.25)]  # set_shares hands it the change, which it ignores
    assert shares.restore() == ("a", "b")
    assert applied == [("a", 0.5), ("b", 0.25)]  # restore applies nothing when advisory
    assert shares.shares == {}


def test_advisory_restore_reports_only_models_below_whole_gpu():
    shares = AdvisoryShares()
    shares.set_shares({"a": 1.0, "b": 0.3})
    shares.set_shares({"c": 0.7})
    assert shares.restore() == ("b", "c")
    assert shares.restore() == ()


# --- MpsShares with a fake control binary ---------------------------------------------------------------

def fake_control(folder: Path, body: str) -> Path:
    script = folder / MPS_CONTROL
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.fixture
def mps(tmp_path, monkeypatch):
    """A fake nvidia-cuda-mps-control first on PATH that appends its stdin to ``commands.txt``."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "commands.txt"
    monkeypatch.setenv("FAKE_MPS_LOG", str(log))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    fake_control(folder, 'cat >> "$FAKE_MPS_LOG"\n')

    def sent() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    return folder, sent


def test_mps_resolves_control_on_path(mps):
    folder, sent = mps
    shares = MpsShares(SERVERS)
    assert shares.control == str(folder / MPS_CONTROL)
    assert shares.applies is True
    assert sent() == []


def test_mps_exact_commands(mps):
    _, sent = mps
    shares = MpsShares(SERVERS)
    shares.set_shares({"a": 0.5, "b": 0.25})
    assert sent() == ["set_active_thread_percentage 111 50", "set_active_thread_percentage 222 25"]
    assert shares.shares == {"a": 0.5, "b": 0.25}


@pytest.mark.parametrize("share, percent", [(0.333, 33), (0.336, 34), (1.0, 100), (0.05, 5), (0.004, 1),
                                            (1e-9, 1)])
def test_mps_percent_rounding(mps, share, percent):
    _, sent = mps
    shares = MpsShares(SERVERS)
    assert shares.command("a", share) == f"set_active_thread_percentage 111 {percent}"
    shares.set_shares({"a": share})
    assert sent() == [f"set_active_thread_percentage 111 {percent}"]


def test_mps_unchanged_shares_skipped(mps):
    _, sent = mps
    shares = MpsShares(SERVERS)
    shares.set_shares({"a": 0.5, "b": 0.5})
    shares.set_shares({"a": 0.5, "b": 0.5})
    assert len(sent()) == 2
    shares.set_shares({"a": 0.5, "b": 0.3})
    assert sent()[2:] == ["set_active_thread_percentage 222 30"]
    assert shares.shares == {"a": 0.5, "b": 0.3}


def test_mps_restore_sends_100_to_changed_models(mps):
    _, sent = mps
    shares = MpsShares({**SERVERS, "c": 333})
    shares.set_shares({"a": 0.6, "b": 0.4, "c": 1.0})
    assert shares.restore() == ("a", "b")
    assert sent()[3:] == ["set_active_thread_percentage 111 100", "set_active_thread_percentage 222 100"]
    assert shares.shares == {}
    assert shares.restore() == ()
    assert len(sent()) == 5


@pytest.mark.parametrize("body, detail", [
    ('cat > /dev/null\necho "Error: no MPS server with PID 111"\n', "Error: no MPS server with PID 111"),
    ("cat > /dev/null\necho 'daemon not running' >&2\nexit 1\n", "daemon not running"),
    ("cat > /dev/null\nexit 3\n", ": 3"),
])
def test_mps_control_failure_raises_gpu_error(mps, body, detail):
    folder, _ = mps
    fake_control(folder, body)
    shares = MpsShares(SERVERS)
    with pytest.raises(GpuError) as info:
        shares.set_shares({"a": 0.5})
    message = str(info.value)
    assert message.startswith("MPS: 'set_active_thread_percentage 111 50' failed: ")
    assert message.endswith(detail)
    assert shares.shares == {}  # nothing recorded as set


def test_mps_missing_binary_not_supported(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(NotSupported) as info:
        MpsShares(SERVERS)
    message = str(info.value)
    assert f"{MPS_CONTROL} not found on PATH" in message
    assert "advisory shares" in message
    assert isinstance(info.value, GpuError)


def test_mps_custom_control_name_missing(mps):
    with pytest.raises(NotSupported, match="no-such-mps-control not found"):
        MpsShares(SERVERS, control="no-such-mps-control")


def test_mps_model_without_server_pid(mps):
    _, sent = mps
    shares = MpsShares(SERVERS)
    with pytest.raises(GpuError) as info:
        shares.set_shares({"z": 0.5})
    assert str(info.value) == "MPS shares: no MPS server PID for model 'z' (have a, b)"
    assert not isinstance(info.value, NotSupported)
    assert sent() == [] and shares.shares == {}


def test_mps_partial_failure_still_restored(mps):
    _, sent = mps
    shares = MpsShares({"a": 111})
    with pytest.raises(GpuError, match="no MPS server PID for model 'b'"):
        shares.set_shares({"a": 0.5, "b": 0.5})
    assert sent() == ["set_active_thread_percentage 111 50"]  # a's cap was set before b failed
    assert shares.restore() == ("a",)
    assert sent()[-1] == "set_active_thread_percentage 111 100"


# --- SimulatedShares ----------------------------------------------------------------------------------

@pytest.fixture
def host():
    """The default scenario's local pair, with engines that start in seconds (ready well before 15 s)."""
    return SimulatedHost(load_scenario("default", sim={"init_s": 2.0}), seed=0, duration_s=30)


def effective(host: SimulatedHost) -> dict[str, float]:
    """Each resident instance's share, counting a pending change."""
    return {i.name: i.pending_share if i.pending_share is not None else i.share for i in host.sim.gpus[0].instances}


def test_simulated_host_uses_simulated_shares(host):
    assert isinstance(host.host.shares, SimulatedShares)
    assert host.host.shares.gpu is host.gpu
    assert effective(host) == {BIG: 0.5, SMALL: 0.5}


def test_simulated_shares_applied(host):
    shares = SimulatedShares(host.gpu)
    shares.set_shares({BIG: 0.7, SMALL: 0.3})
    assert effective(host) == {BIG: 0.7, SMALL: 0.3}
    host.sim.advance(host.sim.now + 0.5)
    assert effective(host) == {BIG: 0.7, SMALL: 0.3}
    shares.set_shares({SMALL: 0.2})  # the other model keeps its share
    host.sim.advance(host.sim.now + 0.5)
    assert effective(host) == {BIG: 0.7, SMALL: 0.2}


def test_simulated_shares_while_serving(host):
    host.sim.advance(15.0)  # the engines have loaded and serve
    shares = SimulatedShares(host.gpu)
    shares.set_shares({BIG: 0.6, SMALL: 0.4})
    assert effective(host) == {BIG: 0.6, SMALL: 0.4}
    assert any(i.pending_share is not None for i in host.sim.gpus[0].instances)  # a running iteration re-plans
    host.sim.advance(host.sim.now + 1.0)
    assert {i.name: i.share for i in host.sim.gpus[0].instances} == {BIG: 0.6, SMALL: 0.4}


def test_simulated_shares_above_one_scaled_down(host):
    shares = SimulatedShares(host.gpu)
    shares.set_shares({BIG: 0.8, SMALL: 0.6})
    assert shares.shares == {BIG: 0.8, SMALL: 0.6}  # what was asked for
    fitted = effective(host)
    assert fitted == {BIG: 0.55, SMALL: 0.4}  # 0.8/1.4 and 0.6/1.4, quantised down to 5% steps
    assert sum(fitted.values()) <= 1.0


def test_simulated_shares_restore_to_whole_gpu(host):
    shares = SimulatedShares(host.gpu)
    shares.set_shares({BIG: 0.75, SMALL: 0.25})
    host.sim.advance(host.sim.now + 0.5)
    assert shares.restore() == (BIG, SMALL)  # 1.0 each sums to 2: scaled down, no error
    assert effective(host) == {BIG: 0.5, SMALL: 0.5}
    assert shares.shares == {}


def test_simulated_shares_ignores_models_not_resident(host):
    shares = SimulatedShares(host.gpu)
    shares.set_shares({"not-served": 0.5})
    assert effective(host) == {BIG: 0.5, SMALL: 0.5}
    shares.set_shares({BIG: 0.3, "not-served": 0.9})
    assert effective(host) == {BIG: 0.3, SMALL: 0.5}
