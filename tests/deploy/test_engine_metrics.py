"""festgym.deploy.engine_metrics: parsing vLLM/SGLang /metrics, histogram windows, and the HTTP scraper."""

from __future__ import annotations

import http.server
import math
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from festgym.deploy.engine_metrics import (
    ALIASES,
    ITL_BUCKETS_S,
    TTFT_BUCKETS_S,
    EngineMetricsError,
    EngineSample,
    EngineScraper,
    EngineUnreachable,
    Histogram,
    InvalidSample,
    MissingMetric,
    parse_metrics,
    render_metrics,
    window,
)

# vLLM before 0.9 (gpu_cache_usage_perc, time_per_output_token_seconds), two models, data parallel for llama.
OLD_VLLM = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="1",model_name="llama"} 2.0
vllm:num_requests_running{engine="0",model_name="qwen"} 7.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 1.0
vllm:num_requests_waiting{engine="1",model_name="llama"} 0.0
vllm:num_requests_waiting{engine="0",model_name="qwen"} 4.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="llama"} 0.4
vllm:gpu_cache_usage_perc{engine="1",model_name="llama"} 0.7
vllm:gpu_cache_usage_perc{engine="0",model_name="qwen"} 0.9
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="llama"} 10.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="llama"} 5.0
vllm:request_success_total{engine="1",finished_reason="stop",model_name="llama"} 2.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="qwen"} 100.0
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{engine="0",le="0.025",model_name="llama"} 4.0
vllm:time_per_output_token_seconds_bucket{engine="0",le="0.05",model_name="llama"} 6.0
vllm:time_per_output_token_seconds_bucket{engine="0",le="+Inf",model_name="llama"} 7.0
vllm:time_per_output_token_seconds_count{engine="0",model_name="llama"} 7.0
vllm:time_per_output_token_seconds_sum{engine="0",model_name="llama"} 0.5
vllm:time_per_output_token_seconds_bucket{engine="1",le="0.025",model_name="llama"} 1.0
vllm:time_per_output_token_seconds_bucket{engine="1",le="0.05",model_name="llama"} 3.0
vllm:time_per_output_token_seconds_bucket{engine="1",le="+Inf",model_name="llama"} 3.0
vllm:time_per_output_token_seconds_count{engine="1",model_name="llama"} 3.0
vllm:time_per_output_token_seconds_sum{engine="1",model_name="llama"} 0.1
vllm:time_per_output_token_seconds_bucket{engine="0",le="0.025",model_name="qwen"} 0.0
vllm:time_per_output_token_seconds_bucket{engine="0",le="0.05",model_name="qwen"} 0.0
vllm:time_per_output_token_seconds_bucket{engine="0",le="+Inf",model_name="qwen"} 50.0
vllm:time_per_output_token_seconds_count{engine="0",model_name="qwen"} 50.0
vllm:time_per_output_token_seconds_sum{engine="0",model_name="qwen"} 10.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.0
"""

# SGLang with its older inter-token name; most lines carry no # TYPE, as a hand-edited text may not.
OLD_SGLANG = """\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="qwen"} 8.0
sglang:num_queue_reqs{model_name="qwen"} 2.0
sglang:token_usage{model_name="qwen"} 0.55
sglang:prompt_tokens_total{model_name="qwen"} 1200.0
sglang:generation_tokens_total{model_name="qwen"} 3400.0
sglang:num_requests_total{model_name="qwen"} 30.0
sglang:time_per_output_token_seconds_bucket{le="0.01",model_name="qwen"} 20.0
sglang:time_per_output_token_seconds_bucket{le="0.02",model_name="qwen"} 28.0
sglang:time_per_output_token_seconds_bucket{le="+Inf",model_name="qwen"} 30.0
sglang:time_per_output_token_seconds_sum{model_name="qwen"} 0.4
sglang:time_per_output_token_seconds_count{model_name="qwen"} 30.0
"""

# Buckets 0.1, 0.2, 0.5 holding 2, 4, 3 observations, and 1 above 0.5.
H = Histogram(bounds=(0.1, 0.2, 0.5), counts=(2, 6, 9, 10), sum=3.0, count=10)


def _sample_text(engine: str, model: str | None, step: int) -> str:
    """A cumulative scrape after ``step`` identical intervals: each adds 100 prompt tokens and 3 TTFTs."""
    ttft = Histogram.from_values(TTFT_BUCKETS_S, [0.03, 0.2, 3.0] * step)
    itl = Histogram.from_values(ITL_BUCKETS_S, [0.02] * 10 * step)
    return render_metrics(
        engine, model,
        gauges={"running": 4 + step, "waiting": step, "kv_used": 0.1 * step},
        counters={"prompt_tokens": 100 * step, "generation_tokens": 50 * step, "finished": 2 * step},
        histograms={"ttft_s": ttft, "itl_s": itl},
    )


# --- parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine, model", [("vllm", 'llama "8b"'), ("sglang", None)])
def test_render_then_parse_round_trips_exactly(engine, model):
    gauges = {"running": 5.0, "waiting": 2.0, "kv_used": 0.375}
    counters = {"prompt_tokens": 1234.0, "generation_tokens": 5678.0, "finished": 9.0}
    histograms = {
        "ttft_s": Histogram.from_values(TTFT_BUCKETS_S, [0.0005, 0.03, 0.1, 7.7, 3000.0]),
        "itl_s": Histogram.from_values(ITL_BUCKETS_S, [0.011, 0.012, 0.4]),
    }
    text = render_metrics(engine, model, gauges, counters, histograms)
    sample = parse_metrics(text)
    assert sample == EngineSample(engine, model, gauges, counters, histograms, missing=())
    newest = ALIASES[engine]
    assert f"# TYPE {newest['ttft_s'][0]} histogram" in text
    assert f"{newest['prompt_tokens'][0]}_total" in text
    assert f"{newest['kv_used'][0]}{{" in text or f"{newest['kv_used'][0]} " in text


def test_render_uses_newest_vllm_names():
    text = _sample_text("vllm", "m", 1)
    assert 'vllm:kv_cache_usage_perc{model_name="m"} 0.1' in text
    assert 'vllm:inter_token_latency_seconds_bucket{le="0.025",model_name="m"} 10.0' in text
    assert 'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 3.0' in text
    assert "gpu_cache_usage_perc" not in text and "time_per_output_token" not in text


def test_old_vllm_names_are_read_through_aliases_and_filtered_by_model():
    sample = parse_metrics(OLD_VLLM, model="llama", source="old.prom")
    assert sample.engine == "vllm" and sample.model == "llama"
    assert sample.gauges == {"running": 5.0, "waiting": 1.0, "kv_used": 0.7}  # summed, summed, max
    assert sample.counters == {"finished": 17.0}  # over finished_reason and engine labels
    assert sample.histograms["itl_s"] == Histogram((0.025, 0.05), (5, 9, 10), 0.6, 10)
    assert sample.missing == ("ttft_s", "prompt_tokens", "generation_tokens")


def test_without_model_filter_all_models_merge():
    sample = parse_metrics(OLD_VLLM)
    assert sample.model is None
    assert sample.gauges["running"] == 12.0
    assert sample.counters["finished"] == 117.0
    assert sample.histograms["itl_s"].counts == (5.0, 9.0, 60.0)


def test_sglang_aliases_and_untyped_lines():
    sample = parse_metrics(OLD_SGLANG)
    assert (sample.engine, sample.model) == ("sglang", "qwen")
    assert sample.gauges == {"running": 8.0, "waiting": 2.0, "kv_used": 0.55}
    assert sample.counters == {"prompt_tokens": 1200.0, "generation_tokens": 3400.0, "finished": 30.0}
    assert sample.histograms["itl_s"] == Histogram((0.01, 0.02), (20, 28, 30), 0.4, 30)
    assert sample.missing == ("ttft_s",)


def test_newest_alias_wins_when_both_are_exported():
    text = OLD_VLLM + 'vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.25\n'
    assert parse_metrics(text, model="llama").gauges["kv_used"] == 0.25


def test_unknown_model_error_lists_models_present():
    with pytest.raises(EngineMetricsError, match=r"old\.prom: no vllm metrics with model_name='mistral'.*"
                                                 r"\['llama', 'qwen'\]"):
        parse_metrics(OLD_VLLM, model="mistral", source="old.prom")


def test_missing_required_metric_names_source_metric_and_aliases():
    text = "\n".join(line for line in OLD_SGLANG.splitlines() if "num_queue_reqs" not in line)
    with pytest.raises(EngineMetricsError) as err:
        parse_metrics(text, source="http://gpu3:30000/metrics")
    message = str(err.value)
    assert message.startswith("http://gpu3:30000/metrics: ")
    assert "'waiting'" in message and "sglang:num_queue_reqs" in message


@pytest.mark.parametrize("text", [
    'vllm:num_requests_running{model_name="m} 3\n',
    "vllm:num_requests_running three\n",
    "<html><body>404 Not Found</body></html>\n",
])
def test_malformed_text_is_an_engine_metrics_error(text):
    with pytest.raises(EngineMetricsError, match=r"^engine\.prom: malformed Prometheus text"):
        parse_metrics(text, source="engine.prom")


def test_engine_detection():
    with pytest.raises(EngineMetricsError, match="neither vllm: nor sglang:"):
        parse_metrics("process_cpu_seconds_total 1.0\n")
    both = OLD_SGLANG + OLD_VLLM
    with pytest.raises(EngineMetricsError, match="found sglang and vllm metrics; pass engine="):
        parse_metrics(both)
    assert parse_metrics(both, engine="sglang").gauges["running"] == 8.0
    with pytest.raises(ValueError, match="engine must be"):
        parse_metrics(OLD_VLLM, engine="tgi")


def test_histogram_without_inf_bucket_is_an_error():
    text = OLD_SGLANG.replace('sglang:time_per_output_token_seconds_bucket{le="+Inf",model_name="qwen"} 30.0\n', "")
    with pytest.raises(EngineMetricsError, match=r"sglang:time_per_output_token_seconds: .*\+Inf"):
        parse_metrics(text)


def test_render_rejects_a_name_of_the_wrong_kind():
    with pytest.raises(ValueError, match="'ttft_s' is not a canonical gauge"):
        render_metrics("vllm", None, {"ttft_s": 1.0}, {}, {})


# --- histogram arithmetic --------------------------------------------------------------------------------------


def test_quantile_interpolates_like_promql():
    assert H.quantile(0.5) == pytest.approx(0.175, abs=1e-12)  # rank 5: 3rd of 4 in (0.1, 0.2]
    assert H.quantile(0.8) == pytest.approx(0.4, abs=1e-12)  # rank 8: 2nd of 3 in (0.2, 0.5]
    assert H.quantile(0.9) == pytest.approx(0.5, abs=1e-12)
    assert H.quantile(0.1) == pytest.approx(0.05, abs=1e-12)  # first bucket starts at 0
    assert H.quantile(0.95) == 0.5  # rank in +Inf: highest finite bound
    assert Histogram((0.1, 0.2), (0, 2, 2), 0.3, 2).quantile(0.0) == 0.1  # the first non-empty bucket's start
    with pytest.raises(ValueError):
        H.quantile(1.5)


def test_mean_max_bound_and_fraction_over():
    assert H.mean() == pytest.approx(0.3)
    assert H.max_bound() == math.inf  # one observation above 0.5
    assert Histogram((0.1, 0.2, 0.5), (2, 6, 9, 9), 2.0, 9).max_bound() == 0.5
    assert Histogram((0.1, 0.2, 0.5), (2, 2, 2, 2), 0.1, 2).max_bound() == 0.1
    assert H.fraction_over(0.15) == pytest.approx(0.6)  # 2 + 4 * 0.5 at or below
    assert H.fraction_over(0.05) == pytest.approx(0.9)
    assert H.fraction_over(0.5) == pytest.approx(0.1)
    assert H.fraction_over(10.0) == pytest.approx(0.1)  # the +Inf observation counts as above
    assert H.fraction_over(H.quantile(0.8)) == pytest.approx(0.2)


def test_empty_histogram_statistics_are_nan():
    empty = Histogram.empty((0.1, 0.2))
    for value in (empty.mean(), empty.quantile(0.5), empty.max_bound(), empty.fraction_over(0.1)):
        assert math.isnan(value)


def test_from_values_counts_a_value_on_a_bound_in_that_bucket():
    assert Histogram.from_values((0.1, 0.2, 0.5), [0.1, 0.15, 0.2, 0.7]) == Histogram(
        (0.1, 0.2, 0.5), (1, 3, 3, 4), 1.15, 4)


def test_minus_gives_the_delta_and_treats_a_decrease_as_restart():
    earlier = Histogram((0.1, 0.2, 0.5), (1, 2, 4, 4), 1.0, 4)
    assert H.minus(earlier) == Histogram((0.1, 0.2, 0.5), (1, 4, 5, 6), 2.0, 6)
    restarted = Histogram((0.1, 0.2, 0.5), (0, 1, 1, 1), 0.15, 1)
    assert restarted.minus(H) == restarted
    assert H.minus(Histogram.empty((1.0, 2.0, 3.0))) == H  # other bounds: a reconfigured engine
    assert H.minus(H).count == 0.0 and math.isnan(H.minus(H).quantile(0.5))
    assert earlier.plus(H.minus(earlier)) == H


def test_histogram_validates_its_shape():
    with pytest.raises(ValueError, match="need 3 counts"):
        Histogram((0.1, 0.2), (1, 2), 0.0, 2)
    with pytest.raises(ValueError, match="ascending"):
        Histogram((0.2, 0.1), (1, 2, 2), 0.0, 2)
    with pytest.raises(ValueError, match="differs from the \\+Inf bucket"):
        Histogram((0.1,), (1, 2), 0.0, 3)


# --- windows ---------------------------------------------------------------------------------------------------


def test_window_between_two_scrapes():
    first, second = (parse_metrics(_sample_text("vllm", "m", step)) for step in (2, 3))
    w = window(first, second, elapsed_s=5.0)
    assert (w.running, w.waiting, w.kv_used) == (7.0, 3.0, pytest.approx(0.3))
    assert (w.prompt_tokens, w.generation_tokens, w.finished) == (100.0, 50.0, 2.0)
    assert w.ttft_s.counts == Histogram.from_values(TTFT_BUCKETS_S, [0.03, 0.2, 3.0]).counts
    assert w.ttft_s.sum == pytest.approx(3.23)
    assert w.ttft_s.quantile(0.5) == pytest.approx(0.1 + 0.15 * 0.5)  # rank 1.5 in (0.1, 0.25]
    assert w.itl_s.count == 10.0 and w.itl_s.mean() == pytest.approx(0.02)
    assert w.elapsed_s == 5.0


def test_window_from_none_counter_reset_and_missing_metrics():
    second = parse_metrics(_sample_text("vllm", "m", 3))
    assert window(None, second).prompt_tokens == 300.0
    restarted = parse_metrics(_sample_text("vllm", "m", 1))
    w = window(second, restarted)
    assert (w.prompt_tokens, w.ttft_s.count) == (100.0, 3.0)
    sparse = parse_metrics(render_metrics("sglang", None, {"running": 1, "waiting": 0}, {}, {}))
    w = window(sparse, sparse)
    assert math.isnan(w.kv_used) and math.isnan(w.finished) and math.isnan(w.elapsed_s)
    assert w.ttft_s.count == 0.0 and math.isnan(w.itl_s.quantile(0.99))


def test_window_across_a_different_model_counts_from_zero():
    w = window(parse_metrics(_sample_text("vllm", "a", 2)), parse_metrics(_sample_text("vllm", "b", 3)))
    assert w.prompt_tokens == 300.0


# --- scraping over HTTP ----------------------------------------------------------------------------------------


class _EngineHandler(http.server.BaseHTTPRequestHandler):
    """Serves the server's queued texts in turn (the last one repeats), with its status and delay."""

    def do_GET(self) -> None:
        server = self.server
        time.sleep(server.delay_s)
        try:
            if self.path != "/metrics":
                self.send_error(404)
            elif server.status != 200:
                self.send_error(server.status)
            else:
                body = (server.texts.pop(0) if len(server.texts) > 1 else server.texts[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def engine_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EngineHandler)
    server.daemon_threads = True
    server.texts, server.status, server.delay_s = [], 200, 0.0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _base_url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_scraper_polls_windows_and_survives_errors(engine_server):
    engine_server.texts = [_sample_text("vllm", "m", step) for step in (1, 2)]
    scraper = EngineScraper(_base_url(engine_server), model="m", timeout_s=1.0)
    assert scraper.url == _base_url(engine_server) + "/metrics"
    assert scraper.poll() is None
    w = scraper.poll()
    assert (w.running, w.prompt_tokens, w.ttft_s.count) == (6.0, 100.0, 3.0)
    assert 0.0 < w.elapsed_s < 1.0

    engine_server.status = 500
    with pytest.raises(EngineUnreachable, match=r"^http://127\.0\.0\.1:\d+/metrics: .*HTTP 500"):
        scraper.poll()
    engine_server.status = 200
    engine_server.texts = [_sample_text("vllm", "m", 4)]
    assert scraper.poll().prompt_tokens == 200.0  # the window spans the failed scrape


def test_scraper_ignores_proxy_settings(engine_server, monkeypatch):
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    engine_server.texts = [OLD_SGLANG]
    assert EngineScraper(_base_url(engine_server)).scrape().gauges["running"] == 8.0


def test_scraper_reports_http_errors_and_bad_bodies(engine_server):
    engine_server.texts = ["not metrics at all\n"]
    with pytest.raises(EngineUnreachable, match="HTTP 404"):
        EngineScraper(_base_url(engine_server) + "/nope").scrape()
    with pytest.raises(EngineMetricsError, match="/metrics: malformed Prometheus text") as err:
        EngineScraper(_base_url(engine_server) + "/metrics").scrape()
    assert not isinstance(err.value, EngineUnreachable)


def test_scraper_times_out(engine_server):
    engine_server.texts = [_sample_text("sglang", None, 1)]
    engine_server.delay_s = 0.5
    with pytest.raises(EngineUnreachable, match="timed out"):
        EngineScraper(_base_url(engine_server), timeout_s=0.1).scrape()


def test_scraper_reports_a_refused_connection():
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    with pytest.raises(EngineUnreachable, match=rf"^{url}: engine metrics unreachable: ConnectionRefusedError"):
        EngineScraper(url, timeout_s=0.5).scrape()


# --- values that cannot be trusted -------------------------------------------------------------------------------

READ_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")
FIXTURES = {"vllm": _sample_text("vllm", "m", 2), "sglang": _sample_text("sglang", "q", 2), "old vllm": OLD_VLLM,
            "old sglang": OLD_SGLANG}


def _read_lines(text: str) -> dict[int, str]:
    """The sample lines (index: family) of every family the parser read from ``text`` (EngineSample.sources)."""
    families = {source.family for source in parse_metrics(text).sources.values()}
    names = {f + suffix: f for f in families for suffix in READ_SUFFIXES}
    rows = {i: line.partition("{")[0].partition(" ")[0] for i, line in enumerate(text.splitlines())}
    return {i: names[name] for i, name in rows.items() if name in names}


def _with_value(text: str, index: int, value: str) -> str:
    lines = text.splitlines()
    lines[index] = f"{lines[index].rpartition(' ')[0]} {value}"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("bad", ["NaN", "+Inf", "-Inf", "-1", "-0.5"])
@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_an_impossible_value_in_any_sample_read_refuses_the_scrape(fixture, bad):
    """Every gauge, counter and histogram bucket, sum and count the parser reads (vLLM and SGLang, newest
    and older names): NaN, infinite or negative anywhere makes the whole sample invalid, naming it."""
    text = FIXTURES[fixture]
    lines = _read_lines(text)
    assert set(lines.values()) == {s.family for s in parse_metrics(text).sources.values()}  # each one is tried
    for i in lines:
        name = text.splitlines()[i].partition("{")[0].partition(" ")[0]
        with pytest.raises(InvalidSample, match=re.escape(name)):
            parse_metrics(_with_value(text, i, bad), source="engine.prom")


def test_every_canonical_metric_of_both_engines_is_read_and_validated():
    for engine in ALIASES:
        assert set(parse_metrics(FIXTURES[engine]).sources) == set(ALIASES[engine])


@pytest.mark.parametrize("engine, name", [("vllm", "vllm:kv_cache_usage_perc"), ("sglang", "sglang:token_usage")])
def test_kv_use_is_a_fraction_so_seven_hundred_percent_is_refused(engine, name):
    text = FIXTURES[engine]
    line = next(i for i, row in enumerate(text.splitlines()) if row.startswith(name))
    assert parse_metrics(_with_value(text, line, "1.0")).gauges["kv_used"] == 1.0
    with pytest.raises(InvalidSample, match=rf"{name}.* is 7\.0, outside \[0, 1\]"):
        parse_metrics(_with_value(text, line, "7.0"))


def test_histograms_must_be_cumulative_with_a_matching_count():
    text = FIXTURES["vllm"]
    rows = text.splitlines()
    first = next(i for i, row in enumerate(rows) if row.startswith("vllm:time_to_first_token_seconds_bucket"))
    with pytest.raises(InvalidSample, match="not cumulative"):
        parse_metrics(_with_value(text, first, "99"))  # more at le=0.001 than at le=+Inf
    count = next(i for i, row in enumerate(rows) if row.startswith("vllm:time_to_first_token_seconds_count"))
    with pytest.raises(InvalidSample, match="_count 7 differs from the \\+Inf bucket 6"):
        parse_metrics(_with_value(text, count, "7"))


@pytest.mark.parametrize("le", ["NaN", "-Inf", "-1", "-0.5"])
def test_a_latency_bucket_bound_below_zero_or_nan_refuses_the_scrape(le):
    """Not a ValueError from the histogram's own checks (-Inf is not a finite bound): an invalid sample."""
    text = FIXTURES["vllm"]
    first = next(row for row in text.splitlines() if row.startswith("vllm:time_to_first_token_seconds_bucket"))
    bound = re.search(r'le="([^"]+)"', first).group(1)
    with pytest.raises(InvalidSample, match=rf"le={re.escape(le)}: a latency bound must be ≥ 0"):
        parse_metrics(text.replace(first, first.replace(f'le="{bound}"', f'le="{le}"')))
    assert parse_metrics(text.replace(first, first.replace(f'le="{bound}"', 'le="0"'))).histograms["ttft_s"]


def test_values_of_metrics_not_read_do_not_matter():
    text = FIXTURES["vllm"] + "vllm:num_preemptions_total{model_name=\"m\"} NaN\nprocess_cpu_seconds_total -1\n"
    assert parse_metrics(text).gauges["running"] == 6.0


def test_unrelated_metrics_are_dropped_before_parsing_but_malformed_lines_still_fail():
    noise = "".join(f'other_metric_{i % 7}{{rank="{i}"}} {i}\n' for i in range(20000))
    sample = parse_metrics(noise + FIXTURES["sglang"] + noise)
    assert sample.gauges["running"] == 6.0
    with pytest.raises(EngineMetricsError, match="malformed"):
        parse_metrics(FIXTURES["sglang"] + "other_metric{a=\"1\"} lots\n")


# --- what SGLang's labels mean -----------------------------------------------------------------------------------


def _sglang(rows: dict[str, list[tuple[dict[str, str], float]]]) -> str:
    """Untyped sample lines: each name's label sets and values."""
    out = []
    for name, series in rows.items():
        for labels, value in series:
            out.append(name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" + f" {value}")
    return "\n".join(out) + "\n"


def _ranked(tp: str, dp: str | None = None, **more: str) -> dict[str, str]:
    labels = {"model_name": "q", "engine_type": "unified", "tp_rank": tp, "pp_rank": "0", "moe_ep_rank": tp}
    return labels | ({"dp_rank": dp} if dp is not None else {}) | more


def test_sglang_priority_scheduling_counts_the_total_not_total_plus_breakdown():
    text = _sglang({
        "sglang:num_running_reqs": [(_ranked("0", priority=""), 5), (_ranked("0", priority="0"), 3),
                                    (_ranked("0", priority="1"), 2)],
        "sglang:num_queue_reqs": [(_ranked("0", priority=""), 4), (_ranked("0", priority="LOW"), 4)],
    })
    assert parse_metrics(text).gauges == {"running": 5, "waiting": 4}
    breakdown_only = _sglang({"sglang:num_running_reqs": [(_ranked("0", priority="0"), 3),
                                                          (_ranked("0", priority="1"), 2)],
                              "sglang:num_queue_reqs": [(_ranked("0"), 1)]})
    assert parse_metrics(breakdown_only).gauges == {"running": 5, "waiting": 1}


def test_sglang_metrics_for_all_schedulers_count_each_batch_once():
    """--enable-metrics-for-all-schedulers: every TP rank reports its DP group's batch; DP ranks add up."""
    ranks = [("0", "0"), ("1", "0"), ("2", "1"), ("3", "1")]
    batch = {"0": 6, "1": 4}
    text = _sglang({
        "sglang:num_running_reqs": [(_ranked(tp, dp), batch[dp]) for tp, dp in ranks],
        "sglang:num_queue_reqs": [(_ranked(tp, dp), 1) for tp, dp in ranks],
        "sglang:token_usage": [(_ranked(tp, dp), 0.25 * int(dp) + 0.25) for tp, dp in ranks],
        "sglang:realtime_tokens_total": [(_ranked(tp, dp, mode=mode), n * (1 + int(dp)) + int(tp) % 2)
                                         for tp, dp in ranks
                                         for mode, n in (("prefill_compute", 100), ("prefill_cache", 20),
                                                         ("decode", 30))],
    })
    sample = parse_metrics(text)
    assert sample.gauges == {"running": 10, "waiting": 2, "kv_used": 0.5}
    # the copies differ by a token (scraped moments apart): the larger counts, once per DP rank
    assert sample.counters == {"prompt_tokens": (101 + 21) + (201 + 41), "generation_tokens": 31 + 61}


def test_sglang_ttft_uses_streamed_requests_when_there_are_any():
    """A non-streaming request's first token is stamped at its first output chunk: late."""
    fast = Histogram.from_values((0.1, 1.0, 10.0), [0.05] * 4)
    slow = Histogram.from_values((0.1, 1.0, 10.0), [5.0] * 2)

    def text(histograms: dict[str, Histogram]) -> str:
        rows = ['sglang:num_running_reqs{model_name="q"} 1', 'sglang:num_queue_reqs{model_name="q"} 0']
        for streaming, h in histograms.items():
            labels = f'model_name="q",is_streaming="{streaming}"'
            rows += [f'sglang:time_to_first_token_seconds_bucket{{{labels},le="{b}"}} {c}'
                     for b, c in zip(("0.1", "1.0", "10.0", "+Inf"), h.counts)]
            rows += [f"sglang:time_to_first_token_seconds_sum{{{labels}}} {h.sum}",
                     f"sglang:time_to_first_token_seconds_count{{{labels}}} {h.count}"]
        return "\n".join(rows) + "\n"

    both = parse_metrics(text({"true": fast, "false": slow}))
    assert both.histograms["ttft_s"] == fast and both.sources["ttft_s"].selection == 'is_streaming="true"'
    alone = parse_metrics(text({"false": slow}))
    assert alone.histograms["ttft_s"] == slow  # an overestimate: on the watchdog's safe side
    # the first streamed request: its series is new, so all of it is this window's (not "minus the others")
    assert window(alone, both).ttft_s == fast


def test_sglang_tokens_are_read_as_processed_not_at_request_finish():
    realtime = _sglang({"sglang:num_running_reqs": [(_ranked("0"), 1)], "sglang:num_queue_reqs": [(_ranked("0"), 0)],
                        "sglang:realtime_tokens_total": [(_ranked("0", mode="prefill_compute"), 70),
                                                         (_ranked("0", mode="prefill_cache"), 30),
                                                         (_ranked("0", mode="decode"), 400)],
                        "sglang:prompt_tokens_total": [({"model_name": "q"}, 10)],
                        "sglang:generation_tokens_total": [({"model_name": "q"}, 20)]})
    sample = parse_metrics(realtime)
    assert sample.counters == {"prompt_tokens": 100, "generation_tokens": 400}
    assert sample.sources["prompt_tokens"].family == "sglang:realtime_tokens"
    assert parse_metrics(OLD_SGLANG).sources["prompt_tokens"].family == "sglang:prompt_tokens"  # older releases


# --- several models, restarts, metrics that go missing ----------------------------------------------------------


def test_a_model_filter_picks_one_model_of_several():
    two = _sample_text("vllm", "llama", 3) + _sample_text("vllm", "qwen", 1).replace("# HELP", "# X").replace(
        "# TYPE", "# Y")
    llama, qwen = parse_metrics(two, model="llama"), parse_metrics(two, model="qwen")
    assert (llama.gauges["running"], qwen.gauges["running"]) == (7.0, 5.0)
    assert llama.models == ("llama", "qwen")


def _created_text(prompt: float, created: float, start: float | None = None) -> str:
    text = _sample_text("vllm", "m", 1).replace('vllm:prompt_tokens_total{model_name="m"} 100.0',
                                                f'vllm:prompt_tokens_total{{model_name="m"}} {prompt}\n'
                                                f'vllm:prompt_tokens_created{{model_name="m"}} {created}')
    return text + (f"process_start_time_seconds {start}\n" if start is not None else "")


def test_a_restart_is_seen_by_created_timestamps_even_when_counters_grew_past_their_old_values():
    before = parse_metrics(_created_text(1000.0, 1.7e9))
    assert window(before, parse_metrics(_created_text(1500.0, 1.7e9))).prompt_tokens == 500.0
    after_restart = parse_metrics(_created_text(1500.0, 1.7e9 + 60))
    assert window(before, after_restart).prompt_tokens == 1500.0  # all of it since the restart


def test_a_restart_is_seen_by_the_process_start_time():
    before = parse_metrics(_created_text(1000.0, 1.7e9, start=1.7e9))
    assert window(before, parse_metrics(_created_text(1500.0, 1.7e9, start=1.7e9 + 60))).prompt_tokens == 1500.0


def test_a_series_that_appears_is_not_a_restart():
    def text(stop: float, abort: float | None) -> str:
        rows = [f'vllm:request_success_total{{finished_reason="stop",model_name="m"}} {stop}',
                'vllm:request_success_created{finished_reason="stop",model_name="m"} 100']
        if abort is not None:  # a label set that appears later has a later creation time
            rows += [f'vllm:request_success_total{{finished_reason="abort",model_name="m"}} {abort}',
                     'vllm:request_success_created{finished_reason="abort",model_name="m"} 900']
        return _sample_text("vllm", "m", 1).replace('vllm:request_success_total{model_name="m"} 2.0', "\n".join(rows))

    assert window(parse_metrics(text(10, None)), parse_metrics(text(14, 1))).finished == 5.0


def test_a_metric_read_before_that_disappears_is_an_error_not_an_idle_interval():
    full = parse_metrics(_sample_text("vllm", "m", 2))
    for gone in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds", "vllm:prompt_tokens"):
        cut = "\n".join(row for row in _sample_text("vllm", "m", 3).splitlines() if not row.startswith(gone)) + "\n"
        with pytest.raises(MissingMetric, match=re.escape(gone) + ".* disappeared"):
            window(full, parse_metrics(cut))


def test_latency_histograms_are_required_once_the_engine_has_served():
    finished = {"finished": 3.0}
    vllm_without = parse_metrics(render_metrics("vllm", "m", {"running": 1, "waiting": 0}, finished, {}))
    with pytest.raises(MissingMetric, match="finished requests but exports no ttft_s or itl_s histogram"):
        window(None, vllm_without)
    fresh = parse_metrics(render_metrics("sglang", "q", {"running": 1, "waiting": 0}, {"finished": 0.0}, {}))
    assert window(None, fresh).ttft_s.count == 0  # SGLang creates its histograms at the first observation
    served = parse_metrics(render_metrics("sglang", "q", {"running": 1, "waiting": 0}, finished, {}))
    with pytest.raises(MissingMetric, match="no ttft_s histogram"):
        window(None, served)
    ttft_only = {"ttft_s": Histogram.from_values(TTFT_BUCKETS_S, [0.1])}
    window(None, parse_metrics(render_metrics("sglang", "q", {"running": 1, "waiting": 0}, finished, ttft_only)))
