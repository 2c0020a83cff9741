"""Gymnasium environments: API conformance (Gymnasium and SB3 checkers), determinism, pickling,
vectorisation, input validation, info/reward bookkeeping, episode length and control semantics."""

from __future__ import annotations

import math
import pickle
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest

import festgym
from festgym.control.levels import normalize_shares
from festgym.envs import ENV_IDS
from festgym.errors import FestgymError
from festgym.policies.registry import background_policy

IDS = list(ENV_IDS)
LOCAL, PLACEMENT, CLUSTER = "festgym/LocalGPU-v0", "festgym/Placement-v0", "festgym/Cluster-v0"
SPAWN = "festgym/Spawn-v0"
ACTION_TYPES = ("multidiscrete", "box")
SHORT = {"episode_s": 30, "warmup_s": 10}
QUICK = {"init_s": 2.0}
"""Engine start after the weights: short, so the engines a warm-up of 10 s starts are ready when
the episode begins (the scenarios' 14 s is vLLM's)."""
INFO_KEYS = ("reward_energy", "reward_ttft", "reward_tbt", "cost", "energy_j", "ttft_attainment", "tbt_attainment",
             "time_s")


def make(env_id: str, action_type: str = "multidiscrete", **kwargs) -> gym.Env:
    kwargs.setdefault("env", dict(SHORT))
    kwargs["sim"] = {**QUICK, **kwargs.get("sim", {})}
    return gym.make(env_id, action_type=action_type, **kwargs)


def identical(a, b) -> bool:
    """Bit-for-bit equality of observations, rewards and info values (NaN equals NaN)."""
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() \
            and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    x, y = np.asarray(a), np.asarray(b)
    return x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()


def rollout(env: gym.Env, seed: int, steps: int, action_seed: int = 123) -> list:
    """Reset with ``seed``, then step actions drawn from the action space seeded ``action_seed``."""
    out = [env.reset(seed=seed)]
    env.action_space.seed(action_seed)
    for _ in range(steps):
        result = env.step(env.action_space.sample())
        out.append(result)
        if result[2] or result[3]:
            break
    return out


def run_episode(env: gym.Env, action) -> list[dict]:
    infos = []
    while True:
        _, _, terminated, truncated, info = env.step(action)
        assert not terminated
        infos.append(info)
        if truncated:
            return infos


# --- conformance ---------------------------------------------------------------------------------

def test_every_id_is_registered_on_import():
    assert set(IDS) == {LOCAL, PLACEMENT, CLUSTER, SPAWN}
    for env_id in IDS:
        assert env_id in gym.registry
    festgym.envs.register_envs()  # idempotent


@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker(env_id, action_type):
    from gymnasium.utils.env_checker import check_env

    env = make(env_id, action_type)
    check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("env_id", IDS)
def test_sb3_env_checker(env_id, action_type):
    from stable_baselines3.common.env_checker import check_env

    env = make(env_id, action_type)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, warn=True)
    assert not [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_step_or_render_before_reset_is_a_clear_error(env_id):
    """Unwrapped too (gym.make's order check is a wrapper): never an AttributeError."""
    env = make(env_id).unwrapped
    action = env.action_space.sample()
    with pytest.raises(gym.error.ResetNeeded, match="call reset"):
        env.step(action)
    assert env.render() is None or isinstance(env.render(), str)
    env.close()


@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("env_id", IDS)
def test_spaces(env_id, action_type):
    env = make(env_id, action_type)
    u = env.unwrapped
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box) and space.dtype == np.float32
    assert np.all(space.low == 0) and np.all(space.high == 1)
    assert len(u.feature_names) == space.shape[0] == len(set(u.feature_names))
    n = len(u.action_labels)
    if action_type == "box":
        assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (n,)
        assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    else:
        assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
        assert env.action_space.nvec.tolist() == u.nvec.tolist() and len(u.nvec) == n


# --- determinism and pickling --------------------------------------------------------------------

@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_episode_bit_for_bit(env_id, action_type):
    a = rollout(make(env_id, action_type), seed=3, steps=25)
    b = rollout(make(env_id, action_type), seed=3, steps=25)
    assert len(a) == len(b) > 1
    assert identical(a[0], b[0])
    for x, y in zip(a[1:], b[1:]):
        assert identical(x[0], y[0])  # observation
        assert type(x[1]) is float and identical(x[1], y[1])  # reward
        assert (x[2], x[3]) == (y[2], y[3])
        assert identical(x[4], y[4])  # info
    c = rollout(make(env_id, action_type), seed=4, steps=25)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))


@pytest.mark.parametrize("env_id", IDS)
def test_reset_with_a_seed_restarts_the_same_episode(env_id):
    env = make(env_id)
    first = rollout(env, seed=9, steps=8)
    rollout(env, seed=10, steps=5)  # something else in between
    again = rollout(env, seed=9, steps=8)
    fresh = rollout(make(env_id), seed=9, steps=8)
    for x, y, z in zip(first, again, fresh):
        assert identical(x, y) and identical(x, z)


@pytest.mark.parametrize("env_id", IDS)
def test_pickle_roundtrip_continues_identically(env_id):
    env = make(env_id)
    env.reset(seed=5)
    copy = pickle.loads(pickle.dumps(env))  # right after reset
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(10)]
    for action in actions[:3]:
        assert identical(env.step(action), copy.step(action))
    copy2 = pickle.loads(pickle.dumps(env))  # after a few steps
    for action in actions[3:]:
        expected = env.step(action)
        assert identical(expected, copy.step(action))
        assert identical(expected, copy2.step(action))


# --- vectorisation -------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_sync(env_id):
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", env=dict(SHORT))
    try:
        obs, _ = vec.reset(seed=0)
        assert obs.shape == (2,) + vec.single_observation_space.shape and obs.dtype == np.float32
        vec.action_space.seed(0)
        for _ in range(3):
            obs, rewards, terminated, _truncated, _infos = vec.step(vec.action_space.sample())
            assert obs.shape[0] == rewards.shape[0] == 2 and np.isfinite(rewards).all()
            assert not terminated.any()
    finally:
        vec.close()


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_subproc_vec_env(env_id):
    from stable_baselines3.common.vec_env import SubprocVecEnv

    vec = SubprocVecEnv([lambda: gym.make(env_id, env=dict(SHORT)) for _ in range(2)], start_method="fork")
    try:
        obs = vec.reset()
        assert obs.shape == (2,) + vec.observation_space.shape
        vec.action_space.seed(0)
        for _ in range(3):
            obs, rewards, dones, infos = vec.step(np.stack([vec.action_space.sample() for _ in range(2)]))
            assert obs.shape[0] == len(rewards) == len(dones) == len(infos) == 2
            assert np.isfinite(rewards).all() and all("energy_j" in i for i in infos)
    finally:
        vec.close()


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", IDS)
def test_out_of_range_multidiscrete_action_names_the_component(env_id):
    env = make(env_id)
    env.reset(seed=0)
    u = env.unwrapped
    ok = np.zeros(len(u.nvec), dtype=np.int64)
    for i in {0, len(u.nvec) - 1}:
        for bad in (u.nvec[i], -1):
            action = ok.copy()
            action[i] = bad
            with pytest.raises(ValueError, match=re.escape(f"action[{i}] ({u.action_labels[i]})")):
                env.step(action)
    with pytest.raises(ValueError, match="whole numbers"):
        env.step(ok + 0.5)
    env.step(ok)  # still usable after rejected actions


def test_out_of_range_clock_level_is_named_clock():
    env = make(LOCAL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="clock"):
        env.step(np.array([8, 0, 0]))
    with pytest.raises(ValueError, match=r"share\[Llama-3\.2-3B\]"):
        env.step(np.array([0, 0, 4]))


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("value", [1.5, -1.5, np.nan, np.inf])
def test_bad_box_action_raises(env_id, value):
    env = make(env_id, "box")
    env.reset(seed=0)
    n = env.action_space.shape[0]
    action = np.zeros(n, dtype=np.float32)
    action[-1] = value
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        env.step(action)
    env.step(np.ones(n, dtype=np.float32))  # the bounds themselves are fine
    env.step(-np.ones(n, dtype=np.float32))


@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("env_id", IDS)
def test_wrong_shape_action_raises(env_id, action_type):
    env = make(env_id, action_type)
    env.reset(seed=0)
    n = len(env.unwrapped.nvec)
    for bad in (np.zeros(n + 1), np.zeros((n, 1)), np.zeros(0)):
        with pytest.raises(ValueError, match="shape"):
            env.step(bad.astype(np.float32 if action_type == "box" else np.int64))


@pytest.mark.parametrize("a, level", [(-1.0, 0), (-0.76, 0), (-0.74, 1), (0.0, 4), (0.74, 6), (0.76, 7), (1.0, 7)])
def test_box_component_maps_to_level(a, level):
    """Component value a in [-1, 1] gives level floor((a + 1) / 2 * n), the top value included."""
    env = make(LOCAL, "box")
    env.reset(seed=0)
    u = env.unwrapped
    env.step(np.array([a, 0.0, 0.0], dtype=np.float32))
    gpu = u.sim.gpus[0]
    assert gpu.clock == u.clocks[gpu.spec.name][level]


@pytest.mark.parametrize("env_id", IDS)
def test_bad_constructor_arguments_name_the_key(env_id):
    with pytest.raises(ValueError, match="action_type 'continuous'"):
        gym.make(env_id, action_type="continuous")
    with pytest.raises(ValueError, match="'foo'"):
        gym.make(env_id, foo=1)
    with pytest.raises(ValueError, match="'rate'"):
        gym.make(env_id, workload={"rate": 3})
    with pytest.raises(ValueError, match="'episodes'"):
        gym.make(env_id, env={"episodes": 3})
    with pytest.raises(ValueError) as err:
        gym.make(env_id, scenario="no-such-scenario")
    for name in festgym.scenario.list_scenarios():
        assert name in str(err.value)


# --- info and reward -----------------------------------------------------------------------------

@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("env_id", IDS)
def test_info_reward_and_observation_bounds(env_id, action_type):
    env = make(env_id, action_type)
    obs, info = env.reset(seed=1)
    assert "time_s" in info
    env.action_space.seed(1)
    steps = 0
    for _ in range(40):
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        assert len(env.unwrapped.feature_names) == obs.shape[0]
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        for key in INFO_KEYS:
            assert key in info, key
        assert isinstance(reward, float)
        assert np.isclose(reward, info["reward_energy"] + info["reward_ttft"] + info["reward_tbt"])
        assert info["energy_j"] > 0 and info["reward_energy"] < 0
        assert info["reward_ttft"] <= 0 and info["reward_tbt"] <= 0
        for key in ("ttft_attainment", "tbt_attainment"):
            assert np.isnan(info[key]) or 0 <= info[key] <= 1
        assert not terminated
        if truncated:
            break
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert steps > 1


@pytest.mark.parametrize("mode", ["smooth", "count"])
def test_reward_terms_follow_the_scenario_weights(mode):
    weights = {"energy_weight": 0.5, "ttft_weight": 2.0, "tbt_weight": 0.25, "mode": mode}
    env = make(LOCAL, reward=weights, local={"rate_rps": 8.0})
    env.reset(seed=2)
    tdp = env.unwrapped.sim.gpus[0].spec.tdp_w
    interval = env.unwrapped.interval_s
    env.action_space.seed(2)
    for _ in range(10):
        _, _reward, _, _, info = env.step(env.action_space.sample())
        assert info["reward_energy"] == pytest.approx(-0.5 * info["energy_j"] / (tdp * interval))
        ttft = info["ttft_excess"] if mode == "smooth" else info["ttft_over"]
        tbt = info["tbt_excess"] if mode == "smooth" else info["gaps_over"]
        assert info["reward_ttft"] == pytest.approx(-2.0 * ttft, abs=1e-12)
        assert info["reward_tbt"] == pytest.approx(-0.25 * tbt, abs=1e-12)
        # The safe-RL cost (Safety-Gymnasium's info["cost"]): the SLO terms alone, non-negative.
        assert info["cost"] == pytest.approx(2.0 * ttft + 0.25 * tbt, abs=1e-12) and info["cost"] >= 0
        assert _reward == pytest.approx(info["reward_energy"] - info["cost"], abs=1e-12)
        if info["first_tokens"]:
            assert info["ttft_attainment"] == pytest.approx(1 - info["ttft_over"] / info["first_tokens"])


@pytest.mark.parametrize("env_id", [LOCAL, CLUSTER])
def test_interval_energies_add_up_to_the_gpus_energy(env_id):
    env = make(env_id)
    env.reset(seed=0)
    u = env.unwrapped

    def total() -> float:
        for g in u.sim.gpus:
            g.update(u.sim.now)
        return sum(u.sim.gpus[i].energy_total_j for i in u.controlled)

    start = total()
    env.action_space.seed(0)
    joules = 0.0
    while True:
        _, _, _, truncated, info = env.step(env.action_space.sample())
        joules += info["energy_j"]
        if truncated:
            break
    assert joules == pytest.approx(total() - start, rel=1e-9)


@pytest.mark.parametrize("env_id", [LOCAL, CLUSTER, PLACEMENT])
def test_reset_info_time_is_the_observation_time(env_id):
    env = make(env_id)
    _, info = env.reset(seed=0)
    now = env.unwrapped.sim.now
    assert now >= SHORT["warmup_s"]
    assert info["time_s"] == now


# --- episode length ------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", [LOCAL, CLUSTER])
@pytest.mark.parametrize("interval, episode, steps", [(1.0, 30, 30), (0.25, 5, 20), (0.1, 3, 30)])
def test_control_envs_truncate_after_episode_over_interval_steps(env_id, interval, episode, steps):
    env = make(env_id, env={"episode_s": episode, "warmup_s": 10}, sim={"control_interval_s": interval})
    env.reset(seed=0)
    env.action_space.seed(0)
    for k in range(1, steps + 1):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert terminated is False
        assert truncated is (k == steps), k
    assert info["time_s"] == pytest.approx(10 + episode)


def test_local_gpu_default_interval_gives_30_steps():
    env = make(LOCAL)
    assert env.unwrapped.interval_s == 1.0
    env.reset(seed=0)
    infos = run_episode(env, np.zeros(3, dtype=np.int64))
    assert len(infos) == 30
    assert [i["time_s"] for i in infos] == [float(t) for t in range(11, 41)]


def test_placement_truncates_at_the_episode_end():
    env = make(PLACEMENT)
    env.reset(seed=0)
    infos = run_episode(env, np.zeros(1, dtype=np.int64))
    assert len(infos) > 30  # one step per arrival (~20 req/s)
    times = [i["time_s"] for i in infos]
    assert all(SHORT["warmup_s"] <= t <= sum(SHORT.values()) for t in times)
    assert times == sorted(times) and times[-1] == sum(SHORT.values())


# --- semantics -----------------------------------------------------------------------------------

def test_lowest_clock_uses_less_energy_than_top_clock():
    totals = {}
    for level in (0, 7):
        env = make(LOCAL)
        env.reset(seed=0)
        totals[level] = sum(i["energy_j"] for i in run_episode(env, np.array([level, 3, 3])))
    assert totals[0] < totals[7]


@pytest.mark.parametrize("level", [0, 3, 7])
def test_agent_clock_reaches_the_gpu(level):
    env = make(LOCAL)
    env.reset(seed=0)
    u = env.unwrapped
    gpu = u.sim.gpus[0]
    levels = u.clocks[gpu.spec.name]
    assert len(levels) == 8 and list(levels) == sorted(levels)
    for _ in range(3):
        env.step(np.array([level, 1, 1]))
        assert gpu.clock == levels[level]


def test_agent_shares_and_batch_caps_reach_the_instances():
    env = make(LOCAL, env={**SHORT, "batch_caps": [4, 32]})
    u = env.unwrapped
    assert u.action_labels == ("clock", "share[Llama-3.1-8B]", "share[Llama-3.2-3B]",
                               "batch_cap[Llama-3.1-8B]", "batch_cap[Llama-3.2-3B]")
    env.reset(seed=0)
    gpu = u.sim.gpus[0]
    assert sorted(i.name for i in gpu.instances) == sorted(u.models)  # both loaded after warm-up
    for action in ([7, 3, 0, 0, 1], [7, 0, 3, 1, 0], [2, 1, 1, 1, 1]):
        env.step(np.array(action))
        expected = normalize_shares([(action[1] + 1) / 4, (action[2] + 1) / 4])
        by_name = {i.name: i for i in gpu.instances}
        for k, model in enumerate(u.models):
            inst = by_name[model]
            share = inst.pending_share if inst.pending_share is not None else inst.share
            assert share == expected[k]
            assert inst.max_num_seqs == (4, 32)[action[3 + k]]
        assert sum(expected) <= 1


def test_cluster_route_sends_a_models_arrivals_to_the_chosen_gpu():
    env = make(CLUSTER)
    env.reset(seed=0)
    u = env.unwrapped
    g, m = len(u.sim.gpus), len(u.models)
    model = u.models[0]  # the most popular: many arrivals within a few steps
    action = np.zeros(len(u.nvec), dtype=np.int64)
    action[:g] = 7
    action[g + g * m + u.models.index(model)] = 6  # GPU 5
    t0 = u.sim.now
    for _ in range(5):
        env.step(action)
    log, trace = u.sim.ledger.log, u.sim.trace
    arrived = (trace.arrival_s >= t0) & (trace.arrival_s < u.sim.now)
    mine = arrived & (np.asarray(trace.models)[trace.model] == model)
    assert mine.sum() > 0
    assert np.all(log.gpu[mine] == 5)


def test_placement_action_places_the_request_on_that_gpu():
    from festgym.sim.ledger import REJECTED_MEMORY

    env = make(PLACEMENT)
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    names = u.feature_names
    rejected = 0
    for step in range(40):
        rid = u.rid
        assert rid is not None
        model = u.models[int(u.sim.trace_model[u.sim.trace.model[rid]])]
        assert obs[names.index(f"request.{model}")] == 1.0
        hosts = [k for k in range(len(u.sim.gpus)) if u.sim.can_host(k, model)]
        for k in range(len(u.sim.gpus)):
            assert obs[names.index(f"gpu{k}.fits")] == (1.0 if k in hosts else 0.0)
        others = [k for k in range(len(u.sim.gpus)) if k not in hosts]
        if others and (step % 2 or not hosts):  # a GPU without memory for the model rejects the request
            obs, _, _, _, info = env.step(np.array([others[0]]))
            assert u.sim.ledger.log.status[rid] == REJECTED_MEMORY
            # ... and the reward charges it as a first token a cold start there late, never less
            late = u.sim.load_time_s(u.sim.gpus[others[0]], u.models.index(model)) / u.sim.ttft_limit_s[rid]
            assert late > 1 and info["rejected"] == 1 and info["ttft_over"] >= 1
            assert info["ttft_excess"] >= late and info["reward_ttft"] <= -late
            rejected += 1
            continue
        k = hosts[step % len(hosts)]
        obs, _, _, _, info = env.step(np.array([k]))
        assert info["rejected"] == 0
        assert u.sim.ledger.log.gpu[rid] == k
        assert u.sim.gpus[k].instance_of(u.models.index(model)) is not None


@pytest.mark.parametrize("env_id", [LOCAL, CLUSTER, PLACEMENT])
def test_step_none_defers_to_the_background_policy(env_id):
    """Stepping with ``None`` throughout reproduces a plain simulator run of the background policy."""
    env = make(env_id)
    env.reset(seed=0)
    u = env.unwrapped
    infos = run_episode(env, None)
    assert infos
    sc = u.scenario
    sim = sc.simulator(local=u.local)
    sim.start(u.sim.trace, background_policy(sc))
    sim.advance(u.sim.now)
    for a, b in zip(sim.gpus, u.sim.gpus):
        a.update(sim.now)
        b.update(u.sim.now)
        assert a.energy_total_j == pytest.approx(b.energy_total_j, rel=1e-12)
    assert np.array_equal(sim.ledger.log.gpu, u.sim.ledger.log.gpu)
    assert np.array_equal(sim.ledger.log.first_s, u.sim.ledger.log.first_s, equal_nan=True)


@pytest.mark.parametrize("env_id", IDS)
def test_render_ansi(env_id):
    env = make(env_id, render_mode="ansi")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    text = env.render()
    assert isinstance(text, str) and "GPU 0" in text and "MHz" in text
    assert make(env_id).unwrapped.render() is None


def test_observations_one_hot_the_five_states_trained_controllers_know():
    """The simulator's seven GPU states read as the five of the observation: asleep and empty as
    idle, a booting node as waking, a node that is off as parked."""
    from festgym.control.features import GPU_FEATURES, gpu_vector
    from festgym.control.states import OBSERVED_STATES, STATES

    assert [f for f in GPU_FEATURES if f.startswith("state_")] == \
        ["state_busy", "state_loading", "state_idle", "state_waking", "state_parked"]
    reads = {"busy": "busy", "loading": "loading", "idle": "idle", "asleep": "idle", "empty": "idle",
             "booting": "waking", "off": "parked"}
    assert set(reads) == set(STATES)
    for index, state in enumerate(STATES):
        onehot = gpu_vector(350.0, 700.0, 1095.0, 210.0, 1980.0, 0.5, index)[3:]
        assert onehot == [1.0 if s == reads[state] else 0.0 for s in OBSERVED_STATES], state


# --- bugs ----------------------------------------------------------------------------------------

def test_clock_levels_beyond_the_supported_clocks():
    with pytest.raises(FestgymError, match=r"clock_levels: out of range \(120\); expected at least 2 and at most 93"):
        make(LOCAL, env={**SHORT, "clock_levels": 120})


def test_background_load_estimates_for_agent_gpus_follow_the_live_state():
    """The background policy's control does not run for the agent's GPUs, yet Festina's load
    estimates for them (used by its placement and consolidation) reflect their current load."""
    env = make(CLUSTER)
    env.reset(seed=0)
    u = env.unwrapped
    background = u.agent.background
    original, calls = background.control, []

    def spy(gpu, now):
        calls.append(gpu.index)
        return original(gpu, now)

    background.control = spy
    env.action_space.seed(0)
    for _ in range(3):
        env.step(env.action_space.sample())
    assert not [g for g in calls if g in u.controlled]
    resident = [(gpu.index, inst.name) for gpu in u.sim.gpus for inst in gpu.instances]
    held = {key: background.need(*key) for key in resident}
    background._need.clear()  # recomputed from the live state now
    assert held == {key: background.need(*key) for key in resident}
    assert any(v > 0 for v in held.values())


def test_placement_local_control_follows_the_background_policy():
    env = make(PLACEMENT)
    env.reset(seed=0)
    u = env.unwrapped
    background = u.agent.background
    original = background.control
    calls = []

    def spy(gpu, now):
        calls.append((gpu.index, now))
        return original(gpu, now)

    background.control = spy
    first_tick = math.ceil(u.sim.now)  # ticks up to the first arrival ran inside reset
    env.action_space.seed(0)
    while True:
        rid = u.rid
        model = u.models[int(u.sim.trace_model[u.sim.trace.model[rid]])] if rid is not None else u.models[0]
        hosts = [k for k in range(len(u.sim.gpus)) if u.sim.can_host(k, model)] or [0]
        if env.step(np.array([hosts[0]]))[3]:
            break
    # every control tick of the episode (up to 39 s) asks the background policy about the awake GPUs
    assert sorted({t for _, t in calls}) == [float(t) for t in range(first_tick, 40)]


# --- wrappers ----------------------------------------------------------------------------------

def test_discrete_actions_numbers_every_joint_action_once():
    from festgym.envs.wrappers import DiscreteActions

    env = DiscreteActions(make(LOCAL))
    nvec = env.unwrapped.nvec
    decoded = {tuple(env.action(k)) for k in range(env.action_space.n)}
    assert env.action_space.n == int(np.prod(nvec)) == len(decoded)
    assert all(0 <= a < n for levels in decoded for a, n in zip(levels, nvec))
    assert tuple(env.action(env.action_space.n - 1)) == tuple(nvec - 1)
    with pytest.raises(ValueError, match="outside"):
        env.action(env.action_space.n)


def test_discrete_actions_refuses_huge_spaces_and_trains_dqn():
    from stable_baselines3 import DQN

    from festgym.envs.wrappers import DiscreteActions

    with pytest.raises(ValueError, match="too many.*PPO"):
        DiscreteActions(make(CLUSTER))
    with pytest.raises(TypeError, match="MultiDiscrete"):
        DiscreteActions(make(LOCAL, action_type="box"))
    model = DQN("MlpPolicy", DiscreteActions(make(LOCAL)), learning_starts=20, buffer_size=200, seed=0, device="cpu")
    model.learn(total_timesteps=60)


@pytest.mark.parametrize("algo, action_type", [("PPO", "multidiscrete"), ("A2C", "multidiscrete"), ("SAC", "box")])
def test_sb3_algorithms_train_on_local_gpu(algo, action_type):
    """Each algorithm family the issue names runs a short training loop on the matching space."""
    import stable_baselines3

    env = make(LOCAL, action_type=action_type)
    kwargs = {"n_steps": 32, "batch_size": 32} if algo == "PPO" else {"n_steps": 8} if algo == "A2C" \
        else {"learning_starts": 16, "buffer_size": 200, "batch_size": 16}
    model = getattr(stable_baselines3, algo)("MlpPolicy", env, seed=0, device="cpu", **kwargs)
    model.learn(total_timesteps=64)
    action, _ = model.predict(env.reset(seed=1)[0], deterministic=True)
    assert env.action_space.contains(action)


# --- domain randomisation (LocalGPU-v0) -----------------------------------------------------------

POOL = {"pool": ["Llama-3.1-8B", "Qwen3-8B", "Llama-3.2-3B", "Qwen3-14B"], "rate_scale": [0.25, 1.75]}


def test_randomised_local_episodes_draw_models_and_rates():
    env = make("festgym/LocalGPU-v0", local=POOL).unwrapped
    assert env.action_labels == ("clock", "share[slot0]", "share[slot1]")
    assert env.feature_names[0] == "slot0.resident"
    drawn, rates = set(), []
    for seed in range(12):
        env.reset(seed=seed)
        ranks = [env.sim.model_names.index(m) for m in env.models]
        assert 1 <= len(env.models) <= 2 and ranks == sorted(ranks)  # popularity order
        drawn.add(env.models)
        rates.append(len(env.sim.trace) / (env.t_end))
    assert len(drawn) >= 5 and any(len(m) == 1 for m in drawn)
    assert max(rates) > 2 * min(rates)  # 1-7 req/s


def test_randomised_episodes_are_deterministic_and_pickle():
    a = rollout(make("festgym/LocalGPU-v0", local=POOL), seed=4, steps=20)
    b = rollout(make("festgym/LocalGPU-v0", local=POOL), seed=4, steps=20)
    assert all(identical(x, y) for x, y in zip(a, b))
    env = make("festgym/LocalGPU-v0", local=POOL)
    env.reset(seed=6)
    copy = pickle.loads(pickle.dumps(env))
    assert copy.unwrapped.models == env.unwrapped.models
    action = env.action_space.sample()
    assert identical(env.step(action), copy.step(action))


def test_an_empty_slot_reads_as_empty():
    env = make("festgym/LocalGPU-v0", local=POOL).unwrapped
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        if len(env.models) == 1:
            assert not obs[10:20].any()  # slot 1: no model, all features zero
            obs, *_ = env.step(np.array([7, 3, 0]))
            assert env.sim.gpus[0].instances[0].share == 1.0  # the lone model takes the GPU
            return
    pytest.fail("no single-model episode in 20 seeds")


def test_local_pool_must_be_scenario_models():
    from festgym.errors import SpecError
    from festgym.scenario import load_scenario

    with pytest.raises(SpecError, match="local.pool"):
        load_scenario("default", local={"pool": ["Llama-3.1-8B", "GPT-5"]})
    with pytest.raises(ValueError, match="rate_scale"):
        load_scenario("default", local={"rate_scale": [2.0, 1.0]})


def test_run_episode_sums_the_episode():
    from festgym.envs.rollout import run_episode

    env = make(LOCAL)
    totals = run_episode(env, lambda obs: np.array([3, 2, 1]), seed=2)
    rows = []  # the same episode, summed by hand
    env.reset(seed=2)
    done = False
    while not done:
        _obs, r, term, trunc, info = env.step(np.array([3, 2, 1]))
        rows.append((r, info))
        done = term or trunc
    assert totals["reward"] == pytest.approx(sum(r for r, _ in rows))
    assert totals["kwh"] == pytest.approx(sum(i["energy_j"] for _, i in rows) / 3.6e6) and totals["kwh"] > 0
    assert 0 <= totals["ttft_attainment"] <= 1 and 0 <= totals["tbt_attainment"] <= 1


def test_seeded_episodes_replay_the_same_evaluation():
    """SB3's evaluation through SeededEpisodes plays run_episode's episodes, seeded first_seed up,
    and the same ones after a restart: what the training callback chooses checkpoints on."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.vec_env import DummyVecEnv

    from festgym.envs.rollout import SeededEpisodes, run_episode

    def act(obs):
        return np.array([3, 2, 1])

    venv = DummyVecEnv([lambda: SeededEpisodes(make(LOCAL), first_seed=40)])
    returns = []
    for _ in range(2):
        venv.env_method("restart")
        obs, played, total = venv.reset(), [], 0.0
        while len(played) < 3:
            obs, r, done, _info = venv.step(np.array([act(obs[0])]))
            total += float(r[0])
            if done[0]:
                played.append(total)
                total = 0.0
        returns.append(played)
    assert returns[0] == returns[1]
    expected = [run_episode(make(LOCAL), act, 40 + i)["reward"] for i in range(3)]
    assert returns[0] == pytest.approx(expected, rel=1e-6)
    assert len(set(returns[0])) == 3  # three different episodes
    explicit = SeededEpisodes(make(LOCAL), first_seed=40)
    explicit.reset(seed=7)
    assert explicit.played == 0  # an explicit seed is not one of the sequence


def test_lagrangian_reward_weighs_the_cost_by_its_multiplier():
    from festgym.envs.constrained import LagrangianReward, dual_step

    plain, wrapped = make(LOCAL), LagrangianReward(make(LOCAL), multiplier=1.0)
    plain.reset(seed=3)
    wrapped.reset(seed=3)
    for multiplier in (1.0, 0.0, 2.5):
        wrapped.set_multiplier(multiplier)
        _, r, *_rest, info = plain.step(np.array([3, 2, 1]))
        _, rw, *_rest, info_w = wrapped.step(np.array([3, 2, 1]))
        assert info == info_w  # the same step underneath
        assert rw == pytest.approx(info["reward_energy"] - multiplier * info["cost"])
        if multiplier == 1.0:
            assert rw == pytest.approx(r)
    violations = LagrangianReward(make(LOCAL), multiplier=2.0, cost_key="ttft_over")
    violations.reset(seed=3)
    _, rv, *_rest, info = violations.step(np.array([3, 2, 1]))
    assert rv == pytest.approx(info["reward_energy"] - 2.0 * info["ttft_over"])
    assert dual_step(1.0, 3.0, 2.0, 0.5) == pytest.approx(1.25)
    assert dual_step(0.1, 0.0, 2.0, 0.5) == 0.0  # never below zero
