"""Privilege split: a small actuator holds ``CAP_SYS_ADMIN``; the policy process holds none.

Reading a GPU needs no privileges, so the deploy agent (metrics, controller, telemetry: the
larger attack surface) runs unprivileged and reads NVML itself. Its writes go over a Unix socket
to :class:`ActuatorServer` (``festgym deploy actuator``), which accepts only the four writes of
:class:`~festgym.devices.device.GpuDevice` with integer arguments, validated by the device against
its supported clocks and limits, and nothing else (no paths, no code, no pickles: one JSON
object per line).

The actuator restores the GPU when its client disconnects (the policy process died or stopped:
its settings must not outlive it) and when it stops itself (SIGTERM, SIGINT). *Limit:* there is
no lease: a policy process that hangs while connected keeps its settings until it is killed
(the service manager's watchdog or a liveness probe should do that).

Protocol: request ``{"op": NAME, "args": [INT, ...]}``, reply ``{"ok": true, "changed": [...]}``
or ``{"ok": false, "error": "NoPermission", "message": "..."}``; ``{"op": "changed"}`` and
``{"op": "restore"}`` read and undo the device's changes.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
from pathlib import Path
from typing import Any

from festgym.devices import device as device_module
from festgym.devices.device import GpuDevice, GpuError
from festgym.errors import FestgymError

WRITES = {"set_locked_sm_clocks_mhz": 2, "reset_locked_sm_clocks": 0, "set_power_limit_mw": 1, "reset_power_limit": 0}
"""The operations a client may ask for, with their number of integer arguments."""
QUERIES = ("changed", "restore")


class ActuatorError(FestgymError):
    """The actuator could not be reached or refused a request."""


def handle(device: GpuDevice, line: bytes) -> dict[str, Any]:
    """One request -> its reply (every failure becomes an error reply, never an exception)."""
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ActuatorError(f'expected a JSON object {{"op": NAME, "args": [...]}}, got {line[:200]!r}')
        op, args = request.get("op"), request.get("args", [])
        if not isinstance(op, str) or (op not in WRITES and op not in QUERIES):
            raise ActuatorError(f"unknown op {op!r}; allowed: {', '.join([*WRITES, *QUERIES])}")
        if op == "restore":
            return {"ok": True, "reset": list(device.restore()), "changed": list(device.changed())}
        if op in WRITES:
            if not isinstance(args, list) or len(args) != WRITES[op] or \
                    not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
                raise ActuatorError(f"{op} takes {WRITES[op]} integer argument(s), got {args!r}")
            getattr(device, op)(*args)
        return {"ok": True, "changed": list(device.changed())}
    except (FestgymError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}


class _Handler(socketserver.StreamRequestHandler):
    server: ActuatorServer

    def handle(self) -> None:
        try:
            for line in self.rfile:
                self.wfile.write(json.dumps(handle(self.server.device, line)).encode() + b"\n")
        finally:  # the client is gone: nothing it set may outlive it
            self.server.device.restore()


class ActuatorServer(socketserver.UnixStreamServer):
    """Serves ``device``'s writes on the Unix socket ``path`` (mode ``0o660``: give the policy
    process's group access), one client at a time."""

    def __init__(self, device: GpuDevice, path: str | Path, mode: int = 0o660):
        self.device, self.path = device, Path(path)
        if self.path.exists():
            self.path.unlink()  # a stale socket from an earlier run
        super().__init__(str(self.path), _Handler)
        os.chmod(self.path, mode)

    def server_close(self) -> None:
        try:
            self.device.restore()
        finally:
            super().server_close()
            self.path.unlink(missing_ok=True)


class RemoteWriter:
    """The write side of a GPU, through an actuator (what the agent uses when
    ``Host.writer`` is set): the same methods as :class:`GpuDevice`'s writes."""

    def __init__(self, path: str | Path, timeout_s: float = 5.0):
        self.path = str(path)
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.settimeout(timeout_s)
            self._sock.connect(self.path)
        except OSError as exc:
            raise ActuatorError(f"actuator socket {self.path}: {exc.strerror or exc} (start it with "
                                "`festgym deploy actuator --socket PATH` as root or with CAP_SYS_ADMIN)") from None
        self._file = self._sock.makefile("rwb")

    def _ask(self, op: str, *args: int) -> dict[str, Any]:
        try:
            self._file.write(json.dumps({"op": op, "args": list(args)}).encode() + b"\n")
            self._file.flush()
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

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the actuator is gone: a buffered request cannot be delivered, and need not be
        finally:
            self._sock.close()


__all__ = ["QUERIES", "WRITES", "ActuatorError", "ActuatorServer", "RemoteWriter", "handle"]
