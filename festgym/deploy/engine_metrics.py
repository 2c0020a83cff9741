"""Read an LLM serving engine's Prometheus ``/metrics`` (vLLM, SGLang) once per control interval.

A controller needs, per interval and per engine: the queue (``waiting``), the batch (``running``), the KV-cache
use (``kv_used``, a fraction 0..1), and the time to first token and inter-token latency of the tokens served in
that interval. This module turns the engines' text exposition into those numbers.

Alias table. Engines rename metrics between releases (vLLM 0.9 renamed ``gpu_cache_usage_perc`` to
``kv_cache_usage_perc`` and ``time_per_output_token_seconds`` to ``inter_token_latency_seconds``; SGLang did the
same for its inter-token histogram). ``ALIASES[engine][canonical]`` lists the metric family names that may carry a
canonical quantity, newest first; the first one present wins. Counters are listed by family name, without the
``_total`` suffix the exposition adds (the sample read is ``<name>_total``, or a bare ``<name>``).

Windowing. Engines export cumulative counters and cumulative histograms since start. The window between two
scrapes is the difference of the two: bucket-wise for histograms, so that quantiles, means and the share of
tokens over an SLO describe only that interval, not the engine's whole history. A decrease means the engine
restarted; like Prometheus' ``rate()`` we then take the newer value as the whole delta (the earlier one as zero).

Assumptions:
- Samples are read by sample name, so a text without ``# TYPE`` lines parses the same.
- Several label sets of one metric (vLLM's ``engine`` label under data parallelism, SGLang's ``dp_rank`` or
  ``priority``, vLLM's ``finished_reason``) are merged: counters and histograms are summed (histograms need equal
  bucket bounds), ``running`` and ``waiting`` are summed (requests of the whole server), and ``kv_used`` takes the
  maximum, because a sum of fractions is meaningless and the fullest engine is the one that preempts first.
- Without a ``model`` filter all models found are merged; ``EngineSample.model`` is then the one ``model_name``
  seen, or None when there are none or several.
- Latencies are non-negative: the first bucket's lower bound is 0, as in PromQL's ``histogram_quantile``.
"""

from __future__ import annotations

import http.client
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
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
        "prompt_tokens": ("sglang:prompt_tokens",),
        "generation_tokens": ("sglang:generation_tokens",),
        "finished": ("sglang:num_requests",),
    },
}

# vLLM's bucket edges (vllm/v1/metrics/loggers.py) for the TTFT and inter-token latency histograms.
TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)
ITL_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)

# How label sets of one gauge combine (see the module docstring).
_GAUGE_MERGE: dict[str, Callable[[Iterable[float]], float]] = {"running": sum, "waiting": sum, "kv_used": max}
# Sample names that carry a family's values, per kind.
_SUFFIXES: dict[str, tuple[str, ...]] = {"gauge": ("",), "counter": ("_total", ""), "histogram": ("_bucket",)}

_Series = list[tuple[dict[str, str], float]]


class EngineMetricsError(FestgymError):
    """An engine's metrics text is malformed, or lacks a metric the controller needs."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class EngineUnreachable(EngineMetricsError):
    """The metrics URL did not answer: connection refused, timeout, or an HTTP error status."""

    def __init__(self, url: str, cause: str):
        self.cause = cause
        super().__init__(url, f"engine metrics unreachable: {cause}")


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
class EngineSample:
    """One scrape, cumulative as the engine exports it, keyed by canonical names."""

    engine: str
    model: str | None
    gauges: dict[str, float]
    counters: dict[str, float]
    histograms: dict[str, Histogram]
    missing: tuple[str, ...]


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
    absent are listed in ``missing``. Errors name ``source`` (a URL or file).
    """
    index = _read_samples(text, source)
    engine = _engine_of(index, engine, source)
    index, model = _select_model(index, engine, model, source)
    gauges: dict[str, float] = {}
    counters: dict[str, float] = {}
    histograms: dict[str, Histogram] = {}
    missing: list[str] = []
    for canonical, (kind, _) in _CANONICAL.items():
        name = _first_present(index, ALIASES[engine][canonical], _SUFFIXES[kind])
        if name is None:
            missing.append(canonical)
        elif kind == "gauge":
            gauges[canonical] = _GAUGE_MERGE[canonical](value for _, value in index[name])
        elif kind == "counter":
            counters[canonical] = sum(value for _, value in index[name])
        else:
            histograms[canonical] = _merged_histogram(index, name.removesuffix("_bucket"), source)
    for canonical in REQUIRED:
        if canonical in missing:
            tried = ", ".join(ALIASES[engine][canonical])
            raise EngineMetricsError(source, f"required {engine} metric '{canonical}' not found (tried {tried})")
    return EngineSample(engine, model, gauges, counters, histograms, tuple(missing))


def _read_samples(text: str, source: str) -> dict[str, _Series]:
    from prometheus_client.parser import text_string_to_metric_families  # the deploy extra

    index: dict[str, _Series] = defaultdict(list)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                index[sample.name].append((sample.labels, sample.value))
    except (ValueError, IndexError) as exc:  # the parser's errors for lines it cannot read
        raise EngineMetricsError(source, f"malformed Prometheus text: {exc or type(exc).__name__}") from exc
    return dict(index)


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


def _select_model(
    index: Mapping[str, _Series], engine: str, model: str | None, source: str
) -> tuple[dict[str, _Series], str | None]:
    ours = {name: series for name, series in index.items() if name.startswith(engine + ":")}
    present = sorted({labels["model_name"] for series in ours.values() for labels, _ in series
                      if "model_name" in labels})
    if model is None:
        return ours, present[0] if len(present) == 1 else None
    kept: dict[str, _Series] = {}
    for name, series in ours.items():
        mine = [(labels, value) for labels, value in series if labels.get("model_name") == model]
        if mine:
            kept[name] = mine
    if not kept:
        raise EngineMetricsError(source, f"no {engine} metrics with model_name={model!r}; models present: {present}")
    return kept, model


def _first_present(index: Mapping[str, _Series], aliases: Iterable[str], suffixes: Iterable[str]) -> str | None:
    """The sample name of the newest alias present, or None."""
    return next((alias + suffix for alias in aliases for suffix in suffixes if alias + suffix in index), None)


def _merged_histogram(index: Mapping[str, _Series], base: str, source: str) -> Histogram:
    """Sum a histogram over its label sets; the count is the +Inf bucket, which Prometheus defines as ``_count``."""
    by_labels: dict[frozenset[tuple[str, str]], dict[float, float]] = defaultdict(dict)
    for labels, value in index[base + "_bucket"]:
        if "le" not in labels:
            raise EngineMetricsError(source, f"{base}_bucket sample without an 'le' label: {labels}")
        try:
            le = float(labels["le"])
        except ValueError as exc:
            raise EngineMetricsError(source, f"{base}_bucket has a bad le={labels['le']!r}") from exc
        by_labels[frozenset((k, v) for k, v in labels.items() if k != "le")][le] = value
    parts = [_label_set_histogram(buckets, base, source) for buckets in by_labels.values()]
    if len({part.bounds for part in parts}) > 1:
        raise EngineMetricsError(source, f"{base}: label sets have different bucket bounds, cannot merge")
    counts = tuple(map(sum, zip(*(part.counts for part in parts))))
    total_sum = sum(value for _, value in index.get(base + "_sum", ()))
    return Histogram(parts[0].bounds, counts, total_sum, counts[-1])


def _label_set_histogram(buckets: Mapping[float, float], base: str, source: str) -> Histogram:
    if math.inf not in buckets:
        raise EngineMetricsError(source, f"{base}: histogram without a +Inf bucket")
    bounds = tuple(sorted(b for b in buckets if b != math.inf))
    counts = tuple(buckets[b] for b in bounds) + (buckets[math.inf],)
    return Histogram(bounds, counts, 0.0, counts[-1])


def window(earlier: EngineSample | None, now: EngineSample, elapsed_s: float = math.nan) -> EngineWindow:
    """The window from ``earlier`` to ``now``; ``earlier`` None means deltas from zero (since engine start).

    An ``earlier`` sample of another engine or model is treated like a restart (as if None).
    """
    if earlier is not None and (earlier.engine, earlier.model) != (now.engine, now.model):
        earlier = None
    before = earlier or EngineSample(now.engine, now.model, {}, {}, {}, ())

    def histogram(name: str) -> Histogram:
        if name not in now.histograms:
            return Histogram.empty()
        return now.histograms[name].minus(before.histograms.get(name, Histogram.empty()))

    def counter(name: str) -> float:
        if name not in now.counters:
            return math.nan
        value, previous = now.counters[name], before.counters.get(name, 0.0)
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
    families = []
    for kind, values in (("gauge", gauges), ("counter", counters), ("histogram", histograms)):
        for canonical, value in values.items():
            if _CANONICAL.get(canonical, ("", ""))[0] != kind:
                names = [name for name, (k, _) in _CANONICAL.items() if k == kind]
                raise ValueError(f"{canonical!r} is not a canonical {kind}; those are {names}")
            families.append(_family(kind, ALIASES[engine][canonical][0], canonical, labels, value))
    return generate_latest(_Families(families)).decode("utf-8")


def _family(
    kind: str, name: str, canonical: str, labels: tuple[list[str], list[str]], value: float | Histogram
) -> Metric:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.utils import floatToGoString

    label_names, label_values = labels
    doc = _CANONICAL[canonical][1]
    if isinstance(value, Histogram):
        histogram = HistogramMetricFamily(name, doc, labels=label_names)
        buckets = [(floatToGoString(b), c) for b, c in zip(value.bounds, value.counts)]
        histogram.add_metric(label_values, buckets + [("+Inf", value.count)], value.sum)
        return histogram
    family = GaugeMetricFamily(name, doc, labels=label_names) if kind == "gauge" else \
        CounterMetricFamily(name, doc, labels=label_names)
    family.add_metric(label_values, value)
    return family


@dataclass(frozen=True)
class _Families:
    """The collector interface ``generate_latest`` needs, over fixed families."""

    families: list[Metric]

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class EngineScraper:
    """Scrape one engine's metrics URL; ``poll()`` once per control interval gives the window since the last one.

    A URL without a path gets ``/metrics``. Proxy environment variables are ignored: engines are reached on the
    host or the cluster network, never through an HTTP proxy.
    """

    def __init__(self, url: str, model: str | None = None, engine: str = "auto", timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.url = _metrics_url(url)
        self.clock = clock  # seconds; a simulated engine passes the simulator's time
        self.model = model
        self.engine = engine
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._last: tuple[EngineSample, float] | None = None

    def scrape(self) -> EngineSample:
        """One cumulative sample. Raises EngineUnreachable, or EngineMetricsError for a bad answer."""
        try:
            with self._opener.open(self.url, timeout=self.timeout_s) as response:
                text = response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            exc.close()
            raise EngineUnreachable(self.url, f"HTTP {exc.code} {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, bad HTTP
            cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise EngineUnreachable(self.url, f"{type(cause).__name__}: {cause}") from exc
        return parse_metrics(text, self.engine, self.model, source=self.url)

    def poll(self) -> EngineWindow | None:
        """The window since the last successful scrape; None on the first success.

        The first scrape gives None rather than a window from engine start, which would mix the engine's whole
        history into one interval. A failed scrape raises and keeps the previous sample, so the next window
        spans the gap (its ``elapsed_s`` says how long).
        """
        sample = self.scrape()
        now = self.clock()
        previous, self._last = self._last, (sample, now)
        if previous is None:
            return None
        return window(previous[0], sample, elapsed_s=now - previous[1])


def _metrics_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return url.rstrip("/") + "/metrics" if parts.path in ("", "/") else url
