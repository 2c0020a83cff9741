"""The privileged actuator (festgym.deploy.actuator): ActuatorServer on a Unix socket in front of a
SimulatedDevice, RemoteWriter as its client, the request handler ``handle`` on its own, restoring the GPU
when the client disconnects, its lease lapses or the server closes, hostile clients (oversized, deep,
malformed, silent, slow), the socket path (nothing but a stale socket is replaced), off-ladder clocks
(snapped as NvmlDevice snaps them), and a DeployAgent writing through the actuator."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import socket
import socketserver
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pytest

from festgym.control.checkpoint import LocalController
from festgym.deploy.actuator import (
    MAX_ARG,
    MAX_LINE_BYTES,
    QUERIES,
    WRITES,
    ActuatorError,
    ActuatorServer,
    RemoteWriter,
    handle,
)
from festgym.deploy.agent import DeployAgent, DeployConfig
from festgym.deploy.deciders import CheckpointDecider
from festgym.deploy.safety import SafetyConfig
from festgym.deploy.telemetry import Telemetry
from festgym.devices.device import GpuError, InvalidArgument, NoPermission
from festgym.errors import RangeError
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


@pytest.fixture
def fake():
    """A GPU for tests that need no simulation (tests/fake_gpu.py)."""
    from fake_gpu import FakeGpu

    return FakeGpu()


class Raw:
    """A client speaking bytes: what RemoteWriter would never send (``send_buffer``: its socket's send
    buffer in bytes, None: the system's)."""

    def __init__(self, path: Path, send_buffer: int | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if send_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.sock.settimeout(3.0)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> dict | None:
        """The next reply; None once the server has closed the connection."""
        line = self.file.readline()
        return json.loads(line) if line else None

    def closed(self) -> bool:
        """Whether the server has closed the connection: the end of the stream, or a reset when it closed
        with bytes of ours unread (a client still sending when it hung up; queued replies come first)."""
        try:
            return self.reply() is None
        except ConnectionResetError:
            return True

    def ask(self, request: dict | bytes) -> dict | None:
        self.send(request + b"\n" if isinstance(request, bytes) else json.dumps(request).encode() + b"\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Running:
    """A server serving in a background thread, and the clients connected to it."""

    def __init__(self, device, path: Path, **options):
        self.device, self.path = device, path
        self.server = ActuatorServer(device, path, log=lambda message: None, **options)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()
        self.clients: list[RemoteWriter] = []
        self.raws: list[Raw] = []
        self.closed = False

    def client(self, **options) -> RemoteWriter:
        writer = RemoteWriter(self.path, timeout_s=2.0, **options)
        self.clients.append(writer)
        return writer

    def raw(self, send_buffer: int | None = None) -> Raw:
        self.raws.append(Raw(self.path, send_buffer))
        return self.raws[-1]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in self.clients:
            with contextlib.suppress(OSError):
                writer.close()
            writer._sock.close()
        for raw in self.raws:
            raw.close()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(2.0)


@pytest.fixture
def serve(sock_dir):
    """``serve(device)`` starts an ActuatorServer for it; teardown shuts every one down."""
    running: list[Running] = []

    def start(device, name: str = "a.sock", **options) -> Running:
        running.append(Running(device, sock_dir / name, **options))
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
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(stale))  # an earlier run's socket: nobody listens on it any more
    left.close()
    serve(host.gpu).client().changed()  # it could bind there: the stale socket was removed
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

    def hang_up_after_the_greeting() -> None:
        conn = listener.accept()[0]
        conn.recv(100)  # RemoteWriter's first heartbeat
        conn.sendall(b'{"ok": true, "changed": [], "lease_s": 10}\n')
        conn.close()

    hang_up = threading.Thread(target=hang_up_after_the_greeting, daemon=True)
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
    assert ask(gpu, {"op": "set_locked_sm_clocks_mhz", "args": [1200, 1305]}) == \
        {"ok": True, "changed": ["locked_sm_clocks"], "locked_sm_clocks_mhz": [1200, 1305]}
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


# --- hostile clients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [b"[" * 100_000, b'{"a": ' * 50_000 + b"1" + b"}" * 50_000])
def test_handle_deep_nesting_is_an_error_reply(fake, line):
    reply = ask(fake, line)
    assert reply["ok"] is False and reply["error"] == "ActuatorError"
    assert "nests too deeply" in reply["message"]


@pytest.mark.parametrize("request_", [
    {"op": "set_power_limit_mw", "args": [MAX_ARG + 1]},
    {"op": "set_power_limit_mw", "args": [2**64]},
    {"op": "set_power_limit_mw", "args": [-1]},
    {"op": "set_locked_sm_clocks_mhz", "args": [-1200, 1200]},
    {"op": "set_locked_sm_clocks_mhz", "args": [1200, 10**30]},
])
def test_handle_refuses_integers_nvml_cannot_take(fake, request_):
    reply = ask(fake, request_)
    assert reply == {"ok": False, "error": "ActuatorError",
                     "message": f"{request_['op']}: arguments must lie in 0-{MAX_ARG}, got {request_['args']!r}"}
    assert fake.changed() == ()


def test_handle_an_integer_too_long_to_parse_is_an_error_reply(fake):
    reply = ask(fake, b'{"op": "set_power_limit_mw", "args": [' + b"9" * 5000 + b"]}")
    assert reply["ok"] is False and reply["error"] == "ValueError" and "digits" in reply["message"]


@pytest.mark.parametrize("op", ["changed", "heartbeat", "restore"])
def test_handle_queries_take_no_arguments(fake, op):
    assert ask(fake, {"op": op, "args": [1]})["message"] == f"{op} takes 0 integer argument(s), got [1]"


HOSTILE_LINES = {
    "not UTF-8": b"\xff\xfe\x00\x80",
    "not JSON": b"{\"op\": ",
    "an array": b"[1, 2]",
    "a string": b"\"restore\"",
    "nested under the line limit": b"[" * (MAX_LINE_BYTES - 1),
    "a float argument": b'{"op": "set_power_limit_mw", "args": [400000.5]}',
    "a bool argument": b'{"op": "set_locked_sm_clocks_mhz", "args": [true, 1200]}',
    "a string argument": b'{"op": "set_power_limit_mw", "args": ["400000"]}',
    "a huge integer": b'{"op": "set_power_limit_mw", "args": [1e400]}',
    "a negative integer": b'{"op": "set_power_limit_mw", "args": [-400000]}',
    "an unknown op": b'{"op": "__init__", "args": []}',
    "out of range": b'{"op": "set_locked_sm_clocks_mhz", "args": [10, 20]}',
}


@pytest.mark.parametrize("line", HOSTILE_LINES.values(), ids=HOSTILE_LINES.keys())
def test_a_hostile_line_gets_an_error_reply_and_the_connection_survives(fake, serve, line):
    raw = serve(fake).raw()
    reply = raw.ask(line)
    assert reply is not None and reply["ok"] is False and reply["message"]
    assert fake.changed() == ()
    assert raw.ask({"op": "changed"}) == {"ok": True, "changed": []}


@pytest.mark.parametrize("send_buffer", [None, 4096], ids=["sent at once", "sent in pieces"])
@pytest.mark.parametrize("tail", [b"", b'"}\n'], ids=["without a newline", "with one"])
def test_an_oversized_line_is_refused_and_the_connection_closed(fake, serve, tail, send_buffer):
    """A small send buffer makes the kernel deliver the line in pieces: the server hangs up while the
    client is still sending, as it may under load with any buffer."""
    running = serve(fake)
    raw = running.raw(send_buffer)
    with contextlib.suppress(BrokenPipeError):  # the server hung up before the rest was sent
        raw.send(b'{"op": "changed", "pad": "' + b"x" * (4 * MAX_LINE_BYTES) + tail)
    reply = raw.reply()
    assert reply is not None and reply["ok"] is False
    assert f"longer than {MAX_LINE_BYTES} bytes" in reply["message"]
    assert raw.closed()
    assert running.client().changed() == ()  # and the server serves on


def test_a_slow_client_neither_holds_up_others_nor_outlasts_its_lease(fake, serve):
    running = serve(fake, lease_s=0.6)
    slow, other = running.raw(), running.client()
    slow.send(b'{"op": "changed"')
    started, cut_off = time.monotonic(), None
    while cut_off is None and time.monotonic() - started < 3.0:  # a space every 50 ms: the line never ends
        try:
            slow.send(b" ")
        except (BrokenPipeError, ConnectionResetError):  # reset: a space arrived as the server closed
            cut_off = time.monotonic() - started
        asked = time.monotonic()
        assert other.changed() == ()
        assert time.monotonic() - asked < 0.3  # answered at once all along, not after the slow one
        time.sleep(0.05)
    assert cut_off is not None and 0.5 < cut_off < 2.0  # the bytes did not renew its lease
    assert slow.reply()["error"] == "LeaseExpired"

def test_connections_beyond_the_limit_are_refused(fake, serve):
    running = serve(fake, max_clients=2)
    first, _ = running.client(), running.client()
    with pytest.raises(ActuatorError, match="2 clients connected already"):
        running.client()
    first.close()

    def one_more() -> bool:
        try:
            running.client()
        except ActuatorError:
            return False
        return True

    assert wait_for(one_more)


# --- one owner, a lease ------------------------------------------------------------------------------

def test_a_silent_owner_loses_the_gpu_at_its_lease_while_others_are_served(host, serve):
    running = serve(host.gpu, lease_s=0.4)
    silent, other = running.client(), running.client()
    silent.set_locked_sm_clocks_mhz(1200, 1200)
    locked_at = time.monotonic()
    with pytest.raises(ActuatorError, match="another client holds the GPU"):
        other.set_power_limit_mw(400_000)
    while host.gpu.changed():  # the other client is served all along
        assert other.changed() in ((), ("locked_sm_clocks",))
        assert time.monotonic() - locked_at < 3.0, "the lease never lapsed"
        time.sleep(0.02)
    assert time.monotonic() - locked_at > 0.3  # not before the lease
    with pytest.raises(ActuatorError, match=r"no complete request for 0\.4 s \(the lease\)"):
        silent.changed()
    other.set_power_limit_mw(400_000)  # the GPU is free for the next owner
    assert host.gpu.power_limit_mw() == 400_000
    settle(host)
    assert host.gpu.sm_clock_mhz() == TOP_MHZ


def test_heartbeats_keep_the_lease(host, serve):
    running = serve(host.gpu, lease_s=0.4)
    writer = running.client()
    writer.set_locked_sm_clocks_mhz(1200, 1200)
    for _ in range(10):  # two and a half leases
        time.sleep(0.1)
        writer.heartbeat()
    assert host.gpu.changed() == ("locked_sm_clocks",)
    assert writer.changed() == ("locked_sm_clocks",)


def test_a_lease_too_short_for_the_clients_interval_is_refused(host, serve):
    running = serve(host.gpu, lease_s=2.0)
    with pytest.raises(ActuatorError, match=r"its lease \(2 s\) is under 3 intervals of 1 s: start it with "
                                            r"--lease 3 or more"):
        running.client(heartbeat_every_s=1.0)
    assert running.client(heartbeat_every_s=0.5).lease_s == 2.0


@pytest.mark.parametrize("options", [{"lease_s": 0.0}, {"lease_s": -1.0}, {"lease_s": math.nan},
                                     {"lease_s": math.inf}, {"lease_s": 1e12}, {"max_clients": 0}])
def test_server_settings_out_of_range_are_named(fake, sock_dir, options):
    with pytest.raises(RangeError, match=f"ActuatorServer.{next(iter(options))}"):
        ActuatorServer(fake, sock_dir / "a.sock", **options)
    assert not (sock_dir / "a.sock").exists()


def test_server_close_ends_connected_clients_and_restores(host, serve):
    running = serve(host.gpu)
    writer = running.client()
    writer.set_locked_sm_clocks_mhz(1200, 1200)
    running.server.shutdown()
    running.server.server_close()
    assert host.gpu.changed() == ()
    with pytest.raises(ActuatorError, match="closed the connection"):
        writer.changed()


# --- the socket path ---------------------------------------------------------------------------------

def _stale_socket(path: Path) -> None:
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))
    left.close()


def _in_the_way(kind: str, path: Path) -> None:
    target = path.parent / "target"
    if kind == "a regular file":
        path.write_text("precious")
    elif kind == "a directory":
        path.mkdir()
        (path / "inside").write_text("precious")
    elif kind == "a fifo":
        os.mkfifo(path)
    elif kind == "a symlink to a file":
        target.write_text("precious")
        path.symlink_to(target)
    elif kind == "a symlink to a stale socket":
        _stale_socket(target)
        path.symlink_to(target)
    elif kind == "a dangling symlink":
        path.symlink_to(target)


def _snapshot(path: Path) -> tuple:
    """What is at ``path`` (links not followed), with the contents of what it holds or points to."""
    st = path.lstat()
    target = path.parent / "target"
    held = sorted(p.read_text() for p in path.iterdir()) if path.is_dir() and not path.is_symlink() else \
        path.read_text() if path.is_file() and not path.is_symlink() else None
    return (st.st_ino, st.st_mode, os.readlink(path) if path.is_symlink() else None, held,
            target.lstat().st_mode if os.path.lexists(target) else None,
            target.read_text() if target.is_file() else None)


@pytest.mark.parametrize("kind", ["a regular file", "a directory", "a fifo", "a symlink to a file",
                                  "a symlink to a stale socket", "a dangling symlink"])
def test_anything_but_a_socket_at_the_path_is_refused_and_kept(fake, sock_dir, kind):
    path = sock_dir / "a.sock"
    _in_the_way(kind, path)
    before = _snapshot(path)
    shown = "a symbolic link" if "symlink" in kind else "a special file" if kind == "a fifo" else kind
    with pytest.raises(ActuatorError, match=rf"^--socket {path}: {shown} is in the way; the actuator replaces "
                                            "only a stale socket"):
        ActuatorServer(fake, path)
    assert _snapshot(path) == before


def test_a_live_socket_is_not_stolen(fake, sock_dir):
    path = sock_dir / "a.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    try:
        with pytest.raises(ActuatorError, match=rf"^--socket {path}: a server is listening there"):
            ActuatorServer(fake, path)
        still = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        still.connect(str(path))  # the other server's socket still works
        still.close()
    finally:
        listener.close()


def test_a_second_actuator_on_the_path_is_refused_and_the_first_serves_on(host, serve):
    running = serve(host.gpu)
    writer = running.client()
    writer.set_power_limit_mw(400_000)
    with pytest.raises(ActuatorError, match="another festgym actuator"):
        ActuatorServer(host.gpu, running.path)
    assert writer.changed() == ("power_limit",) and running.path.is_socket()


def test_the_socket_is_born_with_its_mode_so_no_chmod_follows_a_link_swapped_in(fake, sock_dir, monkeypatch):
    """Someone who may write to the socket's folder replaces the new socket with a symlink at once: the
    root actuator must not change the mode of what it points to."""
    precious = sock_dir / "precious"
    precious.write_text("secret")
    precious.chmod(0o600)
    bind = socketserver.UnixStreamServer.server_bind

    def bind_then_swap(server: socketserver.UnixStreamServer) -> None:
        bind(server)
        os.rename(server.server_address, sock_dir / "moved.sock")
        os.symlink(precious, server.server_address)

    monkeypatch.setattr(socketserver.UnixStreamServer, "server_bind", bind_then_swap)
    server = ActuatorServer(fake, sock_dir / "a.sock", log=lambda message: None)
    try:
        assert precious.stat().st_mode & 0o777 == 0o600
        assert (sock_dir / "moved.sock").stat().st_mode & 0o777 == 0o660  # the socket itself has its mode
    finally:
        server.server_close()
    assert precious.read_text() == "secret"


def test_server_close_leaves_a_socket_that_is_no_longer_its_own(fake, sock_dir):
    path = sock_dir / "a.sock"
    server = ActuatorServer(fake, path, log=lambda message: None)
    path.unlink()
    _stale_socket(path)  # someone else's, made since
    replaced = path.lstat().st_ino
    server.server_close()
    assert path.lstat().st_ino == replaced


# --- clocks between the supported steps ------------------------------------------------------------

def test_an_off_ladder_lock_locks_the_nearest_supported_clocks(host, serve):
    raw = serve(host.gpu).raw()
    reply = raw.ask({"op": "set_locked_sm_clocks_mhz", "args": [1207, 1208]})  # the H100 steps by 15 MHz
    assert reply == {"ok": True, "changed": ["locked_sm_clocks"], "locked_sm_clocks_mhz": [1200, 1215]}
    settle(host)
    assert host.gpu.sm_clock_mhz() == 1215


@pytest.fixture
def nvml_gpu():
    """An NvmlDevice on a patched pynvml (autospec'd), and the patched binding."""
    import pynvml

    from festgym.devices.nvml import NvmlDevice

    answers = {"nvmlDeviceGetName": "NVIDIA H100 80GB HBM3", "nvmlDeviceGetUUID": "GPU-aaaa",
               "nvmlDeviceGetSupportedMemoryClocks": [2619],
               "nvmlDeviceGetSupportedGraphicsClocks": [1980, 1965, 1215, 1200, 210],
               "nvmlDeviceSetGpuLockedClocks": None, "nvmlDeviceResetGpuLockedClocks": None}
    with contextlib.ExitStack() as stack:
        for name, value in answers.items():
            stack.enter_context(mock.patch.object(pynvml, name, autospec=True, return_value=value))
        yield NvmlDevice(0, 0, "h0"), pynvml


@pytest.mark.parametrize("asked, locked", [((1207, 1208), (1200, 1215)), ((1300, 1900), (1215, 1965)),
                                           ((211, 1980), (210, 1980)), ((1200, 1215), (1200, 1215))])
def test_off_ladder_clocks_snap_alike_directly_and_through_the_actuator(nvml_gpu, asked, locked):
    gpu, nv = nvml_gpu
    gpu.set_locked_sm_clocks_mhz(*asked)  # the unprivileged path: NvmlDevice itself
    nv.nvmlDeviceSetGpuLockedClocks.assert_called_with("h0", *locked)
    gpu.reset_locked_sm_clocks()
    nv.nvmlDeviceSetGpuLockedClocks.reset_mock()
    reply = ask(gpu, {"op": "set_locked_sm_clocks_mhz", "args": list(asked)})
    assert reply["locked_sm_clocks_mhz"] == list(locked)
    nv.nvmlDeviceSetGpuLockedClocks.assert_called_once_with("h0", *locked)
    gpu.set_locked_sm_clocks_mhz(*locked)  # the same lock: skipped
    nv.nvmlDeviceSetGpuLockedClocks.assert_called_once()


@pytest.mark.parametrize("asked", [(209, 1200), (1200, 1981), (1215, 1200)])
def test_off_range_clocks_are_refused_alike_directly_and_through_the_actuator(nvml_gpu, asked):
    gpu, nv = nvml_gpu
    with pytest.raises(InvalidArgument):
        gpu.set_locked_sm_clocks_mhz(*asked)
    reply = ask(gpu, {"op": "set_locked_sm_clocks_mhz", "args": list(asked)})
    assert reply["error"] == "InvalidArgument" and f"{asked[0]}-{asked[1]} MHz" in reply["message"]
    nv.nvmlDeviceSetGpuLockedClocks.assert_not_called()


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


@pytest.mark.parametrize("heartbeats", [True, False], ids=["heartbeats", "no heartbeats"])
def test_the_agent_renews_its_lease_every_interval(serve, monkeypatch, heartbeats):
    sim_host = SimulatedHost("default", seed=0, duration_s=30, privileged=False)
    actuator_gpu = SimulatedDevice(sim_host.sim, 0)
    writer = serve(actuator_gpu, lease_s=0.3).client()
    if not heartbeats:  # what the lease is for: a loop that stops renewing it loses its settings
        monkeypatch.setattr(writer, "heartbeat", lambda: None)

    def sleep(seconds: float) -> None:  # a simulated interval takes 30 ms: 20 of them outlast two leases
        sim_host.sleep(seconds)
        time.sleep(0.03)

    host = replace(sim_host.host, writer=writer, sleep=sleep)
    out = io.StringIO()
    decider = CheckpointDecider.for_gpu(LocalController("ppo-local"), sim_host.engine_specs(), host.gpu)
    config = DeployConfig(interval_s=1.0, duration_s=20.0, apply=True,
                          safety=SafetyConfig(min_change_interval_s=1000.0))  # one lock, then only heartbeats
    agent = DeployAgent(host, decider, sim_host.engine_specs(), config, Telemetry(stream=out))
    if heartbeats:
        assert agent.run() == "duration"
    else:
        with pytest.raises(ActuatorError, match=r"no complete request for 0\.3 s \(the lease\)"):
            agent.run()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    calls = [c["call"] for r in records if r["event"] == "interval" for c in r["calls"]]
    assert calls.count("set_locked_sm_clocks_mhz") == 1
    stop = records[-1]
    if heartbeats:  # the lock held to the end: the agent's own restore undid it
        assert stop["reset"] == ["locked_sm_clocks"] and stop["still_changed"] == []
    else:  # the actuator had undone it at the lease; the agent's restore found the connection gone
        assert stop["reset"] == [] and "lease" in stop["restore_errors"][0]
    assert actuator_gpu.changed() == ()


def test_festgym_deploy_actuator_takes_a_lease(fake, sock_dir, monkeypatch, capsys):
    from festgym.cli.main import build_parser, main
    from festgym.deploy.actuator import LEASE_S
    from festgym.devices import nvml

    parse = build_parser().parse_args
    assert parse(["deploy", "actuator", "--socket", "/tmp/s"]).lease == LEASE_S
    assert parse(["deploy", "actuator", "--socket", "/tmp/s", "--lease", "2.5"]).lease == 2.5
    monkeypatch.setattr(nvml, "open_gpus", lambda indices=None: [fake])
    assert main(["deploy", "actuator", "--socket", str(sock_dir / "a.sock"), "--lease", "0"]) == 2
    assert "ActuatorServer.lease_s" in capsys.readouterr().err
    assert not (sock_dir / "a.sock").exists()
