"""Signals (festgym.signals): every catchable signal whose default action ends the process restores
the GPU, in the deploy agent's run loop (`festgym deploy`) and in the privileged actuator (`festgym
deploy actuator`), each run as a real process against a fake GPU and sent real signals; SIGPIPE and
SIGXFSZ are ignored (their failures surface as OSError); SIGKILL, which no process can catch, is
covered by the actuator, which restores when the killed agent's socket closes."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_gpu import FakeGpu

from festgym import signals
from festgym.deploy.actuator import ActuatorServer, RemoteWriter

REPO = Path(__file__).resolve().parents[2]

EXPECTED = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF",
            "SIGXCPU", "SIGIO", "SIGPWR", "SIGSTKFLT")
"""signal(7)'s signals whose default action is to terminate (Term, Core) and that a Python handler
can act on; the real-time signals come on top."""
NOT_STOPPING = ("SIGKILL", "SIGSTOP", "SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT", "SIGSYS", "SIGTRAP",
                "SIGPIPE", "SIGXFSZ", "SIGCHLD", "SIGCONT", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGWINCH")
"""Uncatchable, faults of the process itself, ignored by Python, or not terminating by default."""
REALTIME = (signal.SIGRTMIN, signal.SIGRTMIN + 1, (signal.SIGRTMIN + signal.SIGRTMAX) // 2, signal.SIGRTMAX)
"""The real-time signals sent to processes (all of them are sent in-process)."""
SENT = tuple(int(getattr(signal, n)) for n in EXPECTED if hasattr(signal, n)) + REALTIME


def test_stopping_is_every_catchable_terminating_signal():
    realtime = set(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
    assert set(signals.STOPPING) == set(SENT) | realtime
    assert not set(signals.STOPPING) & {int(getattr(signal, n)) for n in NOT_STOPPING if hasattr(signal, n)}
    assert set(signals.IGNORED) == {signal.SIGPIPE, signal.SIGXFSZ}


def test_signal_names():
    assert signals.name(signal.SIGTERM) == "SIGTERM"
    assert signals.name(signal.SIGRTMIN + 3) == "SIGRTMIN+3"
    assert signals.name(signal.SIGRTMAX) == "SIGRTMAX"


class Caught(BaseException):
    pass


def test_each_stopping_signal_raises_in_the_block_and_the_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (*signals.STOPPING, *signals.IGNORED)}
    for signum in signals.STOPPING:
        with pytest.raises(Caught) as caught, signals.raising_on(Caught):
            assert all(signal.getsignal(s) == signal.SIG_IGN for s in signals.IGNORED)
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler interrupts the sleep
        assert caught.value.args == (signum,)
    assert {s: signal.getsignal(s) for s in before} == before


def test_deferred_ignores_every_stopping_signal():
    before = {s: signal.getsignal(s) for s in signals.STOPPING}
    with signals.raising_on(Caught):
        with signals.deferred():
            assert all(signal.getsignal(s) == signal.SIG_IGN for s in signals.STOPPING)
            for signum in signals.STOPPING:
                os.kill(os.getpid(), signum)  # ignored: nothing raised
        assert all(signal.getsignal(s) not in (signal.SIG_IGN, signal.SIG_DFL) for s in signals.STOPPING)
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_signal_landing_while_deferred_swaps_the_handlers_does_not_raise(monkeypatch):
    """deferred() swaps some fifty handlers one by one; a signal whose raising handler is not swapped yet
    must not cut the restore short."""
    swap, landed = signal.signal, []

    def swap_with_a_signal_landing(signum: int, handler):
        if handler == signal.SIG_IGN and not landed:  # the first swap: SIGTERM's handler still raises
            landed.append(signum)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs here
        return swap(signum, handler)

    with signals.raising_on(Caught):
        monkeypatch.setattr(signal, "signal", swap_with_a_signal_landing)
        with signals.deferred():
            pass
        monkeypatch.setattr(signal, "signal", swap)
        assert landed and landed[0] != signal.SIGTERM
        with pytest.raises(Caught):  # and the handlers raise again once it ends
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)


def test_other_threads_leave_the_handlers_alone():
    seen = []

    def in_a_thread() -> None:
        with signals.raising_on(Caught):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [before]


# --- real processes ------------------------------------------------------------------------------------

CHILD = r"""
import json, sys
from festgym.cli.main import main
from festgym.devices import nvml
from tests.fake_gpu import FakeGpu, serve_metrics


class Announcing(FakeGpu):
    # says when the clocks are locked: the moment to send the signal
    def set_locked_sm_clocks_mhz(self, min_mhz, max_mhz):
        super().set_locked_sm_clocks_mhz(min_mhz, max_mhz)
        print("LOCKED", flush=True)


url = serve_metrics()
for line in sys.stdin:  # one command line per run, the same process throughout
    gpu = Announcing()
    nvml.open_gpus = lambda indices=None, gpu=gpu: [gpu]
    code = main([arg.replace("METRICS", url) for arg in json.loads(line)])
    print("RESULT " + json.dumps({"code": code, "writes": gpu.writes, "changed": gpu.changed()}), flush=True)
"""


def agent_argv(log: Path, *extra: str) -> list[str]:
    return ["deploy", "--policy", "ppo-local", "--engine", "Llama-3.1-8B=METRICS", "--slo", "Llama-3.1-8B=0.5,0.1",
            "--max-num-seqs", "Llama-3.1-8B=64", "--apply", "--interval", "0.02", "--min-change-interval", "0",
            "--log", str(log), *extra]


class Child:
    """A Python process running CHILD: it runs one festgym command line per line it is sent."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", CHILD], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def run(self, argv: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()

    def until(self, prefix: str, timeout_s: float = 60.0) -> str:
        """The next line starting with ``prefix`` (the lines before it are kept for messages)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} within {timeout_s} s; output: {self.seen[-20:]}") from None
            if line is None:
                raise AssertionError(f"the process died (exit {self.proc.wait()}); output: {self.seen[-20:]}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line[len(prefix):]

    def result(self) -> dict:
        return json.loads(self.until("RESULT "))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def child() -> Iterator[Child]:
    """One process for all the runs (started again if a signal killed it)."""
    box = [Child()]

    class Restarting:
        def __getattr__(self, name: str):
            if box[0].proc.poll() is not None:
                box[0] = Child()
            return getattr(box[0], name)

    yield Restarting()  # type: ignore[misc]
    box[0].close()


@pytest.fixture
def sock_path() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="fgs"))  # Unix socket paths stay under 108 bytes
    yield folder / "a.sock"
    shutil.rmtree(folder, ignore_errors=True)


def stop_record(log: Path) -> dict:
    return [r for r in map(json.loads, log.read_text().splitlines()) if r.get("event") == "stop"][-1]


@pytest.mark.parametrize("signum", SENT, ids=signals.name)
def test_a_signal_to_festgym_deploy_restores_the_gpu(child, tmp_path, signum):
    log = tmp_path / "run.jsonl"
    child.run(agent_argv(log))
    child.until("LOCKED")
    child.proc.send_signal(signum)
    result = child.result()
    assert result["code"] == 0 and result["changed"] == [] and result["writes"][-1] == ["reset"]
    stop = stop_record(log)
    assert stop["reason"] == signals.name(signum)
    assert stop["reset"] == ["locked_sm_clocks"] and stop["still_changed"] == []


@pytest.mark.parametrize("signum", SENT, ids=signals.name)
def test_a_signal_to_festgym_deploy_actuator_restores_the_gpu(child, sock_path, signum):
    child.run(["deploy", "actuator", "--socket", str(sock_path)])
    child.until("festgym actuator:")
    writer = RemoteWriter(sock_path)
    try:
        writer.set_locked_sm_clocks_mhz(1200, 1200)
        child.until("LOCKED")
        child.proc.send_signal(signum)  # the client stays connected: the restore is the signal's
        result = child.result()
    finally:
        writer.close()
    assert result["code"] == 0 and result["changed"] == [] and result["writes"] == [["lock", 1200, 1200], ["reset"]]
    assert not os.path.lexists(sock_path)


@pytest.mark.parametrize("ignored", signals.IGNORED, ids=signals.name)
def test_sigpipe_and_sigxfsz_stop_neither_process(child, tmp_path, sock_path, ignored):
    log = tmp_path / "run.jsonl"
    child.run(agent_argv(log))
    child.until("LOCKED")
    child.proc.send_signal(ignored)
    time.sleep(0.2)  # ten intervals on
    child.proc.send_signal(signal.SIGTERM)
    assert child.result()["changed"] == []
    assert stop_record(log)["reason"] == "SIGTERM"
    child.run(["deploy", "actuator", "--socket", str(sock_path)])
    child.until("festgym actuator:")
    writer = RemoteWriter(sock_path)
    writer.set_locked_sm_clocks_mhz(1200, 1200)
    child.proc.send_signal(ignored)
    assert writer.changed() == ("locked_sm_clocks",)  # still serving, the lock still held
    child.proc.send_signal(signal.SIGTERM)
    assert child.result()["changed"] == []
    writer.close()


def test_sigkill_to_the_agent_leaves_the_restore_to_the_actuator(tmp_path, sock_path):
    gpu = FakeGpu()
    server = ActuatorServer(gpu, sock_path, log=lambda message: None)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    agent = Child()
    try:
        agent.run(agent_argv(tmp_path / "run.jsonl", "--actuator", str(sock_path)))
        deadline = time.monotonic() + 60
        while gpu.locked is None:  # the agent has locked the clocks through the actuator
            assert time.monotonic() < deadline and agent.proc.poll() is None, agent.seen
            time.sleep(0.01)
        agent.proc.kill()  # SIGKILL: no handler runs, no restore of its own
        agent.proc.wait()
        deadline = time.monotonic() + 5
        while gpu.changed():
            assert time.monotonic() < deadline, "the actuator did not restore the GPU"
            time.sleep(0.01)
        assert gpu.writes[-1] == ("reset",)
    finally:
        agent.close()
        server.shutdown()
        server.server_close()
