"""``festgym train`` and ``festgym export``: run folder, checkpoint card, hashes, numpy export."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

import stable_baselines3 as sb3

from festgym.cli.main import main
from festgym.control.checkpoint import CARD, checkpoint_digest, read_card
from festgym.control.numpy_policy import NumpyPolicy, PolicyFileError, sha256_file
from festgym.errors import SpecError
from festgym.jobs.train import export_checkpoint, train
from festgym.jobs.train_config import TrainConfig, load_agent

TINY = """\
algo: ppo
env: festgym/LocalGPU-v0
n_envs: {n_envs}
timesteps: 2048
hyperparams: {{n_steps: 256, batch_size: 64}}
normalize: {{norm_obs: true, norm_reward: true}}
eval_freq: 1024
eval_episodes: 1
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    agent = root / "tiny.yaml"
    agent.write_text(TINY.format(n_envs=2))  # two worker processes, as on the real runs
    return train(TrainConfig(str(agent), "default", None, 3, str(root / "runs"), progress=False))


@pytest.fixture(scope="module")
def digest(checkpoint):
    """The checkpoint's digest as `festgym train` prints it: what the trainer pins to export it."""
    return checkpoint_digest(read_card(checkpoint), str(checkpoint / CARD))


def test_run_folder_and_card(checkpoint):
    assert re.fullmatch(r"default__ppo__3__\d{8}-\d{6}", checkpoint.parent.name)
    assert {p.name for p in checkpoint.iterdir()} == {"model.zip", "vecnormalize.pkl", "card.json"}
    card = json.loads((checkpoint / "card.json").read_text())
    assert card["scenario"] == "default" and card["seed"] == 3 and card["timesteps"] == 2048
    assert card["agent"]["hyperparams"] == {"n_steps": 256, "batch_size": 64}
    assert [h["timesteps"] for h in card["evaluation"]["history"]] == [1024, 2048]
    assert card["sha256"] == {name: sha256_file(checkpoint / name) for name in ("model.zip", "vecnormalize.pkl")}
    assert (checkpoint.parent / "eval" / "evaluations.npz").is_file()


def test_export_acts_like_the_checkpoint(checkpoint, digest, tmp_path):
    policy = NumpyPolicy.load(export_checkpoint(checkpoint, tmp_path / "numpy", digest))
    model = sb3.PPO.load(checkpoint / "model.zip", device="cpu")
    stats = json.loads((tmp_path / "numpy" / "policy.json").read_text())["obs_normalization"]
    obs = np.random.default_rng(0).uniform(0, 1, size=(2000, 30)).astype(np.float32)
    normalised = np.clip((obs - np.array(stats["mean"])) / np.sqrt(np.array(stats["var"]) + stats["epsilon"]),
                         -stats["clip"], stats["clip"]).astype(np.float32)
    expected, _ = model.predict(normalised, deterministic=True)
    assert np.array_equal(policy.predict(obs), expected)


def test_export_refuses_a_changed_checkpoint(checkpoint, digest, tmp_path):
    copy = tmp_path / "ck"
    copy.mkdir()
    for p in checkpoint.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / "vecnormalize.pkl").write_bytes(b"not the statistics it was trained with")
    with pytest.raises(PolicyFileError, match="vecnormalize.pkl: missing or its SHA-256 differs"):
        export_checkpoint(copy, sha256=digest)


def test_cli_export_and_errors(checkpoint, digest, tmp_path, capsys):
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "np"), "--sha256", digest]) == 0
    assert (tmp_path / "np" / "weights.npz").is_file() and "numpy policy" in capsys.readouterr().out
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "np2")]) == 2
    assert "without a pinned digest" in capsys.readouterr().err and not (tmp_path / "np2").exists()
    assert main(["export", str(tmp_path)]) == 2
    assert "card.json: missing" in capsys.readouterr().err


def test_agent_yaml_errors_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.format(n_envs=1) + "learning_rate: 0.1\n")
    with pytest.raises(SpecError, match="learning_rate"):
        load_agent(bad)
    bad.write_text(TINY.format(n_envs=1).replace("algo: ppo", "algo: rainbow"))
    with pytest.raises(ValueError, match="rainbow"):
        load_agent(bad)


def test_shipped_agent_yamls_load():
    for name, algo in (("ppo", "ppo"), ("sac", "sac")):
        assert load_agent(name).algo == algo


def test_a_trained_checkpoint_runs_in_the_cluster(checkpoint, digest, tmp_path):
    """train -> export -> the controller on every GPU of the default cluster (LearnedLocal)."""
    from festgym.policies.learned import LearnedLocal
    from festgym.scenario import load_scenario

    copy = tmp_path / "tiny"
    copy.mkdir()
    for p in checkpoint.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    export_checkpoint(copy, sha256=digest)
    policy = LearnedLocal(copy)
    scenario = load_scenario("default")
    result = scenario.simulator().run(scenario.trace(0, 90.0), policy)
    assert policy.calls > 0 and result.summary["requests"] > 0


def test_lagrangian_training_adapts_its_multiplier(tmp_path):
    """A constrained run measures the background policy's cost as its limit, moves λ after each
    rollout by the dual step, chooses its best model on the constraint over the evaluation
    episodes, and records all three in the card."""
    import gymnasium as gym

    from festgym.envs.constrained import dual_step
    from festgym.envs.rollout import run_episode

    agent = tmp_path / "lagrangian.yaml"
    agent.write_text(TINY.format(n_envs=1).replace("timesteps: 2048", "timesteps: 512")
                     .replace("n_steps: 256", "n_steps: 128").replace("eval_freq: 1024", "eval_freq: 128")
                     + "env_kwargs: {env: {episode_s: 60, warmup_s: 10}}\n"
                     + "lagrangian: {multiplier: 1.0, lr: 0.5, baseline_episodes: 1, cost_key: ttft_over}\n")
    card = read_card(train(TrainConfig(str(agent), "default", None, 0, str(tmp_path / "runs"), progress=False)))
    record = card["lagrangian"]
    selection = record["selection"]
    env = gym.make("festgym/LocalGPU-v0", env={"episode_s": 60, "warmup_s": 10})
    festina = run_episode(env, lambda _obs: None, card["evaluation"]["first_seed"])  # one evaluation episode
    assert (selection["cost_key"], selection["cost"], selection["reward_energy"]) == \
        ("ttft_over", festina["ttft_over"], festina["energy_term"])
    scores = selection["history"]
    assert [h["timesteps"] for h in scores] == [128, 256, 384, 512]
    assert all(h["feasible"] == (h["cost"] <= selection["cost"]) for h in scores)
    feasible = [h for h in scores if h["feasible"]]
    chosen = max(feasible, key=lambda h: h["reward_energy"]) if feasible else min(scores, key=lambda h: h["cost"])
    assert selection["chosen_timesteps"] == chosen["timesteps"]
    assert record["cost_limit"] > 0 and [h["timesteps"] for h in record["history"]] == [128, 256, 384, 512]
    multiplier = 1.0
    for h in record["history"]:
        multiplier = dual_step(multiplier, h["mean_cost"], record["cost_limit"], 0.5)
        assert h["multiplier"] == pytest.approx(multiplier)
    assert card["agent"]["lagrangian"] == {"multiplier": 1.0, "lr": 0.5, "baseline_episodes": 1,
                                           "cost_key": "ttft_over"}


def test_dual_ascent_per_episode_counts_episodes_not_steps():
    """Per episode, the mean is the cost over the episodes that ended; a rollout in which none
    ended leaves λ alone and carries its cost into the next."""
    from festgym.envs.constrained import dual_step
    from festgym.jobs.train import DualAscent
    from festgym.jobs.train_config import LagrangianSpec

    class Env:
        def env_method(self, name, value):
            self.sent = (name, value)

    dual = DualAscent(LagrangianSpec(cost_key="ttft_over", per="episode", lr=0.5), limit=10.0)
    class Model:  # what a callback reads of the algorithm: its environment and its logger
        env = Env()
        logger = type("Logger", (), {"record": lambda *args: None})()

        def get_env(self):
            return self.env

    dual.model, dual.num_timesteps = Model(), 0

    def rollout(costs, dones):
        for cost, done in zip(costs, dones):
            dual.locals = {"infos": [{"ttft_over": cost}], "dones": np.array([done])}
            dual._on_step()
        dual._on_rollout_end()

    rollout([4, 4, 4], [False, False, False])  # no episode ended: nothing moves
    assert dual.multiplier == 1.0 and dual.history == []
    rollout([4, 4, 4], [False, False, True])  # one episode of 24 late first tokens, over 6 steps
    assert dual.history[-1]["mean_cost"] == 24.0
    assert dual.multiplier == pytest.approx(dual_step(1.0, 24.0, 10.0, 0.5))
    assert dual.model.env.sent == ("set_multiplier", dual.multiplier)


@pytest.mark.parametrize("section, field", [("{lr: 0}", "lr"), ("{cost_limit: -1}", "cost_limit"),
                                            ("{rate: 1}", "rate"), ("{cost_key: energy_j}", "cost_key"),
                                            ("{per: request}", "per")])
def test_lagrangian_errors_name_the_field(tmp_path, section, field):
    agent = tmp_path / "bad.yaml"
    agent.write_text(f"algo: ppo\nlagrangian: {section}\n")
    with pytest.raises(SpecError, match=rf"bad.yaml: lagrangian.*{field}"):
        load_agent(agent)


def test_shipped_lagrangian_agent_is_refused_by_rllib():
    from festgym.jobs.train_config import rllib_settings

    with pytest.raises(SpecError, match="lagrangian.*--backend sb3"):
        rllib_settings(load_agent("ppo-lagrangian"))


def test_a_placement_controller_exports_without_a_local_interface(tmp_path, capsys, monkeypatch):
    """A controller of another environment exports and plays there; as a simulator or host
    policy (which take LocalGPU-v0 controllers) it is refused by name, not by a level mismatch."""
    import gymnasium as gym

    from festgym.control.checkpoint import LocalController

    agent = tmp_path / "placement.yaml"
    agent.write_text(TINY.format(n_envs=1).replace("festgym/LocalGPU-v0", "festgym/Placement-v0")
                     .replace("timesteps: 2048", "timesteps: 256").replace("n_steps: 256", "n_steps: 128")
                     .replace("eval_freq: 1024", "eval_freq: 256")
                     + "env_kwargs: {env: {episode_s: 30, warmup_s: 10}}\n")
    folder = train(TrainConfig(str(agent), "default", None, 0, str(tmp_path / "runs"), progress=False))
    digest = checkpoint_digest(read_card(folder), str(folder / CARD))
    assert main(["export", str(folder), "--sha256", digest]) == 0
    assert "a festgym/Placement-v0 controller" in capsys.readouterr().out
    card = read_card(folder)
    assert "interface" not in card and set(card["sha256"]) >= {"numpy/policy.json", "numpy/weights.npz"}
    policy = NumpyPolicy.load(folder / "numpy")
    env = gym.make("festgym/Placement-v0", env={"episode_s": 30, "warmup_s": 10})
    obs, _ = env.reset(seed=0)
    action = policy.predict(obs)
    assert env.action_space.contains(np.asarray(action, dtype=np.int64))
    with pytest.raises(PolicyFileError, match="a festgym/Placement-v0 controller"):
        LocalController(folder)
    # In the user's checkpoint folder it is found by name, but compare's default list leaves it out.
    from festgym.control.checkpoint import find_checkpoints
    from festgym.jobs.compare import check_policies

    monkeypatch.setenv("FESTGYM_CHECKPOINTS", str(folder.parent))
    assert "checkpoint" in find_checkpoints() and "checkpoint" not in find_checkpoints(simulated_only=True)
    assert "checkpoint" not in check_policies(None) and "ppo-local" in check_policies(None)
