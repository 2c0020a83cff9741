"""The deploy agent's own state on a Prometheus endpoint: energy per model, clock, shares, watchdog.

``festgym deploy --metrics-port PORT`` serves these (prometheus-client, the deploy extra), read
from the agent's :attr:`~festgym.deploy.agent.DeployAgent.snapshot` (replaced whole after each
interval, so one scrape sees one interval). The counters are the sums of the JSONL log's interval
records (``energy_parts_j``, ``energy_j``, ``calls``), so a dashboard and ``festgym deploy report``
agree; ``docs/deploy/grafana-dashboard.json`` charts them.

==================================================  ======================================================
``festgym_energy_joules_total{model,part}``         energy split to each model (part: static, dynamic,
                                                    loading; the rule: :mod:`festgym.control.attribution`)
``festgym_gpu_energy_joules_total``                 the GPU's energy counter since the agent started
``festgym_output_tokens_total{model}``              output tokens each engine reported
``festgym_power_watts``                             GPU power, as read at the last interval
``festgym_sm_clock_mhz`` / ``festgym_target_clock_mhz``   SM clock read, and the controller's wish (NaN: none)
``festgym_sm_share{model}``                         SM share in force (or advised)
``festgym_engine_state{model,state}``               1 for the engine's state (ok, unreachable, unknown)
``festgym_watchdog_holding``                        1 while the watchdog holds the default clocks
``festgym_watchdog_trips_total``                    times the watchdog tripped
``festgym_decision_seconds``                        the last decision's latency (observation + controller)
``festgym_intervals_total`` / ``festgym_calls_total``  control intervals run, device and share calls made
==================================================  ======================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from festgym.control.attribution import ENERGY_PARTS
from festgym.deploy.agent import ENGINE_STATES

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

PREFIX = "festgym_"


class AgentCollector:
    """A prometheus-client collector over ``snapshot()`` (the agent's :attr:`snapshot`)."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot()
        if not snap:  # before the first interval: nothing measured yet
            return
        energy = CounterMetricFamily(PREFIX + "energy_joules", "GPU energy split to each model, by part",
                                     labels=["model", "part"])
        for model, parts in snap["energy_parts_j"].items():
            for part, joules in zip(ENERGY_PARTS, parts):
                energy.add_metric([model, part], joules)
        yield energy
        yield CounterMetricFamily(PREFIX + "gpu_energy_joules", "GPU energy counter since the agent started",
                                  value=snap["energy_j"])
        tokens = CounterMetricFamily(PREFIX + "output_tokens", "Output tokens each engine reported", labels=["model"])
        for model, count in snap["tokens"].items():
            tokens.add_metric([model], count)
        yield tokens
        yield GaugeMetricFamily(PREFIX + "power_watts", "GPU power at the last interval", value=snap["power_w"])
        yield GaugeMetricFamily(PREFIX + "sm_clock_mhz", "SM clock read", value=snap["sm_clock_mhz"])
        target = snap["target_clock_mhz"]
        yield GaugeMetricFamily(PREFIX + "target_clock_mhz", "The controller's SM clock (NaN: none asked)",
                                value=math.nan if target is None else target)
        share = GaugeMetricFamily(PREFIX + "sm_share", "SM share in force (or advised)", labels=["model"])
        for model, value in snap["shares"].items():
            share.add_metric([model], value)
        yield share
        state = GaugeMetricFamily(PREFIX + "engine_state", "1 for each engine's state", labels=["model", "state"])
        for model, current in snap["states"].items():
            for name in ENGINE_STATES:
                state.add_metric([model, name], float(name == current))
        yield state
        yield GaugeMetricFamily(PREFIX + "watchdog_holding", "1 while the watchdog holds the default clocks",
                                value=float(snap["watchdog"]))
        yield CounterMetricFamily(PREFIX + "watchdog_trips", "Times the watchdog tripped", value=snap["watchdog_trips"])
        yield GaugeMetricFamily(PREFIX + "decision_seconds", "Latency of the last decision",
                                value=snap["decision_ms"] / 1e3)
        yield CounterMetricFamily(PREFIX + "intervals", "Control intervals run", value=snap["intervals"])
        yield CounterMetricFamily(PREFIX + "calls", "Device and share calls made (or planned)", value=snap["calls"])


def registry(snapshot: Callable[[], Mapping[str, Any]]) -> CollectorRegistry:
    """A registry holding only the agent's collector (no process or platform collectors)."""
    from prometheus_client.registry import CollectorRegistry

    out = CollectorRegistry(auto_describe=False)
    out.register(AgentCollector(snapshot))
    return out


def render(snapshot: Callable[[], Mapping[str, Any]]) -> str:
    """The exposition text one scrape would get."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(registry(snapshot)).decode("utf-8")


def serve(snapshot: Callable[[], Mapping[str, Any]], port: int, address: str = "127.0.0.1"):
    """Serve the metrics on ``address:port`` from a daemon thread; returns the server (``shutdown()``
    stops it). Port 0 picks a free one (``server.server_port``)."""
    from prometheus_client.exposition import start_http_server

    server, _thread = start_http_server(port, address, registry=registry(snapshot))
    return server


__all__ = ["AgentCollector", "registry", "render", "serve"]
