"""Request traces: loaders for public trace formats and a seeded synthetic generator.

A :class:`Trace` is four aligned arrays sorted by arrival time (seconds from the trace start):
arrival, model index, prompt tokens and output tokens, plus the model names. :func:`load_trace`
reads these formats (:data:`TRACE_FORMATS`), named or detected from the columns, as CSV or JSONL,
plain or gzip (docs/traces.md says where each is published):

* ``azure``: the Azure LLM inference traces of 2023 and 2024 (``TIMESTAMP, ContextTokens,
  GeneratedTokens``; ISO date-times, with or without a UTC offset);
* ``burstgpt``: BurstGPT (``Timestamp, Model, Request tokens, Response tokens, Total tokens,
  Log Type``; seconds); a zero ``Response tokens`` is a failed request;
* ``mooncake``: the Mooncake traces (JSONL ``timestamp, input_length, output_length, hash_ids``;
  milliseconds);
* ``generic``: ``timestamp, input_tokens, output_tokens, model`` (seconds, or ISO date-times).

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

import functools
import gzip
import json
import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from festgym.config import check_ranges
from festgym.errors import RangeError, SpecError


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
                raise RangeError("Trace", name, f"{len(getattr(self, name))} entries", f"one per arrival ({n})")
        if n and np.any(np.diff(self.arrival_s) < 0):
            raise RangeError("Trace", "arrival_s", "unsorted", "sorted arrival times (Trace.build sorts them)")
        if n and (self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1):
            raise RangeError("Trace", "prompt_tokens" if self.prompt_tokens.min() < 1 else "output_tokens",
                             int(min(self.prompt_tokens.min(), self.output_tokens.min())), "token counts ≥ 1")
        if n and (self.model.min() < 0 or self.model.max() >= len(self.models)):
            raise RangeError("Trace", "model", "indexes outside Trace.models", f"in 0..{len(self.models) - 1}")

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

    @property
    def mean_rate_rps(self) -> float:
        """Requests per second over the trace's duration (NaN for a trace without one)."""
        return len(self) / self.duration_s if self.duration_s > 0 else math.nan

    def at_rate(self, rate_rps: float) -> Trace:
        """The trace compressed or stretched in time to a mean rate of ``rate_rps``."""
        if not self.mean_rate_rps > 0:
            raise RangeError("Trace", "duration_s", self.duration_s,
                             f"a rate to rescale: {len(self)} requests over a positive duration")
        return self.scale_rate(rate_rps / self.mean_rate_rps)

    def scale_rate(self, factor: float) -> Trace:
        """Compress time by ``factor`` (2 doubles the rate, keeping burst shapes and lengths)."""
        if not factor > 0:
            raise RangeError("Trace", "rate factor", factor, "> 0")
        return replace(self, arrival_s=self.arrival_s / factor, duration_s=self.duration_s / factor)

    def window(self, start_s: float, end_s: float) -> Trace:
        """Requests arriving in [start_s, end_s), re-based so that start_s becomes 0."""
        if not end_s > start_s:
            raise RangeError("Trace", "window end", end_s, f"after its start ({start_s})")
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        return Trace(self.arrival_s[lo:hi] - start_s, self.model[lo:hi], self.prompt_tokens[lo:hi],
                     self.output_tokens[lo:hi], self.models, float(end_s - start_s))

    def select(self, models: Sequence[str]) -> Trace:
        """Only the requests of ``models`` (which become the trace's models, in that order)."""
        missing = [m for m in models if m not in self.models]
        if missing:
            raise RangeError("Trace", "models", ", ".join(missing), f"models of the trace ({', '.join(self.models)})")
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
            raise RangeError("Trace", "models", f"{len(names)} names", f"one per model ({len(self.models)})")
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

class TraceWarning(UserWarning):
    """Something a replay changes about a trace: failed requests left out, a rate asked for."""


@dataclass(frozen=True)
class TraceFormat:
    """Where one trace format keeps each request's arrival time, token counts and model."""

    name: str
    time: str
    prompt: str
    output: str
    model: str | None = None
    """The column naming each request's model; None: every request is for the first model."""
    unit: str | None = None
    """The unit of numeric timestamps; None: seconds, refused where they look like milliseconds
    (:func:`_seconds`). ISO date-times are read in every format."""
    by_rank: bool = False
    """Serve the trace's models by popularity rank (the most requested as the first model served),
    not by name: BurstGPT's ``ChatGPT`` and ``GPT-4`` are no models a scenario serves."""
    failed_zero: bool = False
    """A zero token count marks a failed request: counted, reported and left out (else an error)."""

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.time, self.prompt, self.output) + ((self.model,) if self.model else ())

    def describe(self) -> str:
        unit = f" in {self.unit}" if self.unit else ""
        return f"{self.name} ({self.time}{unit}, {', '.join(self.columns[1:])})"


TRACE_FORMATS: dict[str, TraceFormat] = {f.name: f for f in (
    TraceFormat("azure", "TIMESTAMP", "ContextTokens", "GeneratedTokens", failed_zero=True),
    TraceFormat("burstgpt", "Timestamp", "Request tokens", "Response tokens", model="Model", unit="s", by_rank=True,
                failed_zero=True),
    TraceFormat("mooncake", "timestamp", "input_length", "output_length", unit="ms", failed_zero=True),
    TraceFormat("generic", "timestamp", "input_tokens", "output_tokens", model="model"),
)}
"""The formats :func:`load_trace` reads, in the order it tries them on a file's columns."""
TIME_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
"""Units a trace's numeric timestamps may be given in, in seconds."""
MAX_TOKENS = 2**31 - 1
"""Largest token count read: far above any model's context, and safe in every integer the
simulator derives from it (KV bytes, batch token sums)."""
SECONDS_SPAN_LIMIT_S = 30 * 86400.0
"""Timestamps of unstated unit spanning more than this (a 43-minute trace in milliseconds) are refused."""
EPOCH_MS_FROM = 1e11
"""Timestamps of unstated unit from this value on (past the year 5000 as seconds since 1970) are refused."""
GZIP_MAGIC = b"\x1f\x8b"


def _bad_row(path: Path, rows: np.ndarray, column: str, problem: str, lines: np.ndarray) -> SpecError:
    return SpecError(f"{path}:{int(lines[int(np.flatnonzero(rows)[0])])}", column, problem)


def _tokens(frame: pd.DataFrame, column: str, path: Path, lines: np.ndarray, low: int) -> np.ndarray:
    """Whole token counts in [low, MAX_TOKENS]."""
    cells = frame[column]
    values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float, copy=True)
    kind = pd.api.types.infer_dtype(cells, skipna=True)
    if kind == "boolean" or kind.startswith("mixed"):
        values[cells.map(lambda v: isinstance(v, bool)).to_numpy(dtype=bool)] = np.nan  # JSON true is no count
    bad = ~np.isfinite(values)
    if bad.any():
        cell = cells.iloc[int(np.argmax(bad))]
        missing = cell is None or (isinstance(cell, float) and math.isnan(cell))
        raise _bad_row(path, bad, column, "missing" if missing else f"not a number: {cell!r}", lines)
    bad = (values < low) | (values != np.round(values))
    if bad.any():
        raise _bad_row(path, bad, column, f"token counts must be whole numbers ≥ {low}, got "
                       f"{values[int(np.argmax(bad))]:g}", lines)
    bad = values > MAX_TOKENS
    if bad.any():
        raise _bad_row(path, bad, column, f"token count {values[int(np.argmax(bad))]:g} is too large "
                       f"(at most {MAX_TOKENS:,}): not a real request", lines)
    return values.astype(np.int64)


def _seconds(column: pd.Series, name: str, path: Path, lines: np.ndarray, unit: str | None,
             explicit: bool) -> np.ndarray:
    """Timestamps as seconds from the first. The first row decides the form: a number is in
    ``unit`` (None: seconds, checked by :func:`_check_seconds`), anything else an ISO date-time
    (offsets are converted to UTC; ``explicit``, a unit given for date-times is an error)."""
    numeric = pd.to_numeric(column, errors="coerce")
    if pd.notna(numeric.iloc[0]):
        values = numeric.to_numpy(dtype=float)
        bad, kind = ~np.isfinite(values), "a number (as on the first row)"
    else:
        if explicit:
            raise SpecError(f"{path}:{int(lines[0])}", name, f"a time unit ({unit}) is given, but the timestamps are "
                            f"date-times ({column.iloc[0]!r}): leave the unit out")
        stamps = pd.to_datetime(column, errors="coerce", format="ISO8601", utc=True)
        bad, kind = stamps.isna().to_numpy(), "an ISO date-time (as on the first row)"
        values = (stamps - stamps.min()).dt.total_seconds().to_numpy()
    if bad.any():
        raise _bad_row(path, bad, name, f"not {kind}: {column.iloc[int(np.argmax(bad))]!r}", lines)
    if pd.notna(numeric.iloc[0]) and unit is None:
        _check_seconds(values, name, path)
    return (values - values.min()) * TIME_UNITS_S[unit or "s"]


def _check_seconds(values: np.ndarray, name: str, path: Path) -> None:
    """Refuse numbers that are unlikely seconds: epoch milliseconds, or a span of months."""
    first, span_s = float(values.min()), float(values.max() - values.min())
    if first >= EPOCH_MS_FROM:
        looks = f"start at {first:.4g}, past the year 5000 if seconds since 1970"
    elif span_s > SECONDS_SPAN_LIMIT_S:
        looks = f"span {span_s / 86400:.3g} days if seconds"
    else:
        return
    raise SpecError(path, name, f"the timestamps {looks}: milliseconds? State their unit: time_unit 'ms' "
                    f"(or 'us', or 's' to read them as seconds); in a scenario, workload.trace_time_unit")


def _require_columns(frame: pd.DataFrame, fmt: TraceFormat, path: Path) -> None:
    for column in fmt.columns:
        if column not in frame.columns:
            raise SpecError(f"{path}:1", column, f"missing column of the {fmt.name} format "
                            f"(found: {', '.join(map(str, frame.columns))})")


def _open(path: Path) -> IO[str]:
    """The file as text, decompressed where it is gzip (told by its first bytes, whatever its name)."""
    with path.open("rb") as fh:
        packed = fh.read(2) == GZIP_MAGIC
    # utf-8-sig: a byte-order mark (as Windows tools write) is not part of the first line
    return gzip.open(path, "rt", encoding="utf-8-sig") if packed else path.open(encoding="utf-8-sig")


def _first_line(path: Path) -> str | None:
    with _open(path) as fh:
        return next((line.strip() for line in fh if line.strip()), None)


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    with _open(path) as fh:
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


def _read_csv(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    with _open(path) as fh:
        try:
            frame = pd.read_csv(fh, dtype=str, skipinitialspace=True, skip_blank_lines=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise SpecError(path, "<file>", f"cannot parse as CSV: {exc}") from None
    # Line numbers assume one line per row (no quoted newlines), counted with blank lines kept.
    lines = np.arange(len(frame), dtype=np.int64) + 2
    keep = frame.notna().any(axis=1).to_numpy()
    return frame[keep].reset_index(drop=True), lines[keep]


def _read_table(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of a CSV or JSONL file (JSONL if its first line is an object; either may be
    gzip-compressed) and the file line number of each (blank lines skipped)."""
    if not path.is_file():
        raise SpecError(path, "<file>", "no such file")
    try:
        first = _first_line(path)
        if first is None:
            raise SpecError(path, "<file>", "empty: no header and no requests")
        return _read_jsonl(path) if first.startswith("{") else _read_csv(path)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise SpecError(path, "<file>", f"cannot read: {exc}") from None


def _trace_format(frame: pd.DataFrame, path: Path, name: str | None) -> TraceFormat:
    """The format ``name``, its columns checked; or the first whose columns the file has."""
    if name is not None:
        if name not in TRACE_FORMATS:
            raise SpecError(path, "<format>", f"unknown trace format {name!r}; expected one of "
                            f"{', '.join(TRACE_FORMATS)}")
        _require_columns(frame, TRACE_FORMATS[name], path)
        return TRACE_FORMATS[name]
    shared = {f.name: sum(c in frame.columns for c in f.columns) for f in TRACE_FORMATS.values()}
    closest = TRACE_FORMATS[max(shared, key=lambda f: shared[f] / len(TRACE_FORMATS[f].columns))]
    if shared[closest.name] == len(closest.columns):
        return closest
    if shared[closest.name]:
        _require_columns(frame, closest, path)  # names the first column the nearest format misses
    raise SpecError(f"{path}:1", "<header>", f"not a trace format festgym reads (columns: "
                    f"{', '.join(map(str, frame.columns))}); expected the columns of "
                    f"{'; '.join(f.describe() for f in TRACE_FORMATS.values())}")


def _model_index(frame: pd.DataFrame, fmt: TraceFormat, models: Sequence[str] | None, path: Path,
                 lines: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each row's model index, and the model names: ``models`` where given."""
    if fmt.model is None:
        return np.zeros(len(frame), dtype=np.int32), tuple(models) if models else ("model-0",)
    names = frame[fmt.model].astype(str).str.strip()
    bad = frame[fmt.model].isna().to_numpy() | (names == "").to_numpy()
    if bad.any():
        raise _bad_row(path, bad, fmt.model, "empty model name", lines)
    if fmt.by_rank:
        counts = sorted(names.value_counts().items(), key=lambda kv: (-kv[1], kv[0]))  # ties by name
        if models is not None and len(counts) > len(models):
            raise SpecError(path, fmt.model, f"{len(counts)} models in the trace "
                            f"({', '.join(f'{m}: {c:,} requests' for m, c in counts)}) for {len(models)} served "
                            f"({', '.join(models)}): serve at least {len(counts)} (the most requested is served as "
                            "the first)")
        index = {name: i for i, (name, _) in enumerate(counts)}
        known = list(models) if models is not None else list(index)
    else:
        known = list(models) if models is not None else sorted(names.unique())
        index = {name: i for i, name in enumerate(known)}
    model = names.map(index)
    bad = model.isna().to_numpy()
    if bad.any():
        raise _bad_row(path, bad, fmt.model, f"unknown model {names.iloc[int(np.argmax(bad))]!r}; "
                       f"expected one of {', '.join(known)}", lines)
    return model.to_numpy(dtype=np.int32), tuple(known)


def _failed(path: Path, fmt: TraceFormat, prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Rows with a zero token count (failed requests), reported with a :class:`TraceWarning`."""
    failed = (prompt == 0) | (output == 0)
    if failed.any():
        n, k = len(failed), int(failed.sum())
        warnings.warn(f"{path}: {k:,} of {n:,} requests ({100 * k / n:.3g}%) have 0 '{fmt.prompt}' or "
                      f"'{fmt.output}': failed requests, left out of the replay", TraceWarning, stacklevel=3)
    return failed


def _check_span(path: Path, arrival_s: np.ndarray, failed: int) -> None:
    """A replay needs requests at two times at least: a rate and a duration."""
    n = len(arrival_s)
    left = f" once the {failed:,} failed ones are left out" if failed else ""
    if n == 0:
        raise SpecError(path, "<rows>", f"no requests{left}: a replay needs them at two times at least")
    if n == 1:
        raise SpecError(path, "<rows>", f"one request{left}: a replay needs them at two times at least")
    if arrival_s.max() == arrival_s.min():
        raise SpecError(path, "<rows>", f"all {n:,} requests{left} arrive at the same time: a replay needs them "
                        "at two times at least (a time span)")


def load_azure_trace(path: str | Path, model: str = "model-0") -> Trace:
    """An Azure LLM inference trace CSV (2023 or 2024), served as one model."""
    return load_trace(path, [model], format="azure")


def load_trace(path: str | Path, models: Sequence[str] | None = None, format: str | None = None,
               time_unit: str | None = None) -> Trace:
    """A trace file in one of :data:`TRACE_FORMATS` (``format``, or detected from its columns), CSV
    or JSONL, plain or gzip.

    ``models`` are the trace's models, in order: the generic format names them (default: its
    names sorted); BurstGPT's are served by popularity rank (default: its names, most requested
    first); Azure and Mooncake traces, which name none, are for the first (default ``model-0``).
    ``time_unit`` (``s``, ``ms``, ``us``) overrides the format's unit of numeric timestamps.
    Failed requests (a zero token count, in the public formats) are left out and reported with a
    :class:`TraceWarning`. Every other problem raises :class:`~festgym.errors.SpecError` naming
    the file, its line and the column: a malformed row, a token count above :data:`MAX_TOKENS`,
    timestamps of unstated unit that look like milliseconds, fewer than two arrival times.
    """
    path = Path(path)
    if time_unit is not None and time_unit not in TIME_UNITS_S:
        raise SpecError(path, "<time unit>", f"unknown time unit {time_unit!r}; expected one of "
                        f"{', '.join(TIME_UNITS_S)}")
    frame, lines = _read_table(path)
    fmt = _trace_format(frame, path, format)
    low = 0 if fmt.failed_zero else 1
    prompt = _tokens(frame, fmt.prompt, path, lines, low)
    output = _tokens(frame, fmt.output, path, lines, low)
    failed = _failed(path, fmt, prompt, output) if fmt.failed_zero else np.zeros(len(frame), dtype=bool)
    keep = ~failed
    frame, lines = frame[keep].reset_index(drop=True), lines[keep]
    arrival = _seconds(frame[fmt.time], fmt.time, path, lines, time_unit or fmt.unit, time_unit is not None) \
        if len(frame) else np.zeros(0)
    _check_span(path, arrival, int(failed.sum()))
    model, names = _model_index(frame, fmt, models, path, lines)
    return Trace.build(arrival, model, prompt[keep], output[keep], names)


@dataclass(frozen=True)
class TraceSpec:
    """A trace file to replay and how (a scenario's ``workload.trace*`` settings)."""

    path: str
    format: str | None = None
    """One of :data:`TRACE_FORMATS`; None: detected from the file's columns."""
    time_unit: str | None = None
    """Unit of numeric timestamps (``s``, ``ms``, ``us``); None: the format's."""
    rate_rps: float | None = None
    """Replay rescaled to this mean rate (requests per second); None: at the trace's own times."""

    def __post_init__(self):
        check_ranges(self, {"path": bool(self.path), "format": self.format is None or self.format in TRACE_FORMATS,
                            "time_unit": self.time_unit is None or self.time_unit in TIME_UNITS_S,
                            "rate_rps": self.rate_rps is None or 0 < self.rate_rps < math.inf},
                     {"path": "a trace file", "format": f"one of {', '.join(TRACE_FORMATS)} (or none: detected)",
                      "time_unit": f"one of {', '.join(TIME_UNITS_S)} (or none: the format's)",
                      "rate_rps": "a positive number of requests per second (or none: the trace's own rate)"})

    def load(self, models: Sequence[str]) -> Trace:
        """The whole trace over ``models``, read once per process while the file is unchanged
        (environments replay a window of it every episode); its arrays are read-only."""
        try:
            stat = Path(self.path).stat()
        except OSError:
            raise SpecError(self.path, "<file>", "no such file") from None
        return _load_cached(self.path, stat.st_mtime_ns, stat.st_size, self.format, self.time_unit, tuple(models))


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, _mtime_ns: int, _size: int, format: str | None, time_unit: str | None,
                 models: tuple[str, ...]) -> Trace:
    trace = load_trace(path, models, format, time_unit)
    for array in (trace.arrival_s, trace.model, trace.prompt_tokens, trace.output_tokens):
        array.flags.writeable = False  # shared by every replay of the cached trace
    return trace


# --- synthetic -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LengthDist:
    """A lognormal token count, rounded and clipped to [low, high]."""

    mu: float
    sigma: float
    low: int = 1
    high: int = 16384

    def __post_init__(self):
        check_ranges(self, {"mu": -math.inf < self.mu <= np.log(MAX_TOKENS), "sigma": 0 <= self.sigma < math.inf,
                            "low": self.low >= 1, "high": self.low <= self.high <= MAX_TOKENS},
                     {"mu": f"finite, ≤ ln {MAX_TOKENS:,} (a median of at most that many tokens)",
                      "sigma": "finite, ≥ 0",
                      "low": "≥ 1 token", "high": f"in [low ({self.low}), {MAX_TOKENS:,}] tokens"})

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


MAX_REQUESTS = 20_000_000
"""Most requests one synthetic run may hold (a few GB with the simulator's per-request log): a
guard against a rate or duration typed in the wrong unit."""
MIN_CV, MAX_CV = 0.01, 100.0
"""Arrival burstiness the Gamma renewal process represents (0.01: nearly periodic; public traces
lie within 0.5-10)."""
MAX_ZIPF_S = 50.0
"""Steepest popularity skew: at 50 the second model already gets 1e-15 of the first's traffic (and
k ** s stays within float range for any number of models)."""
MAX_SHIFTS = 1_000_000
"""Most popularity periods one run may hold (one random-walk row each)."""
DIURNAL_GRID_MAX = 2_000_001
"""Points of the grid that inverts the diurnal rate (4 per second up to about 6 days)."""


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
        check_ranges(self, {"rate_rps": self.rate_rps > 0,
                            "duration_s": self.duration_s > 0 and self.rate_rps * self.duration_s <= MAX_REQUESTS,
                            "arrival_cv": MIN_CV <= self.arrival_cv <= MAX_CV,
                            "diurnal_amplitude": 0 <= self.diurnal_amplitude < 1,
                            "diurnal_period_s": self.diurnal_period_s > 0, "zipf_s": 0 <= self.zipf_s <= MAX_ZIPF_S,
                            "shift_period_s": self.shift_period_s > 0 and self._shifts() <= MAX_SHIFTS,
                            # the popularity walk's spread stays far inside exp()'s float range
                            "shift_sigma": 0 <= self.shift_sigma * np.sqrt(self._shifts()) <= 100,
                            "models": len(self.models) > 0},
                     {"rate_rps": "> 0 req/s",
                      "duration_s": f"> 0 s, with rate_rps × duration_s ≤ {MAX_REQUESTS:,} requests (one run's memory)",
                      "arrival_cv": f"in [{MIN_CV}, {MAX_CV}]",
                      "diurnal_amplitude": "in [0, 1)", "diurnal_period_s": "> 0 s",
                      "zipf_s": f"in [0, {MAX_ZIPF_S:g}]",
                      "shift_sigma": "≥ 0, with shift_sigma × √(duration_s / shift_period_s) ≤ 100",
                      "shift_period_s": f"> 0 s, with at most {MAX_SHIFTS:,} shifts per run",
                      "models": "at least one model"})
        for kind in ("prompt", "output"):
            dist = getattr(self, kind)
            if isinstance(dist, Mapping) and set(dist) != set(self.models):
                raise RangeError("SyntheticWorkload", kind, ", ".join(dist),
                                 f"one distribution per model ({', '.join(self.models)})")

    def _shifts(self) -> float:
        """Popularity periods in a run."""
        return abs(self.duration_s / self.shift_period_s) if self.shift_period_s > 0 else math.inf

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
        t = np.linspace(0.0, self.duration_s, min(int(self.duration_s) * 4 + 2, DIURNAL_GRID_MAX))
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
