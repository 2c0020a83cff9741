"""Trace formats and replay: every format by name and detected, plain and gzip; replays keep the
trace's own times unless a rate is asked for (and then say so); bad files are festgym errors
naming the file and the problem; ``festgym compare`` runs on Mooncake and BurstGPT traces."""

from __future__ import annotations

import gzip
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from festgym.cli.main import main
from festgym.errors import SpecError
from festgym.scenario import load_scenario, scale_load
from festgym.sim.workload import MAX_TOKENS, TRACE_FORMATS, TraceSpec, TraceWarning, load_azure_trace, load_trace

# One request list, written in every format: (seconds from the start, prompt, output, BurstGPT model).
REQUESTS = [(0.0, 30, 3, "ChatGPT"), (0.5, 10, 1, "GPT-4"), (1.25, 20, 2, "ChatGPT"), (3.0, 40, 4, "ChatGPT"),
            (4.75, 50, 5, "GPT-4"), (6.0, 60, 6, "ChatGPT")]
MODEL = "Llama-3.1-8B"
"""The model the generic files name (the scenarios' first)."""
AZURE_2023_START = pd.Timestamp("2023-11-16 18:15:46.6805900")
AZURE_2024_START = pd.Timestamp("2024-05-10 00:00:00.009930+00:00")


def _csv(header: str, rows: list[str]) -> str:
    return header + "\n" + "".join(r + "\n" for r in rows)


def _text(fmt: str, requests=REQUESTS) -> str:
    """``requests`` in the format ``fmt`` (the public formats as their files are published)."""
    if fmt == "mooncake":
        return "".join(json.dumps({"timestamp": round(t * 1000), "input_length": p, "output_length": o,
                                   "hash_ids": [0, i]}) + "\n" for i, (t, p, o, _) in enumerate(requests))
    if fmt == "burstgpt":
        return _csv("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
                    [f"{t},{m},{p},{o},{p + o},{'API log' if o % 2 else 'Conversation log'}"
                     for t, p, o, m in requests])
    if fmt == "generic":
        return _csv("timestamp,input_tokens,output_tokens,model", [f"{t},{p},{o},{MODEL}" for t, p, o, _ in requests])
    start = AZURE_2023_START if fmt == "azure-2023" else AZURE_2024_START
    stamps = [str(start + pd.Timedelta(seconds=t)) for t, *_ in requests]
    if fmt == "azure-2023":  # the published files print 7 fractional digits
        stamps = [s + "0" * (7 - len(s.partition(".")[2])) if "." in s else s + ".0000000" for s in stamps]
    rows = [f"{s},{p},{o}" for s, (_, p, o, _) in zip(stamps, requests)]
    return _csv("TIMESTAMP,ContextTokens,GeneratedTokens", rows)


FILES = ("mooncake", "burstgpt", "generic", "azure-2023", "azure-2024")
"""The files written; both Azure years are the ``azure`` format."""


def _format(file: str) -> str:
    return file.partition("-")[0]


def _write(tmp_path: Path, file: str, packed: bool = False, requests=REQUESTS, name: str | None = None) -> Path:
    name = name or f"{file}.{'jsonl' if file == 'mooncake' else 'csv'}{'.gz' if packed else ''}"
    path = tmp_path / name
    data = _text(file, requests).encode()
    path.write_bytes(gzip.compress(data) if packed else data)
    return path


def _models(file: str) -> list[str]:
    return ["m0", "m1"] if file == "burstgpt" else [MODEL]


# --- formats ---------------------------------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("named", [False, True], ids=["detected", "named"])
@pytest.mark.parametrize("file", FILES)
def test_every_format_by_name_and_detected_plain_and_gzip(tmp_path, file, named, packed):
    """Each format gives the same requests, at the same times (Mooncake's milliseconds, BurstGPT's
    seconds, Azure's date-times with 7 digits or a UTC offset), named or not, gzip or not."""
    path = _write(tmp_path, file, packed)
    trace = load_trace(path, _models(file), format=_format(file) if named else None)
    np.testing.assert_allclose(trace.arrival_s, [t for t, *_ in REQUESTS], atol=1e-6)
    assert trace.prompt_tokens.tolist() == [p for _, p, _, _ in REQUESTS]
    assert trace.output_tokens.tolist() == [o for _, _, o, _ in REQUESTS]
    assert trace.duration_s == pytest.approx(6.0)
    if file == "burstgpt":  # the most requested trace model is served as the first
        assert trace.models == ("m0", "m1")
        assert trace.model.tolist() == [0 if m == "ChatGPT" else 1 for *_, m in REQUESTS]
    else:
        assert trace.models == (MODEL,) and not trace.model.any()


def test_gzip_is_told_by_content_not_name(tmp_path):
    path = _write(tmp_path, "mooncake", packed=True, name="trace.data")
    assert len(load_trace(path)) == len(REQUESTS)
    plain = _write(tmp_path, "burstgpt", name="plain.csv.gz")  # a misleading name is no problem either
    assert len(load_trace(plain)) == len(REQUESTS)


@pytest.mark.parametrize("file, other", [("mooncake", "burstgpt"), ("burstgpt", "azure"), ("azure-2023", "generic"),
                                         ("generic", "mooncake")])
def test_a_named_format_needs_its_columns(tmp_path, file, other):
    path = _write(tmp_path, file)
    have = _text(file).splitlines()[0]
    missing = next(c for c in TRACE_FORMATS[other].columns if f'"{c}"' not in have and c not in have.split(","))
    with pytest.raises(SpecError, match=rf"{path}:1: field '{missing}': missing column of the {other} format"):
        load_trace(path, format=other)
    with pytest.raises(SpecError, match="unknown trace format 'kimi'.*azure, burstgpt, mooncake, generic"):
        load_trace(path, format="kimi")


def test_unknown_columns_list_the_formats(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("when,prompt,answer\n0,1,1\n1,1,1\n")
    with pytest.raises(SpecError, match=rf"{path}:1.*not a trace format.*when, prompt, answer.*mooncake \(timestamp "
                                        r"in ms, input_length, output_length\)"):
        load_trace(path)


def test_azure_trace_serves_every_scenario_model(tmp_path):
    """An Azure (or Mooncake) trace names no model: every request is the first model's, and the
    others are in the trace's list, so a scenario's replay can select them."""
    trace = load_trace(_write(tmp_path, "azure-2023"), ["a", "b", "c"])
    assert trace.models == ("a", "b", "c") and not trace.model.any()
    assert len(trace.select(["b"])) == 0 and len(trace.select(["a", "b"])) == len(REQUESTS)
    assert load_azure_trace(_write(tmp_path, "azure-2024"), "llama").models == ("llama",)


# --- BurstGPT: failed requests and models ---------------------------------------------------------

FAILED = [(0.0, 30, 0, "ChatGPT"), (1.0, 10, 5, "GPT-4"), (2.0, 0, 7, "ChatGPT"), (3.0, 20, 2, "ChatGPT"),
          (4.0, 15, 0, "GPT-4"), (5.0, 40, 4, "GPT-4")]


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_burstgpt_failed_requests_are_counted_and_reported(tmp_path, packed):
    """Response tokens 0 is BurstGPT's failed request: left out, and the count is reported."""
    path = _write(tmp_path, "burstgpt", packed, FAILED)
    with pytest.warns(TraceWarning, match=rf"{path}: 3 of 6 requests \(50%\) have 0 'Request tokens' or "
                                          r"'Response tokens': failed requests, left out"):
        trace = load_trace(path)
    assert trace.arrival_s.tolist() == [0.0, 2.0, 4.0]  # from the first kept request (1.0 s)
    assert trace.prompt_tokens.tolist() == [10, 20, 40] and trace.models == ("GPT-4", "ChatGPT")


def test_burstgpt_all_failed_is_an_error(tmp_path):
    path = _write(tmp_path, "burstgpt", requests=[(0.0, 5, 0, "ChatGPT"), (1.0, 5, 0, "ChatGPT")])
    with pytest.warns(TraceWarning), pytest.raises(SpecError, match=rf"{path}.*no requests once the 2 failed"):
        load_trace(path)


def test_burstgpt_needs_as_many_served_models(tmp_path):
    path = _write(tmp_path, "burstgpt")
    with pytest.raises(SpecError, match=rf"{path}: field 'Model': 2 models in the trace \(ChatGPT: 4 requests, "
                                        r"GPT-4: 2 requests\) for 1 served \(only\): serve at least 2"):
        load_trace(path, ["only"])


# --- bad files ---------------------------------------------------------------------------------

DEGENERATE = {  # name: (requests, problem)
    "header only": ([], "no requests"),
    "one row": ([(5.0, 10, 2, "ChatGPT")], "one request"),
    "one timestamp": ([(5.0, 10, 2, "ChatGPT")] * 3, "all 3 requests arrive at the same time"),
}


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_trace_is_an_error_naming_file_and_problem(tmp_path, case, file):
    requests, problem = DEGENERATE[case]
    path = _write(tmp_path, file, requests=requests)
    if file == "mooncake" and not requests:  # JSONL has no header: the file is empty
        problem = "empty"
    with pytest.raises(SpecError, match=rf"^{path}.*{problem}"):
        load_trace(path, _models(file))


@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_empty_file(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(SpecError, match=rf"{path}: field '<file>': empty"):
        load_trace(path)


def test_broken_gzip(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(gzip.compress(_text("mooncake").encode())[:30])
    with pytest.raises(SpecError, match=rf"{path}: field '<file>': cannot read"):
        load_trace(path)


@pytest.mark.parametrize("value", ["1e30", str(2**31), str(2**63 + 1), "1" + "0" * 30])
@pytest.mark.parametrize("file", ["generic", "burstgpt", "mooncake", "azure-2023"])
def test_overflowing_token_counts_are_errors(tmp_path, file, value):
    fmt = TRACE_FORMATS[_format(file)]
    text = _text(file).splitlines(keepends=True)
    if file == "mooncake":  # a JSON number, as a JSON writer prints it (an int above int64 too)
        row = json.loads(text[2])
        row["output_length"] = json.loads(value)
        text[2] = json.dumps(row) + "\n"
        line, column = 3, fmt.output
    else:
        cells = text[2].rstrip("\n").split(",")
        cells[list(text[0].rstrip("\n").split(",")).index(fmt.prompt)] = value
        text[2] = ",".join(cells) + "\n"
        line, column = 3, fmt.prompt
    path = tmp_path / "t.txt"
    path.write_text("".join(text))
    with pytest.raises(SpecError, match=rf"{path}:{line}: field '{column}': token count .* is too large "
                                        rf"\(at most {MAX_TOKENS:,}\)"):
        load_trace(path, _models(file))


# --- time units --------------------------------------------------------------------------------

def _generic(tmp_path, stamps) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(_csv("timestamp,input_tokens,output_tokens,model", [f"{t},5,5,{MODEL}" for t in stamps]))
    return path


@pytest.mark.parametrize("stamps, looks", [
    ([1_700_000_000_000, 1_700_000_000_500, 1_700_000_090_000], "past the year 5000"),  # epoch milliseconds
    ([0, 1_500, 3_600_000], "span 41.7 days"),  # an hour in milliseconds, from 0
])
def test_millisecond_timestamps_of_a_generic_trace_are_detected(tmp_path, stamps, looks):
    path = _generic(tmp_path, stamps)
    with pytest.raises(SpecError, match=rf"{path}: field 'timestamp': the timestamps .*{looks}.*milliseconds\? "
                                        r"State their unit: time_unit 'ms'.*workload.trace_time_unit"):
        load_trace(path)
    ms = load_trace(path, time_unit="ms")
    np.testing.assert_allclose(ms.arrival_s, (np.array(stamps) - stamps[0]) / 1000)
    assert load_trace(path, time_unit="s").duration_s == stamps[-1] - stamps[0]  # stated: trusted


def test_time_units(tmp_path):
    path = _write(tmp_path, "mooncake")
    np.testing.assert_allclose(load_trace(path, time_unit="s").arrival_s, [1000 * t for t, *_ in REQUESTS])
    np.testing.assert_allclose(load_trace(_generic(tmp_path, [0, 2_000_000]), time_unit="us").arrival_s, [0, 2])
    with pytest.raises(SpecError, match="unknown time unit 'h'"):
        load_trace(path, time_unit="h")
    azure = _write(tmp_path, "azure-2023")
    with pytest.raises(SpecError, match=rf"{azure}:2: field 'TIMESTAMP': a time unit \(ms\) is given, but the "
                                        "timestamps are date-times"):
        load_trace(azure, time_unit="ms")


# --- replay --------------------------------------------------------------------------------------

SCENARIO = {"cluster": {"gpus": {"H100-SXM-80GB": 1}}, "models": {"Llama-3.1-8B": {}, "Llama-3.2-3B": {}},
            "workload": {"rate_rps": 20.0, "duration_s": 60.0}, "local": {"models": ["Llama-3.1-8B"]}}


def _scenario(trace: Path | str, **workload):
    return load_scenario({**SCENARIO, "workload": {**SCENARIO["workload"], "trace": str(trace), **workload}})


def _uniform(tmp_path, fmt: str, rate_rps: float, duration_s: float) -> Path:
    times = np.arange(0.0, duration_s, 1.0 / rate_rps)
    rng = np.random.default_rng(0)
    times = np.sort(np.round(times + rng.uniform(0, 0.5 / rate_rps, len(times)), 3))
    return _write(tmp_path, fmt, requests=[(float(t), 10, 5, "ChatGPT") for t in times])


def _start_in(own: np.ndarray, window) -> float | None:
    """Where in the file ``window`` starts, if it is the file's arrivals in [start, start +
    duration), re-based (None if it is not)."""
    n = len(window)
    for lo in range(len(own) - n + 1):
        start = own[lo] - window.arrival_s[0]
        inside = own[(own >= start - 1e-9) & (own < start + window.duration_s)]
        if len(inside) == n and np.allclose(inside - start, window.arrival_s, atol=1e-6):
            return float(start)
    return None


@pytest.mark.parametrize("file", FILES)
def test_replay_keeps_the_trace_rate(tmp_path, file):
    """A 1 req/s trace replays at 1 req/s whatever workload.rate_rps says: a window holds the
    file's own arrivals in it, re-based; a run longer than the trace replays all of it."""
    path = _uniform(tmp_path, file, 1.0, 600.0)
    own = load_trace(path, ["Llama-3.1-8B"])
    sc = _scenario(path)
    for seed in range(3):
        window = sc.trace(seed, 60.0)
        assert window.duration_s == 60.0 and _start_in(own.arrival_s, window) is not None
        assert len(window) / window.duration_s == pytest.approx(1.0, abs=2 / 60)
    whole = sc.trace(0, 3600.0)
    np.testing.assert_allclose(whole.arrival_s, own.arrival_s)
    assert len(whole) / whole.duration_s == pytest.approx(own.mean_rate_rps)


def test_asked_rate_is_rescaled_and_announced(tmp_path):
    path = _uniform(tmp_path, "mooncake", 1.0, 600.0)
    sc = _scenario(path, trace_rate_rps=5)
    with pytest.warns(TraceWarning, match=rf"{path}: replayed rescaled to workload.trace_rate_rps 5 req/s, not its "
                                          r"own 1.00\d* req/s.*arrival times ×0.200"):
        whole = sc.trace(0, 3600.0)
    assert len(whole) / whole.duration_s == pytest.approx(5.0)
    with pytest.warns(TraceWarning, match="rate asked for, 3 req/s"):
        assert len(sc.trace(0, 60.0, rate_rps=3.0)) == pytest.approx(180, abs=3)
    with pytest.warns(TraceWarning, match=r"local sub-cluster's replay is rescaled to its rate \(local.rate_rps 3"):
        assert len(sc.trace(0, 60.0, local=True)) == pytest.approx(180, abs=3)


def test_own_rate_is_not_announced(tmp_path):
    sc = _scenario(_uniform(tmp_path, "burstgpt", 1.0, 100.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc.trace(0, 60.0)


def test_load_factor_rescales_a_replay(tmp_path):
    path = _uniform(tmp_path, "generic", 2.0, 600.0)
    sc = _scenario(path)
    double = scale_load(sc, 2.0)
    assert double.trace_spec.rate_rps == pytest.approx(2 * load_trace(path, [MODEL]).mean_rate_rps)
    assert scale_load(_scenario(path, trace_rate_rps=3), 0.5).trace_spec.rate_rps == 1.5
    with pytest.warns(TraceWarning, match="trace_rate_rps"):
        assert len(double.trace(0, 60.0)) == pytest.approx(240, abs=3)


def test_relative_trace_path_is_read_from_the_working_directory(tmp_path, monkeypatch):
    """Not from the scenario file's folder: a path typed on the command line or in a file reads
    the same file."""
    (tmp_path / "work" / "traces").mkdir(parents=True)
    (tmp_path / "scenarios" / "traces").mkdir(parents=True)
    here = _write(tmp_path / "work" / "traces", "generic", name="t.csv")
    _write(tmp_path / "scenarios" / "traces", "generic", requests=REQUESTS[:3], name="t.csv")
    scenario = tmp_path / "scenarios" / "s.yaml"
    scenario.write_text(yaml.safe_dump({**SCENARIO, "workload": {"trace": "traces/t.csv"}}))
    monkeypatch.chdir(tmp_path / "work")
    sc = load_scenario(str(scenario))
    assert sc.trace_spec.path == str(here) and len(sc.trace(0, 60.0)) == len(REQUESTS)
    assert load_scenario("default", workload={"trace": "traces/t.csv"}).trace_spec.path == str(here)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=rf"{tmp_path / 'traces' / 't.csv'}: field '<file>': no such file"):
        load_scenario(str(scenario)).trace(0, 60.0)


@pytest.mark.parametrize("workload, key, problem", [
    ({"trace": "t.csv", "trace_format": "kimi"}, "trace_format", "one of azure, burstgpt, mooncake, generic"),
    ({"trace": "t.csv", "trace_time_unit": "h"}, "trace_time_unit", "one of s, ms, us"),
    ({"trace": "t.csv", "trace_rate_rps": -1}, "trace_rate_rps", "positive number of requests per second"),
    ({"trace": "t.csv", "trace_rate_rps": "fast"}, "trace_rate_rps", "expected float"),
    ({"trace_rate_rps": 3}, "trace_rate_rps", "only with workload.trace"),
    ({"trace": 5}, "trace", "expected the path of a trace file"),
])
def test_bad_trace_settings_are_named(workload, key, problem):
    with pytest.raises(SpecError, match=rf"field 'workload.{key}'.*{problem}"):
        load_scenario({**SCENARIO, "workload": workload})


def test_scenario_settings_reach_the_loader(tmp_path):
    path = _generic(tmp_path, [0, 1_500, 3_600_000])
    with pytest.raises(SpecError, match="milliseconds"):
        _scenario(path).trace(0, 60.0)
    assert _scenario(path, trace_time_unit="ms").trace(0, 3600.0).duration_s == 3600.0
    burst = _write(tmp_path, "burstgpt")
    with pytest.raises(SpecError, match="missing column of the mooncake format"):
        _scenario(burst, trace_format="mooncake").trace(0, 60.0)


def test_loaded_once_while_unchanged(tmp_path):
    path = _write(tmp_path, "generic")
    spec = TraceSpec(str(path))
    first = spec.load((MODEL,))
    assert spec.load((MODEL,)) is first and not first.arrival_s.flags.writeable
    path.write_text(_text("generic", REQUESTS[:4]))
    assert len(spec.load((MODEL,))) == 4


def test_real_azure_2023_traces_are_detected_plain_and_gzip(reference_data, tmp_path):
    folder = reference_data / "azure-llm-2023"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    source = folder / "AzureLLMInferenceTrace_code.csv"
    named = load_azure_trace(source)
    packed = tmp_path / "code.csv.gz"  # a compressed copy, outside the repository
    with source.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    for trace in (load_trace(source), load_trace(packed)):
        assert np.array_equal(trace.arrival_s, named.arrival_s)
        assert np.array_equal(trace.prompt_tokens, named.prompt_tokens)


# --- the command line ------------------------------------------------------------------------------

@pytest.mark.parametrize("file", ["mooncake", "burstgpt"])
def test_compare_replays_a_trace_at_its_own_rate(tmp_path, monkeypatch, capsys, file):
    """``festgym compare --scenario path.yaml`` on a small trace written here: every request of
    the file is served (the trace is shorter than the run), none left out or added."""
    monkeypatch.chdir(tmp_path)
    requests = [(float(t), 200, 20, "GPT-4" if i % 3 == 0 else "ChatGPT") for i, t in enumerate(range(0, 40, 2))]
    _write(tmp_path, file, requests=requests, name=f"trace.{file}")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({**SCENARIO, "workload": {"trace": f"trace.{file}", "duration_s": 600}}))
    assert main(["compare", "--scenario", str(scenario), "--seeds", "0", "--policies", "least-loaded",
                 "--no-ablation", "--jobs", "1", "--out", str(tmp_path / "out"), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [r["requests"] for r in runs] == [len(requests)] * 2
    assert all(r["finished"] == len(requests) for r in runs)
    with pytest.warns(TraceWarning, match="trace_rate_rps 1 req/s"):
        assert main(["compare", "--scenario", str(scenario), "--set", "workload.trace_rate_rps=1",
                     "--policies", "least-loaded", "--no-ablation", "--jobs", "1", "--out", str(tmp_path / "o2"),
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["requests"] == len(requests)


def test_compare_reports_a_bad_trace_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "mooncake", requests=[(1.0, 10, 2, "")], name="one.jsonl")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({**SCENARIO, "workload": {"trace": "one.jsonl"}}))
    assert main(["compare", "--scenario", str(scenario), "--policies", "least-loaded", "--no-ablation",
                 "--jobs", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "festgym: error: " in err and f"{tmp_path / 'one.jsonl'}" in err and "one request" in err
    assert "Traceback" not in err


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


@pytest.mark.parametrize("name, file", [("mooncake-conversation", "mooncake"), ("burstgpt", "burstgpt")])
def test_example_scenarios_replay_their_format(tmp_path, monkeypatch, name, file):
    """The shipped examples read, and replay a file of their format put where their comment says."""
    example = EXAMPLES / f"{name}.yaml"
    if not example.is_file():
        pytest.skip(f"{example} not present")
    monkeypatch.chdir(tmp_path)
    sc = load_scenario(str(example))
    relative = Path(sc.raw["workload"]["trace"])
    (tmp_path / relative.parent).mkdir(parents=True, exist_ok=True)
    _write(tmp_path / relative.parent, file, name=relative.name)
    assert sc.trace_spec.path == str(tmp_path / relative) and sc.trace_spec.rate_rps is None
    trace = sc.trace(0)
    assert len(trace) == len(REQUESTS) and trace.models == tuple(sc.models)
