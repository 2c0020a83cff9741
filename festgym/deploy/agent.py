"""The deploy agent: every control interval, read the GPU and its engines, decide, act, log.

One loop for real hosts and the simulated one (:class:`Host`): read NVML (or the simulator)
and each engine's metrics window, let the decider (:mod:`festgym.deploy.deciders`: a
checkpoint's numpy export, or a rule policy) choose the settings, pass them through the
:class:`~festgym.deploy.safety.Guard`, and apply them, or only log the calls in a dry run (the
default). Each interval is one JSONL record (:mod:`festgym.deploy.telemetry`).

Energy per model: each interval's energy-counter reading is split among the engines by the
simulator's rule (:func:`festgym.control.attribution.split_power`): the GPU's resident floor at the
clock read by SM share, the rest by each engine's dynamic weight for the work it reported
(:mod:`festgym.deploy.energy`: its profile's, or its share), with nothing running to the engines
not up yet (loading). The parts are in each interval record (``energy_parts_j``) and, summed, in
:attr:`DeployAgent.snapshot`, which the Prometheus exporter serves (:mod:`festgym.deploy.exporter`).

Safety: the agent restores the GPU's original clocks and power limit, and the engines' shares,
when it stops for any reason: the end of its run, any catchable terminating signal (SIGTERM,
SIGHUP, SIGINT, SIGQUIT, SIGUSR1, ...: :data:`festgym.signals.STOPPING`), or an exception
(which is then re-raised), with further signals ignored while it restores. It undoes only what
this process changed (:meth:`GpuDevice.restore`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from festgym import signals
from festgym.config import check_ranges
from festgym.control.actions import GpuControl
from festgym.control.attribution import split_power
from festgym.deploy.deciders import Decider, HostState
from festgym.deploy.energy import HostEnergy
from festgym.deploy.engine_metrics import EngineMetricsError, EngineUnreachable, EngineWindow
from festgym.deploy.observation import EngineSpec, nan_to_zero
from festgym.deploy.safety import Guard, SafetyConfig
from festgym.deploy.telemetry import Telemetry, interval_record
from festgym.devices.device import WRITE_CALLS, GpuDevice, GpuWriter
from festgym.devices.shares import ShareActuator
from festgym.errors import FestgymError

log = logging.getLogger(__name__)

ENGINE_STATES = ("ok", "unreachable", "unknown")
"""An engine's state each interval: its metrics read; nothing listening at its URL (it reads as not
ready, as a loading engine does); or its answer refused (slow, an HTTP error, impossible values,
missing metrics: the watchdog holds the default clocks while any engine is unknown)."""


class Engine(Protocol):
    """A serving engine's metrics: the window since the previous poll (None on the first)."""

    def poll(self) -> EngineWindow | None: ...


@dataclass
class Host:
    """What the agent drives: one GPU, its engines (by model), its share actuator and a clock."""

    gpu: GpuDevice
    engines: Mapping[str, Engine]
    shares: ShareActuator
    sleep: Callable[[float], None] = time.sleep
    """Wait one interval (the simulated host advances the simulation instead)."""
    clock: Callable[[], float] = time.monotonic
    """Seconds, for intervals and rate limits."""
    time_of_day: Callable[[], float] = time.time
    """Seconds whose remainder by the controller's period places the time-of-day features."""
    writer: GpuWriter | None = None
    """Where writes go (None: ``gpu`` itself; a :class:`~festgym.deploy.actuator.RemoteWriter`
    when a privileged actuator acts for this unprivileged process)."""

    @property
    def writes(self) -> GpuWriter:
        return self.writer if self.writer is not None else self.gpu


class Stop(BaseException):
    """Raised on a terminating signal (its name the argument) so that the loop unwinds through its
    restore."""


@dataclass
class DeployConfig:
    """How the agent runs."""

    interval_s: float = 1.0
    """Control interval (the controllers were trained at the simulator's 1 s)."""
    duration_s: float | None = None
    """Stop after this long (default: run until SIGTERM or SIGINT)."""
    apply: bool = False
    """Act on the GPU (default: only log the NVML calls it would make)."""
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self):
        check_ranges(self, {"interval_s": self.interval_s > 0,
                            "duration_s": self.duration_s is None or self.duration_s >= 0},
                     {"interval_s": "> 0 s", "duration_s": "≥ 0 s"})


class DeployAgent:
    """Runs ``decider`` (a checkpoint's or a rule policy's, :mod:`festgym.deploy.deciders`) on
    ``host`` for the models in ``engines`` (in popularity order: a checkpoint's slot order)."""

    def __init__(self, host: Host, decider: Decider, engines: Sequence[EngineSpec], config: DeployConfig,
                 telemetry: Telemetry, energy: HostEnergy | None = None):
        """``energy``: the floor and dynamic weights that split the energy counter among the engines
        (:meth:`HostEnergy.for_host`; default: none known, so the split goes by SM share)."""
        if not engines:
            raise FestgymError("deploy: no engines (give --engine MODEL=URL for each served model)")
        missing = [e.model for e in engines if e.model not in host.engines]
        if missing:
            raise FestgymError(f"deploy: no metrics source for {', '.join(missing)}")
        self.host, self.decider, self.config, self.telemetry = host, decider, config, telemetry
        self.engines = tuple(engines)
        self.models = tuple(e.model for e in engines)
        self.guard = Guard(config.safety, host.gpu.supported_sm_clocks_mhz(), engines)
        self.shares = {m: 1.0 / len(engines) for m in self.models}  # MPS default: no partition chosen yet
        self.last_seen = {m: -1.0 for m in self.models}
        self.states = {m: "ok" for m in self.models}
        """Each engine's state after its last poll (:data:`ENGINE_STATES`)."""
        self._energy: int | None = None
        self._t: float | None = None
        self._holding = False
        self.totals = {"intervals": 0, "energy_kj": 0.0, "calls": 0, "watchdog_trips": 0}
        """Running totals (what ``festgym deploy`` prints when it stops)."""
        self.energy = energy or HostEnergy()
        self.energy_parts_j = {m: [0.0, 0.0, 0.0] for m in self.models}
        """Per model: its static, dynamic and loading energy so far (J, ``ENERGY_PARTS``)."""
        self.tokens = {m: 0.0 for m in self.models}
        """Per model: output tokens its engine reported so far."""
        self.snapshot: dict = {}
        """The latest state, replaced whole after each interval (what the exporter reads)."""

    # --- one interval --------------------------------------------------------------------------------

    def prime(self) -> float:
        """Take the baselines the first interval is measured from: the energy counter and each
        engine's metrics (an engine's first scrape gives no window). Returns the time."""
        self._energy, self._t = self.host.gpu.total_energy_mj(), self.host.clock()
        for model in self.models:
            self._poll(model)
        return self._t

    def step(self) -> dict:
        """Read, decide, act; returns the interval's record."""
        host, now = self.host, self.host.clock()
        reading = host.gpu.read()
        windows = {m: self._poll(m) for m in self.models}
        for m, w in windows.items():
            if w is not None and (w.waiting > 0 or nan_to_zero(w.prompt_tokens) > 0):
                self.last_seen[m] = now
        state = HostState(now, self.config.interval_s, reading, windows, dict(self.shares),
                          {m: now - t if t >= 0 else -1.0 for m, t in self.last_seen.items()}, host.time_of_day())
        started = time.perf_counter()
        control, levels = self.decider.decide(state)
        decision_ms = (time.perf_counter() - started) * 1e3
        control = control or GpuControl()
        hold = self.guard.watch(windows, now, unknown=[m for m, state in self.states.items() if state == "unknown"])
        calls = self._calls(control.clock_mhz, dict(control.shares or {}), hold, now)
        if self.config.apply:
            for name, args in calls:
                self._call(name, args)
        dt = None if self._t is None else now - self._t
        energy_j = None if self._energy is None else (reading.energy_mj - self._energy) / 1e3
        self._energy, self._t = reading.energy_mj, now
        record = interval_record(now, dt, energy_j, reading, control.clock_mhz, self.shares, levels, windows,
                                 self.engines, calls, self.config.apply, hold, decision_ms, self.states)
        if energy_j is not None and dt is not None:
            record["energy_parts_j"] = self._attribute(energy_j, dt, reading.sm_clock_mhz, windows)
        for m, w in windows.items():
            if w is not None:
                self.tokens[m] += nan_to_zero(w.generation_tokens)
        self.telemetry.write(record)
        self.totals.update(intervals=self.totals["intervals"] + 1, calls=self.totals["calls"] + len(calls),
                           energy_kj=self.totals["energy_kj"] + (energy_j or 0.0) / 1e3,
                           watchdog_trips=self.guard.trips)
        self._publish(record)
        return record

    def _attribute(self, energy_j: float, dt_s: float, clock_mhz: float,
                   windows: Mapping[str, EngineWindow | None]) -> dict[str, list[float]]:
        """Split an interval's energy among the engines (the module's rule); adds it to the totals and
        returns each model's (static, dynamic, loading) joules."""
        floor = self.energy.floor_w
        floor_j = floor(clock_mhz) * dt_s if floor is not None else 0.0
        parts = split_power(energy_j, floor_j, [self.shares[m] for m in self.models],
                            self.energy.weights(self.models, windows, self.shares, clock_mhz),
                            [self.states[m] == "unreachable" for m in self.models])
        out = {}
        for m, triple in zip(self.models, parts):
            total = self.energy_parts_j[m]
            for i, part in enumerate(triple):
                total[i] += part
            out[m] = [round(x, 9) for x in triple]
        return out

    def _publish(self, record: Mapping) -> None:
        """Replace :attr:`snapshot` (one assignment: a reader on another thread sees one interval's)."""
        self.snapshot = {"t_s": record["t_s"], "intervals": self.totals["intervals"],
                         "energy_j": self.totals["energy_kj"] * 1e3, "power_w": record["power_w"],
                         "sm_clock_mhz": record["sm_clock_mhz"], "target_clock_mhz": record["target_clock_mhz"],
                         "shares": dict(self.shares), "states": dict(self.states), "watchdog": record["watchdog"],
                         "watchdog_trips": self.guard.trips, "decision_ms": record["decision_ms"],
                         "calls": self.totals["calls"], "energy_parts_j": {m: list(v) for m, v in
                                                                          self.energy_parts_j.items()},
                         "tokens": dict(self.tokens), "controller": self.decider.name}

    def _poll(self, model: str) -> EngineWindow | None:
        """The engine's window (None: not ready, or unknown); sets its state, logging a warning
        when the state changes and an ``engine_error`` record for each failed poll."""
        try:
            window = self.host.engines[model].poll()
        except EngineMetricsError as exc:
            nothing_listening = isinstance(exc, EngineUnreachable) and not exc.listening
            self._set_state(model, "unreachable" if nothing_listening else "unknown", str(exc))
            self.telemetry.write({"event": "engine_error", "model": model, "state": self.states[model],
                                  "error": str(exc)})
            return None
        self._set_state(model, "ok", "its metrics read")
        return window

    def _set_state(self, model: str, state: str, why: str) -> None:
        """Log a change of state once (a warning when it goes wrong, info when it recovers)."""
        if state != self.states[model]:
            log.log(logging.INFO if state == "ok" else logging.WARNING, "festgym deploy: engine %s %s: %s", model,
                    "ok again" if state == "ok" else state, why)
            self.states[model] = state

    def _calls(self, target_mhz: float | None, target_shares: dict[str, float], hold: bool,
               now: float) -> list[tuple[str, tuple]]:
        """The device and share calls to make now (after the guard)."""
        calls: list[tuple[str, tuple]] = []
        started_hold, self._holding = hold and not self._holding, hold
        if hold:  # default clocks while the watchdog holds; the reset once, as the hold begins
            return [("reset_locked_sm_clocks", ())] if started_hold else calls
        clock = self.guard.clock(target_mhz, now) if target_mhz is not None else None
        if clock is not None:
            calls.append(("set_locked_sm_clocks_mhz", (clock, clock)))
        shares = self.guard.shares(target_shares, now) if target_shares else None
        if shares is not None:
            self.shares.update(shares)
            calls.append(("set_shares", (shares,)))
        return calls

    def _call(self, name: str, args: tuple) -> None:
        target = self.host.shares if name == "set_shares" else self.host.writes
        getattr(target, name)(*args)

    # --- the loop ----------------------------------------------------------------------------------

    def run(self) -> str:
        """Prime, then every interval sleep and :meth:`step`, until the duration ends or a signal
        stops it; restores the GPU either way (with further signals ignored meanwhile). Returns
        why it stopped: ``duration`` or the signal's name (``SIGTERM``, ``SIGINT``, ...). Every
        interval renews the writer's lease (a privileged actuator restores the GPU of a client
        whose heartbeats stop: a hung loop's settings do not outlive it)."""
        reason = "crash"
        with signals.raising_on(lambda signum: Stop(signals.name(signum))):
            try:
                self.telemetry.write({"event": "start", "controller": self.decider.name,
                                      "controller_sha256": self.decider.sha256, "apply": self.config.apply,
                                      "interval_s": self.config.interval_s, "models": list(self.models),
                                      "gpu": self.host.gpu.info(), "write_calls": WRITE_CALLS})
                start = self.prime()
                while self.config.duration_s is None or self.host.clock() - start < self.config.duration_s - 1e-9:
                    self.host.writes.heartbeat()
                    self.host.sleep(self.config.interval_s)
                    self.step()
                reason = "duration"
            except Stop as stop:
                reason = stop.args[0]
            except KeyboardInterrupt:
                reason = "SIGINT"
            except BaseException as exc:
                reason = f"crash: {exc!r}"
                raise
            finally:
                with signals.deferred():
                    self.restore(reason)
        return reason

    def restore(self, reason: str) -> None:
        """Undo every change; record what was reset, what remains changed (nothing, or a bug), any
        failure to restore, and the energy since the last interval (so that the log's energy adds
        up to the counter's). Each part is tried even if another fails; the first failure is
        raised once the record is written."""
        record: dict = {"event": "stop", "reason": reason, "t_s": self.host.clock(), "reset": [], "shares_reset": []}
        errors: list[BaseException] = []

        def attempt(key: str, action: Callable[[], object]) -> None:
            try:
                value = action()
                record[key] = list(value) if isinstance(value, tuple) else value
            except Exception as exc:
                errors.append(exc)
                record.setdefault("restore_errors", []).append(f"{key}: {exc}")

        if self.config.apply:
            attempt("reset", self.host.writes.restore)
            attempt("shares_reset", self.host.shares.restore)
        start_mj = self._energy
        if start_mj is not None and self._t is not None:  # the energy since the last interval
            record["dt_s"] = record["t_s"] - self._t
            attempt("energy_j", lambda: (self.host.gpu.total_energy_mj() - start_mj) / 1e3)
            energy_j = record.get("energy_j")
            if isinstance(energy_j, float):  # no windows read: the rule books it static
                attempt("energy_parts_j", lambda: self._attribute(energy_j, record["dt_s"],
                                                                  self.host.gpu.sm_clock_mhz(), {}))
        attempt("still_changed", self.host.writes.changed)
        record["watchdog_trips"] = self.guard.trips
        self.telemetry.write(record)
        self.telemetry.close()
        if errors:
            raise errors[0]


__all__ = ["DeployAgent", "DeployConfig", "Engine", "Host", "Stop"]
