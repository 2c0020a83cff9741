"""Trained local controllers in the simulator (LearnedLocal), checkpoints in compare/evaluate, and
the scenario overrides evaluate uses. The controllers here are hand-built numpy policies: their
actions are known, so the tests can tell whether the simulator obeyed them."""

from __future__ import annotations

import io
import json

import gymnasium as gym
import numpy as np
import pytest

import festgym  # noqa: F401  (registers the environments)
from festgym.cli.main import main
from festgym.control.checkpoint import (
    LocalController,
    find_checkpoints,
    read_card,
    seal_card,
)
from festgym.control.numpy_policy import FORMAT, WEIGHTS, PolicyFileError, sha256_file
from festgym.errors import FestgymError, SpecError
from festgym.jobs.compare import check_policies, compare, policy_label
from festgym.policies import make_policy
from festgym.policies.learned import LearnedLocal
from festgym.scenario import (
    controller_interface,
    load_scenario,
    parse_overrides,
    scale_load,
)

N_OBS = 30  # LocalGPU-v0 on the default scenario: 2 slots x 10 + 8 GPU + 2 time features
NVEC = [8, 4, 4]


def write_export(folder, one_hots, n_obs: int, nvec) -> None:
    """``folder/numpy``: one linear layer with zero weights and, per action part, a one-hot bias:
    a policy that ignores its observation."""
    export = folder / "numpy"
    export.mkdir(parents=True)
    bias = np.concatenate(one_hots)
    buffer = io.BytesIO()
    np.savez(buffer, W0=np.zeros((len(bias), n_obs)), b0=bias)
    (export / WEIGHTS).write_bytes(buffer.getvalue())
    spec = {"format": FORMAT, "algorithm": "PPO", "observation_shape": [n_obs], "layers": ["identity"],
            "action": {"type": "multidiscrete", "nvec": list(nvec)}, "obs_normalization": None,
            "sha256": {WEIGHTS: sha256_file(export / WEIGHTS)}}
    (export / "policy.json").write_text(json.dumps(spec))


def write_checkpoint(folder, clock: int, shares: tuple[int, int], nvec=NVEC, scenario="default", n_obs=N_OBS):
    """A checkpoint whose policy ignores its observation and always picks these levels: one
    linear layer with zero weights and a bias that is largest at the chosen level of each part."""
    write_export(folder, [np.eye(n)[k] for n, k in zip(nvec, (clock, *shares))], n_obs, nvec)
    card = {"name": folder.name, "scenario": scenario, "env": "festgym/LocalGPU-v0",
            "agent": {"algo": "ppo", "env_kwargs": {"action_type": "multidiscrete"}}, "sha256": {}}
    (folder / "card.json").write_text(json.dumps(card))
    seal_card(folder, controller_interface(load_scenario(scenario), "multidiscrete"))
    return folder


@pytest.fixture
def lowest_clock(tmp_path):
    return write_checkpoint(tmp_path / "lowest-clock", clock=0, shares=(3, 0))


def run(policy, seconds=180.0, seed=0):
    """The saturated scenario: 4 models on 8 GPUs, so a GPU rarely holds more models than the
    controller's two slots and the controller, not its background, sets most GPUs."""
    scenario = load_scenario("saturated")
    return scenario.simulator().run(scenario.trace(seed, seconds), policy)


def test_the_controller_sets_every_gpu_it_can(lowest_clock):
    policy = LearnedLocal(lowest_clock)
    result = run(policy)
    assert policy.calls > 0
    lowest = policy.decoder.clocks["H100-SXM-80GB"][0]
    busy = result.timeline[result.timeline.power_w > 0]
    # Festina's own control would raise clocks under this load; the controller holds the lowest
    # level on every GPU it controls (a GPU with more models than slots goes to Festina).
    share_lowest = (busy.clock_mhz == lowest).mean()
    assert share_lowest > 0.9 if policy.fallbacks == 0 else share_lowest > 0.5


def test_slot_shares_follow_the_popularity_order(lowest_clock):
    policy = LearnedLocal(lowest_clock)
    sim = load_scenario("saturated", cluster={"gpus": {"H100-SXM-80GB": 1}}).simulator()
    sim.start(load_scenario("saturated").trace(0, 60.0), policy)
    sim.advance(60.0)
    gpu = sim.gpus[0]
    control = policy.control(gpu.view, sim.now)
    present = sorted(gpu.view.models, key=sim.model_names.index)
    if len(present) == 2:  # slot 0 (the more popular model) gets weight 4/4, slot 1 gets 1/4
        assert control.shares[present[0]] > control.shares[present[1]]
    assert control.clock_mhz == policy.decoder.clocks["H100-SXM-80GB"][0]


def test_the_policy_sees_what_the_environment_sees():
    env = gym.make("festgym/LocalGPU-v0").unwrapped
    obs, _ = env.reset(seed=3)
    gpu = env.sim.gpus[0]
    rank = {m: k for k, m in enumerate(env.sim.model_names)}
    for _ in range(30):
        obs, *_ = env.step(env.action_space.sample())
        present = sorted(gpu.view.models, key=rank.__getitem__)
        if present == list(env.models):  # both slots filled: the slot orders must agree
            seen = gpu.view.observe([rank[m] for m in present], env.sim.now, env.decoder.clock_lo[gpu.spec.name],
                                    env.period_s)
            assert np.array_equal(np.asarray(seen, dtype=np.float32), obs)
            return
    pytest.fail("both local models never resident")


def test_runs_are_deterministic(lowest_clock):
    a, b = run(LearnedLocal(lowest_clock), 120), run(LearnedLocal(lowest_clock), 120)
    assert a.requests.equals(b.requests) and a.timeline.equals(b.timeline)


def test_bad_checkpoints_are_refused(tmp_path, lowest_clock):
    with pytest.raises(FestgymError, match="no checkpoint at"):
        LearnedLocal(tmp_path / "nowhere")
    wrong = write_checkpoint(tmp_path / "wrong", clock=0, shares=(0, 0), nvec=[8, 4, 4, 4])
    with pytest.raises(PolicyFileError, match="does not match festgym/LocalGPU-v0's levels"):
        LearnedLocal(wrong)
    wrong = write_checkpoint(tmp_path / "wrong-obs", clock=0, shares=(0, 0), n_obs=40)
    with pytest.raises(PolicyFileError, match=r"observes \(40,\)"):
        LearnedLocal(wrong)
    pinned = LocalController(lowest_clock).sha256
    assert LocalController(lowest_clock, expect_sha256=pinned.upper()).sha256 == pinned
    with pytest.raises(PolicyFileError, match="is not the pinned"):
        LocalController(lowest_clock, expect_sha256="0" * 64)
    card = read_card(lowest_clock)
    unsealed = {**card, "sha256": {}}
    (lowest_clock / "card.json").write_text(json.dumps(unsealed))
    with pytest.raises(PolicyFileError, match="no SHA-256 for numpy/policy.json"):
        LearnedLocal(lowest_clock)
    (lowest_clock / "card.json").write_text(json.dumps({**card, "interface": None}))
    with pytest.raises(PolicyFileError, match="no 'interface'"):
        LearnedLocal(lowest_clock)
    (lowest_clock / "card.json").write_text(json.dumps(card))
    (lowest_clock / "numpy" / WEIGHTS).write_bytes(b"tampered")
    with pytest.raises(PolicyFileError, match="SHA-256 differs .* refusing to run"):
        LearnedLocal(lowest_clock)
    (lowest_clock / "card.json").write_text("{")
    with pytest.raises(PolicyFileError, match="card.json: not JSON"):
        read_card(lowest_clock)


def test_make_policy_and_compare_take_checkpoints(lowest_clock):
    assert isinstance(make_policy(str(lowest_clock)), LearnedLocal)
    with pytest.raises(ValueError, match="checkpoints:"):
        make_policy("no-such-policy")
    assert check_policies([str(lowest_clock), "festina"]) == [str(lowest_clock), "festina"]
    assert policy_label(str(lowest_clock)) == "lowest-clock"
    with pytest.raises(FestgymError, match="not a rule policy, a shipped checkpoint"):
        check_policies(["festina", "nowhere/at-all"])
    result = compare("default", policies=(str(lowest_clock), "festina"), seeds=(0,), duration_s=120.0,
                     ablation=False, jobs=1, out=lowest_clock.parent / "out", progress=False)
    assert list(result.summary.policy) == ["lowest-clock", "festina", "max-clock"]
    row = result.summary.set_index("policy").loc["lowest-clock"]
    assert row.savings_pct > result.summary.set_index("policy").loc["festina"].savings_pct


def test_shipped_checkpoints_load_without_torch():
    """Every shipped checkpoint runs as a numpy policy, and the simulator path never imports torch."""
    import subprocess
    import sys

    code = ("import sys; from festgym.control.checkpoint import find_checkpoints; "
            "from festgym.policies import make_policy; [make_policy(n) for n in find_checkpoints()]; "
            "print(len(find_checkpoints()), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 2 and out[1] == "False"  # PPO and SAC ship


@pytest.mark.parametrize("name", sorted(find_checkpoints()))
def test_shipped_checkpoint_cards_hold(name):
    """Each shipped card: hashes of its files, training record, and the evaluation tables."""
    folder = find_checkpoints()[name]
    card = read_card(folder)
    for file, digest in card["sha256"].items():
        assert sha256_file(folder / file) == digest, file
    assert {"model.zip", "vecnormalize.pkl"} <= set(card["sha256"])
    assert card["wall_s"] > 0 and card["timesteps"] > 0
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 5e6  # a few MB at most
    tables = {e["scenario"]: e for e in card["evaluations"]}
    main_table = tables["default"]
    assert len(main_table["seeds"]) >= 5
    assert {r["policy"] for r in main_table["table"]} >= {name, "festina", "max-clock"}
    assert card["local_evaluation"]["rows"].keys() == {"controller", "festina (local rule)"}


@pytest.mark.parametrize("name", sorted(find_checkpoints()))
def test_shipped_export_acts_like_the_sb3_model(name):
    sb3 = pytest.importorskip("stable_baselines3")
    from festgym.control.numpy_policy import NumpyPolicy

    folder = find_checkpoints()[name]
    card = read_card(folder)
    model = getattr(sb3, card["agent"]["algo"].upper()).load(folder / "model.zip", device="cpu")
    obs = np.random.default_rng(1).uniform(0, 1, size=(10_000, N_OBS)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)  # the shipped agents do not normalise observations
    assert card["agent"]["normalize"].get("norm_obs") is False
    np.testing.assert_allclose(NumpyPolicy.load(folder / "numpy").predict(obs), expected, rtol=1e-5, atol=1e-5)


def test_cli_evaluate_records_in_the_card(lowest_clock, capsys):
    args = ["evaluate", "--policy", str(lowest_clock), "--duration", "60", "--jobs", "1", "--load", "0.5",
            "--set", "workload.lengths=azure-code", "--out", str(lowest_clock.parent / "ev"), "--record"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lowest-clock" in out and "festina" in out and "load x0.5" in out
    assert "lowest-clock vs festina, paired per seed: energy" in out
    (entry,) = read_card(lowest_clock)["evaluations"]
    assert set(entry["paired"]["festina"]) == {"energy_pct", "energy_pct_ci95", "gpu_energy_pct", "gpu_energy_pct_ci95",
                                               "slo_pp", "slo_pp_ci95", "seeds"}
    assert entry["seeds"] == [0] and [r["policy"] for r in entry["table"]] == ["lowest-clock", "festina", "max-clock"]
    assert main(args) == 0  # the same evaluation again replaces, not appends
    assert len(read_card(lowest_clock)["evaluations"]) == 1
    assert main(["evaluate", "--policy", "festina", "--duration", "30", "--record", "--jobs", "1",
                 "--out", str(lowest_clock.parent / "ev2")]) == 2
    assert "only checkpoint cards record" in capsys.readouterr().err


def test_overrides_and_load_scaling():
    assert parse_overrides(["workload.rate_rps=30", "workload.lengths=azure-code", "env.batch_caps=[8, 16]"]) == \
        {"workload": {"rate_rps": 30, "lengths": "azure-code"}, "env": {"batch_caps": [8, 16]}}
    for bad in ("rate_rps=30", "workload.rate_rps", "workload..x=1"):
        with pytest.raises(SpecError, match="SECTION.KEY=VALUE"):
            parse_overrides([bad])
    base = load_scenario("default")
    scaled = scale_load(base, 1.5)
    assert (base.workload.rate_rps, base.local.rate_rps) == (5, 4)
    assert scaled.workload.rate_rps == 7.5 and scaled.local.rate_rps == 6
    with pytest.raises(SpecError, match="positive"):
        scale_load(load_scenario("default"), 0.0)
    with pytest.raises(SpecError, match="rate_rps2"):
        load_scenario("default", **parse_overrides(["workload.rate_rps2=1"]))
