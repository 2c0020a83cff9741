"""Scenarios: a cluster, the models it serves with their SLOs, a workload, and the settings of the
simulator, the background policy, the reward and the environments (``<name>.yaml`` in the scenario
folders: the user's, ``FESTGYM_SCENARIOS``, then the shipped ``festgym/data/scenarios/``).

``load_scenario("default")`` reads ``default.yaml`` there; a path to a YAML/JSON file or a mapping
works too. Keyword overrides are merged into the sections (``workload={"rate_rps": 10}``; ``cluster.gpus``
is replaced, not merged); an unknown section or setting is an error naming it.

Sections (each documented in the shipped YAMLs):

* ``cluster``: ``gpus``, GPU type → count (or a list of types, one per GPU); ``node``, the node
  spec's name (``dgx-h100``, the default) or ``{spec: name, <field>: value}`` to change some of its
  figures (:class:`~festgym.profiles.specs.NodeSpec`).
* ``models``: model name → ``{slo: ..., engine: ...}`` (:class:`~festgym.sim.serving.ModelServing`).
  Their order is their popularity rank in synthetic workloads.
* ``workload``: :class:`~festgym.sim.workload.SyntheticWorkload` parameters, or a trace to replay
  (see ``_workload``).
* ``sim``: :class:`~festgym.sim.config.SimConfig`.
* ``policy``: ``{name, params}``, the rule policy that runs whatever the agent does not.
* ``reward``: :class:`~festgym.sim.reward.RewardConfig`.
* ``local``: :class:`LocalSpec`, the part of the cluster ``LocalGPU-v0`` simulates.
* ``env``: :class:`EnvSpec`, episode length and action quantisation.
* ``physics``: GPU type → ``{latency|power|states: {constant: value}}``, overrides of the GPU
  specs' constants for this scenario (what ``festgym sensitivity`` varies;
  :func:`festgym.profiles.generate.with_physics`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from festgym.config import build_dataclass, check_ranges, read_mapping, require, require_positive
from festgym.control.checkpoint import LOCAL_ENV, ControllerInterface, trained_env
from festgym.errors import SpecError
from festgym.profiles.specs import NodeSpec
from festgym.resources import SCENARIOS
from festgym.sim.config import SimConfig
from festgym.sim.reward import RewardConfig
from festgym.sim.serving import ModelServing
from festgym.sim.simulator import Simulator
from festgym.sim.workload import (
    PRESETS,
    LengthDist,
    SyntheticWorkload,
    Trace,
    TraceSpec,
    TraceWarning,
)

REPLACED = ("cluster.gpus",)
"""Overrides that replace the file's value instead of merging into it (a cluster is not additive)."""
SECTIONS = ("name", "description", "cluster", "models", "workload", "sim", "policy", "reward", "local", "env",
            "physics")


_ANNOUNCED: set[str] = set()
"""Rescaling announcements already made in this process."""

TRACE_KEYS = {"trace": "path", "trace_format": "format", "trace_time_unit": "time_unit",
              "trace_rate_rps": "rate_rps"}
"""``workload`` settings of a replay -> :class:`~festgym.sim.workload.TraceSpec` fields."""


def _workload(data: Mapping[str, Any] | None, models: tuple[str, ...],
              source: str) -> tuple[SyntheticWorkload, TraceSpec | None]:
    """The ``workload`` section: :class:`~festgym.sim.workload.SyntheticWorkload` parameters (its
    ``duration_s`` is a full run's length; environments use ``env.episode_s``), plus ``lengths``
    (a preset such as ``azure-conv``/``azure-code``, or ``{prompt: ..., output: ...}`` with
    ``{mu, sigma, low, high}`` or ``{mean, cv}``) and ``trace``, a trace file to replay instead
    (:func:`_trace_spec`)."""
    data = dict(data or {})
    trace = _trace_spec({k: data.pop(k) for k in TRACE_KEYS if k in data}, source)
    settable_elsewhere = (("models", "they come from the models section"), ("prompt", "use lengths"),
                          ("output", "use lengths"))
    for key, why in settable_elsewhere:
        if key in data:
            raise SpecError(source, f"workload.{key}", f"not settable here: {why}")
    prompt, output = _lengths(data.pop("lengths", "azure-conv"), source)
    synthetic = build_dataclass(SyntheticWorkload, {**data, "models": models, "prompt": prompt, "output": output},
                                f"{source}: workload")
    return synthetic, trace


def _trace_spec(data: Mapping[str, Any], source: str) -> TraceSpec | None:
    """``trace``: a trace file (:func:`~festgym.sim.workload.load_trace`'s formats), a relative
    path read from the working directory; ``trace_format`` (default: detected),
    ``trace_time_unit`` (default: the format's), ``trace_rate_rps`` (default: none, the trace's own
    times; a rate rescales it, announced with a :class:`~festgym.sim.workload.TraceWarning`).
    ``rate_rps`` and the other synthetic settings do not act on a replay."""
    if data.get("trace") is None:
        extra = [k for k, v in data.items() if v is not None]
        if extra:
            raise SpecError(source, f"workload.{extra[0]}", "only with workload.trace, the trace file to replay")
        return None
    if not isinstance(data["trace"], str) or not data["trace"].strip():
        raise SpecError(source, "workload.trace", f"expected the path of a trace file, got {data['trace']!r}")
    # Resolved now, from the working directory the user typed it in: workers and later re-parses
    # (overrides) read the same file.
    fields = {TRACE_KEYS[k]: v for k, v in data.items()} | {"path": str(Path(data["trace"]).expanduser().absolute())}
    try:
        return build_dataclass(TraceSpec, fields, source)
    except SpecError as exc:
        key = next(k for k, f in TRACE_KEYS.items() if f == exc.field)
        raise SpecError(source, f"workload.{key}", exc.problem) from None


def _lengths(spec: Any, source: str) -> tuple[LengthDist, LengthDist]:
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise SpecError(source, "workload.lengths", f"unknown preset {spec!r}; "
                            f"expected one of {', '.join(PRESETS)} or {{prompt: ..., output: ...}}")
        return PRESETS[spec]
    if not isinstance(spec, Mapping) or set(spec) != {"prompt", "output"}:
        raise SpecError(source, "workload.lengths", "expected a preset name or {prompt: ..., output: ...}")
    return _length(spec["prompt"], f"{source}: workload.lengths.prompt"), \
        _length(spec["output"], f"{source}: workload.lengths.output")


def _length(data: Any, source: str) -> LengthDist:
    if isinstance(data, Mapping) and {"mean", "cv"} <= set(data):
        mean, cv = require_positive(data, "mean", source), require(data, "cv", source)
        if cv < 0:
            raise SpecError(source, "cv", f"out of range ({cv!r}); expected ≥ 0")
        dist = LengthDist.from_mean_cv(mean, cv)
        rest = {k: v for k, v in data.items() if k not in ("mean", "cv")}
        return build_dataclass(LengthDist, {**rest, "mu": dist.mu, "sigma": dist.sigma}, source)
    return build_dataclass(LengthDist, data, source)


@dataclass(frozen=True)
class LocalSpec:
    """The sub-cluster ``LocalGPU-v0`` simulates: its GPU 0 is the agent's; the others (if any)
    run the background policy, which also places requests. Only ``models`` are served, at
    ``rate_rps`` in all (the share of the cluster's traffic such a GPU group receives)."""

    gpus: tuple[str, ...] = ("H100-SXM-80GB",)
    models: tuple[str, ...] = ()
    """The model slots, in popularity order."""
    rate_rps: float = 3.0
    pool: tuple[str, ...] = ()
    """Domain randomisation: if given, each episode fills the slots with 1 to ``len(models)``
    models drawn from this pool (kept in the scenario's popularity order), so that a controller
    learns to serve any model of the cluster, alone or paired, not the ``models`` alone."""
    rate_scale: tuple[float, float] = (1.0, 1.0)
    """Each episode's rate is ``rate_rps`` times a factor drawn uniformly from this range (the
    per-GPU load a consolidating cluster policy leaves varies several-fold)."""

    def __post_init__(self):
        lo, hi = self.rate_scale
        check_ranges(self, {"gpus": len(self.gpus) >= 1, "rate_rps": self.rate_rps > 0,
                            "rate_scale": 0 < lo <= hi},
                     {"gpus": "at least one GPU type", "rate_rps": "> 0 requests/s",
                      "rate_scale": "[low, high] with 0 < low ≤ high"})

    @property
    def served(self) -> tuple[str, ...]:
        """Every model an episode may serve."""
        return self.pool or self.models

    def draw(self, rng: np.random.Generator, rank: Sequence[str]) -> tuple[tuple[str, ...], float]:
        """One episode's slot models (in ``rank`` order) and rate."""
        models = self.models
        if self.pool:
            k = int(rng.integers(1, len(self.models) + 1))
            picked = set(rng.choice(len(self.pool), size=k, replace=False).tolist())
            models = tuple(m for m in rank if m in {self.pool[i] for i in picked})
        lo, hi = self.rate_scale
        return models, self.rate_rps * (float(rng.uniform(lo, hi)) if hi > lo else lo)


@dataclass(frozen=True)
class EnvSpec:
    """Environment settings."""

    episode_s: float = 600.0
    """Simulated seconds per episode (steps = episode_s / control_interval_s for the control envs)."""
    warmup_s: float = 60.0
    """Simulated seconds the background policy runs before the agent's first step (the episode
    then starts with models loaded and queues filled)."""
    clock_levels: int = 8
    """Clock choices per GPU, evenly spaced over the control range."""
    share_levels: int = 4
    """SM share choices per model slot (weights k/n, renormalised to sum ≤ 1)."""
    batch_caps: tuple[int, ...] = ()
    """If given, a batch-limit choice per model slot among these values (``max_num_seqs``)."""
    residual_steps: int = 0
    """``LocalGPU-v0`` only. R ≥ 1 makes the agent a residual controller: its action is one
    clock adjustment of −R..R levels of the background policy's clock grid, applied to that
    policy's own decision for the GPU (shares stay the policy's); the middle level (0 in a Box)
    is the background policy bit for bit (:mod:`festgym.policies.residual`). 0: the agent sets
    clock and shares itself."""

    def __post_init__(self):
        check_ranges(self, {"episode_s": self.episode_s > 0, "warmup_s": self.warmup_s >= 0,
                            "clock_levels": self.clock_levels >= 2, "share_levels": self.share_levels >= 1,
                            "batch_caps": all(b >= 1 for b in self.batch_caps),
                            "residual_steps": self.residual_steps >= 0},
                     {"episode_s": "> 0 s", "warmup_s": "≥ 0 s", "clock_levels": "≥ 2", "share_levels": "≥ 1",
                      "batch_caps": "a list of whole numbers ≥ 1", "residual_steps": "≥ 0 (0: not residual)"})


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario; build simulators, workloads and the background policy from it."""

    name: str
    description: str
    gpus: tuple[str, ...]
    models: Mapping[str, ModelServing]
    workload: SyntheticWorkload
    """The synthetic workload over the scenario's models (rate, burstiness, lengths, duration)."""
    sim: SimConfig
    policy: str
    policy_params: Mapping[str, Any]
    reward: RewardConfig
    local: LocalSpec
    env: EnvSpec
    trace_spec: TraceSpec | None = None
    """A trace replayed instead of the synthetic workload (``workload.trace``)."""
    node: NodeSpec | None = None
    """The cluster's node spec (None: ``dgx-h100``)."""
    physics: Mapping[str, Any] = field(default_factory=dict)
    """Overrides of the GPU specs' constants (the ``physics`` section)."""
    source: str = "<dict>"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def simulator(self, local: bool = False, profiles_root=None) -> Simulator:
        """The full cluster, or with ``local`` the :class:`LocalSpec` sub-cluster."""
        node = self.node or "dgx-h100"
        if local:
            models = {m: self.models[m] for m in self.models if m in self.local.served}
            physics = {t: v for t, v in self.physics.items() if t in self.local.gpus}
            return Simulator(list(self.local.gpus), models, self.sim, profiles_root, node, physics)
        return Simulator(list(self.gpus), dict(self.models), self.sim, profiles_root, node, self.physics)

    def trace(self, seed: int | np.random.Generator, duration_s: float | None = None, local: bool = False,
              models: Sequence[str] | None = None, rate_rps: float | None = None) -> Trace:
        """A seeded workload of ``duration_s`` (default ``workload.duration_s``) over ``models`` at
        ``rate_rps`` (default: the cluster's, or with ``local`` the local sub-cluster's). A replayed
        trace keeps its own times unless a rate is asked for: ``rate_rps``, ``local.rate_rps`` with
        ``local``, or ``workload.trace_rate_rps``."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        duration = float(duration_s or self.workload.duration_s)
        models = tuple(models or (self.local.models if local else self.models))
        if self.trace_spec is not None:
            return self._replay(rng, duration, models, rate_rps, local)
        rate = rate_rps or (self.local.rate_rps if local else self.workload.rate_rps)
        return replace(self.workload, models=models, rate_rps=rate, duration_s=duration).generate(rng)

    def _replay(self, rng: np.random.Generator, duration: float, models: tuple[str, ...], rate_rps: float | None,
                local: bool) -> Trace:
        """A seeded window of the trace (all of it when shorter), rescaled where a rate is asked for."""
        assert self.trace_spec is not None  # trace() replays only a scenario that names a trace
        full = self.trace_spec.load(tuple(self.models))
        picked = full.select(models)
        rate, why = self._replay_rate(rate_rps, local, full)
        if rate is not None and len(picked):
            if why not in _ANNOUNCED:  # once per process: every episode and run would repeat it
                _ANNOUNCED.add(why)
                warnings.warn(why, TraceWarning, stacklevel=3)
            picked = picked.at_rate(rate)
        if picked.duration_s <= duration:
            return picked
        start = float(rng.uniform(0.0, picked.duration_s - duration))
        return picked.window(start, start + duration)

    def _replay_rate(self, rate_rps: float | None, local: bool, full: Trace) -> tuple[float | None, str]:
        """The rate a replay is rescaled to (None: its own) and the announcement, worded the same
        every episode so that it is shown once."""
        assert self.trace_spec is not None
        path, own = self.trace_spec.path, f"its own {full.mean_rate_rps:.4g} req/s over the scenario's models"
        if local:
            return rate_rps or self.local.rate_rps, (
                f"{path}: the local sub-cluster's replay is rescaled to its rate (local.rate_rps "
                f"{self.local.rate_rps:g} req/s, times a local.rate_scale draw in LocalGPU-v0), not {own}")
        if rate_rps is not None:
            return rate_rps, f"{path}: replayed rescaled to the rate asked for, {rate_rps:g} req/s, not {own}"
        rate = self.trace_spec.rate_rps
        if rate is None:
            return None, ""
        return rate, (f"{path}: replayed rescaled to workload.trace_rate_rps {rate:g} req/s, not {own} "
                      f"(arrival times ×{full.mean_rate_rps / rate:.4g})")


SCENARIO_ENTRY = "{}.yaml"
"""A scenario's file in the scenario folders."""


def list_scenarios() -> list[str]:
    """Names of the scenarios found (the user's folders first, then the shipped ones)."""
    return SCENARIOS.names(SCENARIO_ENTRY)


def load_scenario(spec: str | Path | Mapping[str, Any] | Scenario = "default", **overrides: Any) -> Scenario:
    """A scenario by name (``<name>.yaml`` in the scenario folders, :data:`festgym.resources.SCENARIOS`),
    path or mapping, with section overrides."""
    if isinstance(spec, Scenario):
        if not overrides:
            return spec
        source = spec.source
        spec = spec.raw
    elif isinstance(spec, Mapping):
        source = "<dict>"
    else:
        path = SCENARIOS.resolve(spec, SCENARIO_ENTRY)
        spec, source = read_mapping(path), str(path)
    return parse_scenario(_merge(dict(spec), overrides, source), source)


def parse_overrides(settings: Sequence[str], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``SECTION.KEY=VALUE`` strings (as ``--set`` takes them) as nested overrides for
    :func:`load_scenario`; values are read as YAML (``30`` is a number, ``azure-code`` a string;
    settings convert ``1e7`` to their type). A key holding dots (``models.Llama-3.1-8B.slo.ttft_s``)
    is matched against ``base`` (the scenario's mapping), or quoted: ``models."Llama-3.1-8B".slo``."""
    import yaml

    out: dict[str, Any] = {}
    for item in settings:
        key, eq, text = item.partition("=")
        parts = _key_path(key.strip(), base or {})
        if not eq or len(parts) < 2 or not all(parts) or re.search(r'(^|\.)(\.|$)', key.strip()):
            raise SpecError("--set", item, "expected SECTION.KEY=VALUE, e.g. workload.rate_rps=30")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError("--set", item, f"{part!r} is set to a value by another --set")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError("--set", item, f"cannot read the value as YAML: {exc}") from None
    return out


def _key_path(key: str, base: Mapping[str, Any]) -> list[str]:
    """``a.b.c`` as its keys: a quoted part is one key; otherwise, at each level, the longest run
    of dotted parts that names a key of ``base`` there, else one part."""
    parts = [(t[1:-1], True) if t.startswith('"') else (t, False)
             for t in re.split(r'("[^"]*")|\.', key) if t]  # (text, quoted)
    out: list[str] = []
    node: Any = base
    i = 0
    while i < len(parts):
        take = 1
        if isinstance(node, Mapping):
            plain = next((j for j in range(i, len(parts)) if parts[j][1]), len(parts))
            take = next((j - i for j in range(plain, i + 1, -1)
                         if ".".join(t for t, _ in parts[i:j]) in node), 1)
        name = ".".join(t for t, _ in parts[i:i + take])
        out.append(name)
        node = node.get(name) if isinstance(node, Mapping) else None
        i += take
    return out


def scale_load(scenario: Scenario, factor: float) -> Scenario:
    """``scenario`` with its arrival rate (and the local sub-cluster's) ``factor``-fold: the
    synthetic ``workload.rate_rps``, or a replay's ``workload.trace_rate_rps`` (where unset, from
    the trace's own rate)."""
    if not (factor > 0 and np.isfinite(factor)):
        raise SpecError(scenario.source, "load", f"load factor must be a positive number, got {factor}")
    spec = scenario.trace_spec
    workload = {"rate_rps": scenario.workload.rate_rps * factor} if spec is None else \
        {"trace_rate_rps": (spec.rate_rps or spec.load(tuple(scenario.models)).mean_rate_rps) * factor}
    return load_scenario(scenario, workload=workload, local={"rate_rps": scenario.local.rate_rps * factor})


def _merge(base: dict, overrides: Mapping[str, Any], source: str, prefix: str = "") -> dict:
    for key, value in overrides.items():
        if not prefix and key not in SECTIONS:
            raise SpecError(source, key, f"unknown scenario section; expected one of {', '.join(SECTIONS)}")
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping) and path not in REPLACED:
            base[key] = _merge(dict(base[key]), value, source, f"{prefix}{key}.")
        else:
            base[key] = value
    return base


def parse_scenario(data: Mapping[str, Any], source: str = "<dict>") -> Scenario:
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise SpecError(source, ", ".join(unknown), f"unknown scenario section; expected one of {', '.join(SECTIONS)}")
    for key in ("cluster", "models"):
        if not isinstance(data.get(key), Mapping) or not data[key]:
            raise SpecError(source, key, "missing or empty")
    gpus = _gpus(data["cluster"].get("gpus"), source)
    extra = sorted(set(data["cluster"]) - {"gpus", "node"})
    if extra:
        raise SpecError(source, f"cluster.{extra[0]}", "unknown setting; expected gpus, node")
    physics = data.get("physics") or {}
    if not isinstance(physics, Mapping) or any(not isinstance(v, Mapping) for v in physics.values()):
        raise SpecError(source, "physics", "expected GPU type → {latency|power|states: {constant: value}}")
    unknown_types = sorted(set(physics) - set(gpus))
    if unknown_types:
        raise SpecError(source, f"physics.{unknown_types[0]}",
                        f"not a GPU type of the cluster ({', '.join(dict.fromkeys(gpus))})")
    models = {str(name): ModelServing.from_dict(cfg, f"{source}: models.{name}")
              for name, cfg in data["models"].items()}
    workload, trace_spec = _workload(data.get("workload"), tuple(models), source)
    policy = dict(data.get("policy") or {"name": "festina"})
    if set(policy) - {"name", "params"}:
        raise SpecError(source, f"policy.{sorted(set(policy) - {'name', 'params'})[0]}",
                        "unknown key; expected name, params")
    local = dict(data.get("local") or {})
    local.setdefault("gpus", [gpus[0]])
    local.setdefault("models", list(models)[:2])
    for key in ("gpus", "models", "pool"):  # one name alone counts as a list of one
        if isinstance(local.get(key), str):
            local[key] = (local[key],)
    local = build_dataclass(LocalSpec, local, f"{source}: local")
    for key in ("models", "pool"):
        missing = [m for m in getattr(local, key) if m not in models]
        if missing or (key == "models" and not local.models):
            raise SpecError(source, f"local.{key}", f"{missing or 'none'}: each must be one of the scenario's models "
                            f"({', '.join(models)})")
    ranked = tuple(m for m in models if m in local.models)
    if local.models != ranked:  # slots are in popularity order, as LearnedLocal fills them on a cluster GPU
        raise SpecError(source, "local.models", f"{list(local.models)}: list them in the scenario's model (popularity) "
                        f"order: {list(ranked)}")
    env = dict(data.get("env") or {})
    if env.get("batch_caps", ()) is None:  # `batch_caps:` left empty in a YAML file: none
        env["batch_caps"] = ()
    return Scenario(
        name=str(data.get("name") or Path(source).stem), description=str(data.get("description") or ""),
        gpus=gpus, models=models,
        workload=workload, trace_spec=trace_spec,
        sim=build_dataclass(SimConfig, data.get("sim"), f"{source}: sim"),
        policy=str(policy.pop("name", "festina")), policy_params=dict(policy.pop("params", None) or {}),
        reward=build_dataclass(RewardConfig, data.get("reward"), f"{source}: reward"),
        local=local, env=build_dataclass(EnvSpec, env, f"{source}: env"),
        node=_node(data["cluster"].get("node"), source),
        physics={str(k): dict(v) for k, v in physics.items()}, source=source, raw=dict(data))


def _node(spec: Any, source: str) -> NodeSpec | None:
    """``cluster.node``: a node spec's name, or ``{spec: name, <field>: value}``."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return NodeSpec.load(spec)
    if not isinstance(spec, Mapping):
        raise SpecError(source, "cluster.node",
                        f"expected a node spec's name or {{spec: name, <field>: value}}, got {spec!r}")
    changes = {k: v for k, v in spec.items() if k != "spec"}
    base = NodeSpec.load(str(spec.get("spec", "dgx-h100")))
    unknown = sorted(set(changes) - set(NodeSpec.FIELDS))
    if unknown:
        raise SpecError(source, f"cluster.node.{unknown[0]}",
                        f"unknown node setting; expected spec, {', '.join(NodeSpec.FIELDS)}")
    return base.replace(**changes) if changes else base


def _gpus(spec: Any, source: str) -> tuple[str, ...]:
    if isinstance(spec, Mapping):
        out = []
        for gpu_type, count in spec.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise SpecError(source, f"cluster.gpus.{gpu_type}", f"count must be a whole number ≥ 1, got {count!r}")
            out += [str(gpu_type)] * count
        if out:
            return tuple(out)
    elif isinstance(spec, (list, tuple)) and spec:
        return tuple(str(g) for g in spec)
    raise SpecError(source, "cluster.gpus", "expected a non-empty {GPU type: count} or list of GPU types")


def training_scenario(card: dict[str, Any]) -> Scenario:
    """The scenario a checkpoint was trained on, with the environment overrides of its agent."""
    overrides = {k: v for k, v in card["agent"].get("env_kwargs", {}).items() if k != "action_type"}
    return load_scenario(card["scenario"], **overrides)


def controller_interface(scenario: Scenario, action_type: str) -> ControllerInterface:
    """``LocalGPU-v0``'s layout in ``scenario``: what a controller trained there observes and does."""
    env = scenario.env
    return ControllerInterface(len(scenario.local.models), env.clock_levels, env.share_levels, tuple(env.batch_caps),
                               float(scenario.workload.diurnal_period_s), action_type, env.residual_steps)


def card_interface(card: dict[str, Any]) -> ControllerInterface | None:
    """The interface a checkpoint's card is sealed with: ``LocalGPU-v0``'s layout in its training
    scenario; None for a controller of another environment, which runs only there."""
    if trained_env(card) != LOCAL_ENV:
        return None
    action_type = card["agent"].get("env_kwargs", {}).get("action_type", "multidiscrete")
    return controller_interface(training_scenario(card), action_type)
