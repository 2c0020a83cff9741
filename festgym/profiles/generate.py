"""Build a profile for any dense decoder-only transformer from a GPU spec and a ``config.json``.

The grids sample :mod:`festgym.profiles.roofline` with the GPU's calibrated constants. The power limiter is
applied on the GPU's full clock ladder before the grid's clock levels are picked, so a grid
point's time and power are those of the clock the firmware would really run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from festgym.config import read_mapping
from festgym.control.levels import CONTROL_CLOCK_FRAC
from festgym.errors import SpecError
from festgym.profiles import roofline
from festgym.profiles.calibration.check import check_profile
from festgym.profiles.grid import Grid
from festgym.profiles.models import ModelSpec, name_from_config
from festgym.profiles.parallel import SINGLE_GPU, Parallel, Plan, weight_bytes_per_gpu
from festgym.profiles.profile import DECODE_AXES, PREFILL_AXES, Profile, make_grid
from festgym.profiles.specs import GpuSpec, spec_path

TOKENS = (1, 4, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 16384)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CTX = (16, 128, 512, 1024, 2048, 4096, 8192, 16384, 32768)
SHARES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
"""MPS shares; below 0.02 a lookup counts as 0.02."""
CLOCK_LEVELS = 10
LOW_CLOCK_LEVELS = 3
"""Grid clocks: ``CLOCK_LEVELS`` spread evenly over [CONTROL_CLOCK_FRAC, 1] × f_max, where
serving controllers work, and ``LOW_CLOCK_LEVELS`` geometric ones below it down to the lowest
supported clock, so that every supported clock is interpolated, never extrapolated."""


def grid_clocks(gpu: GpuSpec) -> np.ndarray:
    ladder = np.asarray(gpu.sm_clocks_mhz, dtype=float)
    knee = CONTROL_CLOCK_FRAC * ladder[-1]
    targets = np.concatenate([np.geomspace(ladder[0], knee, LOW_CLOCK_LEVELS + 1)[:-1],
                              np.linspace(knee, ladder[-1], CLOCK_LEVELS)])
    return np.unique(ladder[np.abs(ladder[None, :] - targets[:, None]).argmin(axis=1)])


def _sample(work: roofline.Work, gpu: GpuSpec, share: np.ndarray, clocks: np.ndarray) -> dict[str, np.ndarray]:
    it = roofline.evaluate(work, gpu, share, clocks)
    return {"time_s": it.time_s, "power_w": it.power_w, "hbm_util": it.hbm_util}


def prefill_grid(model: ModelSpec, gpu: GpuSpec, plan: Plan = SINGLE_GPU) -> Grid:
    """One prompt of ``tokens`` tokens per iteration (see the profile provenance)."""
    tokens = np.asarray(TOKENS, dtype=float)[:, None, None]
    share = np.asarray(SHARES)[None, :, None]
    clocks = grid_clocks(gpu)
    work = roofline.iteration_work(model, prefill_tokens=tokens, prefill_seqs=1.0, parallel=plan.parallel,
                                   collectives=plan.collectives)
    fields = _sample(work, gpu, share, clocks)
    axes = (tokens.ravel(), np.asarray(SHARES), clocks)
    return make_grid(PREFILL_AXES, axes, fields, gpu)


def decode_grid(model: ModelSpec, gpu: GpuSpec, plan: Plan = SINGLE_GPU) -> Grid:
    batch = np.asarray(BATCH, dtype=float)[:, None, None, None]
    ctx = np.asarray(CTX, dtype=float)[None, :, None, None]
    share = np.asarray(SHARES)[None, None, :, None]
    clocks = grid_clocks(gpu)
    work = roofline.iteration_work(model, decode_batch=batch, decode_ctx=ctx, parallel=plan.parallel,
                                   collectives=plan.collectives)
    fields = _sample(work, gpu, share, clocks)
    axes = (batch.ravel(), ctx.ravel(), np.asarray(SHARES), clocks)
    return make_grid(DECODE_AXES, axes, fields, gpu)


def provenance(gpu: GpuSpec) -> dict[str, Any]:
    """Per-dimension provenance: every grid is modelled; name the equation, constants, sources."""
    lat, pw = gpu.latency.to_dict(), gpu.power.to_dict()
    notes = gpu.provenance.get("constants", {})

    def constants(*names: str) -> dict[str, Any]:
        merged = {**lat, **pw}
        return {n: {"value": merged[n], "source": notes.get(n, "not recorded")} for n in names}

    return {
        "prefill_time_vs_tokens": {
            "kind": "modelled",
            "equation": "per-operator roofline: (a^p + b^p)^(1/p) of a = FLOPs/(peak·gemm_peak_frac·share/"
                        "clock_stretch) and b = bytes/(HBM·hbm_frac), p = roofline_sharpness; "
                        "one prompt per iteration, causal attention over itself",
            "constants": constants("gemm_peak_frac", "hbm_frac", "roofline_sharpness", "attn_compute_frac"),
        },
        "decode_time_vs_batch_and_ctx": {
            "kind": "modelled",
            "equation": "weights streamed once per iteration + KV reads batch·ctx·kv_bytes/(HBM·kv_frac) "
                        "+ host time seq_overhead_s·batch + kernel_floor_s·layers",
            "constants": constants("kv_frac", "seq_overhead_s", "kernel_floor_s"),
        },
        "time_vs_sm_clock": {
            "kind": "modelled",
            "equation": "compute time × (a + (1-a)·f_max/f), a = clock_insensitive_frac; HBM bandwidth "
                        "saturates above share·f/f_max = bw_saturation_share; host time clock-independent",
            "constants": constants("clock_insensitive_frac", "bw_saturation_share"),
        },
        "time_vs_sm_share": {
            "kind": "modelled",
            "equation": "compute throughput ∝ share (MPS SM partition); HBM bandwidth saturates above "
                        "share·f/f_max = bw_saturation_share (no public measurement: assumption)",
            "constants": constants("bw_saturation_share"),
        },
        "power": {
            "kind": "modelled",
            "equation": "idle_w + active_w·busy·share·x·v(x)² + (compute_w·FLOP_rate/peak + "
                        "attention_w·KV_rate/HBM)·v(x)² + memory_w·byte_rate/HBM, x = f/f_max, "
                        "v(x) = clip(1 - v_slope·(1-x), v_floor, 1); capped at TDP by throttling the clock",
            "constants": constants("idle_w", "active_w", "compute_w", "memory_w", "attention_w",
                                   "v_floor", "v_slope"),
        },
        "idle_states": {"kind": "modelled",
                        "equation": "empty_w; resident idle = empty_w + (resident_w - empty_w)·(floor + (1-floor)·"
                                    "v(x)²·x / v(x_default)²·x_default); loading_w",
                        "constants": {n: {"value": v, "source": gpu.provenance.get("states", {}).get(n, "not recorded")}
                                      for n, v in gpu.states.to_dict().items()}},
        "gpu_spec": {"kind": "datasheet", "source": gpu.provenance.get("datasheet", "not recorded")},
    }


def build_profile(gpu: GpuSpec, model: ModelSpec, plan: Plan = SINGLE_GPU) -> Profile:
    prov = provenance(gpu)
    if plan.parallel.gpus > 1:
        assert plan.node is not None  # Plan checks it
        prov["communication"] = {
            "kind": "modelled",
            "equation": "per iteration: 2 all-reduces of a replica's activations per layer (tensor parallel), "
                        "2 all-to-alls of each GPU's routed tokens per MoE layer (expert parallel), timed by the "
                        "node's collective model; neither clock nor share changes them",
            "node": plan.node.name, "source": dict(plan.node.collectives.provenance)}
    return Profile(gpu, model, prefill_grid(model, gpu, plan), decode_grid(model, gpu, plan), prov,
                   parallel=plan.parallel)


def model_from_config(model_config: str | Path, name: str | None = None,
                      kv_format: str | None = None) -> tuple[ModelSpec, Mapping[str, Any]]:
    """The model a Hugging Face config.json (or a shipped model's name) describes, and the config.
    The model is named ``name``, else from the config (:func:`festgym.profiles.models.name_from_config`);
    ``kv_format`` (``fp8``) serves it with that KV cache."""
    config_path = spec_path(model_config, "model")
    config: Mapping[str, Any] = read_mapping(config_path)
    model = ModelSpec.from_hf_config(config, name_from_config(config, name, config_path), config_path)
    return (model.with_kv_format(kv_format) if kv_format else model), config


def generate(gpu: str | Path, model_config: str | Path, out: str | Path, name: str | None = None,
             fit_errors: bool = True, data: Path | None = None, tp: int = 1, ep: int = 1,
             node: str | None = None, kv_format: str | None = None) -> Profile:
    """Build, check against the reference data (``data``, else the default folder) when present,
    and save a profile to ``out``. ``gpu``: a spec YAML or a GPU type; ``model_config``: a Hugging
    Face config.json or a shipped model's name (:func:`model_from_config`); ``tp``/``ep``: the engine's
    tensor- and expert-parallel degrees, its collectives timed in ``node`` (default: the GPU type's)."""
    spec = GpuSpec.load(gpu)
    model, config = model_from_config(model_config, name, kv_format)
    profile = build_profile(spec, model, Plan.of(spec, tp, ep, node))
    shard_gb = weight_bytes_per_gpu(profile) / 1e9
    if shard_gb >= spec.memory_gb:
        raise SpecError(model.source, "weights", f"{shard_gb:.1f} GB of weights on each of {profile.parallel.gpus} "
                        f"GPU(s) do not fit a {spec.memory_gb:g} GB {spec.name}: raise --tp (or --ep for a MoE model)")
    if fit_errors:
        profile = dataclasses.replace(profile, fit_errors=tuple(check_profile(profile, data)))
    profile.save(out, config)
    return Profile.load(out)


PHYSICS_SECTIONS = ("latency", "power", "states")
"""Sections of a physics override (:func:`with_physics`): the :class:`GpuSpec` fields they change."""


def with_physics(profile: Profile, overrides: Mapping[str, Any], source: str = "physics") -> Profile:
    """``profile`` under changed GPU constants: ``{latency|power|states: {constant: value}}``.

    A changed latency or power constant rebuilds the grids from the roofline model (so only a modelled
    profile takes one); a changed state constant leaves the grids as they are. Each value is checked
    as the spec file's would be."""
    if not isinstance(overrides, Mapping):
        raise SpecError(source, profile.gpu.name,
                        f"expected {{latency|power|states: {{constant: value}}}}, got {overrides!r}")
    unknown = sorted(set(overrides) - set(PHYSICS_SECTIONS))
    if unknown:
        raise SpecError(source, f"{profile.gpu.name}.{unknown[0]}",
                        f"unknown section; expected {', '.join(PHYSICS_SECTIONS)}")
    gpu = profile.gpu
    changes = {}
    for section, values in overrides.items():
        current = getattr(gpu, section)
        if not isinstance(values, Mapping):
            raise SpecError(source, f"{gpu.name}.{section}", f"expected a mapping of constants, got {values!r}")
        changes[section] = type(current).from_dict({**current.to_dict(), **values}, f"{source}: {gpu.name}")
    spec = dataclasses.replace(gpu, **changes)
    if not (set(overrides) - {"states"}):
        return dataclasses.replace(profile, gpu=spec)
    measured = [k for k, p in profile.provenance.items() if isinstance(p, Mapping) and p.get("kind") == "measured"]
    if measured:
        raise SpecError(source, f"{gpu.name}.{', '.join(sorted(set(overrides) - {'states'}))}",
                        f"{profile.key}'s grids are measured ({', '.join(measured)}), not modelled: only states "
                        "constants can change for it")
    communication = profile.provenance.get("communication")
    node = communication.get("node") if isinstance(communication, Mapping) else None
    return build_profile(spec, profile.model, Plan.of(spec, profile.parallel.tp, profile.parallel.ep, node))


SHIPPED = "shipped.yaml"
"""The manifest of the shipped profiles, in the profile folder: GPU type -> models and their plans."""


def shipped_plans(root: Path) -> list[tuple[str, str, Parallel]]:
    """(GPU type, model, plan) of every profile the manifest ``root/shipped.yaml`` lists."""
    path = root / SHIPPED
    data = read_mapping(path)
    out = []
    for gpu, entries in data.items():
        if not isinstance(entries, list):
            raise SpecError(path, str(gpu), f"expected a list of models, got {entries!r}")
        for entry in entries:
            plans: Any = [[1, 1]]
            if isinstance(entry, Mapping):
                (entry, plans), = entry.items()
            if not isinstance(plans, list) or not all(isinstance(p, list) and len(p) == 2 for p in plans):
                raise SpecError(path, f"{gpu}.{entry}", f"expected [[tp, ep], ...], got {plans!r}")
            out += [(str(gpu), str(entry), Parallel.from_dict({"tp": tp, "ep": ep}, path)) for tp, ep in plans]
    return out
