"""Tests for festgym.sim.workload: trace loaders, Trace operations and the synthetic generator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from festgym.errors import SpecError
from festgym.sim.workload import (
    AZURE_CODE_OUTPUT,
    AZURE_CODE_PROMPT,
    AZURE_CONV_OUTPUT,
    AZURE_CONV_PROMPT,
    LengthDist,
    SyntheticWorkload,
    Trace,
    load_azure_trace,
    load_trace,
)

GENERIC_HEADER = "timestamp,input_tokens,output_tokens,model\n"


def _write(path, text):
    path.write_text(text)
    return path


def _jsonl(path, rows):
    return _write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _row(t, i=10, o=5, m="a"):
    return {"timestamp": t, "input_tokens": i, "output_tokens": o, "model": m}


# --- loaders ---------------------------------------------------------------------------------

def test_azure_csv_round_trip(tmp_path):
    """Arrivals are seconds from the earliest row, rows are sorted, tokens follow their rows."""
    path = _write(tmp_path / "azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                  "2023-11-16 18:17:03.9799600,4808,10\n"
                  "2023-11-16 18:17:05.4799600,100,20\n"   # +1.5 s
                  "2023-11-16 18:17:04.0319600,3180,8\n")  # +0.052 s, out of order
    trace = load_azure_trace(path, model="llama")
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.052, 1.5], atol=1e-9)
    assert trace.prompt_tokens.tolist() == [4808, 3180, 100]
    assert trace.output_tokens.tolist() == [10, 8, 20]
    assert trace.models == ("llama",) and trace.model.tolist() == [0, 0, 0]
    assert trace.duration_s == pytest.approx(1.5)
    # load_trace recognises the Azure header and takes the first model name given.
    assert load_trace(path, models=["m"]).models == ("m",)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("stamps", [[3.0, 0.5, 1.25], ["2024-05-01T10:00:03", "2024-05-01T10:00:00.5",
                                                       "2024-05-01T10:00:01.25"]])
def test_generic_trace(tmp_path, fmt, stamps):
    """Seconds and ISO timestamps both give offsets from the first arrival; models default sorted."""
    rows = [_row(stamps[0], 30, 3, "zeta"), _row(stamps[1], 10, 1, "alpha"), _row(stamps[2], 20, 2, "zeta")]
    if fmt == "csv":
        path = _write(tmp_path / "t.csv", GENERIC_HEADER + "".join(
            f"{r['timestamp']},{r['input_tokens']},{r['output_tokens']},{r['model']}\n" for r in rows))
    else:
        path = _jsonl(tmp_path / "t.jsonl", rows)
    trace = load_trace(path)
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.75, 2.5])
    assert trace.models == ("alpha", "zeta")
    assert trace.model.tolist() == [0, 1, 1]
    assert trace.prompt_tokens.tolist() == [10, 20, 30] and trace.output_tokens.tolist() == [1, 2, 3]
    given = load_trace(path, models=["zeta", "alpha", "unused"])
    assert given.models == ("zeta", "alpha", "unused") and given.model.tolist() == [1, 0, 0]


def test_unknown_model_names_line(tmp_path):
    path = _write(tmp_path / "t.csv", GENERIC_HEADER + "0,1,1,a\n1,1,1,b\n")
    with pytest.raises(SpecError) as err:
        load_trace(path, models=["a"])
    assert f"{path}:3" in str(err.value) and "'model'" in str(err.value) and "'b'" in str(err.value)


CSV_CASES = {  # name: (data rows, bad line, field)
    "non-numeric token": ("0,10,5,a\n1,ten,5,a\n", 3, "input_tokens"),
    "zero tokens": ("0,10,5,a\n1,10,5,a\n2,10,0,a\n", 4, "output_tokens"),
    "fractional tokens": ("0,10,5,a\n1,2.5,5,a\n", 3, "input_tokens"),
    "bad iso timestamp": ("2024-01-01T00:00:00,1,1,a\nnot-a-date,1,1,a\n", 3, "timestamp"),
    "bad timestamp among seconds": ("0,1,1,a\n1,1,1,a\nyesterday,1,1,a\n", 4, "timestamp"),
    "empty model": ("0,1,1,a\n1,1,1,\n", 3, "model"),
    "blank line before bad row": ("0,1,1,a\n\n1,x,1,a\n", 4, "input_tokens"),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_malformed_csv_row(tmp_path, case):
    rows, line, field = CSV_CASES[case]
    path = _write(tmp_path / "t.csv", GENERIC_HEADER + rows)
    with pytest.raises(SpecError) as err:
        load_trace(path)
    assert f"{path}:{line}:" in str(err.value) and f"'{field}'" in str(err.value)


JSONL_CASES = {
    "bad json": ([_row(0), '{"timestamp": 1,'], 2, "<row>"),
    "not an object": ([_row(0), _row(1), "[1, 2, 3]"], 3, "<row>"),
    "zero tokens": ([_row(0), _row(1, i=0)], 2, "input_tokens"),
    "missing key in one row": ([_row(0), {"timestamp": 1, "input_tokens": 1, "model": "a"}], 2, "output_tokens"),
    "empty model": ([_row(0), _row(1, m="")], 2, "model"),
    "blank line before bad row": ([_row(0), "", _row(1, i="x")], 3, "input_tokens"),
}


@pytest.mark.parametrize("case", JSONL_CASES)
def test_malformed_jsonl_row(tmp_path, case):
    rows, line, field = JSONL_CASES[case]
    path = _jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(SpecError) as err:
        load_trace(path)
    assert f"{path}:{line}:" in str(err.value) and f"'{field}'" in str(err.value)


def test_azure_bad_row_and_missing_column(tmp_path):
    bad = _write(tmp_path / "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:17:03.9799600,5,6\n2023-11-16 18:17:04.0,5,-1\n")
    with pytest.raises(SpecError, match=rf"{bad}:3: field 'GeneratedTokens'"):
        load_azure_trace(bad)
    missing = _write(tmp_path / "m.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,5\n")
    with pytest.raises(SpecError, match=rf"{missing}.*'GeneratedTokens'.*missing column"):
        load_azure_trace(missing)
    generic = _write(tmp_path / "g.csv", "timestamp,input_tokens,output_tokens\n0,1,1\n")
    with pytest.raises(SpecError, match=rf"{generic}.*'model'"):
        load_trace(generic)


def test_nonexistent_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(SpecError, match=rf"{path}.*no such file"):
        load_trace(path)


def test_iso_timestamps_with_different_offsets(tmp_path):
    """Offsets are instants: 00:00:00Z and 01:00:30+01:00 are 30 s apart."""
    path = _write(tmp_path / "t.csv", GENERIC_HEADER +
                  "2024-01-01T00:00:00Z,1,1,a\n2024-01-01T01:00:30+01:00,1,1,a\n")
    np.testing.assert_allclose(load_trace(path).arrival_s, [0.0, 30.0])


# --- Trace operations ------------------------------------------------------------------------

def _trace():
    return Trace.build([0.0, 1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1, 0], [1, 2, 3, 4, 5], [5, 4, 3, 2, 1],
                       ["a", "b"], duration_s=5.0)


def test_scale_rate_and_window():
    fast = _trace().scale_rate(2)
    np.testing.assert_allclose(fast.arrival_s, [0.0, 0.5, 1.0, 1.5, 2.0])
    assert fast.duration_s == 2.5 and fast.prompt_tokens.tolist() == [1, 2, 3, 4, 5]
    win = _trace().window(1.0, 3.0)
    np.testing.assert_allclose(win.arrival_s, [0.0, 1.0])  # 3.0 is excluded
    assert win.prompt_tokens.tolist() == [2, 3] and win.model.tolist() == [1, 0] and win.duration_s == 2.0
    for start, end in [(2.0, 2.0), (3.0, 1.0)]:
        with pytest.raises(ValueError, match="window end"):
            _trace().window(start, end)


def test_merge_joins_models_and_sorts():
    other = Trace.build([0.5, 10.0], [0, 0], [7, 8], [9, 9], ["c"], duration_s=12.0)
    merged = Trace.merge([_trace(), other])
    assert merged.models == ("a", "b", "c") and merged.duration_s == 12.0
    np.testing.assert_allclose(merged.arrival_s, [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 10.0])
    assert merged.model.tolist() == [0, 2, 1, 0, 1, 0, 2]
    assert merged.prompt_tokens.tolist() == [1, 7, 2, 3, 4, 5, 8]


@pytest.mark.parametrize("arrival, prompt", [([1.0, 0.0], [1, 1]), ([0.0, 1.0], [1, 0])])
def test_trace_rejects_unsorted_or_empty_tokens(arrival, prompt):
    with pytest.raises(ValueError):
        Trace(np.array(arrival), np.zeros(2, np.int32), np.array(prompt), np.ones(2, np.int64), ("a",), 1.0)


# --- synthetic -------------------------------------------------------------------------------

def _gen(seed=0, **kw):
    kw = {"models": ("a",), "rate_rps": 5.0, "duration_s": 7200.0, **kw}
    return SyntheticWorkload(**kw).generate(seed)


def test_synthetic_is_seeded():
    fields = ("arrival_s", "model", "prompt_tokens", "output_tokens")
    kw = {"models": ("a", "b", "c"), "duration_s": 600.0}
    a, b, c = _gen(7, **kw), _gen(7, **kw), _gen(8, **kw)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)
    assert not any(np.array_equal(getattr(a, f), getattr(c, f)) for f in fields)


def test_synthetic_rate_and_burstiness():
    trace = _gen(1)
    assert len(trace) / trace.duration_s == pytest.approx(5.0, rel=0.05)
    assert trace.arrival_s.min() >= 0 and trace.arrival_s.max() < trace.duration_s
    gaps = np.diff(_gen(2, arrival_cv=1.0).arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)
    gaps = np.diff(_gen(3, arrival_cv=3.0).arrival_s)
    assert gaps.std() / gaps.mean() > 2.0


def test_synthetic_diurnal():
    """Rate ∝ 1 + 0.8 sin(2πt/T): the first half holds 0.5 + 0.8/π ≈ 75% of arrivals."""
    trace = _gen(4, diurnal_amplitude=0.8, diurnal_period_s=7200.0)
    first = np.mean(trace.arrival_s < 3600.0)
    assert first == pytest.approx(0.5 + 0.8 / np.pi, abs=0.02)


def test_synthetic_zipf_shares():
    trace = _gen(5, models=("m0", "m1", "m2", "m3"), rate_rps=20.0, duration_s=3600.0,
                 zipf_s=1.5, shift_sigma=0.0)
    share = np.bincount(trace.model, minlength=4) / len(trace)
    expected = 1.0 / np.arange(1, 5) ** 1.5
    np.testing.assert_allclose(share, expected / expected.sum(), rtol=0.05)
    assert share[0] > share[3]


def test_synthetic_per_model_lengths():
    short, long = LengthDist(np.log(10), 0.0), LengthDist(np.log(1000), 0.0)
    trace = _gen(6, models=("s", "l"), duration_s=600.0, prompt={"s": short, "l": long}, output=short)
    assert set(trace.prompt_tokens[trace.model == 0]) == {10}
    assert set(trace.prompt_tokens[trace.model == 1]) == {1000}
    with pytest.raises(ValueError, match="prompt"):
        SyntheticWorkload(("s", "l"), prompt={"s": short})


@pytest.mark.parametrize("field, value", [("rate_rps", 0.0), ("diurnal_amplitude", 1.0), ("arrival_cv", 0.0),
                                          ("duration_s", -1.0), ("zipf_s", -0.5), ("models", ())])
def test_synthetic_rejects_bad_parameters(field, value):
    kw = {"models": ("a",), field: value}
    with pytest.raises(ValueError, match=field):
        SyntheticWorkload(**kw)


@pytest.mark.parametrize("mean, cv", [(500.0, 0.5), (200.0, 1.0)])
def test_length_dist_from_mean_cv(mean, cv):
    draws = LengthDist.from_mean_cv(mean, cv, high=10**9).sample(np.random.default_rng(0), 200_000)
    assert draws.mean() == pytest.approx(mean, rel=0.03)
    assert draws.std() / draws.mean() == pytest.approx(cv, rel=0.03)


# --- presets vs the Azure 2023 traces ---------------------------------------------------------

def test_defaults_match_azure(reference_data):
    """The presets are the log-mean/log-std of the Azure 2023 traces; conv runs at 5.53 req/s."""
    folder = reference_data / "azure-llm-2023"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    for kind, prompt, output in [("conv", AZURE_CONV_PROMPT, AZURE_CONV_OUTPUT),
                                 ("code", AZURE_CODE_PROMPT, AZURE_CODE_OUTPUT)]:
        trace = load_azure_trace(folder / f"AzureLLMInferenceTrace_{kind}.csv")
        for dist, tokens in [(prompt, trace.prompt_tokens), (output, trace.output_tokens)]:
            logs = np.log(tokens)
            assert dist.mu == pytest.approx(logs.mean(), abs=0.02), kind
            assert dist.sigma == pytest.approx(logs.std(), abs=0.02), kind
        if kind == "conv":
            assert len(trace) / trace.duration_s == pytest.approx(5.53, abs=0.05)


def test_select_keeps_only_the_given_models_in_their_order():
    from festgym.sim.workload import SyntheticWorkload

    trace = SyntheticWorkload(("a", "b", "c"), rate_rps=20, duration_s=30).generate(1)
    picked = trace.select(["c", "a"])
    assert picked.models == ("c", "a")
    names = np.array(trace.models)[trace.model]
    keep = np.isin(names, ["a", "c"])
    assert np.array_equal(picked.arrival_s, trace.arrival_s[keep])
    assert list(np.array(picked.models)[picked.model]) == list(names[keep])
    with pytest.raises(ValueError, match=r"Trace.models: out of range .'z'.; expected models of the trace"):
        trace.select(["z"])
