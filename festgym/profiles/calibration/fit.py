"""Fit the roofline constants to the public measurements and write them into the GPU specs.

Run by ``festgym profiles calibrate`` (needs the ``calibrate`` extra: scipy). Order:

1. vidur H100 operator times of a Llama-2-7B layer on one GPU -> GEMM and streaming efficiency,
   roofline sharpness (the 70B layer and tensor-parallel slices are reported, not fitted).
2. Perseus A100 clock sweeps -> clock-insensitive fraction of compute time, V-f curve.
3. ML.ENERGY H100 benchmark rows -> host overheads, KV-read efficiency, power coefficients.
   Steps 2 and 3 share the power model, so they alternate for a few rounds.
4. A100 constants are transferred from H100 (no public A100 LLM serving data here), see
   :func:`transfer_to`; so are H200's (H100's compute die) and B200's. B200's ML.ENERGY table fits no
   roofline: on both 8B models power falls while the batch grows from 8 to 32 (646 to 494 W for
   Qwen3-8B), and their GPQA runs take 30-40 ms per token at any batch from 8 to 64, several times the
   time to read the weights and KV. Fitted on it, the engine terms give a per-layer floor four times
   H100's, which makes every small model's step clock-free, and the power terms run to their bounds;
   so the table only reports the transferred constants' error.

Fixed by assumption, not fitted (named in the spec's provenance): ``attn_compute_frac``,
``bw_saturation_share``, ``memory_w`` (HBM energy per byte).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from festgym.config import read_mapping
from festgym.errors import FestgymError
from festgym.profiles.calibration import sources
from festgym.profiles.calibration.sources import Comparison
from festgym.profiles.models import ModelSpec
from festgym.profiles.parallel import Parallel
from festgym.profiles.specs import GpuSpec

BOUNDS = {
    "gemm_peak_frac": (0.2, 1.0), "roofline_sharpness": (1.0, 8.0), "hbm_frac": (0.3, 1.0),
    "clock_insensitive_frac": (0.0, 0.9), "v_slope": (0.0, 2.0), "v_floor": (0.5, 1.0),
    "seq_overhead_s": (0.0, 1e-3), "kv_frac": (0.2, 0.95),
    "kernel_floor_s": (0.0, 1e-3), "active_w": (0.0, 2000.0), "compute_w": (0.0, 3000.0),
    "attention_w": (0.0, 3000.0), "idle_w": (50.0, 250.0),
}
"""Physical ranges; kv_frac stops at 0.95 because no kernel sustains the full HBM peak."""

START = {
    "gemm_peak_frac": 0.7, "hbm_frac": 0.8, "roofline_sharpness": 2.0, "clock_insensitive_frac": 0.1,
    "v_slope": 0.6, "v_floor": 0.7, "seq_overhead_s": 2e-5, "kv_frac": 0.7, "kernel_floor_s": 2e-5,
    "active_w": 150.0, "compute_w": 500.0, "attention_w": 100.0,
}
"""Fixed starting point of every fit, so that calibrating twice gives the same constants
whatever the spec files held before."""

VIDUR = ("gemm_peak_frac", "hbm_frac", "roofline_sharpness")
PERSEUS = ("clock_insensitive_frac", "v_slope", "v_floor")
MLENERGY = ("seq_overhead_s", "kv_frac", "kernel_floor_s", "active_w", "compute_w", "attention_w")

SOURCE_NOTES = {
    **{n: f"fitted to {sources.VIDUR_FILE} (1 GPU, per-layer operator medians vs tokens)" for n in VIDUR},
    **{n: f"fitted to {sources.PERSEUS_FILE} (A100 forward stages, rel_time/rel_power vs clock)"
       for n in PERSEUS},
    **{n: f"fitted to {sources.MLENERGY_FILE} (1-GPU rows: median ITL and average power)" for n in MLENERGY},
    "attn_compute_frac": "assumption: FlashAttention on Hopper reaches about half of dense peak",
    "bw_saturation_share": "assumption (no public data): decode bandwidth saturates above a share of "
                           "about 0.3-0.5 at full clock",
    "memory_w": "assumption: HBM3 plus on-chip fabric at about 5.6 pJ/bit (45 pJ/byte), i.e. ~150 W at "
                "3.35 TB/s; band 95-190 W (3.5-7 pJ/bit)",
    "idle_w": f"splitwise's constant power model's idle figure ({sources.SPLITWISE_FILE}), kept as the "
              "intercept of the busy-power fit; the idle states are the spec's states section",
}


def _with(gpu: GpuSpec, values: Mapping[str, float]) -> GpuSpec:
    lat = {k: v for k, v in values.items() if k in gpu.latency.to_dict()}
    pw = {k: v for k, v in values.items() if k in gpu.power.to_dict()}
    return dataclasses.replace(gpu, latency=gpu.latency.replace(**lat), power=gpu.power.replace(**pw))


def _value(gpu: GpuSpec, name: str) -> float:
    return {**gpu.latency.to_dict(), **gpu.power.to_dict()}[name]


def fit(gpu: GpuSpec, names: tuple[str, ...], compare: Callable[[GpuSpec], list[Comparison]]) -> GpuSpec:
    """Least-squares fit of ``names`` to the relative errors of ``compare``'s comparisons, each
    metric of each file weighted by 1/sqrt(its rows) so that every metric counts the same."""
    try:
        from scipy.optimize import least_squares
    except ImportError:
        raise FestgymError("calibration needs scipy: pip install -e '.[calibrate]'") from None

    lo = np.array([BOUNDS[n][0] for n in names])
    hi = np.array([BOUNDS[n][1] for n in names])
    scale = np.maximum(hi - lo, 1e-12)
    x0 = np.clip([_value(gpu, n) for n in names], lo, hi)

    def residuals(z: np.ndarray) -> np.ndarray:
        trial = _with(gpu, dict(zip(names, lo + z * scale)))
        comparisons = compare(trial)
        # One weight per metric of a source, whichever models and plans its rows are split into.
        sizes: dict[tuple[str, str], int] = {}
        for c in comparisons:
            sizes[(c.file, c.metric)] = sizes.get((c.file, c.metric), 0) + c.rel_error.size
        return np.concatenate([c.rel_error / np.sqrt(sizes[(c.file, c.metric)]) for c in comparisons])

    result = least_squares(residuals, (x0 - lo) / scale, bounds=(0.0, 1.0), x_scale="jac")
    return _with(gpu, dict(zip(names, lo + result.x * scale)))


H100, A100, H200, B200 = "H100-SXM-80GB", "A100-SXM-80GB", "H200-SXM-141GB", "B200-SXM-180GB"


def transfer_to(h100: GpuSpec, target: GpuSpec, idle_w: float) -> GpuSpec:
    """Constants for a GPU without serving measurements, transferred from the calibrated H100.

    Assumptions: the same kernel efficiencies, host overheads and V-f shape (in f/f_max);
    memory energy per byte equal, so ``memory_w`` scales with bandwidth; SM-side coefficients
    (active, compute, attention) scale with the TDP headroom above idle.
    """
    headroom = (target.tdp_w - idle_w) / (h100.tdp_w - h100.power.idle_w)
    power = h100.power.replace(
        idle_w=idle_w,
        memory_w=h100.power.memory_w * target.hbm_bandwidth_gbps / h100.hbm_bandwidth_gbps,
        active_w=h100.power.active_w * headroom, compute_w=h100.power.compute_w * headroom,
        attention_w=h100.power.attention_w * headroom)
    return dataclasses.replace(target, latency=h100.latency, power=power)


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` returns: each GPU type's calibrated spec and its final comparisons."""

    specs: dict[str, GpuSpec]
    comparisons: dict[str, list[Comparison]]


def calibrate(specs: Mapping[str, GpuSpec], models: Mapping[str, ModelSpec], data_dir: Path,
              rounds: int = 3) -> Calibration:
    """Calibrate H100 (fitted), A100 (clock curve fitted, the rest transferred), H200 and B200
    (transferred) from ``specs`` (by type name)."""
    h100, a100 = specs[H100], specs[A100]
    h100 = _with(h100, START)
    h_idle = sources.splitwise_idle_w(h100, data_dir)
    a_idle = sources.splitwise_idle_w(a100, data_dir)
    if h_idle is None or a_idle is None:
        raise FestgymError(f"{sources.SPLITWISE_FILE} lists no idle power for {h100.name} or {a100.name}")
    h100 = _with(h100, {"idle_w": h_idle})
    h100 = fit(h100, VIDUR, lambda g: sources.vidur_comparisons(g, data_dir, (sources.VIDUR_FILE,), (1,)))
    dense = {n: m for n, m in models.items() if not m.is_moe}
    for _ in range(rounds):
        a100 = transfer_to(h100, a100, a_idle)
        a100 = fit(a100, PERSEUS, lambda g: sources.perseus_comparisons(g, data_dir))
        h100 = _with(h100, {n: _value(a100, n) for n in PERSEUS})
        h100 = fit(h100, MLENERGY, lambda g: sources.mlenergy_comparisons(
            g, dense, data_dir, Parallel(), (sources.MLENERGY_FILE,)))
    out = {H100: h100, A100: transfer_to(h100, a100, a_idle)}
    if H200 in specs:
        out[H200] = transfer_to(h100, specs[H200], h100.power.idle_w)
    if B200 in specs:  # transferred too: its ML.ENERGY table fits no roofline (docs/models.md)
        out[B200] = transfer_to(h100, specs[B200], specs[B200].power.idle_w)
    comparisons = {name: sources.all_comparisons(g, models, data_dir) for name, g in out.items()}
    return Calibration(out, comparisons)


def write_spec(spec: GpuSpec, path: Path, notes: Mapping[str, str], fit_report: list[dict]) -> None:
    """Rewrite the constants and provenance of a GPU spec file, keeping its datasheet fields."""
    data = read_mapping(path)
    data["constants"] = {"latency": _rounded(spec.latency.to_dict()), "power": _rounded(spec.power.to_dict())}
    provenance = dict(data.get("provenance") or {})
    provenance["constants"] = dict(notes)
    provenance["fit"] = fit_report
    data["provenance"] = provenance
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=100, allow_unicode=True))


def _rounded(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.5g}") for k, v in values.items()}


def notes_for(name: str, idle_note: str | None = None) -> dict[str, str]:
    """The provenance of each constant :func:`calibrate` writes into GPU type ``name``'s spec."""
    notes = dict(SOURCE_NOTES)
    notes.update({n: SOURCE_NOTES[n] + "; applied to this GPU in relative clock f/f_max" for n in PERSEUS})
    if name == H100:
        return notes
    fitted = PERSEUS if name == A100 else ()  # the rest is transferred
    for n in (*VIDUR, *PERSEUS, *MLENERGY):
        if n not in fitted:
            notes[n] = f"transferred from {H100}: {notes[n]}"
    notes.update({n: f"transferred from {H100}, scaled by TDP headroom above idle"
                  for n in ("active_w", "compute_w", "attention_w")})
    notes["memory_w"] = f"transferred from {H100}: same energy per byte, scaled by HBM bandwidth"
    if idle_note is not None:
        notes["idle_w"] = idle_note
    return notes
