"""Privilege split: a small actuator holds ``CAP_SYS_ADMIN``; the policy process holds none.

Reading a GPU needs no privileges, so the deploy agent (metrics, controller, telemetry: the
larger attack surface) runs unprivileged and reads NVML itself. Its writes go over a Unix socket
to :class:`ActuatorServer` (``festgym deploy actuator``), which accepts only the four writes of
:class:`~festgym.devices.device.GpuDevice` with integer arguments, validated by the device against
its supported clocks and limits, and nothing else (no paths, no code, no pickles: one JSON
object per line).

The actuator runs as root, so every client is treated as hostile:

* **Bounded input.** A request is one line of at most :data:`MAX_LINE_BYTES`; a longer one is
  answered with an error and the connection closed. Every parse failure (not UTF-8, not JSON,
  nested too deeply for the parser, not an object, wrong or out-of-range arguments) is an error
  reply; the connection survives it.
* **Clocks on the ladder.** A lock between supported SM clocks locks the nearest ones (ties down:
  :meth:`~festgym.devices.device.GpuDevice.snap_sm_clocks_mhz`, the rule ``NvmlDevice`` applies
  too); the reply says which (``"locked_sm_clocks_mhz"``). Out of range is refused.
* **One owner, a lease.** Clients are served concurrently (at most :data:`MAX_CLIENTS`); the first
  one to change the GPU owns it and other clients' changes are refused until it goes. The owner's
  settings end with it: when it disconnects, or when it sends no complete request for ``lease_s``
  (its lease: any request renews it, ``{"op": "heartbeat"}`` is the one that does nothing else),
  the actuator restores the GPU and closes the connection. The same deadline ends a client that
  sends a line slowly (slow loris) or not at all.
* **The socket path.** Only nothing or a stale socket (no server answers) is replaced; a file,
  directory or symlink there is refused and left alone (the path is never followed), as is a
  socket another server answers on.

It also restores the GPU when it stops itself (any catchable terminating signal:
:mod:`festgym.signals`). SIGKILL cannot be caught: the settings stay until someone resets them.

Protocol: request ``{"op": NAME, "args": [INT, ...]}``, reply ``{"ok": true, "changed": [...]}``
or ``{"ok": false, "error": "NoPermission", "message": "..."}``; ``{"op": "changed"}`` and
``{"op": "restore"}`` read and undo the device's changes, ``{"op": "heartbeat"}`` renews the
lease (its reply gives ``lease_s``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from festgym.config import check_ranges
from festgym.devices import device as device_module
from festgym.devices.device import GpuDevice, GpuError
from festgym.errors import FestgymError

WRITES = {"set_locked_sm_clocks_mhz": 2, "reset_locked_sm_clocks": 0, "set_power_limit_mw": 1, "reset_power_limit": 0}
"""The operations a client may ask for, with their number of integer arguments."""
QUERIES = ("changed", "restore", "heartbeat")
"""Operations without arguments (``restore`` changes the GPU, so it needs ownership as the writes do)."""
ARITY = {**WRITES, **dict.fromkeys(QUERIES, 0)}
"""Every operation and its number of arguments."""
MAX_ARG = 2**32 - 1
"""The largest argument: NVML takes unsigned 32-bit integers."""
MAX_LINE_BYTES = 4096
"""The longest request line (a request is under 100 bytes)."""
MAX_CLIENTS = 8
"""Connections served at once (the agent needs one; the rest are for ``changed`` probes)."""
LEASE_S = 10.0
"""How long the owner's settings outlive its last request: ten of the agent's default 1 s
intervals (the agent renews it every interval), short enough that a hung controller's clock lock
does not last."""
MAX_LEASE_S = 86_400.0
"""The longest lease accepted (a day): a longer one defeats its purpose, and socket timeouts
cannot hold much more."""
REFUSAL_WAIT_S = 1.0
"""How long a refused connection (too many clients) is kept for its first request."""
LEASE_MARGIN = 3
"""A client must renew its lease at least this many times per lease (RemoteWriter checks)."""


class ActuatorError(FestgymError):
    """The actuator could not be reached or refused a request."""


# --- one request -----------------------------------------------------------------------------------

def parse(line: bytes) -> tuple[str, list[int]]:
    """A request line -> (op, args); raises :class:`ActuatorError` (or ``ValueError``: not UTF-8,
    not JSON) saying what is wrong."""
    try:
        request = json.loads(line)
    except RecursionError:  # json's C scanner gives up on deep nesting this way
        raise ActuatorError(f"the request nests too deeply to parse: {line[:40]!r}...") from None
    if not isinstance(request, dict):
        raise ActuatorError(f'expected a JSON object {{"op": NAME, "args": [...]}}, got {line[:200]!r}')
    op, args = request.get("op"), request.get("args", [])
    if not isinstance(op, str) or op not in ARITY:
        raise ActuatorError(f"unknown op {op!r}; allowed: {', '.join(ARITY)}")
    if not isinstance(args, list) or len(args) != ARITY[op] or \
            not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise ActuatorError(f"{op} takes {ARITY[op]} integer argument(s), got {args!r}")
    if not all(0 <= a <= MAX_ARG for a in args):
        raise ActuatorError(f"{op}: arguments must lie in 0-{MAX_ARG}, got {args!r}")
    return op, args


def _snapped(device: GpuDevice, min_mhz: int, max_mhz: int) -> list[int]:
    try:
        return list(device.snap_sm_clocks_mhz(min_mhz, max_mhz))
    except GpuError as exc:
        raise type(exc)(f"{device.uuid()}: set locked SM clocks {min_mhz}-{max_mhz} MHz: {exc}") from None


def execute(device: GpuDevice, op: str, args: list[int]) -> dict[str, Any]:
    """Run a parsed request on ``device``; its reply (device errors propagate)."""
    if op == "restore":
        return {"ok": True, "reset": list(device.restore()), "changed": list(device.changed())}
    reply: dict[str, Any] = {"ok": True}
    if op == "set_locked_sm_clocks_mhz":
        args = reply["locked_sm_clocks_mhz"] = _snapped(device, *args)
    if op in WRITES:
        getattr(device, op)(*args)
    return {**reply, "changed": list(device.changed())}


def error_reply(exc: Exception) -> dict[str, Any]:
    return {"ok": False, "error": type(exc).__name__, "message": str(exc)}


def handle(device: GpuDevice, line: bytes, claim: Callable[[], None] = lambda: None,
           lease_s: float = LEASE_S) -> dict[str, Any]:
    """One request -> its reply (every failure becomes an error reply, never an exception).
    ``claim`` runs before an op that changes the GPU (the server's ownership check raises
    :class:`ActuatorError` there); a heartbeat's reply gives ``lease_s``."""
    try:
        op, args = parse(line)
        if op in WRITES or op == "restore":
            claim()
        reply = execute(device, op, args)
    except (FestgymError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
        return error_reply(exc)
    return {**reply, "lease_s": lease_s} if op == "heartbeat" else reply


# --- the socket ---------------------------------------------------------------------------------------

class _Hangup(Exception):
    """Why the server closes a connection; its reply goes to the client first."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.reply = {"ok": False, "error": kind, "message": message}


def _requests(sock: socket.socket, lease_s: float, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The request lines arriving on ``sock`` until the client closes it (a partial last line is
    dropped: nobody is left to answer). Each line must arrive whole within ``lease_s`` of the
    previous one's reply and hold at most ``limit`` bytes, else :class:`_Hangup`."""
    buffer, deadline = b"", time.monotonic() + lease_s
    while True:
        while b"\n" not in buffer:
            if len(buffer) > limit:
                raise _Hangup("ActuatorError", f"a request longer than {limit} bytes: closing the connection")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Hangup("LeaseExpired", f"no complete request for {lease_s:g} s (the lease): the GPU is "
                              "restored and the connection closed; any request, e.g. {\"op\": \"heartbeat\"}, "
                              "renews the lease")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(limit)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        if len(line) > limit:
            raise _Hangup("ActuatorError", f"a request longer than {limit} bytes: closing the connection")
        yield line
        deadline = time.monotonic() + lease_s


class _Handler(socketserver.BaseRequestHandler):
    server: ActuatorServer
    request: socket.socket

    def handle(self) -> None:
        server, sock = self.server, self.request
        refusal = server.admit(sock)
        if refusal:  # the reply to its first request says why (read first: see _discard_pending)
            with contextlib.suppress(OSError, _Hangup):
                next(_requests(sock, REFUSAL_WAIT_S), None)
                self._send({"ok": False, "error": "ActuatorError", "message": refusal})
            return
        try:
            for line in _requests(sock, server.lease_s):
                self._send(server.answer(sock, line))
        except _Hangup as hangup:
            server.log(f"client {sock.fileno()}: {hangup}")
            server.release(sock)  # restored before it is told so (the reply may wait on a client that reads nothing)
            with contextlib.suppress(OSError):
                self._send(hangup.reply)
                _discard_pending(sock)
        except OSError:
            pass  # the client vanished (reset, EPIPE, a reply it would not read): as if it had closed
        finally:  # the client is gone: nothing it set may outlive it
            server.release(sock)

    def _send(self, reply: dict[str, Any]) -> None:
        self.request.settimeout(self.server.lease_s)  # a client that reads nothing cannot hold the thread
        self.request.sendall(json.dumps(reply).encode() + b"\n")


def _discard_pending(sock: socket.socket, limit: int = 2**20) -> None:
    """Read away (up to ``limit`` bytes) what the client sent and nobody will read: closing a Unix
    socket with unread data resets the connection, so that the client reads the reply and then
    ``ECONNRESET`` instead of the end of the stream. Best effort: what arrives after this (a client
    still sending) resets it all the same; the reply is read either way (queued data comes first)."""
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        for _ in range(limit // MAX_LINE_BYTES):
            if not sock.recv(MAX_LINE_BYTES):
                return


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what is at ``path`` itself (links not followed); None: nothing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISLNK: "a symbolic link", stat.S_ISREG: "a regular file"}
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def claim_socket_path(path: Path) -> None:
    """Make way for a server socket at ``path``: nothing there, or a stale socket (no server
    answers), which is removed. Anything else is refused and left alone: a file, a directory, a
    symlink (never followed), or a socket that a live server answers on."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ActuatorError(f"--socket {path}: {_kind(st.st_mode)} is in the way; the actuator replaces only a "
                            "stale socket (choose another path, or remove it if it is not needed)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:  # nobody listens: a socket left by an earlier run
        if _identity(path) == (st.st_dev, st.st_ino):  # still the one probed
            os.unlink(path)
        return
    except OSError as exc:
        raise ActuatorError(f"--socket {path}: cannot tell whether a server listens there "
                            f"({exc.strerror or exc}); refusing to replace it") from None
    finally:
        probe.close()
    raise ActuatorError(f"--socket {path}: a server is listening there (another festgym actuator?); stop it or "
                        "choose another path")


def _stderr(message: str) -> None:
    print(f"festgym actuator: {message}", file=sys.stderr, flush=True)


class ActuatorServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serves ``device``'s writes on the Unix socket ``path`` (mode ``0o660``: give the policy
    process's group access) to up to ``max_clients`` clients at once, one of them owning the
    GPU; its settings last until it disconnects or sends nothing for ``lease_s``."""

    daemon_threads = True  # a connection's thread must not keep a stopping actuator alive

    def __init__(self, device: GpuDevice, path: str | Path, mode: int = 0o660, lease_s: float = LEASE_S,
                 max_clients: int = MAX_CLIENTS, log: Callable[[str], None] = _stderr):
        self.device, self.path, self.lease_s, self.max_clients, self.log = device, Path(path), lease_s, max_clients, log
        check_ranges(self, {"lease_s": 0 < lease_s <= MAX_LEASE_S, "max_clients": max_clients >= 1},
                     {"lease_s": f"in (0, {MAX_LEASE_S:g}] s", "max_clients": "≥ 1"})
        self._lock = threading.Lock()  # one device call at a time, and the owner with it
        self._owner: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._closing = False
        claim_socket_path(self.path)
        # Born with its mode: a chmod by path afterwards would follow whatever link replaced the socket
        # meanwhile (as root), and a socket's own descriptor cannot change the file's mode.
        umask = os.umask(0o777 & ~mode)
        try:
            super().__init__(str(self.path), _Handler)
        finally:
            os.umask(umask)
        self._identity = _identity(self.path)

    def admit(self, client: socket.socket) -> str | None:
        """Take a new connection; why not, if not."""
        with self._lock:
            if self._closing:
                return "the actuator is stopping"
            if len(self._clients) >= self.max_clients:
                return f"{self.max_clients} clients connected already: try again later"
            self._clients.add(client)
            return None

    def answer(self, client: socket.socket, line: bytes) -> dict[str, Any]:
        with self._lock:
            if self._closing:
                return error_reply(ActuatorError("the actuator is stopping"))
            return handle(self.device, line, lambda: self._claim(client), self.lease_s)

    def _claim(self, client: socket.socket) -> None:
        if self._owner is None:
            self._owner = client
        elif self._owner is not client:
            raise ActuatorError("another client holds the GPU: its settings end when it disconnects or sends "
                                f"nothing for {self.lease_s:g} s")

    def release(self, client: socket.socket) -> None:
        """A connection ends: if it owned the GPU, restore it."""
        with self._lock:
            self._clients.discard(client)
            if self._owner is not client:
                return
            self._owner = None
            try:
                reset = self.device.restore()
            except GpuError as exc:
                self.log(f"restoring the GPU after its client left failed: {exc}")
            else:
                self.log(f"client left; reset {', '.join(reset) or 'nothing'}")

    def server_close(self) -> None:
        """Stop: end every connection, restore the GPU, remove the socket (if still ours)."""
        try:
            with self._lock:
                self._closing, self._owner = True, None
                for client in self._clients:
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_RDWR)
                self.device.restore()
        finally:
            super().server_close()
            if self._identity is not None and _identity(self.path) == self._identity:
                self.path.unlink()


# --- the client ------------------------------------------------------------------------------------

class RemoteWriter:
    """The write side of a GPU, through an actuator (what the agent uses when
    ``Host.writer`` is set): the same methods as :class:`GpuDevice`'s writes, and
    :meth:`heartbeat`, which the agent calls every interval to renew its lease
    (``heartbeat_every_s``: how often that is; a lease shorter than :data:`LEASE_MARGIN` of them
    is refused)."""

    def __init__(self, path: str | Path, timeout_s: float = 5.0, heartbeat_every_s: float | None = None):
        self.path = str(path)
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.settimeout(timeout_s)
            self._sock.connect(self.path)
        except OSError as exc:
            raise ActuatorError(f"actuator socket {self.path}: {exc.strerror or exc} (start it with "
                                "`festgym deploy actuator --socket PATH` as root or with CAP_SYS_ADMIN)") from None
        self._file = self._sock.makefile("rwb")
        try:
            self.lease_s = float(self._ask("heartbeat")["lease_s"])
        except ActuatorError:  # refused (too many clients, stopping): nothing to keep open
            self.close()
            raise
        if heartbeat_every_s is not None and self.lease_s < LEASE_MARGIN * heartbeat_every_s:
            self.close()
            raise ActuatorError(f"actuator socket {self.path}: its lease ({self.lease_s:g} s) is under "
                                f"{LEASE_MARGIN} intervals of {heartbeat_every_s:g} s: start it with --lease "
                                f"{LEASE_MARGIN * heartbeat_every_s:g} or more, or shorten --interval")

    def _ask(self, op: str, *args: int) -> dict[str, Any]:
        try:
            self._file.write(json.dumps({"op": op, "args": list(args)}).encode() + b"\n")
            self._file.flush()
        except BrokenPipeError:
            pass  # the actuator hung up; why (a lapsed lease, say) may still wait to be read
        except OSError as exc:
            raise ActuatorError(f"actuator socket {self.path}: {exc}") from None
        try:
            line = self._file.readline()
        except OSError as exc:
            raise ActuatorError(f"actuator socket {self.path}: {exc}") from None
        if not line:
            raise ActuatorError(f"actuator socket {self.path}: the actuator closed the connection")
        reply = json.loads(line)
        if not reply["ok"]:
            kind = getattr(device_module, reply["error"], None)
            error = kind if isinstance(kind, type) and issubclass(kind, GpuError) else ActuatorError
            raise error(f"actuator: {reply['message']}")
        return reply

    def set_locked_sm_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        self._ask("set_locked_sm_clocks_mhz", int(min_mhz), int(max_mhz))

    def reset_locked_sm_clocks(self) -> None:
        self._ask("reset_locked_sm_clocks")

    def set_power_limit_mw(self, limit_mw: int) -> None:
        self._ask("set_power_limit_mw", int(limit_mw))

    def reset_power_limit(self) -> None:
        self._ask("reset_power_limit")

    def changed(self) -> tuple[str, ...]:
        return tuple(self._ask("changed")["changed"])

    def restore(self) -> tuple[str, ...]:
        return tuple(self._ask("restore")["reset"])

    def heartbeat(self) -> None:
        """Renew the lease (any request does; this one does nothing else)."""
        self._ask("heartbeat")

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the actuator is gone: a buffered request cannot be delivered, and need not be
        finally:
            self._sock.close()


__all__ = ["ARITY", "LEASE_MARGIN", "LEASE_S", "MAX_ARG", "MAX_CLIENTS", "MAX_LEASE_S", "MAX_LINE_BYTES", "QUERIES",
           "WRITES", "ActuatorError", "ActuatorServer", "RemoteWriter", "claim_socket_path", "error_reply", "execute",
           "handle", "parse"]
