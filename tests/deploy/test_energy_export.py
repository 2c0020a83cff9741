"""Energy per model on a host and the agent's Prometheus endpoint, on the simulated host.

The agent splits each interval's energy-counter reading among the engines (festgym.deploy.energy,
the simulator's rule); the simulator beside it splits the same energy exactly, event by event, so
the two can be compared. The exporter's series must parse with prometheus-client's own parser and
agree with the JSONL log.
"""

from __future__ import annotations

import io
import json
import urllib.request

import pytest

from festgym.cli.deploy import host_energy
from festgym.cli.main import main
from festgym.control.attribution import ENERGY_PARTS
from festgym.control.checkpoint import LocalController
from festgym.deploy import exporter
from festgym.deploy.agent import DeployAgent, DeployConfig
from festgym.deploy.deciders import CheckpointDecider
from festgym.deploy.energy import HostEnergy
from festgym.deploy.telemetry import Telemetry
from festgym.simhost.host import SimulatedHost

parser = pytest.importorskip("prometheus_client.parser")

PAIR = ("Qwen3-14B", "Llama-3.2-1B")
"""A large and a small model on one GPU: where weights by SM share alone go most wrong."""


def run_agent(duration_s: float, seed: int = 3, models=PAIR, energy: HostEnergy | None = None):
    host = SimulatedHost("default", seed=seed, duration_s=duration_s + 1.0, models=models, rate_rps=3.0)
    if energy is None:
        energy = host_energy(host.gpu.name(), host.models)[0]
    log = io.StringIO()
    agent = DeployAgent(host.host, CheckpointDecider.for_gpu(LocalController("ppo-local"), host.engine_specs(),
                                                             host.gpu),
                        host.engine_specs(), DeployConfig(interval_s=1.0, duration_s=duration_s, apply=True),
                        Telemetry(stream=log), energy)
    agent.run()
    return host, agent, [json.loads(line) for line in log.getvalue().splitlines()]


@pytest.fixture(scope="module")
def pair_run():
    return run_agent(120.0)


def test_every_intervals_energy_is_split_whole_among_the_engines(pair_run):
    _, agent, records = pair_run
    booked = [r for r in records if "energy_parts_j" in r]
    assert len(booked) >= 119 and booked[-1]["event"] == "stop"
    for r in booked:
        parts = r["energy_parts_j"]
        assert set(parts) == set(agent.models)
        assert all(p >= 0 for triple in parts.values() for p in triple)
        assert sum(sum(t) for t in parts.values()) == pytest.approx(r["energy_j"], rel=1e-9, abs=1e-6)
    # Before the engines are up the energy is theirs as loading (and static) energy.
    assert any(triple[2] > 0 for r in booked for triple in r["energy_parts_j"].values())


def test_the_hosts_split_follows_the_simulators_and_beats_weights_by_share(pair_run):
    host, agent, _ = pair_run
    exact = host.sim.result().models.set_index("model").energy_j
    by_profiles = {m: sum(v) / exact[m] - 1 for m, v in agent.energy_parts_j.items()}
    assert all(abs(err) < 0.15 for err in by_profiles.values()), by_profiles
    shares_only = run_agent(120.0, energy=HostEnergy(agent.energy.floor_w, None))[1]
    by_shares = {m: sum(v) / exact[m] - 1 for m, v in shares_only.energy_parts_j.items()}
    assert abs(by_shares["Llama-3.2-1B"]) > 2 * abs(by_profiles["Llama-3.2-1B"]), (by_shares, by_profiles)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def test_the_exporters_series_parse_and_match_the_log(pair_run):
    _, agent, records = pair_run
    got = samples(exporter.render(lambda: agent.snapshot))
    intervals = [r for r in records if r["event"] == "interval"]
    for model in agent.models:
        for i, part in enumerate(ENERGY_PARTS):
            logged = sum(r["energy_parts_j"][model][i] for r in intervals if "energy_parts_j" in r)
            key = ("festgym_energy_joules_total", (("model", model), ("part", part)))
            assert got[key] == pytest.approx(logged, rel=1e-9, abs=1e-6)
        tokens = sum(r["engines"][model].get("generation_tokens") or 0 for r in intervals)
        assert got[("festgym_output_tokens_total", (("model", model),))] == tokens
        assert got[("festgym_sm_share", (("model", model),))] == pytest.approx(intervals[-1]["shares"][model])
        state = intervals[-1]["engines"][model]["state"]
        assert got[("festgym_engine_state", (("model", model), ("state", state)))] == 1.0
    assert got[("festgym_gpu_energy_joules_total", ())] == pytest.approx(
        sum(r.get("energy_j", 0.0) for r in intervals), rel=1e-12)
    assert got[("festgym_sm_clock_mhz", ())] == intervals[-1]["sm_clock_mhz"]
    assert got[("festgym_intervals_total", ())] == len(intervals)
    assert got[("festgym_watchdog_holding", ())] == float(intervals[-1]["watchdog"])
    assert got[("festgym_decision_seconds", ())] == pytest.approx(intervals[-1]["decision_ms"] / 1e3)


def test_the_endpoint_serves_what_render_gives_and_nothing_before_the_first_interval(pair_run):
    _, agent, _ = pair_run
    assert exporter.render(dict) == ""  # no snapshot yet: no series
    server = exporter.serve(lambda: agent.snapshot, 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert samples(text) == samples(exporter.render(lambda: agent.snapshot))


def test_what_festgym_does_not_know_of_a_host_is_said_and_the_split_goes_by_share():
    energy, notes = host_energy("Some Future GPU", ["Llama-3.1-8B"])
    assert energy.floor_w is None and energy.profiles is None and "not a GPU type" in notes[0]
    energy, notes = host_energy("NVIDIA H100 80GB HBM3", ["Llama-3.1-8B", "my-own-model"])
    assert energy.floor_w is not None and energy.profiles is None
    assert "my-own-model" in notes[0] and "SM share" in notes[0]
    energy, notes = host_energy("NVIDIA H100 80GB HBM3", ["Llama-3.1-8B"])
    assert not notes and set(energy.profiles) == {"Llama-3.1-8B"}


def test_cli_serves_the_metrics_while_it_runs(tmp_path, capsys):
    log = tmp_path / "d.jsonl"
    assert main(["deploy", "--simulate", "default", "--duration", "5", "--log", str(log), "--metrics-port", "0"]) == 0
    out = capsys.readouterr().out
    assert "metrics http://127.0.0.1:" in out and "/metrics" in out
    assert any("energy_parts_j" in json.loads(line) for line in log.read_text().splitlines())


def test_the_grafana_dashboard_charts_only_series_the_exporter_serves(pair_run):
    import re
    from pathlib import Path

    _, agent, _ = pair_run
    served = {s[0] for s in samples(exporter.render(lambda: agent.snapshot))}
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs/deploy/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    charted = {name for e in exprs for name in re.findall(r"festgym_[a-z_]+", e)}
    assert charted and charted <= served, charted - served
    assert {"festgym_energy_joules_total", "festgym_output_tokens_total"} <= charted
