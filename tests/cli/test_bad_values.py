"""Random scenario values: the command line either runs or says ``festgym: error:``, and an
environment either works or raises a festgym error; never a traceback, an allocation that
exhausts memory, or a hang."""

from __future__ import annotations

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from festgym.cli.main import main
from festgym.errors import FestgymError
from festgym.scenario import load_scenario, parse_overrides

DEFAULT = load_scenario("default")
MODEL = next(iter(DEFAULT.models))  # dotted (Llama-3.1-8B): --set must address it as it is

KEYS = [
    *(f"sim.{k}" for k in ("control_interval_s", "consolidate_interval_s", "clock_change_s", "share_change_s",
                           "keep_alive_s", "drain_s", "gpu_memory_utilization", "contention_tol", "stop_when_done")),
    *(f"workload.{k}" for k in ("rate_rps", "duration_s", "arrival_cv", "diurnal_amplitude", "diurnal_period_s",
                                "zipf_s", "shift_sigma", "shift_period_s", "lengths")),
    *(f"reward.{k}" for k in ("energy_weight", "ttft_weight", "tbt_weight", "mode")),
    *(f"models.{MODEL}.slo.{k}" for k in ("ttft_s", "tbt_s", "ttft_per_1k_tokens_s", "tbt_quantile")),
    *(f"models.{MODEL}.engine.{k}" for k in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_gb", "init_s")),
    *(f"policy.params.{k}" for k in ("tbt_margin", "ttft_margin", "n_clock_levels", "spawn_after", "absorb_limit")),
    "cluster.gpus", "policy.name",
]
ENV_KEYS = [*(f"env.{k}" for k in ("episode_s", "warmup_s", "clock_levels", "share_levels", "batch_caps")),
            *(f"local.{k}" for k in ("rate_rps", "gpus", "models"))]
VALUES = st.sampled_from([
    "nan", "inf", "-inf", "-1", "0", "1e-300", "1e30", "1e7", "1e400", "9" * 40, "-0.5", "0.5", "2", "true",
    "null", "abc", "[]", "{}", "[1, 2]", "'3'", "{a: 1}", "[H100-SXM-80GB]", "{H100-SXM-80GB: 0}", "0x10",
    "{H100-SXM-80GB: 1.5}", "[nope]", ": :", "1_000", ".inf", "~",
])


@pytest.mark.filterwarnings("error::RuntimeWarning")  # an overflow is a number gone wrong, not an answer
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=2))
def test_compare_runs_or_says_festgym_error(pairs, tmp_path, capsys):
    args = ["compare", "--policies", "festina", "--duration", "4", "--jobs", "1", "--out", str(tmp_path)]
    for key, value in pairs:
        args += ["--set", f"{key}={value}"]
    code = main(args)  # anything but a festgym error propagates and fails the test
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("festgym: error: ") and "Traceback" not in err


@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(max_examples=25, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from(ENV_KEYS + KEYS[:9]), VALUES), min_size=1, max_size=2))
def test_an_environment_works_or_raises_a_festgym_error(pairs):
    try:
        scenario = load_scenario(DEFAULT, **parse_overrides([f"{k}={v}" for k, v in pairs], DEFAULT.raw))
        env = gym.make("festgym/LocalGPU-v0", scenario=scenario,
                       env={"episode_s": 5, "warmup_s": 1, **scenario.raw.get("env", {})})
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()
    except FestgymError:
        pass


@pytest.mark.parametrize("text, value", [("1e7", 1e7), ("1.5e-3", 1.5e-3), ("30", 30.0)])
def test_numbers_in_any_notation_reach_float_settings(text, value):
    scenario = load_scenario(DEFAULT, **parse_overrides([f"sim.drain_s={text}"], DEFAULT.raw))
    assert scenario.sim.drain_s == value and isinstance(scenario.sim.drain_s, float)


def test_dotted_model_names_are_addressed_by_set():
    for key in (f"models.{MODEL}.slo.ttft_s", f'models."{MODEL}".slo.ttft_s'):
        scenario = load_scenario(DEFAULT, **parse_overrides([f"{key}=0.9"], DEFAULT.raw))
        assert scenario.models[MODEL].slo.ttft_s == 0.9


@pytest.mark.parametrize("setting, message", [
    ("sim.drain_s=-1", "sim: field 'drain_s': out of range (-1.0); expected ≥ 0 s"),
    ("sim.drain_s=nan", "field 'drain_s': must be finite"),
    ("workload.rate_rps=abc", "workload: field 'rate_rps': expected float, got 'abc'"),
    (f"models.{MODEL}.engine.max_num_seqs=2.5", "engine: field 'max_num_seqs': expected a whole number"),
    ("sim.stop_when_done=3", "field 'stop_when_done': expected true or false"),
    ("sim.drain_s=1e7", "at most 50,000,000 GPU control intervals"),
])
def test_bad_values_name_the_key_and_the_range(setting, message, tmp_path, capsys):
    code = main(["compare", "--policies", "festina", "--duration", "4", "--jobs", "1", "--out", str(tmp_path),
                 "--set", setting])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("duration", ["nan", "inf", "-5", "0", "1e9"])
def test_an_impossible_duration_is_refused_before_anything_is_allocated(duration, tmp_path, capsys):
    assert main(["compare", "--policies", "festina", "--duration", duration, "--jobs", "1",
                 "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("festgym: error: --duration" if duration != "1e9" else "festgym: error:")
