"""The privileged actuator (festgym.deploy.actuator): ActuatorServer on a Unix socket in front of a
SimulatedDevice, RemoteWriter as its client, the request handler ``handle`` on its own, restoring the GPU
when the client disconnects or the server closes, and a DeployAgent writing through the actuator."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from festgym.control.checkpoint import LocalController
from festgym.deploy.actuator import (
    QUERIES,
    WRITES,
    ActuatorError,
    ActuatorServer,
    RemoteWriter,
    handle,
)
from festgym.deploy.agent import DeployAgent, DeployConfig
from festgym.deploy.deciders import CheckpointDecider
from festgym.deploy.telemetry import Telemetry
from festgym.devices.device import GpuError, InvalidArgument, NoPermission
from festgym.simhost.device import SimulatedDevice
from festgym.simhost.host import SimulatedHost

TOP_MHZ, TDP_MW, MIN_LIMIT_MW = 1980, 700_000, 175_000  # the default scenario's H100


def wait_for(predicate, timeout_s: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


@pytest.fixture
def sock_dir():
    """A short directory for Unix sockets (their paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="fga"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def host():
    return SimulatedHost("default", seed=0, duration_s=30)


class Running:
    """A server serving in a background thread, and the clients connected to it."""

    def __init__(self, device, path: Path):
        self.device, self.path = device, path
        self.server = ActuatorServer(device, path)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()
        self.clients: list[RemoteWriter] = []
        self.closed = False

    def client(self) -> RemoteWriter:
        writer = RemoteWriter(self.path, timeout_s=2.0)
        self.clients.append(writer)
        return writer

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in self.clients:  # the server serves one client at a time: free it before shutdown
            with contextlib.suppress(OSError):
                writer.close()
            writer._sock.close()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(2.0)


@pytest.fixture
def serve(sock_dir):
    """``serve(device)`` starts an ActuatorServer for it; teardown shuts every one down."""
    running: list[Running] = []

    def start(device, name: str = "a.sock") -> Running:
        running.append(Running(device, sock_dir / name))
        return running[-1]

    yield start
    for r in running:
        r.close()


def settle(host: SimulatedHost, seconds: float = 0.2) -> None:
    """Advance the simulation past the clock-change delay."""
    host.sim.advance(host.sim.now + seconds)


# --- RemoteWriter through a running server -------------------------------------------------------

def test_server_socket_mode_and_stale_socket_replaced(host, sock_dir, serve):
    stale = sock_dir / "a.sock"
    stale.write_text("stale")
    serve(host.gpu)
    assert stale.is_socket()
    assert stale.stat().st_mode & 0o777 == 0o660


def test_locked_clocks_set_and_reset(host, serve):
    gpu, writer = host.gpu, serve(host.gpu).client()
    writer.set_locked_sm_clocks_mhz(1200, 1200)
    assert gpu.changed() == ("locked_sm_clocks",)
    assert writer.changed() == ("locked_sm_clocks",)
    settle(host)
    assert gpu.sm_clock_mhz() == 1200
    assert "applications_clocks" in gpu.clock_events()
    writer.reset_locked_sm_clocks()
    assert gpu.changed() == () and writer.changed() == ()
    settle(host)
    assert gpu.sm_clock_mhz() == TOP_MHZ


def test_power_limit_set_and_reset(host, serve):
    gpu, writer = host.gpu, serve(host.gpu).client()
    writer.set_power_limit_mw(400_000)
    assert gpu.power_limit_mw() == 400_000
    assert writer.changed() == ("power_limit",)
    writer.reset_power_limit()
    assert gpu.power_limit_mw() == TDP_MW
    assert writer.changed() == ()


def test_restore_through_client_returns_what_it_reset(host, serve):
    gpu, writer = host.gpu, serve(host.gpu).client()
    writer.set_locked_sm_clocks_mhz(900, 1500)
    writer.set_power_limit_mw(300_000)
    assert writer.changed() == ("locked_sm_clocks", "power_limit")
    assert writer.restore() == ("locked_sm_clocks", "power_limit")
    assert gpu.changed() == () and gpu.power_limit_mw() == TDP_MW
    assert writer.restore() == ()


@pytest.mark.parametrize("call, args", [("set_locked_sm_clocks_mhz", (100, 1200)),
                                        ("set_locked_sm_clocks_mhz", (1500, 1200)),
                                        ("set_locked_sm_clocks_mhz", (1200, 2500)),
                                        ("set_power_limit_mw", (MIN_LIMIT_MW - 1,)),
                                        ("set_power_limit_mw", (TDP_MW + 1,))])
def test_out_of_range_comes_back_as_invalid_argument(host, serve, call, args):
    writer = serve(host.gpu).client()
    with pytest.raises(InvalidArgument, match="actuator: SIM-") as info:
        getattr(writer, call)(*args)
    assert isinstance(info.value, ValueError)
    assert host.gpu.changed() == ()
    assert writer.changed() == ()  # the connection survives a refused request


def test_unprivileged_device_gives_no_permission(host, serve):
    gpu = SimulatedDevice(host.sim, 0, privileged=False)
    writer = serve(gpu).client()
    with pytest.raises(NoPermission, match="no permission") as info:
        writer.set_locked_sm_clocks_mhz(1200, 1200)
    assert isinstance(info.value, PermissionError)
    with pytest.raises(NoPermission):
        writer.set_power_limit_mw(400_000)
    assert gpu.changed() == ()


def test_client_disconnect_restores_gpu(host, serve):
    gpu, writer = host.gpu, serve(host.gpu).client()
    writer.set_locked_sm_clocks_mhz(1200, 1200)
    writer.set_power_limit_mw(400_000)
    assert gpu.changed() == ("locked_sm_clocks", "power_limit")
    writer.close()
    assert wait_for(lambda: gpu.changed() == ())
    assert gpu.power_limit_mw() == TDP_MW
    settle(host)
    assert gpu.sm_clock_mhz() == TOP_MHZ


def test_next_client_served_after_disconnect(host, serve):
    running = serve(host.gpu)
    first = running.client()
    first.set_power_limit_mw(400_000)
    first.close()
    second = running.client()
    assert wait_for(lambda: second.changed() == ())
    second.set_power_limit_mw(500_000)
    assert host.gpu.power_limit_mw() == 500_000


def test_server_close_restores_and_removes_socket(host, serve):
    running = serve(host.gpu)
    writer = running.client()
    writer.set_locked_sm_clocks_mhz(1200, 1200)
    writer.set_power_limit_mw(400_000)
    writer.close()
    running.clients.clear()
    running.server.shutdown()
    host.gpu.set_power_limit_mw(300_000)  # whatever is changed when it closes
    running.server.server_close()
    running.closed = True
    assert host.gpu.changed() == ()
    assert host.gpu.power_limit_mw() == TDP_MW
    assert not running.path.exists()


def test_server_close_without_serving(host, sock_dir):
    server = ActuatorServer(host.gpu, sock_dir / "b.sock")
    host.gpu.set_locked_sm_clocks_mhz(1000, 1000)
    server.server_close()
    assert host.gpu.changed() == ()
    assert not (sock_dir / "b.sock").exists()


def test_missing_socket_raises_actuator_error(sock_dir):
    path = sock_dir / "missing.sock"
    with pytest.raises(ActuatorError) as info:
        RemoteWriter(path)
    message = str(info.value)
    assert str(path) in message
    assert "festgym deploy actuator --socket PATH" in message
    assert not isinstance(info.value, GpuError)


@pytest.fixture
def hung_up(sock_dir):
    """A RemoteWriter whose peer accepted the connection and closed it at once."""
    path = sock_dir / "c.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    hang_up = threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True)
    hang_up.start()
    writer = RemoteWriter(path, timeout_s=2.0)
    hang_up.join(2.0)
    yield writer
    with contextlib.suppress(OSError):
        writer.close()
    writer._sock.close()
    listener.close()


def test_connection_closed_by_peer_raises_actuator_error(hung_up):
    with pytest.raises(ActuatorError, match=f"actuator socket {hung_up.path}: "):
        hung_up.changed()
    with pytest.raises(ActuatorError):
        hung_up.set_power_limit_mw(400_000)


def test_close_after_peer_hung_up_is_quiet(hung_up):
    with pytest.raises(ActuatorError):
        hung_up.changed()
    hung_up.close()
    assert hung_up._sock.fileno() == -1


# --- handle() on its own ---------------------------------------------------------------------------

def ask(gpu, request) -> dict:
    line = request if isinstance(request, bytes) else json.dumps(request).encode()
    reply = handle(gpu, line)
    json.dumps(reply)  # every reply is JSON
    return reply


def test_handle_write_and_queries(host):
    gpu = host.gpu
    assert ask(gpu, {"op": "changed"}) == {"ok": True, "changed": []}
    assert ask(gpu, {"op": "set_locked_sm_clocks_mhz", "args": [1200, 1300]}) == \
        {"ok": True, "changed": ["locked_sm_clocks"]}
    assert ask(gpu, {"op": "set_power_limit_mw", "args": [400_000]}) == \
        {"ok": True, "changed": ["locked_sm_clocks", "power_limit"]}
    assert ask(gpu, {"op": "restore"}) == {"ok": True, "reset": ["locked_sm_clocks", "power_limit"], "changed": []}
    assert gpu.changed() == ()
    assert ask(gpu, {"op": "restore"}) == {"ok": True, "reset": [], "changed": []}
    assert ask(gpu, {"op": "reset_locked_sm_clocks", "args": []}) == {"ok": True, "changed": []}
    assert ask(gpu, {"op": "reset_power_limit"}) == {"ok": True, "changed": []}


def test_handle_unknown_op(host):
    reply = ask(host.gpu, {"op": "set_memory_clock", "args": [1]})
    assert reply["ok"] is False and reply["error"] == "ActuatorError"
    assert "unknown op 'set_memory_clock'" in reply["message"]
    for allowed in (*WRITES, *QUERIES):
        assert allowed in reply["message"]
    assert ask(host.gpu, {"args": []})["message"].startswith("unknown op None")
    assert ask(host.gpu, {"op": "__class__"})["error"] == "ActuatorError"


@pytest.mark.parametrize("request_, shown", [
    ({"op": "set_locked_sm_clocks_mhz", "args": [1200]}, "[1200]"),
    ({"op": "set_locked_sm_clocks_mhz", "args": [1200, 1200, 1200]}, "[1200, 1200, 1200]"),
    ({"op": "set_power_limit_mw"}, "[]"),
    ({"op": "reset_power_limit", "args": [1]}, "[1]"),
    ({"op": "set_power_limit_mw", "args": [400000.0]}, "[400000.0]"),
    ({"op": "set_power_limit_mw", "args": ["400000"]}, "['400000']"),
    ({"op": "set_power_limit_mw", "args": [True]}, "[True]"),
    ({"op": "set_locked_sm_clocks_mhz", "args": [False, 1200]}, "[False, 1200]"),
    ({"op": "set_power_limit_mw", "args": {"limit": 400000}}, "{'limit': 400000}"),
    ({"op": "set_power_limit_mw", "args": 400000}, "400000"),
])
def test_handle_rejects_bad_arguments(host, request_, shown):
    reply = ask(host.gpu, request_)
    assert reply["ok"] is False and reply["error"] == "ActuatorError"
    n = WRITES[request_["op"]]
    assert reply["message"] == f"{request_['op']} takes {n} integer argument(s), got {shown}"
    assert host.gpu.changed() == ()


@pytest.mark.parametrize("line", [b"not json", b"{\"op\": ", b"", b"\xff\xfe\x00"])
def test_handle_malformed_request(host, line):
    reply = ask(host.gpu, line)
    assert reply["ok"] is False
    assert reply["error"] in ("JSONDecodeError", "UnicodeDecodeError")
    assert reply["message"]


@pytest.mark.parametrize("line", [b"[1, 2]", b"null", b"\"changed\""])
def test_handle_non_object_request(host, line):
    reply = ask(host.gpu, line)
    assert reply == {"ok": False, "error": "ActuatorError",
                     "message": f"expected a JSON object {{\"op\": NAME, \"args\": [...]}}, got {line!r}"}


def test_handle_device_errors_keep_their_type_name(host):
    reply = ask(host.gpu, {"op": "set_locked_sm_clocks_mhz", "args": [100, 100]})
    assert reply == {"ok": False, "error": "InvalidArgument", "message": reply["message"]}
    assert "100-100 MHz" in reply["message"]
    unprivileged = SimulatedDevice(host.sim, 0, privileged=False)
    reply = ask(unprivileged, {"op": "set_power_limit_mw", "args": [400_000]})
    assert reply["error"] == "NoPermission" and "400000 mW" in reply["message"]


@pytest.mark.parametrize("op", [[], {}])
def test_handle_unhashable_op_is_an_error_reply(host, op):
    reply = ask(host.gpu, {"op": op})
    assert reply["ok"] is False and "unknown op" in reply["message"]


# --- the agent writing through the actuator ----------------------------------------------------------

def test_deploy_agent_writes_through_actuator(serve):
    sim_host = SimulatedHost("default", seed=0, duration_s=30, privileged=False)  # the agent cannot write itself
    actuator_gpu = SimulatedDevice(sim_host.sim, 0)  # the privileged side, on the same simulated GPU
    running = serve(actuator_gpu)
    writer = running.client()
    host = replace(sim_host.host, writer=writer)
    out = io.StringIO()
    decider = CheckpointDecider.for_gpu(LocalController("ppo-local"), sim_host.engine_specs(), host.gpu)
    agent = DeployAgent(host, decider, sim_host.engine_specs(),
                        DeployConfig(interval_s=1.0, duration_s=20.0, apply=True), Telemetry(stream=out))
    assert agent.run() == "duration"
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    intervals = [r for r in records if r["event"] == "interval"]
    assert len(intervals) == 20
    locks = [(k, c["args"]) for k, r in enumerate(intervals) for c in r["calls"]
             if c["call"] == "set_locked_sm_clocks_mhz"]
    assert locks, "the controller never locked the clocks"
    k, (lo, hi) = locks[0]
    assert intervals[k]["applied"] is True
    assert lo == hi < TOP_MHZ
    assert intervals[k + 1]["sm_clock_mhz"] == hi  # it took effect on the GPU (the agent's own writes would fail)
    stop = records[-1]
    assert stop["event"] == "stop" and stop["reason"] == "duration" and stop["still_changed"] == []
    assert actuator_gpu.changed() == () and writer.changed() == ()
    settle(sim_host)
    assert sim_host.gpu.sm_clock_mhz() == TOP_MHZ


def test_deploy_agent_when_actuator_goes_away(serve):
    sim_host = SimulatedHost("default", seed=0, duration_s=30, privileged=False)
    actuator_gpu = SimulatedDevice(sim_host.sim, 0)
    writer = serve(actuator_gpu).client()

    def sleep(seconds: float) -> None:  # the actuator's connection breaks after ten intervals
        sim_host.sleep(seconds)
        if sim_host.sim.now >= 10:
            writer._sock.shutdown(socket.SHUT_RDWR)

    host = replace(sim_host.host, writer=writer, sleep=sleep)
    out = io.StringIO()
    decider = CheckpointDecider.for_gpu(LocalController("ppo-local"), sim_host.engine_specs(), host.gpu)
    agent = DeployAgent(host, decider, sim_host.engine_specs(),
                        DeployConfig(interval_s=1.0, duration_s=20.0, apply=True), Telemetry(stream=out))
    with pytest.raises(ActuatorError):
        agent.run()
    assert wait_for(lambda: actuator_gpu.changed() == ())  # the actuator restored the GPU on the disconnect
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any(c["call"] == "set_shares" for r in records if r["event"] == "interval" for c in r["calls"])
    assert sim_host.host.shares.shares == {}  # the shares were restored all the same
    assert records[-1]["event"] == "stop" and records[-1]["reason"].startswith("crash: ActuatorError")
