"""Hostile or unusual engine metrics endpoints: slow drips, oversized bodies, impossible values, metrics
that vanish, several models behind one URL. The scrape keeps one deadline and a size cap, the control
loop keeps its period, and an engine whose figures cannot be trusted reads as unknown: the watchdog
holds the default clocks, and no controller sees its figures."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fake_gpu import FakeGpu

from festgym.cli.deploy import _scrapers
from festgym.cli.main import build_parser
from festgym.control.actions import GpuControl
from festgym.deploy.agent import DeployAgent, DeployConfig, Host
from festgym.deploy.deciders import HostState
from festgym.deploy.engine_metrics import (
    ITL_BUCKETS_S,
    TTFT_BUCKETS_S,
    EngineMetricsError,
    EngineScraper,
    EngineUnreachable,
    Histogram,
    render_metrics,
)
from festgym.deploy.observation import EngineSpec
from festgym.deploy.safety import SafetyConfig
from festgym.deploy.telemetry import Telemetry
from festgym.devices.shares import AdvisoryShares
from festgym.errors import FestgymError


def metrics(step: int, model: str = "m", running: str | None = None) -> str:
    """A vLLM scrape after ``step`` intervals (``running`` replaces the running gauge's value)."""
    text = render_metrics("vllm", model, {"running": 4.0, "waiting": 1.0, "kv_used": 0.2},
                          {"prompt_tokens": 100.0 * step, "generation_tokens": 50.0 * step, "finished": 2.0 * step},
                          {"ttft_s": Histogram.from_values(TTFT_BUCKETS_S, [0.05] * step),
                           "itl_s": Histogram.from_values(ITL_BUCKETS_S, [0.02] * 5 * step)})
    if running is not None:
        text = text.replace(f'vllm:num_requests_running{{model_name="{model}"}} 4.0',
                            f'vllm:num_requests_running{{model_name="{model}"}} {running}')
    return text


# --- endpoints ----------------------------------------------------------------------------------------------------

Behaviour = Callable[[socket.socket], None]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(65536)  # the request (one small GET)
        with contextlib.suppress(OSError):  # the client gave up (deadline, size cap)
            self.server.behaviour(self.request)  # type: ignore[attr-defined]


@pytest.fixture
def endpoint() -> Iterator[Callable[[Behaviour], str]]:
    """Start a TCP server answering with a behaviour; gives its metrics URL."""
    servers = []

    def start(behaviour: Behaviour) -> str:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.behaviour = behaviour  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/metrics"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def answer(body: str) -> Behaviour:
    def send(conn: socket.socket) -> None:
        data = body.encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    return send


def drip(headers_too: bool = False, gap_s: float = 0.02, duration_s: float = 4.0) -> Behaviour:
    """A byte at a time, each well within any socket timeout, for far longer than a scrape may take."""
    def send(conn: socket.socket) -> None:
        data = metrics(1).encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(data)
        if not headers_too:
            conn.sendall(head)
        for i in range(int(duration_s / gap_s)):
            conn.sendall(((head if headers_too else b"") + data)[i:i + 1])
            time.sleep(gap_s)
    return send


def flood(announce_bytes: int | None = None) -> Behaviour:
    """An endless body of valid-looking lines, announced with a length or not."""
    def send(conn: socket.socket) -> None:
        length = b"Content-Length: %d\r\n" % announce_bytes if announce_bytes else b""
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + length + b"\r\n")
        line = b'vllm:num_requests_running{model_name="m"} 1\n' * 1000
        while True:
            conn.sendall(line)
    return send


# --- the scrape ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers_too", [False, True], ids=["body drips", "headers drip"])
def test_a_dripping_endpoint_is_cut_at_one_deadline_for_the_whole_scrape(endpoint, headers_too):
    url = endpoint(drip(headers_too))
    started = time.monotonic()
    with pytest.raises(EngineUnreachable, match=r"timed out: no complete answer within 0\.3 s") as err:
        EngineScraper(url, timeout_s=0.3).scrape()
    assert time.monotonic() - started < 0.3 + 0.3
    assert err.value.listening  # an engine that is up but failing: unknown, not "loading"


def test_a_connection_made_only_after_the_deadline_is_given_up_at_once(endpoint, monkeypatch):
    """The deadline passes while connecting (a slow name lookup, a first address that timed out before the
    next answered), when there is no socket yet to shut down: the dripping answer must not be read."""
    url = endpoint(drip())
    connect = http.client.HTTPConnection.connect

    def slow_connect(self: http.client.HTTPConnection) -> None:
        time.sleep(0.4)
        connect(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", slow_connect)
    started = time.monotonic()
    with pytest.raises(EngineUnreachable, match=r"timed out: no complete answer within 0\.3 s"):
        EngineScraper(url, timeout_s=0.3).scrape()
    assert time.monotonic() - started < 0.4 + 0.5  # not the drip's 4 s


BAD_URLS = {"port out of range": "http://127.0.0.1:99999", "port not a number": "http://127.0.0.1:x",
            "not http": "ftp://127.0.0.1/metrics", "no host": "http:///metrics",
            "a host label over 63 characters": f"http://{'a' * 64}.example", "a space in the path": "http://h/a b",
            "a non-ASCII path": "http://h/métriques", "an unclosed IPv6 bracket": "http://[::1/metrics"}


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_a_url_that_cannot_be_fetched_is_a_festgym_error_before_the_loop(url):
    with pytest.raises(EngineMetricsError, match="not a valid metrics URL") as err:
        EngineScraper(url).scrape()
    assert not isinstance(err.value, EngineUnreachable)  # a setting to fix, not an engine down
    args = build_parser().parse_args(["deploy", "--engine", f"a={url}"])
    with pytest.raises(FestgymError, match="not a valid metrics URL"):
        _scrapers(args, [EngineSpec("a", url, 8, 1.0, 0.1)])


def test_an_oversized_body_is_refused_within_the_cap(endpoint):
    announced = endpoint(flood(announce_bytes=150 * 2**20))
    started = time.monotonic()
    with pytest.raises(EngineMetricsError, match=r"announces 157286400 bytes.*16777216 bytes allowed"):
        EngineScraper(announced, timeout_s=2.0).scrape()  # refused before reading it
    assert time.monotonic() - started < 0.5
    endless = endpoint(flood())
    with pytest.raises(EngineMetricsError, match=r"sent more than the 1048576 bytes allowed") as err:
        EngineScraper(endless, timeout_s=2.0, max_bytes=2**20).scrape()
    assert not isinstance(err.value, EngineUnreachable)
    assert EngineScraper(endpoint(answer(metrics(1))), max_bytes=len(metrics(1))).scrape().gauges["running"] == 4.0


def test_an_endpoint_serving_several_models_needs_a_model_filter(endpoint):
    url = endpoint(answer(metrics(2, "llama") + metrics(1, "qwen").replace("# ", "#- ")))
    with pytest.raises(EngineMetricsError, match=r"serves several models \(llama, qwen\).*--served-model"):
        EngineScraper(url).scrape()
    assert EngineScraper(url, model="qwen").scrape().counters["prompt_tokens"] == 100.0


def test_the_cli_builds_scrapers_with_a_model_filter_and_a_deadline_within_the_interval():
    args = build_parser().parse_args(["deploy", "--engine", "a=http://h:1", "--engine", "b=http://h:2",
                                      "--served-model", "b=org/B-7B", "--interval", "0.5", "--scrape-timeout", "2"])
    specs = [EngineSpec(m, f"http://h:{p}", 8, 1.0, 0.1) for m, p in (("a", 1), ("b", 2))]
    scrapers = _scrapers(args, specs)
    assert (scrapers["a"].model, scrapers["b"].model) == (None, "org/B-7B")
    assert scrapers["a"].timeout_s == scrapers["b"].timeout_s == 0.25  # the interval's share of each engine
    stray = build_parser().parse_args(["deploy", "--engine", "a=http://h:1", "--served-model", "c=C"])
    with pytest.raises(FestgymError, match="--served-model c=...: c has no --engine"):
        _scrapers(stray, specs[:1])


# --- the agent ----------------------------------------------------------------------------------------------------


class Queued(EngineScraper):
    """An engine whose successive answers are given (the last one repeats)."""

    def __init__(self, texts: list[str]):
        super().__init__("http://engine/metrics", model="m")
        self.texts = texts

    def fetch(self) -> str:
        return self.texts.pop(0) if len(self.texts) > 1 else self.texts[0]


class Wants1005:
    """A decider that always wants 1005 MHz and keeps what it was shown."""

    name, sha256 = "wants-1005", None

    def __init__(self) -> None:
        self.shown: list[HostState] = []

    def decide(self, state: HostState) -> tuple[GpuControl, None]:
        self.shown.append(state)
        return GpuControl(clock_mhz=1005), None


def agent_over(engines: dict, interval_s: float = 1.0) -> tuple[DeployAgent, Wants1005, FakeGpu, io.StringIO]:
    gpu, decider, log = FakeGpu(), Wants1005(), io.StringIO()
    ticks = iter(range(10**6))
    host = Host(gpu, engines, AdvisoryShares(), sleep=lambda s: None, clock=lambda: float(next(ticks)))
    specs = [EngineSpec(m, "http://engine", 8, 1.0, 0.1) for m in engines]
    config = DeployConfig(interval_s=interval_s, apply=True, safety=SafetyConfig(min_change_interval_s=0))
    return DeployAgent(host, decider, specs, config, Telemetry(stream=log)), decider, gpu, log


@pytest.mark.parametrize("bad", [
    metrics(3, running="NaN"), metrics(3, running="+Inf"), metrics(3, running="-3"),
    metrics(3).replace('vllm:kv_cache_usage_perc{model_name="m"} 0.2', 'vllm:kv_cache_usage_perc{model_name="m"} 7.0'),
    "\n".join(r for r in metrics(3).splitlines() if "time_to_first_token" not in r) + "\n",  # TTFT renamed or cut off
    "\n".join(r for r in metrics(3).splitlines() if "inter_token_latency" not in r) + "\n",
    metrics(3).replace('vllm:generation_tokens_total{model_name="m"} 150.0', 'vllm:generation_tokens_total'
                                                                               '{model_name="m"} NaN'),
], ids=["NaN running", "Inf running", "negative running", "KV use 700%", "TTFT gone", "ITL gone", "NaN counter"])
def test_an_engine_that_cannot_be_trusted_holds_default_clocks_and_is_never_decided_on(bad, caplog):
    agent, decider, gpu, log = agent_over({"m": Queued([metrics(1), metrics(2), bad, bad, bad, metrics(4),
                                                        metrics(5)])})
    caplog.set_level(logging.INFO, logger="festgym.deploy.agent")
    agent.prime()
    records = [agent.step() for _ in range(6)]
    states = [r["engines"]["m"]["state"] for r in records]
    assert states == ["ok", "unknown", "unknown", "unknown", "ok", "ok"]
    assert [r["watchdog"] for r in records] == [False, True, True, True, False, False]
    assert [[c["call"] for c in r["calls"]] for r in records] == [
        ["set_locked_sm_clocks_mhz"], ["reset_locked_sm_clocks"], [], [], ["set_locked_sm_clocks_mhz"], []]
    assert gpu.writes == [("lock", 1005, 1005), ("reset",), ("lock", 1005, 1005)]
    assert agent.guard.trips == 0  # the safe setting, not an SLO trip
    # what the controller saw: the engine not ready, never the refused figures
    assert [s.windows["m"] is None for s in decider.shown] == [False, True, True, True, False, False]
    errors = [json.loads(line) for line in log.getvalue().splitlines() if '"engine_error"' in line]
    assert [e["state"] for e in errors] == ["unknown"] * 3
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]  # once per change, not every interval
    assert [level for level, _ in logged] == [logging.WARNING, logging.INFO]
    assert "engine m unknown: http://engine/metrics: " in logged[0][1] and "engine m ok again" in logged[1][1]


def test_an_engine_with_nothing_listening_reads_as_not_ready_as_before():
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent, _, gpu, _ = agent_over({"m": EngineScraper(f"http://127.0.0.1:{port}", timeout_s=0.5)})
    agent.prime()
    record = agent.step()
    assert record["engines"]["m"] == {"ready": False, "state": "unreachable"}
    assert not record["watchdog"] and gpu.writes == [("lock", 1005, 1005)]  # the controller acts (a loading slot)


LARGE = "".join(f'vllm:num_requests_running{{model_name="m",rank="{i}"}} 1\n' for i in range(100_000)) + metrics(1)
"""A body of lines the parser reads, sent at once: the fetch ends in time, and parsing it all would not."""


@pytest.mark.parametrize("behaviour", [drip(), drip(headers_too=True), flood(), answer(LARGE)],
                         ids=["body drips", "headers drip", "endless body", "a large body at once"])
def test_a_control_interval_keeps_its_period_while_an_engine_is_slow(endpoint, behaviour):
    interval_s = 0.4
    urls = {"slow": endpoint(behaviour), "fine": endpoint(answer(metrics(1)))}
    args = build_parser().parse_args(["deploy", *[a for m, u in urls.items() for a in ("--engine", f"{m}={u}")],
                                      "--interval", str(interval_s), "--scrape-timeout", "30",
                                      "--scrape-max-bytes", str(64 * 2**20)])
    specs = [EngineSpec(m, u, 8, 1.0, 0.1) for m, u in urls.items()]
    agent, *_ = agent_over(_scrapers(args, specs), interval_s)
    agent.prime()
    for _ in range(2):
        started = time.monotonic()
        record = agent.step()
        assert time.monotonic() - started < interval_s + 0.2  # the period, and slack for the decision
        assert record["engines"]["slow"]["state"] == "unknown" and record["watchdog"]
        assert record["engines"]["fine"]["state"] == "ok" and record["engines"]["fine"]["ready"]
