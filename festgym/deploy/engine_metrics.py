"""Read an LLM serving engine's Prometheus ``/metrics`` (vLLM, SGLang) once per control interval.

A controller needs, per interval and per engine: the queue (``waiting``), the batch (``running``), the KV-cache
use (``kv_used``, a fraction 0..1), and the time to first token and inter-token latency of the tokens served in
that interval. This module turns the engines' text exposition into those numbers, and refuses numbers it cannot
trust: the agent then treats the engine as unknown and holds the GPU's default clocks (never a guess).

Alias table. Engines rename metrics between releases (vLLM 0.9 renamed ``gpu_cache_usage_perc`` to
``kv_cache_usage_perc`` and ``time_per_output_token_seconds`` to ``inter_token_latency_seconds``; SGLang did the
same for its inter-token histogram). ``ALIASES[engine][canonical]`` lists the metric family names that may carry a
canonical quantity, newest first; the first one present wins. Counters are listed by family name, without the
``_total`` suffix the exposition adds (the sample read is ``<name>_total``, or a bare ``<name>``).

Windowing. Engines export cumulative counters and cumulative histograms since start. The window between two
scrapes is the difference of the two: bucket-wise for histograms, so that quantiles, means and the share of
tokens over an SLO describe only that interval, not the engine's whole history. A restart is told by a changed
``_created`` timestamp of a series read, or a changed ``process_start_time_seconds`` (prometheus-client exports
both unless it runs in multiprocess mode), else by a decrease; the newer value is then the whole delta (the
earlier one as zero), as Prometheus' ``rate()`` treats a counter reset.

Validity (one rule, :func:`_check`, for every sample read): values are finite; gauges, counters, histogram
buckets, sums and counts are ≥ 0; ``kv_used`` is at most 1 (both engines export a fraction: vLLM's
``kv_cache_usage_perc`` "1 means 100 percent usage", SGLang's ``token_usage`` is used over total KV tokens);
histogram buckets are cumulative (non-decreasing in ``le``, whose bounds are ≥ 0: latencies), with a ``+Inf``
bucket equal to ``_count``; creation timestamps are finite and ≥ 0. Any other value raises
:class:`InvalidSample` for the whole scrape.

Completeness. ``running`` and ``waiting`` are always required. A metric read in the previous scrape must still
be there (a renamed or cut-off body must not look like an idle interval), and the TTFT histogram (and vLLM's
inter-token histogram) must be there once the engine has finished a request: vLLM creates both at start
(``make_per_engine`` in ``vllm/v1/metrics/loggers.py``); SGLang creates a labelled histogram at its first
observation, and observes a request's first token before it counts the request as finished, but may never
observe a gap for requests answered in one chunk (``TokenizerManager.collect_metrics``). Otherwise
:class:`MissingMetric`.

How label sets combine (the engines' own definitions: vLLM ``vllm/v1/metrics/loggers.py``, SGLang
``python/sglang/srt/observability/metrics_collector.py``, formerly ``python/sglang/srt/metrics/collector.py``,
and ``scheduler_metrics_mixin.py``):
- vLLM labels its series ``model_name`` and ``engine`` (one engine core per data-parallel rank), and
  ``finished_reason`` on ``request_success``: distinct requests, so counters, histograms, ``running`` and
  ``waiting`` are summed over them; ``kv_used`` takes the maximum (a sum of fractions is meaningless and the
  fullest engine is the one that preempts first).
- SGLang's scheduler labels its series ``model_name``, ``engine_type``, ``tp_rank``, ``pp_rank``,
  ``moe_ep_rank`` and (data parallel) ``dp_rank``. Only the first rank of each attention-TP group reports,
  unless ``--enable-metrics-for-all-schedulers``: then every tensor-parallel (and pipeline, expert) rank
  reports the same batch. Series that differ only in those rank labels are copies: one (the largest) counts;
  distinct ``dp_rank`` values are distinct batches and add up.
- SGLang with ``--enable-priority-scheduling`` writes each queue gauge (``num_running_reqs``,
  ``num_queue_reqs``) twice: the total under ``priority=""`` and one row per priority
  (``SchedulerMetricsCollector._log_gauge_queue_count``). Only the total counts (the breakdown when alone).
- SGLang's tokenizer labels latencies and request counters by request (``model_name``, custom labels,
  ``priority``, ``is_streaming``): distinct requests, summed. The TTFT of a non-streaming request is stamped
  when its first output chunk reaches the tokenizer, not at its first token, so when streaming series exist
  (``is_streaming="true"``) only they make the TTFT; non-streaming series alone still count (an overestimate,
  on the watchdog's safe side).
- SGLang's ``prompt_tokens_total`` and ``generation_tokens_total`` are counted when a request finishes: a long
  request shows no tokens while it runs. ``sglang:realtime_tokens_total`` counts them as the scheduler
  processes them (``mode`` ``prefill_compute`` + ``prefill_cache`` for prompt tokens, ``decode`` for generated
  ones); it is read where present.

Assumptions:
- Samples are read by sample name, so a text without ``# TYPE`` lines parses the same. Lines of other
  metrics are dropped before parsing (a large exposition parses in milliseconds).
- With a ``model`` filter only series whose ``model_name`` equals it count; without one all models found are
  merged (``EngineSample.models`` lists them; :class:`EngineScraper` refuses to merge several).
- Latencies are non-negative: the first bucket's lower bound is 0, as in PromQL's ``histogram_quantile``.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import math
import re
import socket
import threading
import time
import urllib.parse
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from festgym.errors import FestgymError

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client.metrics_core import Metric

# prometheus-client (the deploy extra) is imported where metrics are parsed or rendered, so that the
# deploy agent's settings and the log report import without it.

# canonical name -> (kind, HELP text written by render_metrics)
_CANONICAL: dict[str, tuple[str, str]] = {
    "running": ("gauge", "Number of requests in model execution batches."),
    "waiting": ("gauge", "Number of requests waiting to be processed."),
    "kv_used": ("gauge", "KV-cache usage. 1 means 100 percent usage."),
    "ttft_s": ("histogram", "Histogram of time to first token in seconds."),
    "itl_s": ("histogram", "Histogram of inter-token latency in seconds."),
    "prompt_tokens": ("counter", "Number of prefill tokens processed."),
    "generation_tokens": ("counter", "Number of generation tokens processed."),
    "finished": ("counter", "Number of finished requests."),
}
REQUIRED: tuple[str, ...] = ("running", "waiting")
REQUIRED_ONCE_SERVING: dict[str, tuple[str, ...]] = {"vllm": ("ttft_s", "itl_s"), "sglang": ("ttft_s",)}
"""Histograms that must be present once an engine has finished a request (see the module docstring)."""

ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "vllm": {
        "running": ("vllm:num_requests_running",),
        "waiting": ("vllm:num_requests_waiting",),
        "kv_used": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        "ttft_s": ("vllm:time_to_first_token_seconds",),
        "itl_s": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        "prompt_tokens": ("vllm:prompt_tokens",),
        "generation_tokens": ("vllm:generation_tokens",),
        "finished": ("vllm:request_success",),
    },
    "sglang": {
        "running": ("sglang:num_running_reqs",),
        "waiting": ("sglang:num_queue_reqs",),
        "kv_used": ("sglang:token_usage",),
        "ttft_s": ("sglang:time_to_first_token_seconds",),
        "itl_s": ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        "prompt_tokens": ("sglang:realtime_tokens", "sglang:prompt_tokens"),
        "generation_tokens": ("sglang:realtime_tokens", "sglang:generation_tokens"),
        "finished": ("sglang:num_requests",),
    },
}

# (family, canonical) -> (label, values): a family that carries a canonical metric only in some label values
# (SGLang's increment_realtime_tokens). render_metrics writes the first value.
_LABEL_SELECT: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("sglang:realtime_tokens", "prompt_tokens"): ("mode", ("prefill_compute", "prefill_cache")),
    ("sglang:realtime_tokens", "generation_tokens"): ("mode", ("decode",)),
}
_FAMILY_HELP = {"sglang:realtime_tokens": "Total number of tokens processed. mode: prefill_compute, prefill_cache, "
                                          "decode."}

PROCESS_START = "process_start_time_seconds"
"""prometheus-client's process collector: a new value means a new engine process."""

MAX_BODY_BYTES = 16 * 2**20
"""Default cap on a metrics body (an engine's is some 100 kB)."""
MAX_LINES_READ = 20_000
"""The most lines of the metrics read that a scrape may hold (engines export some hundreds, a few thousand
with many ranks): parsing them is the slow part (some 10 µs a line, after the fetch's deadline), and this
bounds it to a fraction of an interval, where a body of 16 MiB of such lines would take seconds."""

# vLLM's bucket edges (vllm/v1/metrics/loggers.py) for the TTFT and inter-token latency histograms.
TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)
ITL_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)

# How the series kept of one gauge combine (see the module docstring).
_GAUGE_MERGE: dict[str, Callable[[Iterable[float]], float]] = {"running": sum, "waiting": sum, "kv_used": max}
# Sample names that carry a family's values, per kind.
_SUFFIXES: dict[str, tuple[str, ...]] = {"gauge": ("",), "counter": ("_total", ""), "histogram": ("_bucket",)}
# The closed range of each canonical metric's values (histogram parts and counters: the default).
_RANGES: dict[str, tuple[float, float]] = {"kv_used": (0.0, 1.0)}
_DEFAULT_RANGE = (0.0, math.inf)


@dataclass(frozen=True)
class _LabelMeaning:
    """What an engine's labels mean beyond "distinct requests" (see the module docstring)."""

    replicas: tuple[str, ...] = ()
    """Labels that tell copies of one scheduler's numbers apart (one copy counts)."""
    total: str | None = None
    """A label whose empty value marks a queue gauge's total beside its breakdown."""
    streaming: str | None = None
    """The TTFT label whose value "true" marks streamed requests."""


_LABELS: dict[str, _LabelMeaning] = {
    "vllm": _LabelMeaning(),
    "sglang": _LabelMeaning(replicas=("tp_rank", "pp_rank", "moe_ep_rank"), total="priority",
                            streaming="is_streaming"),
}
_QUEUE_GAUGES = ("running", "waiting")

_Labels = dict[str, str]
_Series = list[tuple[_Labels, float]]
_SeriesKey = tuple[str, frozenset[tuple[str, str]]]
# Names whose lines are parsed (everything else is dropped first).
_READ_PREFIXES: tuple[str, ...] = tuple(sorted({name for table in ALIASES.values() for names in table.values()
                                                for name in names} | {PROCESS_START}))
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class EngineMetricsError(FestgymError):
    """An engine's metrics are malformed, impossible or incomplete: the engine's state is unknown."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class EngineUnreachable(EngineMetricsError):
    """The metrics URL did not answer in time: connection refused, deadline passed, or an HTTP error status.

    ``listening``: something accepted the connection (an engine that is up but slow or failing), unlike a
    refused connection or an engine still loading (nothing serves requests yet).
    """

    def __init__(self, url: str, cause: str, listening: bool = False):
        self.cause = cause
        self.listening = listening
        super().__init__(url, f"engine metrics unreachable: {cause}")


class InvalidSample(EngineMetricsError):
    """A sample read holds an impossible value (NaN, infinite, negative, a KV use over 1, a histogram that is
    not cumulative)."""


class MissingMetric(EngineMetricsError):
    """A metric the controller needs is absent, or one read before has disappeared."""


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: cumulative counts per upper bound, the +Inf bucket last.

    ``bounds`` are the finite upper bounds, ascending; ``counts`` has one more element, the +Inf bucket, which
    is the total and must equal ``count``. Observations are assumed non-negative.
    """

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    sum: float
    count: float

    def __post_init__(self) -> None:
        # Normalised to float tuples so that histograms built from lists or ints compare equal to parsed ones.
        object.__setattr__(self, "bounds", tuple(float(b) for b in self.bounds))
        object.__setattr__(self, "counts", tuple(float(c) for c in self.counts))
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError(f"{len(self.bounds)} bounds need {len(self.bounds) + 1} counts, got {len(self.counts)}")
        if not all(math.isfinite(b) for b in self.bounds) or any(a >= b for a, b in zip(self.bounds, self.bounds[1:])):
            raise ValueError(f"bounds must be finite and strictly ascending, got {self.bounds}")
        if self.count != self.counts[-1]:
            raise ValueError(f"count {self.count} differs from the +Inf bucket {self.counts[-1]}")

    @classmethod
    def empty(cls, bounds: Iterable[float] = ()) -> Histogram:
        bounds = tuple(bounds)
        return cls(bounds, (0.0,) * (len(bounds) + 1), 0.0, 0.0)

    @classmethod
    def from_values(cls, bounds: Iterable[float], values: Iterable[float]) -> Histogram:
        """The histogram of ``values``; a value equal to a bound counts in that bound's bucket (``le``)."""
        bounds = tuple(bounds)
        observed = np.sort(np.asarray(list(values), dtype=float))
        below = np.searchsorted(observed, bounds, side="right")
        counts = tuple(float(c) for c in below) + (float(observed.size),)
        return cls(bounds, counts, float(observed.sum()), float(observed.size))

    def plus(self, other: Histogram) -> Histogram:
        if other.bounds != self.bounds:
            raise ValueError(f"cannot add histograms with bounds {self.bounds} and {other.bounds}")
        counts = tuple(a + b for a, b in zip(self.counts, other.counts))
        return Histogram(self.bounds, counts, self.sum + other.sum, counts[-1])

    def upper(self, other: Histogram) -> Histogram:
        """Bucket-wise the larger of two copies of one histogram (still cumulative, and never decreasing
        between scrapes when each copy does not)."""
        if other.bounds != self.bounds:
            raise ValueError(f"cannot compare histograms with bounds {self.bounds} and {other.bounds}")
        counts = tuple(map(max, self.counts, other.counts))
        return Histogram(self.bounds, counts, max(self.sum, other.sum), counts[-1])

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made since ``earlier``.

        A decreased bucket, or changed bounds, means the engine restarted in between: the whole of ``self`` is
        then the delta (``earlier`` counts as zero), as Prometheus' ``rate()`` treats a counter reset.
        """
        if earlier.bounds != self.bounds or any(a < b for a, b in zip(self.counts, earlier.counts)):
            return self
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts))
        return Histogram(self.bounds, counts, self.sum - earlier.sum, counts[-1])

    def mean(self) -> float:
        """Mean observation (from ``sum`` / ``count``, exact, not bucketed); nan when empty."""
        return self.sum / self.count if self.count > 0 else math.nan

    def quantile(self, q: float) -> float:
        """The q-quantile as PromQL's ``histogram_quantile`` estimates it; nan when empty.

        Linear interpolation inside the bucket holding rank ``q * total``, 0 as the first bucket's lower bound;
        a rank in the +Inf bucket gives the highest finite bound (an underestimate, as in PromQL).
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile q must lie in [0, 1], got {q}")
        if self.count <= 0 or not self.bounds:
            return math.nan
        rank = q * self.count
        # The first non-empty bucket reaching the rank; requiring c > 0 makes q=0 land in a non-empty bucket.
        i = next(i for i, c in enumerate(self.counts) if c >= rank and c > 0)
        if i == len(self.bounds):
            return self.bounds[-1]
        start, before = (self.bounds[i - 1], self.counts[i - 1]) if i else (0.0, 0.0)
        return start + (self.bounds[i] - start) * (rank - before) / (self.counts[i] - before)

    def max_bound(self) -> float:
        """An upper bound on the largest observation: the upper bound of the highest non-empty bucket.

        ``inf`` when the +Inf bucket holds observations (their size is unknown, so no finite bound is safe; note
        that ``quantile(1.0)`` returns the highest finite bound there instead); nan when empty.
        """
        if self.count <= 0:
            return math.nan
        i = next(i for i, c in enumerate(self.counts) if c >= self.count)
        return self.bounds[i] if i < len(self.bounds) else math.inf

    def fraction_over(self, limit: float) -> float:
        """Estimated share of observations above ``limit`` (linear inside a bucket); nan when empty.

        Observations in the +Inf bucket count as above any limit at or beyond the highest finite bound.
        """
        if self.count <= 0:
            return math.nan
        return 1.0 - self._count_at_or_below(limit) / self.count

    def _count_at_or_below(self, x: float) -> float:
        if x <= 0.0 or not self.bounds:
            return 0.0
        if x >= self.bounds[-1]:
            return self.counts[len(self.bounds) - 1]
        i = bisect_left(self.bounds, x)
        start, before = (self.bounds[i - 1], self.counts[i - 1]) if i else (0.0, 0.0)
        return before + (self.counts[i] - before) * (x - start) / (self.bounds[i] - start)


@dataclass(frozen=True)
class MetricSource:
    """Where a canonical metric was read: the family, and which of its label sets count (empty: all)."""

    family: str
    selection: str = ""


@dataclass(frozen=True)
class EngineSample:
    """One scrape, cumulative as the engine exports it, keyed by canonical names.

    Equality compares the figures; the bookkeeping fields (where it came from, what was read, creation
    timestamps) do not take part.
    """

    engine: str
    model: str | None
    gauges: dict[str, float]
    counters: dict[str, float]
    histograms: dict[str, Histogram]
    missing: tuple[str, ...]
    source: str = field(default="<text>", compare=False)
    sources: dict[str, MetricSource] = field(default_factory=dict, compare=False)
    """The family (and label selection) each canonical metric present was read from."""
    created: dict[_SeriesKey, float] = field(default_factory=dict, compare=False)
    """Creation timestamps (``_created`` samples of the series read, ``process_start_time_seconds``)."""
    models: tuple[str, ...] = field(default=(), compare=False)
    """The ``model_name`` values among the engine's metrics read (before any model filter)."""


@dataclass(frozen=True)
class EngineWindow:
    """What happened between two scrapes: gauges as of the later one, deltas of counters and histograms.

    ``kv_used`` is nan and the counters are nan when the engine does not export them; a missing histogram is
    empty (its quantiles are nan). ``elapsed_s`` is the time between the scrapes when known (EngineScraper).
    """

    running: float
    waiting: float
    kv_used: float
    ttft_s: Histogram
    itl_s: Histogram
    prompt_tokens: float
    generation_tokens: float
    finished: float
    elapsed_s: float = math.nan


def parse_metrics(text: str, engine: str = "auto", model: str | None = None, source: str = "<text>") -> EngineSample:
    """Parse one engine's Prometheus text exposition into canonical metrics.

    ``engine`` is "vllm", "sglang" or "auto" (told by the metric prefix). ``model`` keeps only samples whose
    ``model_name`` label equals it. ``running`` and ``waiting`` are required; other canonical metrics that are
    absent are listed in ``missing``. Raises :class:`EngineMetricsError` (:class:`InvalidSample` for an
    impossible value, :class:`MissingMetric` for a required metric absent), naming ``source`` (a URL or file).
    """
    index = _read_samples(text, source)
    engine = _engine_of(index, engine, source)
    created = _stamps(index, PROCESS_START, source)
    index, model, models = _select_model(index, engine, model, source)
    gauges: dict[str, float] = {}
    counters: dict[str, float] = {}
    histograms: dict[str, Histogram] = {}
    sources: dict[str, MetricSource] = {}
    missing: list[str] = []
    for canonical, (kind, _) in _CANONICAL.items():
        found = _first_present(index, engine, canonical)
        if found is None:
            missing.append(canonical)
            continue
        family, rows = found
        if kind == "histogram":
            histograms[canonical], selection = _histogram(engine, canonical, family, index, source)
        else:
            checked = [(labels, _check(v, canonical, name, labels, source)) for name, labels, v in rows]
            value, selection = _scalar(engine, canonical, checked)
            (gauges if kind == "gauge" else counters)[canonical] = value
        sources[canonical] = MetricSource(family, selection)
        created.update(_stamps(index, family + "_created", source))
    for canonical in REQUIRED:
        if canonical in missing:
            tried = ", ".join(ALIASES[engine][canonical])
            raise MissingMetric(source, f"required {engine} metric '{canonical}' not found (tried {tried})")
    return EngineSample(engine, model, gauges, counters, histograms, tuple(missing), source, sources, created, models)


def _check(value: float, canonical: str, name: str, labels: Mapping[str, str], source: str) -> float:
    """The one validity rule for every value read: finite and inside the canonical metric's range."""
    lo, hi = _RANGES.get(canonical, _DEFAULT_RANGE)
    if math.isfinite(value) and lo <= value <= hi:
        return value
    raise InvalidSample(source, f"{name}{_label_text(labels)} is {value!r}, outside [{lo:g}, {hi:g}]: the engine's "
                                "exporter is broken; its state reads as unknown (default clocks) until it is valid")


def _label_text(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""


def _read_samples(text: str, source: str) -> dict[str, _Series]:
    from prometheus_client.parser import text_string_to_metric_families  # the deploy extra

    index: dict[str, _Series] = defaultdict(list)
    try:
        for family in text_string_to_metric_families(_relevant_lines(text, source)):
            for sample in family.samples:
                index[sample.name].append((sample.labels, sample.value))
    except (ValueError, IndexError) as exc:  # the parser's errors for lines it cannot read
        raise EngineMetricsError(source, f"malformed Prometheus text: {exc or type(exc).__name__}") from exc
    return dict(index)


def _relevant_lines(text: str, source: str) -> str:
    """The lines of the metrics read (and any line that is not a metric line: the parser judges those).

    Other metrics are dropped unparsed: parsing is the slow part, and what is not read cannot mislead. More
    than :data:`MAX_LINES_READ` lines kept is an :class:`EngineMetricsError`.
    """
    kept = []
    for line in text.split("\n"):  # the format's line break (splitlines() would also split inside a HELP text)
        if line.startswith(_READ_PREFIXES):
            kept.append(line)
        elif line.startswith("#"):
            words = line.split(maxsplit=3)
            if len(words) > 2 and words[1] in ("HELP", "TYPE") and words[2].startswith(_READ_PREFIXES):
                kept.append(line)
        elif line.strip() and not _other_sample(line):
            kept.append(line)
    if len(kept) > MAX_LINES_READ:
        raise EngineMetricsError(source, f"{len(kept)} lines of the metrics read, more than the {MAX_LINES_READ} "
                                         "allowed (engines export a few thousand at most)")
    return "\n".join(kept) + "\n"


def _other_sample(line: str) -> bool:
    """Whether a line is a well-formed sample line (a cheap check for the lines dropped unparsed)."""
    name = _METRIC_NAME.match(line)
    if name is None:
        return False
    rest = line[name.end():]
    if rest.startswith("{"):
        rest = rest[rest.rfind("}") + 1:] if "}" in rest else ""
    words = rest.split()
    if not words or not rest[:1].isspace():
        return False
    try:
        float(words[0])  # also "+Inf", "NaN"
    except ValueError:
        return False
    return True


def _engine_of(index: Mapping[str, _Series], engine: str, source: str) -> str:
    if engine != "auto":
        if engine not in ALIASES:
            raise ValueError(f"engine must be 'auto' or one of {sorted(ALIASES)}, got {engine!r}")
        return engine
    found = sorted(e for e in ALIASES if any(name.startswith(e + ":") for name in index))
    if len(found) != 1:
        seen = " and ".join(found) if found else "neither vllm: nor sglang:"
        raise EngineMetricsError(source, f"cannot tell the engine: found {seen} metrics; pass engine=")
    return found[0]


def _stamps(index: Mapping[str, _Series], name: str, source: str) -> dict[_SeriesKey, float]:
    """The timestamps sampled as ``name`` (``process_start_time_seconds``, ``<family>_created``), checked."""
    return {(name, frozenset(labels.items())): _check(value, "", name, labels, source)
            for labels, value in index.get(name, ())}


def _select_model(
    index: Mapping[str, _Series], engine: str, model: str | None, source: str
) -> tuple[dict[str, _Series], str | None, tuple[str, ...]]:
    ours = {name: series for name, series in index.items() if name.startswith(engine + ":")}
    present = tuple(sorted({labels["model_name"] for series in ours.values() for labels, _ in series
                            if "model_name" in labels}))
    if model is None:
        return ours, present[0] if len(present) == 1 else None, present
    kept: dict[str, _Series] = {}
    for name, series in ours.items():
        mine = [(labels, value) for labels, value in series if labels.get("model_name") == model]
        if mine:
            kept[name] = mine
    if not kept:
        raise EngineMetricsError(source, f"no {engine} metrics with model_name={model!r}; models present: "
                                         f"{list(present)}")
    return kept, model, present


def _first_present(index: Mapping[str, _Series], engine: str,
                   canonical: str) -> tuple[str, list[tuple[str, _Labels, float]]] | None:
    """The newest alias present (a family with a label selection: present when a selected label set is) and
    its samples (name, labels, value) that count toward ``canonical``; None when no alias is present."""
    for family in ALIASES[engine][canonical]:
        for suffix in _SUFFIXES[_CANONICAL[canonical][0]]:
            rows = [(family + suffix, labels, value) for labels, value in index.get(family + suffix, ())
                    if _selected(family, canonical, labels)]
            if rows:
                return family, rows
    return None


def _selected(family: str, canonical: str, labels: Mapping[str, str]) -> bool:
    label, values = _LABEL_SELECT.get((family, canonical), ("", ()))
    return not label or labels.get(label) in values


def _kept_rows(engine: str, canonical: str, labels: Sequence[Mapping[str, str]]) -> tuple[list[list[int]], str]:
    """Which label sets count, as groups of copies of one scheduler's numbers (one of each group counts), and
    the selection made (see the module docstring)."""
    meaning, rows, selection = _LABELS[engine], list(range(len(labels))), ""
    if meaning.total and canonical in _QUEUE_GAUGES:  # the total beside a per-priority breakdown
        rows = [i for i in rows if labels[i].get(meaning.total, "") == ""] or rows
    if meaning.streaming and canonical == "ttft_s":  # non-streaming first tokens are stamped late
        streamed = [i for i in rows if labels[i].get(meaning.streaming) == "true"]
        if streamed:
            rows, selection = streamed, f'{meaning.streaming}="true"'
    groups: dict[frozenset[tuple[str, str]], list[int]] = defaultdict(list)
    for i in rows:
        groups[frozenset((k, v) for k, v in labels[i].items() if k not in meaning.replicas)].append(i)
    return list(groups.values()), selection


def _scalar(engine: str, canonical: str, rows: Sequence[tuple[_Labels, float]]) -> tuple[float, str]:
    groups, selection = _kept_rows(engine, canonical, [labels for labels, _ in rows])
    copies = [max(rows[i][1] for i in group) for group in groups]
    merge = _GAUGE_MERGE.get(canonical, sum)
    return merge(copies), selection


def _histogram(engine: str, canonical: str, family: str, index: Mapping[str, _Series],
               source: str) -> tuple[Histogram, str]:
    """A histogram over its label sets (each one validated); the count is the +Inf bucket, which Prometheus
    defines as ``_count``."""
    buckets: dict[frozenset[tuple[str, str]], dict[float, float]] = defaultdict(dict)
    for labels, value in index[family + "_bucket"]:
        if "le" not in labels:
            raise EngineMetricsError(source, f"{family}_bucket sample without an 'le' label: {labels}")
        try:
            le = float(labels["le"])
        except ValueError as exc:
            raise EngineMetricsError(source, f"{family}_bucket has a bad le={labels['le']!r}") from exc
        if not le >= 0:  # NaN, or a negative latency (-Inf would also break the Histogram's finite bounds)
            raise InvalidSample(source, f"{family}_bucket has le={labels['le']}: a latency bound must be ≥ 0")
        key = frozenset((k, v) for k, v in labels.items() if k != "le")
        buckets[key][le] = _check(value, canonical, family + "_bucket", labels, source)
    sums, counts = ({frozenset(labels.items()): _check(value, canonical, family + suffix, labels, source)
                     for labels, value in index.get(family + suffix, ())} for suffix in ("_sum", "_count"))
    keys = list(buckets)
    parts = [_label_set_histogram(buckets[key], sums.get(key, 0.0), counts.get(key), family, dict(key), source)
             for key in keys]
    groups, selection = _kept_rows(engine, canonical, [dict(key) for key in keys])
    if len({part.bounds for part in parts}) > 1:
        raise EngineMetricsError(source, f"{family}: label sets have different bucket bounds, cannot merge")
    copies = [_reduce((parts[i] for i in group), Histogram.upper) for group in groups]
    return _reduce(copies, Histogram.plus), selection


def _reduce(histograms: Iterable[Histogram], op: Callable[[Histogram, Histogram], Histogram]) -> Histogram:
    items = iter(histograms)
    out = next(items)
    for h in items:
        out = op(out, h)
    return out


def _label_set_histogram(buckets: Mapping[float, float], total_sum: float, count: float | None, family: str,
                         labels: Mapping[str, str], source: str) -> Histogram:
    where = f"{family}{_label_text(labels)}"
    if math.inf not in buckets:
        raise EngineMetricsError(source, f"{family}: histogram without a +Inf bucket")
    bounds = tuple(sorted(b for b in buckets if b != math.inf))
    cumulative = tuple(buckets[b] for b in bounds) + (buckets[math.inf],)
    if any(a > b for a, b in itertools.pairwise(cumulative)):
        raise InvalidSample(source, f"{where}: buckets are not cumulative ({cumulative}); the engine's exporter is "
                                    "broken")
    if count is not None and count != cumulative[-1]:
        raise InvalidSample(source, f"{where}: _count {count:g} differs from the +Inf bucket {cumulative[-1]:g}; "
                                    "the engine's exporter is broken")
    return Histogram(bounds, cumulative, total_sum, cumulative[-1])


def restarted(earlier: EngineSample, now: EngineSample) -> bool:
    """Whether the engine restarted between two scrapes, told by a creation timestamp present in both that
    changed (a counter that restarted and then passed its old value shows no decrease)."""
    return any(now.created[key] != stamp for key, stamp in earlier.created.items() if key in now.created)


def check_complete(earlier: EngineSample | None, now: EngineSample) -> None:
    """Raise :class:`MissingMetric` when a metric read in ``earlier`` is gone from ``now``, or a histogram
    required once the engine has served (:data:`REQUIRED_ONCE_SERVING`) is absent."""
    gone = [] if earlier is None else [f"{name} ({source.family})" for name, source in earlier.sources.items()
                                       if name not in now.sources or now.sources[name].family != source.family]
    if gone:
        raise MissingMetric(now.source, f"{', '.join(gone)} disappeared since the previous scrape (a renamed metric "
                                        "or a cut-off body?): the engine's state reads as unknown")
    if now.counters.get("finished", 0.0) > 0:
        absent = [name for name in REQUIRED_ONCE_SERVING[now.engine] if name not in now.histograms]
        if absent:
            tried = "; ".join(", ".join(ALIASES[now.engine][name]) for name in absent)
            raise MissingMetric(now.source, f"{now.engine} engine has finished requests but exports no "
                                            f"{' or '.join(absent)} histogram (tried {tried}): the engine's state "
                                            "reads as unknown")


def window(earlier: EngineSample | None, now: EngineSample, elapsed_s: float = math.nan) -> EngineWindow:
    """The window from ``earlier`` to ``now``; ``earlier`` None means deltas from zero (since engine start).

    An ``earlier`` sample of another engine or model, or one before a restart (:func:`restarted`), is
    treated as None; a metric whose label selection changed counts from zero (its series are new). Raises
    :class:`MissingMetric` for an incomplete ``now`` (:func:`check_complete`).
    """
    if earlier is not None and ((earlier.engine, earlier.model) != (now.engine, now.model) or restarted(earlier, now)):
        earlier = None
    check_complete(earlier, now)

    def before(name: str) -> bool:  # the earlier value of a metric is comparable with the current one
        return earlier is not None and earlier.sources.get(name) == now.sources.get(name)

    def histogram(name: str) -> Histogram:
        if name not in now.histograms:
            return Histogram.empty()
        current = now.histograms[name]
        return current.minus(earlier.histograms[name]) if earlier is not None and before(name) else current

    def counter(name: str) -> float:
        if name not in now.counters:
            return math.nan
        value = now.counters[name]
        previous = earlier.counters[name] if earlier is not None and before(name) else 0.0
        return value if value < previous else value - previous  # a decrease is a restart: count from zero

    return EngineWindow(
        running=now.gauges["running"],
        waiting=now.gauges["waiting"],
        kv_used=now.gauges.get("kv_used", math.nan),
        ttft_s=histogram("ttft_s"),
        itl_s=histogram("itl_s"),
        prompt_tokens=counter("prompt_tokens"),
        generation_tokens=counter("generation_tokens"),
        finished=counter("finished"),
        elapsed_s=elapsed_s,
    )


def render_metrics(
    engine: str,
    model: str | None,
    gauges: Mapping[str, float],
    counters: Mapping[str, float],
    histograms: Mapping[str, Histogram],
) -> str:
    """Prometheus text exposition of canonical metrics under ``engine``'s newest names (a fixture, or what a
    simulated engine serves). ``model`` None writes no ``model_name`` label. ``parse_metrics`` inverts it exactly.
    """
    from prometheus_client.exposition import generate_latest  # the deploy extra

    if engine not in ALIASES:
        raise ValueError(f"engine must be one of {sorted(ALIASES)}, got {engine!r}")
    labels = ([], []) if model is None else (["model_name"], [model])
    families: dict[str, Metric] = {}
    for kind, values in (("gauge", gauges), ("counter", counters), ("histogram", histograms)):
        for canonical, value in values.items():
            if _CANONICAL.get(canonical, ("", ""))[0] != kind:
                names = [name for name, (k, _) in _CANONICAL.items() if k == kind]
                raise ValueError(f"{canonical!r} is not a canonical {kind}; those are {names}")
            name = ALIASES[engine][canonical][0]
            label, values_ = _LABEL_SELECT.get((name, canonical), ("", ()))
            mine = (labels[0] + [label], labels[1] + [values_[0]]) if label else labels
            if name not in families:
                families[name] = _family(kind, name, _FAMILY_HELP.get(name, _CANONICAL[canonical][1]), mine[0])
            _add(families[name], mine[1], value)
    return generate_latest(_Families(list(families.values()))).decode("utf-8")


def _family(kind: str, name: str, doc: str, label_names: list[str]) -> Metric:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily, "histogram": HistogramMetricFamily}[kind]
    return cls(name, doc, labels=label_names)


def _add(family: Metric, label_values: list[str], value: float | Histogram) -> None:
    from prometheus_client.utils import floatToGoString

    if isinstance(value, Histogram):
        buckets = [(floatToGoString(b), c) for b, c in zip(value.bounds, value.counts)]
        family.add_metric(label_values, buckets + [("+Inf", value.count)], value.sum)  # type: ignore[attr-defined]
    else:
        family.add_metric(label_values, value)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Families:
    """The collector interface ``generate_latest`` needs, over fixed families."""

    families: list[Metric]

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class EngineScraper:
    """Scrape one engine's metrics URL; ``poll()`` once per control interval gives the window since the last one.

    A URL without a path gets ``/metrics``; one that cannot be fetched (scheme, host, port, path) is an
    :class:`EngineMetricsError` (:meth:`target`). Proxy environment variables are ignored: engines are
    reached on the host or the cluster network, never through an HTTP proxy. ``timeout_s`` is one deadline
    for the whole scrape (connecting, the headers and every byte of the body), so an endpoint that drips
    bytes cannot hold the control loop longer; the host name's lookup is the resolver's (give an address,
    or a name in ``/etc/hosts``, where a slow DNS server is possible). ``max_bytes`` caps the body.
    ``model`` picks one ``model_name`` on an endpoint that serves several (without it such an endpoint is an
    error, not a merge).
    """

    def __init__(self, url: str, model: str | None = None, engine: str = "auto", timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, max_bytes: int = MAX_BODY_BYTES):
        self.url = _metrics_url(url)
        self.clock = clock  # seconds; a simulated engine passes the simulator's time
        self.model = model
        self.engine = engine
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._last: tuple[EngineSample, float] | None = None

    def scrape(self) -> EngineSample:
        """One cumulative sample. Raises EngineUnreachable, or EngineMetricsError for a bad answer."""
        sample = parse_metrics(self.fetch(), self.engine, self.model, source=self.url)
        if self.model is None and len(sample.models) > 1:
            raise EngineMetricsError(self.url, f"serves several models ({', '.join(sample.models)}): pick this "
                                               "engine's with --served-model MODEL=MODEL_NAME")
        return sample

    def target(self) -> tuple[str, str, int | None, str]:
        """The URL's scheme, host, port and request path; :class:`EngineMetricsError` when it cannot be
        fetched (a setting to fix, not an engine down: the CLI checks it before the loop starts)."""
        return _http_target(self.url)

    def fetch(self) -> str:
        """The metrics body, within ``timeout_s`` overall and ``max_bytes``."""
        scheme, host, port, path = self.target()
        connection_cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        connection = connection_cls(host, port, timeout=self.timeout_s)
        expired, connected = threading.Event(), False
        # Socket timeouts bound each read, not the scrape: at the deadline the socket is shut down instead.
        timer = threading.Timer(self.timeout_s, _abort, (connection, expired))
        timer.daemon = True
        timer.start()
        try:
            connection.connect()
            connected = True
            if expired.is_set():  # the deadline passed while connecting, before there was a socket to shut down
                raise self._timed_out(True)
            connection.request("GET", path, headers={"Accept": "text/plain", "Accept-Encoding": "identity"})
            response = connection.getresponse()
            if response.status != 200:
                raise EngineUnreachable(self.url, f"HTTP {response.status} {response.reason}", listening=True)
            body = self._read_body(response)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, shut down at the deadline, bad HTTP
            if expired.is_set():
                raise self._timed_out(connected) from exc
            raise EngineUnreachable(self.url, f"{type(exc).__name__}: {exc}", connected) from exc
        finally:
            timer.cancel()
            connection.close()
        if expired.is_set():  # the shutdown may read as the end of a body sent without a length
            raise self._timed_out(True)
        return body.decode("utf-8", errors="replace")

    def _timed_out(self, listening: bool) -> EngineUnreachable:
        return EngineUnreachable(self.url, f"timed out: no complete answer within {self.timeout_s:g} s", listening)

    def _read_body(self, response: http.client.HTTPResponse) -> bytes:
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise self._too_large(f"announces {int(length)} bytes")
        chunks, size = [], 0
        while chunk := response.read(min(2**16, self.max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large("sent more")
        return b"".join(chunks)

    def _too_large(self, what: str) -> EngineMetricsError:
        return EngineMetricsError(self.url, f"metrics body {what} than the {self.max_bytes} bytes allowed "
                                            "(--scrape-max-bytes)")

    def poll(self) -> EngineWindow | None:
        """The window since the last successful scrape; None on the first success.

        The first scrape gives None rather than a window from engine start, which would mix the engine's whole
        history into one interval. A failed scrape raises and keeps the previous sample, so the next window
        spans the gap (its ``elapsed_s`` says how long); so does an incomplete one (:func:`check_complete`).
        """
        sample = self.scrape()
        now = self.clock()
        if self._last is None:
            check_complete(None, sample)
            self._last = (sample, now)
            return None
        previous, then = self._last
        result = window(previous, sample, elapsed_s=now - then)
        self._last = (sample, now)
        return result


def _abort(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    """Wake a read blocked past the deadline: shut the socket down (closing it from another thread would not)."""
    expired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _metrics_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket
        raise EngineMetricsError(url, f"not a valid metrics URL: {exc}") from None
    return url.rstrip("/") + "/metrics" if parts.path in ("", "/") else url


def _http_target(url: str) -> tuple[str, str, int | None, str]:
    """``url``'s scheme, host, port and request path, once it is known to be one that can be fetched:
    http(s), a host name that can be looked up, a port in range and a path HTTP can carry (else
    :class:`EngineMetricsError`)."""
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http:// or https:// URL with a host")
        parts.hostname.encode("idna")  # what the name lookup does; a label over 63 characters fails
        if not path.isascii() or any(ord(c) <= 32 or ord(c) == 127 for c in path):  # what HTTP/1.1 can send
            raise ValueError("the path and query must be printable ASCII without spaces (percent-encode the rest)")
        return parts.scheme, parts.hostname, parts.port, path  # the port raises: out of range, not a number
    except ValueError as exc:  # UnicodeError is one
        raise EngineMetricsError(url, f"not a valid metrics URL: {exc}") from None
