"""GPU × model profiles: latency and power grids with their provenance, loaded and validated.

A profile folder ``<gpu>/<model>/`` (in a profile folder, :data:`festgym.resources.PROFILES`) holds
``profile.yaml`` (GPU spec, model config, provenance, fit errors) and two grids: ``prefill.csv``
over (tokens, sm_share, sm_clock_mhz) and ``decode.csv`` over (batch, ctx, sm_share, sm_clock_mhz).
Each grid row gives the iteration time (s), the GPU power while it runs alone on the GPU (W,
between idle and TDP) and the fraction of peak HBM bandwidth it uses.

Loading refuses a profile its GPU's datasheet rules out (:func:`check_grid`): times that imply more
than the peak HBM bandwidth or FLOP rate, or far less than any kernel reaches (wrong units), and
power outside [idle, TDP].

Lookups are vectorised (:class:`festgym.profiles.grid.Grid`): pass arrays, get arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from festgym.control.levels import CONTROL_CLOCK_FRAC
from festgym.errors import ProfileNotFoundError, SpecError
from festgym.profiles import roofline
from festgym.profiles.grid import Grid
from festgym.profiles.models import ModelSpec
from festgym.profiles.parallel import Parallel
from festgym.profiles.specs import GpuSpec
from festgym.resources import PROFILES

FORMAT_VERSION = 1
FIELDS = ("time_s", "power_w", "hbm_util")
PREFILL_AXES = ("tokens", "sm_share", "sm_clock_mhz")
DECODE_AXES = ("batch", "ctx", "sm_share", "sm_clock_mhz")
GRID_FILES = {"prefill": "prefill.csv", "decode": "decode.csv"}
GRID_AXES = {"prefill": PREFILL_AXES, "decode": DECODE_AXES}
AXIS_TRANSFORMS = {"tokens": "linear", "batch": "linear", "ctx": "linear", "sm_share": "reciprocal",
                   "sm_clock_mhz": "reciprocal"}
"""Interpolation coordinate of each axis (see :mod:`festgym.profiles.grid`)."""
PEAK_TOLERANCE = 1.1
"""Most of the datasheet's peak HBM bandwidth and dense tensor FLOP rate a grid may imply, and the
largest ``hbm_util``: no kernel beats peak (the shipped profiles reach at most 0.92 of peak
bandwidth and 0.56 of peak FLOPs); the 10% covers rounded datasheet figures and timing noise."""
MIN_ROOFLINE_FRAC = 0.01
"""Least fraction of its roofline at its SM share and clock (peak FLOPs and bandwidth times
share × f/f_max) a grid point's GPU work may reach. Every shipped point reaches 7% or more (the
least: a 1B model's host time at batch 512) and, with the overheads below, takes at most 3.2% of
the slowest time these allow: the same grids in ms, read as seconds, exceed it 23-fold or more."""
MAX_LAYER_OVERHEAD_S = 2e-4
"""Fixed time per layer and iteration allowed beyond that: a layer runs about ten kernels, each
under 10 µs of launch latency even eagerly, without CUDA graphs (the fitted H100 floor: 22 µs)."""
MAX_SEQ_OVERHEAD_S = 1e-3
"""Host time per scheduled sequence and iteration allowed beyond that: scheduling, sampling and
detokenising (the vLLM figure fitted on ML.ENERGY: 29 µs)."""
try:  # the C loader makes profile loading several times faster
    _YamlLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _YamlLoader = yaml.SafeLoader


def make_grid(names: tuple[str, ...], axes: tuple[np.ndarray, ...], fields: dict[str, np.ndarray],
              gpu: GpuSpec) -> Grid:
    """A profile grid: each axis interpolated in its coordinate and clipped to its physical range
    (at least one token or sequence, context and SM share from the first grid point, share ≤ 1,
    clocks within the supported ladder); tokens, batch and context extrapolate upwards, with
    power kept between idle and TDP and bandwidth use within [0, 1]."""
    ranges = {"tokens": (1.0, None), "batch": (1.0, None), "sm_share": (float(axes[names.index("sm_share")][0]), 1.0),
              "sm_clock_mhz": (float(gpu.sm_clocks_mhz[0]), float(gpu.max_sm_clock_mhz))}
    bounds = tuple(ranges.get(n, (float(a[0]), None)) for n, a in zip(names, axes))
    limits = {"time_s": (0.0, np.inf), "power_w": (gpu.idle_w, gpu.tdp_w), "hbm_util": (0.0, 1.0)}
    return Grid(names, axes, fields, tuple(AXIS_TRANSFORMS[n] for n in names), bounds, limits)


def grid_from_frame(frame: pd.DataFrame, axes: tuple[str, ...], source: str | Path, gpu: GpuSpec) -> Grid:
    """Validate a grid table (full product of sorted axes, finite positive values) into a Grid."""
    for column in axes + FIELDS:
        if column not in frame.columns:
            raise SpecError(source, column, "missing column")
    if frame.empty:
        raise SpecError(source, "<file>", "no data rows: the file holds only its header")
    data = {c: _numbers(frame[c], source, c) for c in axes + FIELDS}
    for column, values in data.items():
        bad = ~np.isfinite(values)
        if bad.any():
            raise SpecError(source, column, f"NaN or infinite value at data row {int(np.argmax(bad)) + 1}")
        bad = values <= 0  # every iteration takes time, draws power and reads the weights
        if bad.any():
            raise SpecError(source, column, f"non-positive value at data row {int(np.argmax(bad)) + 1}")
    share, clock = data["sm_share"], data["sm_clock_mhz"]
    if (share > 1.0).any():
        raise SpecError(source, "sm_share", f"shares must lie in (0, 1], found {share.max():g}")
    lo, hi = gpu.sm_clocks_mhz[0], gpu.max_sm_clock_mhz
    if clock.min() < lo or clock.max() > hi:
        raise SpecError(source, "sm_clock_mhz", f"clocks span [{clock.min():g}, {clock.max():g}], outside the "
                        f"GPU's supported {lo}..{hi} MHz: in kHz or GHz? expected MHz")
    axis_values = []
    for column in axes:
        values = np.unique(data[column])
        axis_values.append(values)
    expected = np.stack([m.ravel() for m in np.meshgrid(*axis_values, indexing="ij")], axis=1)
    got = np.stack([data[c] for c in axes], axis=1)
    if got.shape != expected.shape:
        raise SpecError(source, ",".join(axes), f"{len(got)} rows, but the axes span {len(expected)} "
                        "points: the grid must hold every combination once")
    if not np.array_equal(got, expected):
        raise SpecError(source, ",".join(axes), "rows must be sorted by " + ", ".join(axes)
                        + " (ascending, last column fastest)")
    shape = tuple(len(a) for a in axis_values)
    try:
        return make_grid(axes, tuple(axis_values), {f: data[f].reshape(shape) for f in FIELDS}, gpu)
    except ValueError as exc:
        raise SpecError(source, ",".join(axes), str(exc)) from None


def _numbers(column: pd.Series, source: str | Path, name: str) -> np.ndarray:
    """A grid column as floats; a cell that is not a number is an error naming its row."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    text = np.isnan(values) & column.notna().to_numpy()
    if text.any():
        row = int(np.argmax(text))
        raise SpecError(source, name, f"not a number at data row {row + 1}: {column.iloc[row]!r}")
    return values


def grid_point(grid: Grid, flat: int) -> str:
    """The grid point at flat (row-major) index ``flat``, named by its coordinates and CSV data row."""
    index = np.unravel_index(flat, grid.shape)
    where = " ".join(f"{n}={a[i]:g}" for n, a, i in zip(grid.names, grid.axes, index))
    return f"{where} (data row {flat + 1})"


def _least_work(kind: str, coords: Mapping[str, np.ndarray], model: ModelSpec, gpus: int) -> tuple[np.ndarray, ...]:
    """(bytes, FLOPs, sequences) of one iteration at grid coordinates ``coords`` on each of an engine's
    ``gpus`` GPUs, at least: the weights it must read (of a MoE layer, only the top-k experts one token
    picks) and, in decode, every context token's K and V, and its FLOPs
    (:func:`festgym.profiles.roofline.iteration_work`), each a ``gpus``-th of one GPU's (a plan
    only adds to that by replication and communication)."""
    if kind == "prefill":
        work = roofline.iteration_work(model, prefill_tokens=coords["tokens"], prefill_seqs=1.0)
        kv_read = np.zeros(1)
    else:
        work = roofline.iteration_work(model, decode_batch=coords["batch"], decode_ctx=coords["ctx"])
        kv_read = coords["batch"] * model.kv_bytes(coords["ctx"])
    least_experts = model.moe_layers * model.experts_per_token * model.expert_weight_bytes if model.is_moe else 0
    weights = work.bytes_weights - work.bytes_expert_weights + least_experts
    return (weights + kv_read) / gpus, work.flops / gpus, work.seqs


def peak_tflops(gpu: GpuSpec, model: ModelSpec) -> float:
    """The datasheet's dense tensor FLOP rate of ``model``'s fastest weight format, 10^12 FLOP/s."""
    return max(gpu.peak_tflops(model.weight_format), gpu.peak_tflops(model.expert_format))


def datasheet_ratios(kind: str, grid: Grid, gpu: GpuSpec, model: ModelSpec, gpus: int = 1) -> tuple[np.ndarray, ...]:
    """Per grid point: the HBM bandwidth and the FLOP rate its time implies on each of an engine's
    ``gpus`` GPUs, as fractions of the datasheet's peaks, and its time over the slowest plausible one
    (see :data:`MIN_ROOFLINE_FRAC`)."""
    coords = dict(zip(grid.names, np.meshgrid(*grid.axes, indexing="ij", sparse=True)))
    nbytes, flops, seqs = _least_work(kind, coords, model, gpus)
    bandwidth, peak = gpu.hbm_bandwidth_gbps * 1e9, peak_tflops(gpu, model) * 1e12
    time = grid.fields["time_s"]
    # What the SM share can issue at its clock: compute scales with both, and bandwidth, which
    # saturates once enough SMs issue loads, at least proportionally up to the peak.
    issue = coords["sm_share"] * coords["sm_clock_mhz"] / gpu.max_sm_clock_mhz
    roof = np.maximum(nbytes / (bandwidth * np.minimum(issue, 1.0)), flops / (peak * issue))
    slowest = roof / MIN_ROOFLINE_FRAC + MAX_LAYER_OVERHEAD_S * model.num_layers + MAX_SEQ_OVERHEAD_S * seqs
    return nbytes / (time * bandwidth), flops / (time * peak), time / slowest


def grid_to_frame(grid: Grid) -> pd.DataFrame:
    mesh = np.meshgrid(*grid.axes, indexing="ij")
    columns = {name: m.ravel() for name, m in zip(grid.names, mesh)}
    columns.update({k: v.ravel() for k, v in grid.fields.items()})
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class Profile:
    """Latency and power of one model on one GPU type."""

    gpu: GpuSpec
    model: ModelSpec
    prefill_grid: Grid
    decode_grid: Grid
    provenance: Mapping[str, Any] = field(default_factory=dict)
    fit_errors: tuple[Mapping[str, Any], ...] = ()
    path: Path | None = None
    parallel: Parallel = field(default_factory=Parallel)
    """How one engine of it spans GPUs: the grids time the whole engine and give each GPU's power."""

    @property
    def name(self) -> str:
        """What a scenario serves it as: the model's name, its parallel plan and a KV format other than the
        activations' (``Llama-3.1-70B-tp4``, ``Qwen3-8B-kv-fp8``)."""
        return self.model.name + self.parallel.suffix + ("" if self.model.kv_format == "bf16" else
                                                          f"-kv-{self.model.kv_format}")

    @property
    def key(self) -> str:
        return f"{self.gpu.name}/{self.name}"

    def control_clocks_mhz(self) -> np.ndarray:
        """Supported clocks from ``CONTROL_CLOCK_FRAC``·f_max up: the range DVFS controllers use."""
        clocks = np.asarray(self.gpu.sm_clocks_mhz, dtype=float)
        return clocks[clocks >= CONTROL_CLOCK_FRAC * clocks[-1]]

    def prefill(self, tokens, share=1.0, clock_mhz=None, fields=None) -> dict[str, np.ndarray]:
        """One prefill iteration of ``tokens`` prompt tokens: time_s, power_w, hbm_util.

        ``share`` is the SM share (clipped to ≤ 1), ``clock_mhz`` the device SM clock (clipped to
        the supported range; default: the GPU's default clock). Tokens below 1 count as 1.
        """
        clock = self.gpu.default_sm_clock_mhz if clock_mhz is None else clock_mhz
        return self.prefill_grid(tokens, share, clock, fields=fields)

    def decode(self, batch, ctx, share=1.0, clock_mhz=None, fields=None) -> dict[str, np.ndarray]:
        """One decode iteration of ``batch`` sequences with mean context ``ctx`` tokens
        (context below the first grid point counts as that point)."""
        clock = self.gpu.default_sm_clock_mhz if clock_mhz is None else clock_mhz
        return self.decode_grid(batch, ctx, share, clock, fields=fields)

    def prefill_time(self, tokens, share=1.0, clock_mhz=None) -> np.ndarray:
        return self.prefill(tokens, share, clock_mhz, fields=("time_s",))["time_s"]

    def decode_time(self, batch, ctx, share=1.0, clock_mhz=None) -> np.ndarray:
        return self.decode(batch, ctx, share, clock_mhz, fields=("time_s",))["time_s"]

    def prefill_power(self, tokens, share=1.0, clock_mhz=None) -> np.ndarray:
        return self.prefill(tokens, share, clock_mhz, fields=("power_w",))["power_w"]

    def decode_power(self, batch, ctx, share=1.0, clock_mhz=None) -> np.ndarray:
        return self.decode(batch, ctx, share, clock_mhz, fields=("power_w",))["power_w"]

    def summary(self) -> dict[str, Any]:
        kinds = sorted({str(p.get("kind", "?")) for p in self.provenance.values() if isinstance(p, Mapping)})
        return {
            "gpu": self.gpu.name,
            "model": self.name,
            "gpus": self.parallel.gpus,
            "params_b": round(self.model.num_params / 1e9, 2),
            "weight_gb": round(self.model.weight_bytes / 1e9, 2),
            "kv_kb_per_token": round(self.model.kv_bytes_per_token / 1024, 1),
            "provenance": ", ".join(kinds),
        }

    # --- files -----------------------------------------------------------------------------

    def save(self, folder: str | Path, config: Mapping[str, Any]) -> Path:
        """Write the profile to ``folder``; ``config`` is the model's Hugging Face config."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "gpu": self.gpu.to_dict(),
            "model": {"name": self.model.name, "kv_format": self.model.kv_format, "derived": self.model.summary(),
                      "config": dict(config)},
            "parallel": self.parallel.to_dict(),
            "grids": {kind: {"file": GRID_FILES[kind], "axes": list(GRID_AXES[kind]), "fields": list(FIELDS)}
                      for kind in GRID_FILES},
            "provenance": dict(self.provenance),
            "fit_errors": [dict(e) for e in self.fit_errors],
        }
        with (folder / "profile.yaml").open("w", encoding="utf-8") as fh:
            yaml.safe_dump(meta, fh, sort_keys=False, width=100, allow_unicode=True)
        for kind, grid in (("prefill", self.prefill_grid), ("decode", self.decode_grid)):
            grid_to_frame(grid).to_csv(folder / GRID_FILES[kind], index=False, float_format="%.6g")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Profile:
        folder = Path(folder)
        meta_path = folder / "profile.yaml"
        if not meta_path.is_file():
            raise SpecError(meta_path, "<file>", "no such file: not a profile folder")
        try:
            with meta_path.open(encoding="utf-8") as fh:
                meta = yaml.load(fh, Loader=_YamlLoader)
        except yaml.YAMLError as exc:
            raise SpecError(meta_path, "<file>", f"cannot parse: {exc}") from None
        if not isinstance(meta, dict):
            raise SpecError(meta_path, "<file>", "top level must be a mapping")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise SpecError(meta_path, "format_version", f"expected {FORMAT_VERSION}, got {version!r}")
        for key in ("gpu", "model"):
            if not isinstance(meta.get(key), dict):
                raise SpecError(meta_path, key, "missing")
        gpu = GpuSpec.from_dict(meta["gpu"], f"{meta_path}: gpu")
        model_meta = meta["model"]
        if not isinstance(model_meta.get("config"), dict):
            raise SpecError(meta_path, "model.config", "missing: the model's Hugging Face config")
        model = ModelSpec.from_hf_config(model_meta["config"], str(model_meta.get("name", folder.name)),
                                         f"{meta_path}: model.config")
        if model_meta.get("kv_format", "bf16") != "bf16":
            model = model.with_kv_format(str(model_meta["kv_format"]))
        grids = {}
        for kind, axes in GRID_AXES.items():
            path = folder / GRID_FILES[kind]
            if not path.is_file():
                raise SpecError(path, "<file>", f"missing {kind} grid")
            try:
                frame = pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                raise SpecError(path, "<file>", f"cannot parse: {exc}") from None
            grids[kind] = grid_from_frame(frame, axes, path, gpu)
        for key, kind in (("provenance", "mapping"), ("fit_errors", "list")):
            value = meta.get(key)
            if value and not isinstance(value, dict if kind == "mapping" else list):
                raise SpecError(meta_path, key, f"expected a {kind}, got {value!r}")
        profile = cls(gpu, model, grids["prefill"], grids["decode"], meta.get("provenance") or {},
                      tuple(meta.get("fit_errors") or ()), folder, Parallel.from_dict(meta.get("parallel"), meta_path))
        profile.validate(folder)
        return profile

    @property
    def measured_on_cpu(self) -> bool:
        """Measured by ``festgym profile --cpu`` or ``--dry-run``: a pipeline test on the CPU."""
        measurement = self.provenance.get("measurement")
        return isinstance(measurement, Mapping) and str(measurement.get("device", "")).startswith("cpu")

    def validate(self, source: str | Path) -> None:
        """Refuse grids the GPU's datasheet rules out (:func:`check_grid`), naming the file in
        ``source``; a CPU pipeline test may be as slow as the CPU is."""
        for kind, grid in (("prefill", self.prefill_grid), ("decode", self.decode_grid)):
            check_grid(kind, grid, self.gpu, self.model, Path(source) / GRID_FILES[kind],
                       slow_limit=not self.measured_on_cpu, gpus=self.parallel.gpus)


def check_grid(kind: str, grid: Grid, gpu: GpuSpec, model: ModelSpec, source: str | Path,
               slow_limit: bool = True, gpus: int = 1) -> None:
    """Refuse a grid that is physically impossible on ``gpu``: power outside [idle, TDP], an
    ``hbm_util`` above 1 (give or take :data:`PEAK_TOLERANCE`), a time that implies more than the
    datasheet's peak HBM bandwidth or FLOP rate, or, with ``slow_limit``, one slower than any
    kernel plausibly runs (:func:`datasheet_ratios`). Each error names the grid point, the figure
    and the likely cause."""
    _check_power_and_util(grid, gpu, source)
    _check_times(kind, grid, gpu, model, source, slow_limit, gpus)


def _check_power_and_util(grid: Grid, gpu: GpuSpec, source: str | Path) -> None:
    power, util = grid.fields["power_w"], grid.fields["hbm_util"]
    lo, hi = gpu.idle_w * (1 - 1e-6), gpu.tdp_w * (1 + 1e-6)
    bad = np.flatnonzero((power < lo) | (power > hi))
    if bad.size:
        raise SpecError(source, "power_w", f"{power.flat[bad[0]]:g} W at {grid_point(grid, bad[0])}, outside idle "
                        f"{gpu.idle_w:g} W .. TDP {gpu.tdp_w:g} W: expected the whole GPU's power in watts "
                        "(not mW or kW, not the part above idle)")
    worst = int(np.argmax(util))
    if util.flat[worst] > PEAK_TOLERANCE:
        raise SpecError(source, "hbm_util", f"{util.flat[worst]:g} at {grid_point(grid, worst)}: a percentage? "
                        "expected the fraction of peak HBM bandwidth used, 0..1")


def _check_times(kind: str, grid: Grid, gpu: GpuSpec, model: ModelSpec, source: str | Path, slow_limit: bool,
                 gpus: int) -> None:
    bandwidth, flops, slow = (r.ravel() for r in datasheet_ratios(kind, grid, gpu, model, gpus))
    time = grid.fields["time_s"].ravel()
    peaks = {"HBM bandwidth": (bandwidth, gpu.hbm_bandwidth_gbps, "GB/s"),
             "tensor FLOP rate": (flops, peak_tflops(gpu, model), "TFLOP/s")}
    for what, (ratio, peak, unit) in peaks.items():
        worst = int(np.argmax(ratio))
        if ratio[worst] > PEAK_TOLERANCE:
            raise SpecError(source, "time_s", f"{time[worst]:.3g} s at {grid_point(grid, worst)} implies "
                            f"{ratio[worst] * peak:.3g} {unit} of {what}, {ratio[worst]:.3g}× the datasheet's peak "
                            f"{peak:g} {unit} (at most {PEAK_TOLERANCE:g}×): times too small? expected seconds per "
                            "iteration of the whole model")
    worst = int(np.argmax(slow))
    if slow_limit and slow[worst] > 1.0:
        implied = ", ".join(f"{r[worst] * peak:.3g} {unit} of {what} ({r[worst]:.2%} of the datasheet's {peak:g})"
                            for what, (r, peak, unit) in peaks.items())
        raise SpecError(source, "time_s", f"{time[worst]:.3g} s at {grid_point(grid, worst)} is {slow[worst]:.3g}× "
                        f"the slowest plausible step ({time[worst] / slow[worst]:.3g} s: {MIN_ROOFLINE_FRAC:.0%} of "
                        f"the roofline at this share and clock, plus {MAX_LAYER_OVERHEAD_S * 1e3:g} ms per layer and "
                        f"{MAX_SEQ_OVERHEAD_S * 1e3:g} ms per sequence); it implies {implied}: times in ms? "
                        "expected seconds")


def gpu_type_spec(profiles: Sequence[Profile]) -> GpuSpec:
    """The spec of the GPUs of one type that serve ``profiles`` (its models' profiles on it). A
    GPU's memory, TDP, clocks and idle power are the type's (:meth:`GpuSpec.device_figures`), so
    every profile must agree on them: otherwise one model's profile would set them for all the
    others, and which one would depend on the order the models are listed in."""
    first, *others = profiles
    want = first.gpu.device_figures()
    for other in others:
        for key, value in other.gpu.device_figures().items():
            if value != want[key]:
                raise SpecError(Path(other.path or other.key) / "profile.yaml", f"gpu.{key}",
                                f"{value!r}, but the profile of {first.key} ({first.path or 'in memory'}) on the "
                                f"same GPU type has {want[key]!r}: a GPU type's figures are the same for every "
                                "model; regenerate the profile from the type's gpu.yaml, or give the variant a "
                                "GPU type folder of its own")
    return first.gpu


def iter_profile_dirs(root: str | Path | None = None) -> Iterator[Path]:
    """Every ``<gpu>/<model>/`` folder holding a ``profile.yaml``, sorted by key: under ``root``, or
    by default over the user's profile folders and the shipped one (:data:`festgym.resources.PROFILES`;
    a user's profile shadows a shipped one of the same key)."""
    if root is None:
        yield from (path.parent for _, path in PROFILES.glob("*/*/profile.yaml"))
        return
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"profiles folder {root} does not exist")
    yield from sorted(p.parent for p in root.glob("*/*/profile.yaml"))


def find_profile_dir(key: str, root: str | Path | None = None) -> Path:
    """Resolve ``GPU/MODEL`` (case-insensitive) or a folder path to a profile folder."""
    if Path(key, "profile.yaml").is_file():
        return Path(key)
    available = list(iter_profile_dirs(root))
    for path in available:
        if f"{path.parent.name}/{path.name}".lower() == key.lower():
            return path
    names = ", ".join(f"{p.parent.name}/{p.name}" for p in available) or "none"
    raise ProfileNotFoundError(f"no profile {key!r}; available: {names}")


def load_profile(key: str, root: str | Path | None = None) -> Profile:
    """Load a profile by ``GPU/MODEL`` name (see ``festgym profiles list``) or folder path."""
    return Profile.load(find_profile_dir(key, root))

