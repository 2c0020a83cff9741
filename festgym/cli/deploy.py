"""The ``festgym gpu`` and ``festgym deploy`` commands."""

from __future__ import annotations

import argparse
import json
import signal
import time
from datetime import datetime
from pathlib import Path

from festgym import signals
from festgym.cli.common import Command, ScenarioChoice, import_with_extra
from festgym.cli.fields import add_fields, from_args, split_pairs
from festgym.errors import FestgymError

SIMULATED_DURATION_S = 60.0
"""How long ``--simulate`` runs when no ``--duration`` is given."""


def _require_deploy_extra() -> None:
    """The engines' metrics need prometheus-client (the deploy extra): a clear error without it."""
    import_with_extra("prometheus_client", "festgym deploy", "deploy")


def _gpus(indices_text: str | None, simulate: str | None) -> list:
    """The GPUs a command names (comma-separated indices; None: all): simulated ones of a
    scenario, or NVML's visible ones."""
    try:
        indices = [int(i) for i in indices_text.split(",")] if indices_text else None
    except ValueError:
        raise FestgymError(f"--gpu {indices_text!r}: expected comma-separated GPU indices") from None
    if simulate:
        _require_deploy_extra()  # the simulated host serves engine metrics
        from festgym.simhost.host import SimulatedHost

        return [SimulatedHost(simulate, duration_s=1.0).gpu]
    from festgym.devices.nvml import open_gpus

    return open_gpus(indices)


def cmd_gpu_info(args: argparse.Namespace) -> int:
    rows = [gpu.info() for gpu in _gpus(args.gpu, args.simulate)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no GPUs visible (CUDA_VISIBLE_DEVICES hides them all?)")
    else:
        keys = list(rows[0])
        widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
        print("  ".join(k.rjust(widths[k]) for k in keys))
        for r in rows:
            print("  ".join(str(r[k]).rjust(widths[k]) for k in keys))
    return 0


class Pacer:
    """Sleeps to the next multiple of the interval since the first call, so that a slow
    interval does not shift the ones after it."""

    def __init__(self) -> None:
        self.next: float | None = None

    def sleep(self, seconds: float) -> None:
        now = time.monotonic()
        self.next = (self.next if self.next is not None else now) + seconds
        if self.next < now:  # fell behind by more than an interval: start counting again
            self.next = now
        time.sleep(self.next - now)


def _engine_specs(urls: dict[str, str], slos: dict[str, str], limits: dict[str, str],
                  args: argparse.Namespace) -> list:
    """Each engine's SLOs and batch limit: from --slo and --max-num-seqs, else from the scenario
    (read only when a figure is missing: YAML stays off the deploy path otherwise)."""
    from festgym.deploy.observation import EngineSpec

    specs = []
    for model, url in urls.items():
        try:
            slo = [float(x) for x in slos[model].split(",")] if model in slos else None
            limit = int(limits[model]) if model in limits else None
        except ValueError:
            slo = []
        if (slo is not None and len(slo) not in (2, 3)) or (limit is not None and limit < 1):
            raise FestgymError(f"deploy: --slo {model}=TTFT_S,TBT_S[,TTFT_PER_1K_TOKENS_S] and --max-num-seqs "
                               f"{model}=N take numbers")
        if slo is None or limit is None:
            serving = _scenario_model(args, model)
            slo = slo or [serving.slo.ttft_s, serving.slo.tbt_s, serving.slo.ttft_per_1k_tokens_s]
            limit = limit or serving.engine.max_num_seqs
        specs.append(EngineSpec(model, url, limit, slo[0], slo[1], ttft_per_1k_tokens_s=slo[2] if len(slo) > 2 else 0))
    return specs


def _scenario_model(args: argparse.Namespace, model: str):
    scenario = from_args(ScenarioChoice, args).resolve()
    if model not in scenario.models:
        raise FestgymError(f"deploy: {model} is not in scenario {scenario.name!r} (models: "
                           f"{', '.join(scenario.models)}): give --slo {model}=TTFT_S,TBT_S and --max-num-seqs "
                           f"{model}=N, or --scenario FILE")
    return scenario.models[model]


def _real_host(args: argparse.Namespace):
    """The host, its engine specs: NVML, engines' metrics, shares (the actuator, if any, is
    connected last: :func:`_connect_actuator`)."""
    from festgym.deploy.agent import Host
    from festgym.devices.nvml import open_gpus
    from festgym.devices.shares import AdvisoryShares, MpsShares

    urls = split_pairs(args.engine, "--engine", "MODEL")
    if not urls:
        raise FestgymError("deploy: give each served model's metrics URL: --engine MODEL=http://HOST:PORT "
                           "(repeat, most popular model first), or --simulate")
    specs = _engine_specs(urls, split_pairs(args.slo, "--slo", "MODEL"),
                          split_pairs(args.max_num_seqs, "--max-num-seqs", "MODEL"), args)
    engines = _scrapers(args, specs)
    mps = {m: int(pid) for m, pid in split_pairs(args.mps_server, "--mps-server", "MODEL").items()}
    shares = MpsShares(mps) if args.shares == "mps" else AdvisoryShares()
    gpu = open_gpus([args.gpu or 0])[0]
    return Host(gpu=gpu, engines=engines, shares=shares, sleep=Pacer().sleep), specs


def _scrapers(args: argparse.Namespace, specs: list) -> dict:
    """Each engine's metrics scraper. Engines are scraped one after another, each within its share
    of the interval at most, so that the loop never waits on engines longer than its period."""
    from festgym.deploy.engine_metrics import EngineScraper

    served = split_pairs(args.served_model, "--served-model", "MODEL")
    strays = sorted(set(served) - {s.model for s in specs})
    if strays:
        raise FestgymError(f"deploy: --served-model {strays[0]}=...: {strays[0]} has no --engine")
    if not args.scrape_timeout > 0 or args.scrape_max_bytes < 1:
        raise FestgymError("deploy: --scrape-timeout takes seconds > 0 and --scrape-max-bytes a size ≥ 1")
    deadline_s = min(args.scrape_timeout, args.interval_s / len(specs))
    scrapers = {s.model: EngineScraper(s.url, served.get(s.model), args.engine_kind, deadline_s,
                                       max_bytes=args.scrape_max_bytes) for s in specs}
    for scraper in scrapers.values():
        scraper.target()  # a URL that cannot be fetched is refused before the loop, not logged every interval
    return scrapers


def _connect_actuator(args: argparse.Namespace):
    """The writer for ``--actuator``, connected just before the loop starts: its lease runs from
    the connection, and the loop renews it every interval (a lease under three intervals is
    refused)."""
    from festgym.deploy.actuator import RemoteWriter

    return RemoteWriter(args.actuator, heartbeat_every_s=args.interval_s)


def cmd_deploy(args: argparse.Namespace) -> int:
    _require_deploy_extra()
    from festgym.deploy.agent import DeployAgent, DeployConfig
    from festgym.deploy.safety import SafetyConfig
    from festgym.deploy.telemetry import Telemetry

    simulated = None
    if args.simulate:
        from festgym.simhost.host import SimulatedHost

        duration = args.duration_s if args.duration_s is not None else SIMULATED_DURATION_S
        models = tuple(split_pairs(args.engine, "--engine", "MODEL")) or None
        simulated = SimulatedHost(args.simulate, args.seed, duration + args.interval_s, models)
        host, specs = simulated.host, simulated.engine_specs()
    else:
        duration = args.duration_s
        host, specs = _real_host(args)
    config = from_args(DeployConfig, args, duration_s=duration, safety=from_args(SafetyConfig, args))
    log = Path(args.log or f"results/deploy-{datetime.now():%Y%m%d-%H%M%S}.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    decider = _decider(args, host, specs, simulated)
    if args.actuator and simulated is None:
        host.writer = _connect_actuator(args)
    energy, energy_notes = host_energy(host.gpu.name(), [s.model for s in specs])
    for note in energy_notes:
        print(f"festgym deploy: {note}")
    agent = DeployAgent(host, decider, specs, config, Telemetry(log), energy)
    mode = "APPLY: changing the GPU" if args.apply else "dry run: logging the calls it would make"
    pinned = f" (sha256 {decider.sha256[:12]})" if decider.sha256 else " (rule policy)"
    server = _metrics_server(agent, args)
    served = f"; metrics http://{args.metrics_address}:{server.server_port}/metrics" if server is not None else ""
    print(f"festgym deploy: {decider.name}{pinned} on {host.gpu.name()} "
          f"[{host.gpu.uuid()}], models {', '.join(agent.models)}; {mode}; every {args.interval_s:g} s"
          f"{f' for {duration:g} s' if duration else ' until SIGTERM/SIGINT'}; log {log}{served}")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C unwinds through the restore
    try:
        reason = agent.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if simulated is not None:  # the simulator's own account, beside the agent's
        result = simulated.sim.result()
        Telemetry(log).write({"event": "simulator", "energy_j": float(result.gpus.energy_kwh.sum() * 3.6e6),
                              **{k: result.summary[k] for k in ("requests", "finished", "slo_attainment",
                                                                "ttft_attainment", "tbt_attainment")}})
    totals = {"stopped": reason, "log": str(log), **agent.totals}
    print(json.dumps(totals) if args.json else
          f"stopped ({reason}): {totals['intervals']} intervals, {totals['energy_kj']:.3f} kJ, {totals['calls']} "
          f"calls {'made' if args.apply else 'planned'}, {totals['watchdog_trips']} watchdog trips; "
          f"festgym deploy report {log}")
    return 0


def host_energy(gpu_name: str, models: list[str]):
    """What festgym knows of a GPU named ``gpu_name`` (by NVML) serving ``models``, to split its energy
    among them (:class:`festgym.deploy.energy.HostEnergy`: its type's resident floor, each model's
    profile), and a note for each figure it does not know."""
    from festgym.deploy.energy import HostEnergy
    from festgym.errors import FestgymError

    try:
        from festgym.profiles.profile import load_profile
        from festgym.profiles.specs import GpuSpec, gpu_type_of
    except ImportError as exc:  # a deploy-only install: numpy, nvidia-ml-py, prometheus-client
        return HostEnergy(), [f"festgym's GPU specs and profiles need the full install ({exc.name or exc} is "
                              f"missing): energy per model is split without a resident floor and by SM share"]
    gpu_type = gpu_type_of(gpu_name)
    if gpu_type is None:
        return HostEnergy(), [f"{gpu_name} is not a GPU type festgym knows: energy per model is split without a "
                              f"resident floor and by SM share"]
    profiles, missing = {}, []
    for model in models:
        try:
            profiles[model] = load_profile(f"{gpu_type}/{model}")
        except FestgymError:
            missing.append(model)
    notes = [f"no {gpu_type} profile for {', '.join(missing)}: dynamic energy is split by SM share"] if missing else []
    return HostEnergy(GpuSpec.load(gpu_type).resident_idle_w, None if missing else profiles), notes


def _metrics_server(agent, args: argparse.Namespace):
    """The Prometheus endpoint of the agent's state (festgym.deploy.exporter), if asked for."""
    if args.metrics_port is None:
        return None
    from festgym.deploy import exporter

    try:
        return exporter.serve(lambda: agent.snapshot, args.metrics_port, args.metrics_address)
    except OSError as exc:
        raise FestgymError(f"--metrics-port {args.metrics_port}: cannot serve on {args.metrics_address}: "
                           f"{exc.strerror or exc}; pick another port (0: any free one)") from None


DEPLOYED = "festina"
"""What ``festgym deploy`` runs without ``--policy``: the controller the comparison chooses, the
one with the least energy at joint SLO attainment no lower than Festina's on the default
scenario's evaluation seeds. No learned controller has beaten Festina there yet (docs/headroom.md)."""


def _decider(args: argparse.Namespace, host, specs: list, simulated):
    """A checkpoint's decider (numpy only) when --policy names one; else a rule policy's, which
    needs the profiles of the host's GPU type and the scenario's engine settings."""
    from festgym.control.checkpoint import LocalController, resolve_checkpoint
    from festgym.deploy.deciders import CheckpointDecider

    if resolve_checkpoint(args.policy) is not None:
        return CheckpointDecider.for_gpu(LocalController(args.policy, args.sha256), specs, host.gpu)
    from festgym.policies import make_policy
    from festgym.policies.on_host import RuleDecider
    from festgym.profiles.specs import gpu_type_of

    try:
        policy = make_policy(args.policy)
    except ValueError as exc:
        raise FestgymError(f"deploy --policy: {exc}") from None
    if args.sha256:
        raise FestgymError(f"deploy: --sha256 pins a checkpoint; {args.policy!r} is a rule policy")
    gpu_type = gpu_type_of(host.gpu.name())
    if gpu_type is None:
        raise FestgymError(f"deploy: rule policies need profiles of the GPU; none for {host.gpu.name()!r} "
                           "(measure one with `festgym profile`)")
    serving = simulated.scenario.models if simulated is not None else {s.model: _scenario_model(args, s.model)
                                                                         for s in specs}
    return RuleDecider(policy, gpu_type, specs, serving, args.interval_s)


def _print_summary(log: Path, as_json: bool) -> int:
    from festgym.jobs.deploy_report import summarize

    run, models = summarize(log)
    if as_json:  # figures a log lacks are NaN in the tables and null in JSON
        rows = models.astype(object).where(models.notna(), None).to_dict(orient="records")
        clean = {k: None if isinstance(v, float) and v != v else v for k, v in run.items()}
        print(json.dumps({"run": clean, "models": rows}, indent=2, default=str, allow_nan=False))
    else:
        width = max(map(len, run))
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in run.items()))
        print(models.to_string(index=False))
    return 0


def cmd_deploy_report(args: argparse.Namespace) -> int:
    _print_summary(Path(args.log), args.json)
    if args.plot:
        from festgym.jobs.deploy_report import plot_log

        print(f"plot: {plot_log(args.log, args.plot)}")
    return 0


def cmd_deploy_actuator(args: argparse.Namespace) -> int:
    from festgym.deploy.actuator import ActuatorServer

    gpu = _gpus(args.actuator_gpu, args.simulate)[0]
    server = ActuatorServer(gpu, args.socket, lease_s=args.lease)
    print(f"festgym actuator: {gpu.name()} [{gpu.uuid()}] on {args.socket}; writes: clocks and power limit; "
          f"lease {args.lease:g} s", flush=True)
    with signals.raising_on(lambda signum: KeyboardInterrupt()):  # every terminating signal stops it as Ctrl-C does
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            with signals.deferred():
                server.server_close()  # restores the GPU
    return 0


def configure_gpu(parser: argparse.ArgumentParser) -> None:
    gsub = parser.add_subparsers(dest="action", required=True)
    info = gsub.add_parser("info", help="the device table: name, UUID, SMs, memory, power, clocks, energy",
                           description="Read-only: name, UUID, SM count, memory, power and its limit, clocks, "
                           "the energy counter, temperature, utilisation and clock-event reasons per GPU.")
    info.add_argument("--gpu", help="comma-separated indices (after CUDA_VISIBLE_DEVICES; default: all)")
    info.add_argument("--simulate", metavar="SCENARIO", help="a simulated GPU of this scenario instead of NVML")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_gpu_info)


def configure_deploy(dep: argparse.ArgumentParser) -> None:
    from festgym.deploy import actuator, agent, engine_metrics, safety

    dep.add_argument("--policy", default=DEPLOYED, help="checkpoint name or folder, or a rule policy such as "
                     "festina (needs the GPU type's profiles) (default: %(default)s, the controller `festgym compare` "
                     "chooses: docs/headroom.md)")
    dep.add_argument("--sha256", metavar="DIGEST", help="refuse the checkpoint unless its digest (export, interface "
                     "and card hashes: the one `festgym export` printed; docs/learned.md) is this one")
    dep.add_argument("--engine", action="append", metavar="MODEL=URL",
                     help="a served model and its engine's metrics URL, most popular first (repeatable); with "
                     "--simulate, MODEL=sim picks the simulated models")
    dep.add_argument("--engine-kind", default="auto", choices=("auto", "vllm", "sglang"),
                     help="metric names to read (default: detect)")
    dep.add_argument("--slo", action="append", metavar="MODEL=TTFT_S,TBT_S[,PER_1K_S]", help="a model's TTFT and "
                     "TBT SLOs, and TTFT allowance per 1,000 prompt tokens (repeatable; default: the scenario's)")
    dep.add_argument("--max-num-seqs", action="append", metavar="MODEL=N", help="a model's engine batch limit "
                     "(repeatable; default: the scenario's)")
    add_fields(dep, ScenarioChoice, skip=("load",),
               help_extra={"scenario": "It gives the SLOs and batch limits not given by --slo / --max-num-seqs."})
    dep.add_argument("--gpu", type=int, help="GPU index after CUDA_VISIBLE_DEVICES (default: 0)")
    mode = dep.add_mutually_exclusive_group()
    add_fields(mode, agent.DeployConfig, only=("apply",))
    mode.add_argument("--dry-run", action="store_true", help="only log the calls (the default)")
    add_fields(dep, agent.DeployConfig, skip=("apply", "safety"),
               help_extra={"duration_s": f"With --simulate: {SIMULATED_DURATION_S:g} s."})
    dep.add_argument("--log", help="JSONL telemetry (default: results/deploy-<time>.jsonl)")
    dep.add_argument("--shares", default="advisory", choices=("advisory", "mps"),
                     help="SM shares: only report them, or set MPS thread percentages (default: %(default)s)")
    dep.add_argument("--mps-server", action="append", metavar="MODEL=PID", help="MPS server of a model's engine")
    dep.add_argument("--actuator", metavar="SOCKET", help="send writes to a privileged `festgym deploy actuator`")
    dep.add_argument("--scrape-timeout", type=float, default=0.5, help="deadline for one engine's whole metrics "
                     "scrape, s; at most the interval's share per engine (default: %(default)s)")
    dep.add_argument("--scrape-max-bytes", type=int, default=engine_metrics.MAX_BODY_BYTES,
                     help="largest metrics body accepted (default: %(default)s)")
    dep.add_argument("--served-model", action="append", metavar="MODEL=MODEL_NAME",
                     help="the engine's model_name label for MODEL, on an endpoint serving several (repeatable)")
    dep.add_argument("--simulate", metavar="SCENARIO", help="a simulated host of this scenario instead of NVML")
    dep.add_argument("--seed", type=int, default=0, help="simulated workload seed (default: %(default)s)")
    add_fields(dep.add_argument_group("safety"), safety.SafetyConfig)
    dep.add_argument("--metrics-port", type=int, metavar="PORT", help="serve the agent's state (energy per model, "
                     "clock, shares, watchdog, decision latency) for Prometheus on this port (0: any free one; "
                     "default: off)")
    dep.add_argument("--metrics-address", default="127.0.0.1", help="address to serve the metrics on "
                     "(default: %(default)s; 0.0.0.0 for every interface)")
    dep.add_argument("--json", action="store_true", help="print the summary as JSON")
    dep.set_defaults(func=cmd_deploy)
    dsub = dep.add_subparsers(dest="action")
    rep = dsub.add_parser("report", help="summarise a deploy log (and plot it)",
                          description="Energy, power, clocks, SLO figures, decision latency and actions of a "
                          "festgym deploy JSONL log.")
    rep.add_argument("log", help="the JSONL log")
    rep.add_argument("--plot", metavar="PNG", help="write power, clock and latency plots here")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(func=cmd_deploy_report)
    act = dsub.add_parser("actuator", help="the privileged half: apply clock and power-limit writes for an "
                          "unprivileged `festgym deploy --actuator SOCKET`",
                          description="Serve one GPU's four writes on a Unix socket (run as root or with "
                          "CAP_SYS_ADMIN); restores the GPU when the client disconnects, when its lease lapses "
                          "(no request for --lease seconds) or on any terminating signal.")
    act.add_argument("--socket", required=True, help="Unix socket path, e.g. /run/festgym/actuator.sock")
    act.add_argument("--gpu", dest="actuator_gpu", default="0", help="GPU index (default: %(default)s)")
    act.add_argument("--lease", type=float, default=actuator.LEASE_S, metavar="SECONDS",
                     help="restore the GPU when its client sends nothing for this long (`festgym deploy` renews "
                     "it every interval; default: %(default)s)")
    act.add_argument("--simulate", metavar="SCENARIO", help="act on a simulated GPU (tests)")
    act.set_defaults(func=cmd_deploy_actuator)


COMMANDS = {
    "gpu": Command("GPU devices through NVML (or simulated)", configure_gpu),
    "deploy": Command("run a controller on a GPU host (dry run unless --apply)", configure_deploy,
                      "Every interval: read NVML and each engine's Prometheus metrics, let the controller decide (a "
                      "checkpoint's numpy export on the LocalGPU-v0 observation, or a rule policy such as festina "
                      "on views of the host), and set the SM clock (and advise or set SM shares) through clamping, "
                      "rate limits, hysteresis and an SLO watchdog. Dry run by default: the log shows the NVML "
                      "calls it would make. The GPU's clocks, power limit and shares are restored on exit, a crash or "
                      "any catchable terminating signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, ...)."),
}


__all__ = ["COMMANDS", "Pacer"]
