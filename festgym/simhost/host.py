"""A host without hardware: one simulated GPU serving a scenario's models, seen by the deploy
agent exactly as it sees a real one (``festgym deploy --simulate``, and the tests).

* The GPU is a :class:`~festgym.simhost.device.SimulatedDevice`; shares go through
  :class:`~festgym.simhost.device.SimulatedShares`.
* Each model has a :class:`SimulatedEngine`: a vLLM-style ``/metrics`` text that festgym renders
  from the simulator's state and parses back with the same code that reads real engines.
* Sleeping one interval advances the simulation by it; the clock is simulated time.

The engines run for the whole run (loaded at time 0, never unloaded: a host's engines are
long-lived processes); every request goes to them. The workload is the scenario's local one:
``local.models`` at ``local.rate_rps`` (the traffic a GPU receives).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from festgym.control.actions import GpuControl
from festgym.control.states import PHASE_LOADING
from festgym.deploy.agent import Host
from festgym.deploy.engine_metrics import (
    ITL_BUCKETS_S,
    TTFT_BUCKETS_S,
    EngineSample,
    EngineScraper,
    EngineUnreachable,
    Histogram,
    parse_metrics,
    render_metrics,
)
from festgym.deploy.observation import EngineSpec
from festgym.errors import FestgymError
from festgym.scenario import Scenario, load_scenario
from festgym.sim.ledger import FINISHED, RUN_COLUMNS
from festgym.sim.policy import BasePolicy, Policy
from festgym.sim.simulator import Simulator
from festgym.sim.views import ClusterView, GpuView, Request
from festgym.simhost.device import SimulatedDevice, SimulatedShares

G0, DG, N, BATCH, MODEL = (RUN_COLUMNS.index(c) for c in ("g0", "dg", "n", "batch", "model"))


class OneGpu(BasePolicy):
    """Every request to GPU 0. The agent sets clocks and shares; or, to compare with a policy
    running inside the simulator, ``control`` sets them (and sees every request placed)."""

    name = "deploy-host"

    def __init__(self, control: Policy | None = None):
        self.inner = control

    def reset(self, cluster: ClusterView) -> None:
        if self.inner is not None:
            self.inner.reset(cluster)

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        if self.inner is not None:
            self.inner.place(request, cluster)  # its traffic memory; the host has one GPU anyway
        return 0

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        return self.inner.control(gpu, now) if self.inner is not None else None


def gap_histogram(rows: np.ndarray, bounds: tuple[float, ...]) -> Histogram:
    """The inter-token gaps of run-log rows (``batch`` sequences, gaps g0 + dg·j for j < n), in
    closed form: no per-token work."""
    g0, dg, n, batch = rows[:, G0, None], rows[:, DG, None], rows[:, N, None], rows[:, BATCH, None]
    edges = np.asarray(bounds)[None, :]
    rising = np.floor((edges - g0) / np.where(dg > 0, dg, 1.0)) + 1
    within = np.where(dg > 0, np.clip(rising, 0, n), np.where(g0 <= edges, n, 0))
    counts = (within * batch).sum(axis=0)
    total = float((n * batch).sum())
    gap_sum = float((batch * (n * g0 + dg * n * (n - 1) / 2)).sum())
    return Histogram(bounds, tuple(counts.tolist()) + (total,), gap_sum, total)


class SimulatedEngine(EngineScraper):
    """One model's engine on a simulated host: its metrics as a vLLM engine would export them.
    Unreachable while the model loads, as a real engine's HTTP server is."""

    def __init__(self, sim: Simulator, model: str, engine: str = "vllm"):
        super().__init__(f"sim://{model}/metrics", model=model, engine=engine, clock=lambda: sim.now)
        self.sim, self.index = sim, sim.model_names.index(model)
        self._rows = 0  # run-log rows already in the ITL histogram
        self._itl = Histogram.empty(ITL_BUCKETS_S)

    def scrape(self) -> EngineSample:
        return parse_metrics(self.metrics_text(), self.engine, self.model, source=self.url)

    def metrics_text(self) -> str:
        sim, model = self.sim, self.model
        inst = next((i for i in sim.gpus[0].instances if i.model == self.index), None)
        if inst is None or inst.phase == PHASE_LOADING:
            raise EngineUnreachable(self.url, "engine not started (loading)")
        log = sim.ledger.log
        mine = log.model == self.index
        first = mine & ~np.isnan(log.first_s)
        rows = sim.ledger.run_rows()
        new = rows[self._rows:]
        self._itl = self._itl.plus(gap_histogram(new[new[:, MODEL] == self.index], ITL_BUCKETS_S))
        self._rows = len(rows)
        gauges = {"running": len(inst.decoding) + len(inst.prefilling), "waiting": len(inst.waiting),
                  "kv_used": min(inst.kv_used / inst.kv_tokens, 1.0)}
        counters = {"prompt_tokens": float(log.prompt[first].sum()),
                    "generation_tokens": float(first.sum()) + self._itl.count,
                    "finished": float((mine & (log.status == FINISHED)).sum())}
        ttft = Histogram.from_values(TTFT_BUCKETS_S, (log.first_s - log.arrival_s)[first])
        return render_metrics(self.engine, model, gauges, counters, {"ttft_s": ttft, "itl_s": self._itl})


class SimulatedHost:
    """A simulated GPU host; ``host`` is what :class:`~festgym.deploy.agent.DeployAgent` drives.

    ``scenario``: a scenario (name, path or object); ``models``: the engines (default
    ``local.models``); ``rate_rps``: the GPU's traffic (default ``local.rate_rps``);
    ``duration_s``: the workload's length; ``privileged=False``: writes raise ``NoPermission``;
    ``control``: a policy that sets clocks and shares from inside the simulator instead of an
    agent (a reference run).
    """

    def __init__(self, scenario: str | Scenario = "default", seed: int = 0, duration_s: float = 60.0,
                 models: tuple[str, ...] | None = None, rate_rps: float | None = None, privileged: bool = True,
                 control: Policy | None = None):
        sc = load_scenario(scenario)
        self.models = tuple(models or sc.local.models)
        unknown = [m for m in self.models if m not in sc.models]
        if unknown:
            raise FestgymError(f"simulated host: {', '.join(unknown)} not served in scenario {sc.name!r} "
                               f"(models: {', '.join(sc.models)})")
        self.scenario = sc
        config = replace(sc.sim, keep_alive_s=math.inf, stop_when_done=False)
        self.sim = Simulator([sc.local.gpus[0]], {m: sc.models[m] for m in self.models}, config)
        self.sim.start(sc.trace(seed, duration_s, models=self.models, rate_rps=rate_rps or sc.local.rate_rps),
                       OneGpu(control))
        for k in range(len(self.models)):
            self.sim.cold_start(self.sim.gpus[0], k, 0.0)
        self.gpu = SimulatedDevice(self.sim, 0, privileged=privileged)
        self.engines = {m: SimulatedEngine(self.sim, m) for m in self.models}
        self.host = Host(gpu=self.gpu, engines=self.engines, shares=SimulatedShares(self.gpu), sleep=self.sleep,
                         clock=lambda: self.sim.now, time_of_day=lambda: self.sim.now)

    def sleep(self, seconds: float) -> None:
        if self.sim.now >= self.sim.end:
            raise FestgymError(f"simulated host: the simulation ended at {self.sim.end:g} s")
        self.sim.advance(self.sim.now + seconds)

    def engine_specs(self) -> list[EngineSpec]:
        """The engines as the agent needs them, with the scenario's SLOs and batch limits."""
        return [EngineSpec(m, self.engines[m].url, s.engine.max_num_seqs, s.slo.ttft_s, s.slo.tbt_s,
                           s.slo.tbt_quantile, s.slo.ttft_per_1k_tokens_s)
                for m, s in ((m, self.scenario.models[m]) for m in self.models)]


__all__ = ["OneGpu", "SimulatedEngine", "SimulatedHost", "gap_histogram"]
