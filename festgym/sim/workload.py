"""Request traces: loaders for public trace formats and a seeded synthetic generator.

A :class:`Trace` is four aligned arrays sorted by arrival time (seconds from the trace start):
arrival, model index, prompt tokens and output tokens, plus the model names. Loaders read

* the Azure LLM inference trace CSV (``TIMESTAMP, ContextTokens, GeneratedTokens``), one model;
* a generic CSV or JSONL with ``timestamp, input_tokens, output_tokens, model`` (timestamps in
  seconds, or ISO date-times).

A malformed row raises :class:`festgym.errors.SpecError` naming the file, its line and the field.

The synthetic generator (:class:`SyntheticWorkload`) is the built-in default. Its defaults are
fitted to the Azure LLM inference traces of 2023 (1 h each, fitted in this repository by
``tests/test_workload.py::test_defaults_match_azure`` against ``../shared/data``):

==============  ============================  ===========================
trace           prompt tokens (lognormal)     output tokens (lognormal)
==============  ============================  ===========================
conversation    mu 6.633, sigma 0.985         mu 5.019, sigma 0.859
                (mean 1155, median 1020)      (mean 211, median 129, ≤1000)
code            mu 6.999, sigma 1.360         mu 2.788, sigma 0.847
                (mean 2048, median 1469)      (mean 28, median 13)
==============  ============================  ===========================

Arrivals: conversation 5.53 req/s with inter-arrival CV 1.09 (near Poisson; a Gamma renewal
process with shape 1/CV² = 0.84 reproduces it); code 2.57 req/s with inter-arrival CV 13 and
per-minute rate CV 1.03 (bursty). Prompt and output lengths are nearly independent (correlation
of their logarithms 0.09 and −0.01), so they are drawn independently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from festgym.config import check_ranges
from festgym.errors import SpecError

GENERIC_COLUMNS = ("timestamp", "input_tokens", "output_tokens", "model")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival: times in seconds from the trace start, token counts ≥ 1."""

    arrival_s: np.ndarray
    model: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    models: tuple[str, ...]
    duration_s: float

    def __post_init__(self):
        n = len(self.arrival_s)
        for name in ("model", "prompt_tokens", "output_tokens"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Trace.{name} has {len(getattr(self, name))} entries, arrival_s has {n}")
        if n and np.any(np.diff(self.arrival_s) < 0):
            raise ValueError("Trace.arrival_s must be sorted")
        if n and (self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1):
            raise ValueError("Trace token counts must be ≥ 1")
        if n and (self.model.min() < 0 or self.model.max() >= len(self.models)):
            raise ValueError("Trace.model indexes outside Trace.models")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @classmethod
    def build(cls, arrival_s, model, prompt_tokens, output_tokens, models: Sequence[str],
              duration_s: float | None = None) -> Trace:
        """Sort by arrival (stable) and convert to the canonical dtypes."""
        arrival = np.asarray(arrival_s, dtype=float)
        order = np.argsort(arrival, kind="stable")
        arrival = arrival[order]
        end = float(arrival[-1]) if len(arrival) else 0.0
        return cls(arrival, np.asarray(model, dtype=np.int32)[order],
                   np.asarray(prompt_tokens, dtype=np.int64)[order],
                   np.asarray(output_tokens, dtype=np.int64)[order], tuple(models),
                   float(duration_s if duration_s is not None else end))

    def scale_rate(self, factor: float) -> Trace:
        """Compress time by ``factor`` (2 doubles the rate, keeping burst shapes and lengths)."""
        if not factor > 0:
            raise ValueError(f"rate factor must be > 0, got {factor}")
        return replace(self, arrival_s=self.arrival_s / factor, duration_s=self.duration_s / factor)

    def window(self, start_s: float, end_s: float) -> Trace:
        """Requests arriving in [start_s, end_s), re-based so that start_s becomes 0."""
        if not end_s > start_s:
            raise ValueError(f"window end {end_s} must be after its start {start_s}")
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        return Trace(self.arrival_s[lo:hi] - start_s, self.model[lo:hi], self.prompt_tokens[lo:hi],
                     self.output_tokens[lo:hi], self.models, float(end_s - start_s))

    def select(self, models: Sequence[str]) -> Trace:
        """Only the requests of ``models`` (which become the trace's models, in that order)."""
        missing = [m for m in models if m not in self.models]
        if missing:
            raise ValueError(f"models {', '.join(missing)} are not in the trace ({', '.join(self.models)})")
        remap = np.full(len(self.models), -1, dtype=self.model.dtype)
        for i, m in enumerate(models):
            remap[self.models.index(m)] = i
        new = remap[self.model]
        keep = new >= 0
        return Trace(self.arrival_s[keep], new[keep], self.prompt_tokens[keep], self.output_tokens[keep],
                     tuple(models), self.duration_s)

    def rename_models(self, names: Sequence[str]) -> Trace:
        """Serve this trace's model slots with other models (e.g. one Azure trace per profile)."""
        if len(names) != len(self.models):
            raise ValueError(f"{len(names)} names for {len(self.models)} models")
        return replace(self, models=tuple(names))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"arrival_s": self.arrival_s, "model": np.asarray(self.models)[self.model],
                             "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens})

    @staticmethod
    def merge(traces: Sequence[Trace]) -> Trace:
        """One trace of several (their model lists are joined; duplicates are kept apart)."""
        models: list[str] = []
        parts = []
        for trace in traces:
            parts.append(trace.model + len(models))
            models.extend(trace.models)
        return Trace.build(np.concatenate([t.arrival_s for t in traces]), np.concatenate(parts),
                           np.concatenate([t.prompt_tokens for t in traces]),
                           np.concatenate([t.output_tokens for t in traces]), models,
                           max(t.duration_s for t in traces))


# --- loaders ---------------------------------------------------------------------------------

def _bad_row(path: Path, rows: np.ndarray, column: str, problem: str, lines: np.ndarray) -> SpecError:
    return SpecError(f"{path}:{int(lines[int(np.flatnonzero(rows)[0])])}", column, problem)


def _tokens(frame: pd.DataFrame, column: str, path: Path, lines: np.ndarray) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        raise _bad_row(path, bad, column, f"not a number: {frame[column].iloc[int(np.argmax(bad))]!r}", lines)
    bad = (values < 1) | (values != np.round(values))
    if bad.any():
        raise _bad_row(path, bad, column, f"token counts must be whole numbers ≥ 1, got "
                       f"{values[int(np.argmax(bad))]:g}", lines)
    return values.astype(np.int64)


def _seconds(column: pd.Series, name: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """Timestamps as seconds from the first. The first row decides the format: a number means
    seconds, anything else an ISO date-time (offsets are converted to UTC)."""
    if not len(column):
        return np.zeros(0)
    numeric = pd.to_numeric(column, errors="coerce")
    if pd.notna(numeric.iloc[0]):
        values = numeric.to_numpy(dtype=float)
        bad, kind = ~np.isfinite(values), "a number of seconds (as on the first row)"
    else:
        stamps = pd.to_datetime(column, errors="coerce", format="ISO8601", utc=True)
        bad, kind = stamps.isna().to_numpy(), "an ISO date-time (as on the first row)"
        values = (stamps - stamps.min()).dt.total_seconds().to_numpy()
    if bad.any():
        raise _bad_row(path, bad, name, f"not {kind}: {column.iloc[int(np.argmax(bad))]!r}", lines)
    return values - values.min()


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    for column in columns:
        if column not in frame.columns:
            raise SpecError(f"{path}:1", column, f"missing column (found: {', '.join(map(str, frame.columns))})")


def _read_table(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of a CSV or JSONL file and the file line number of each (blank lines skipped)."""
    if not path.is_file():
        raise SpecError(path, "<file>", "no such file")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows: list[dict[str, Any]] = []
        numbers: list[int] = []
        with path.open() as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SpecError(f"{path}:{number}", "<row>", f"not JSON: {exc.msg}") from None
                if not isinstance(row, dict):
                    raise SpecError(f"{path}:{number}", "<row>", "each line must be a JSON object")
                rows.append(row)
                numbers.append(number)
        return pd.DataFrame(rows), np.asarray(numbers, dtype=np.int64)
    try:
        frame = pd.read_csv(path, dtype=str, skipinitialspace=True, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SpecError(path, "<file>", f"cannot parse as CSV: {exc}") from None
    # Line numbers assume one line per row (no quoted newlines), counted with blank lines kept.
    lines = np.arange(len(frame), dtype=np.int64) + 2
    keep = frame.notna().any(axis=1).to_numpy()
    return frame[keep].reset_index(drop=True), lines[keep]


def load_azure_trace(path: str | Path, model: str = "model-0") -> Trace:
    """An Azure LLM inference trace CSV (2023 or 2024 format), served as one model."""
    path = Path(path)
    frame, lines = _read_table(path)
    _require_columns(frame, AZURE_COLUMNS, path)
    arrival = _seconds(frame["TIMESTAMP"], "TIMESTAMP", path, lines)
    prompt = _tokens(frame, "ContextTokens", path, lines)
    output = _tokens(frame, "GeneratedTokens", path, lines)
    return Trace.build(arrival, np.zeros(len(frame), dtype=np.int32), prompt, output, (model,))


def load_trace(path: str | Path, models: Sequence[str] | None = None) -> Trace:
    """A generic CSV/JSONL trace (``timestamp, input_tokens, output_tokens, model``) or an Azure
    CSV (recognised by its header). ``models`` fixes the model order (default: sorted names);
    a row naming a model outside it is an error."""
    path = Path(path)
    frame, lines = _read_table(path)
    if all(c in frame.columns for c in AZURE_COLUMNS):
        return load_azure_trace(path, models[0] if models else "model-0")
    _require_columns(frame, GENERIC_COLUMNS, path)
    names = frame["model"].astype(str).str.strip()
    bad = frame["model"].isna().to_numpy() | (names == "").to_numpy()
    if bad.any():
        raise _bad_row(path, bad, "model", "empty model name", lines)
    known = list(models) if models is not None else sorted(names.unique())
    index = {name: i for i, name in enumerate(known)}
    model = names.map(index)
    bad = model.isna().to_numpy()
    if bad.any():
        raise _bad_row(path, bad, "model", f"unknown model {names.iloc[int(np.argmax(bad))]!r}; "
                       f"expected one of {', '.join(known)}", lines)
    return Trace.build(_seconds(frame["timestamp"], "timestamp", path, lines), model.to_numpy(dtype=np.int32),
                       _tokens(frame, "input_tokens", path, lines), _tokens(frame, "output_tokens", path, lines),
                       known)


# --- synthetic -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LengthDist:
    """A lognormal token count, rounded and clipped to [low, high]."""

    mu: float
    sigma: float
    low: int = 1
    high: int = 16384

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        draws = rng.lognormal(self.mu, self.sigma, n) if self.sigma > 0 else np.full(n, np.exp(self.mu))
        return np.clip(np.rint(draws), self.low, self.high).astype(np.int64)

    @classmethod
    def from_mean_cv(cls, mean: float, cv: float, low: int = 1, high: int = 16384) -> LengthDist:
        """The lognormal with this mean and coefficient of variation (before clipping)."""
        sigma2 = np.log1p(cv**2)
        return cls(float(np.log(mean) - sigma2 / 2), float(np.sqrt(sigma2)), low, high)


AZURE_CONV_PROMPT = LengthDist(6.633, 0.985, 2, 14050)
AZURE_CONV_OUTPUT = LengthDist(5.019, 0.859, 7, 1000)
AZURE_CODE_PROMPT = LengthDist(6.999, 1.360, 3, 7437)
AZURE_CODE_OUTPUT = LengthDist(2.788, 0.847, 6, 1899)
PRESETS = {"azure-conv": (AZURE_CONV_PROMPT, AZURE_CONV_OUTPUT), "azure-code": (AZURE_CODE_PROMPT, AZURE_CODE_OUTPUT)}
"""Length distributions fitted to the Azure 2023 traces (see the module docstring)."""


@dataclass(frozen=True)
class SyntheticWorkload:
    """Seeded multi-model serverless workload.

    Arrivals form a renewal process with Gamma inter-arrival times (``arrival_cv`` 1 is Poisson,
    above 1 bursty), time-warped so that the rate follows ``rate_rps × (1 + diurnal_amplitude ×
    sin(2π t / diurnal_period_s))``. Each arrival picks a model with Zipf popularity
    (weight ∝ 1/rank^``zipf_s``) perturbed per ``shift_period_s`` block by a log-normal random walk
    of step ``shift_sigma``, so that per-model rates drift as in serverless traces.
    """

    models: tuple[str, ...]
    rate_rps: float = 20.0
    """Mean aggregate arrival rate (requests per second)."""
    duration_s: float = 3600.0
    arrival_cv: float = 1.09
    """Coefficient of variation of inter-arrival times (Azure conversation: 1.09)."""
    diurnal_amplitude: float = 0.0
    """Relative amplitude of the sinusoidal rate modulation, in [0, 1)."""
    diurnal_period_s: float = 86400.0
    zipf_s: float = 1.0
    shift_sigma: float = 0.3
    shift_period_s: float = 300.0
    prompt: Mapping[str, LengthDist] | LengthDist = AZURE_CONV_PROMPT
    """One distribution for every model, or one per model name."""
    output: Mapping[str, LengthDist] | LengthDist = AZURE_CONV_OUTPUT

    def __post_init__(self):
        check_ranges(self, {"rate_rps": self.rate_rps > 0, "duration_s": self.duration_s > 0,
                            "arrival_cv": self.arrival_cv > 0, "diurnal_amplitude": 0 <= self.diurnal_amplitude < 1,
                            "diurnal_period_s": self.diurnal_period_s > 0, "zipf_s": self.zipf_s >= 0,
                            "shift_sigma": self.shift_sigma >= 0, "shift_period_s": self.shift_period_s > 0,
                            "models": len(self.models) > 0})
        for kind in ("prompt", "output"):
            dist = getattr(self, kind)
            if isinstance(dist, Mapping) and set(dist) != set(self.models):
                raise ValueError(f"SyntheticWorkload.{kind}: needs one distribution per model "
                                 f"({', '.join(self.models)}), got {', '.join(dist)}")

    def _arrivals(self, rng: np.random.Generator) -> np.ndarray:
        """Unit-rate Gamma renewal points mapped through the inverse cumulative rate."""
        shape = 1.0 / self.arrival_cv**2
        expected = self.rate_rps * self.duration_s
        n = int(expected + 10 * np.sqrt(expected) * max(1.0, self.arrival_cv) + 20)
        unit = np.cumsum(rng.gamma(shape, 1.0 / shape, n))
        while unit[-1] < expected:  # rare: extend until the horizon is covered
            unit = np.concatenate([unit, unit[-1] + np.cumsum(rng.gamma(shape, 1.0 / shape, n))])
        unit = unit[unit < expected]
        if self.diurnal_amplitude == 0:
            return unit / self.rate_rps
        # Λ(t) = rate·(t + A·P/(2π)·(1 − cos 2πt/P)) is increasing; invert it on a fine grid.
        t = np.linspace(0.0, self.duration_s, int(self.duration_s) * 4 + 2)
        w = 2 * np.pi / self.diurnal_period_s
        big_lambda = self.rate_rps * (t + self.diurnal_amplitude / w * (1 - np.cos(w * t)))
        return np.interp(unit * big_lambda[-1] / expected, big_lambda, t)

    def _models(self, rng: np.random.Generator, arrival: np.ndarray) -> np.ndarray:
        k = len(self.models)
        base = np.log(1.0 / np.arange(1, k + 1) ** self.zipf_s)
        blocks = int(np.ceil(self.duration_s / self.shift_period_s)) + 1
        walk = np.cumsum(rng.normal(0.0, self.shift_sigma, (blocks, k)), axis=0)
        weights = np.exp(base + walk - walk.mean(axis=1, keepdims=True))
        cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
        block = np.minimum((arrival // self.shift_period_s).astype(int), blocks - 1)
        u = rng.random(len(arrival))
        return np.minimum((u[:, None] > cdf[block]).sum(axis=1), k - 1).astype(np.int32)

    def _lengths(self, rng: np.random.Generator, model: np.ndarray, dist) -> np.ndarray:
        if isinstance(dist, LengthDist):
            return dist.sample(rng, len(model))
        out = np.empty(len(model), dtype=np.int64)
        for i, name in enumerate(self.models):  # fixed model order keeps draws reproducible
            mask = model == i
            out[mask] = dist[name].sample(rng, int(mask.sum()))
        return out

    def generate(self, seed: int | np.random.Generator = 0) -> Trace:
        """Draw a trace; the same seed gives the same trace, bit for bit."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        arrival = self._arrivals(rng)
        model = self._models(rng, arrival)
        prompt = self._lengths(rng, model, self.prompt)
        output = self._lengths(rng, model, self.output)
        return Trace(arrival, model, prompt, output, tuple(self.models), float(self.duration_s))
