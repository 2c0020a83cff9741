"""GPU × model profiles: latency and power grids with their provenance, loaded and validated.

A profile folder ``<gpu>/<model>/`` (in a profile folder, :data:`festgym.resources.PROFILES`) holds
``profile.yaml`` (GPU spec, model config, provenance, fit errors) and two grids: ``prefill.csv``
over (tokens, sm_share, sm_clock_mhz) and ``decode.csv`` over (batch, ctx, sm_share, sm_clock_mhz).
Each grid row gives the iteration time (s), the GPU power while it runs alone on the GPU (W,
between idle and TDP) and the fraction of peak HBM bandwidth it uses.

Lookups are vectorised (:class:`festgym.profiles.grid.Grid`): pass arrays, get arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from festgym.control.levels import CONTROL_CLOCK_FRAC
from festgym.errors import ProfileNotFoundError, SpecError
from festgym.profiles.grid import Grid
from festgym.profiles.specs import GpuSpec, ModelSpec
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
    data = {c: frame[c].to_numpy(dtype=float) for c in axes + FIELDS}
    for column, values in data.items():
        bad = ~np.isfinite(values)
        if bad.any():
            raise SpecError(source, column, f"NaN or infinite value at data row {int(np.argmax(bad)) + 1}")
        bad = values < 0 if column == "hbm_util" else values <= 0
        if bad.any():
            raise SpecError(source, column, f"{'negative' if column == 'hbm_util' else 'non-positive'} "
                            f"value at data row {int(np.argmax(bad)) + 1}")
    share = data["sm_share"]
    if (share > 1.0).any():
        raise SpecError(source, "sm_share", f"shares must lie in (0, 1], found {share.max():g}")
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

    @property
    def key(self) -> str:
        return f"{self.gpu.name}/{self.model.name}"

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
            "model": self.model.name,
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
            "model": {"name": self.model.name, "derived": self.model.summary(), "config": dict(config)},
            "grids": {kind: {"file": GRID_FILES[kind], "axes": list(GRID_AXES[kind]), "fields": list(FIELDS)}
                      for kind in GRID_FILES},
            "provenance": dict(self.provenance),
            "fit_errors": [dict(e) for e in self.fit_errors],
        }
        with (folder / "profile.yaml").open("w") as fh:
            yaml.safe_dump(meta, fh, sort_keys=False, width=100)
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
            with meta_path.open() as fh:
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
                      tuple(meta.get("fit_errors") or ()), folder)
        profile.validate_power(folder)
        return profile

    def validate_power(self, source: str | Path) -> None:
        """Grid power must lie between the GPU's resident idle power and its TDP."""
        lo, hi = self.gpu.idle_w * (1 - 1e-6), self.gpu.tdp_w * (1 + 1e-6)
        for kind, grid in (("prefill", self.prefill_grid), ("decode", self.decode_grid)):
            power = grid.fields["power_w"]
            if power.min() < lo or power.max() > hi:
                raise SpecError(Path(source) / GRID_FILES[kind], "power_w",
                                f"values span [{power.min():.1f}, {power.max():.1f}] W, outside "
                                f"idle {self.gpu.idle_w:g} W .. TDP {self.gpu.tdp_w:g} W")


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

