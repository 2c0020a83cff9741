"""Shipped data found from the package, the user's folders searched first (festgym.resources)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from festgym.config import read_mapping
from festgym.control.checkpoint import find_checkpoints, resolve_checkpoint
from festgym.errors import FestgymError
from festgym.policies.rules import rule_params
from festgym.profiles.models import ModelSpec
from festgym.profiles.profile import find_profile_dir, iter_profile_dirs, load_profile
from festgym.profiles.specs import GpuSpec
from festgym.resources import AGENTS, CHECKPOINTS, KINDS, POLICY_PARAMS, PROFILES, SCENARIOS, ResourceError
from festgym.scenario import list_scenarios, load_scenario

REPO = Path(__file__).resolve().parents[1]


def test_every_kind_ships_inside_the_package():
    for kind in KINDS:
        assert kind.shipped.is_dir() and kind.shipped.is_relative_to(REPO / "festgym" / "data"), kind
        assert any(kind.shipped.iterdir()), f"{kind.folder}: nothing shipped"


def test_shipped_names_resolve():
    assert {"default", "saturated", "serverless-multinode", "diurnal-low", "mixed-a100-h100"} <= set(list_scenarios())
    assert {"ppo-local", "sac-local"} <= set(find_checkpoints())
    assert rule_params("festina")["ttft_margin"] == 0.55
    assert AGENTS.find("ppo.yaml") is not None and POLICY_PARAMS.find("ppo.yaml") is None  # two schemas, two folders
    assert GpuSpec.load("H100-SXM-80GB").name == "H100-SXM-80GB"
    assert ModelSpec.load("Qwen3-8B").name == "Qwen3-8B"


def test_a_user_folder_adds_entries_and_shadows_shipped_ones(tmp_path, monkeypatch):
    mine = tmp_path / "scenarios"
    mine.mkdir()
    default = load_scenario("default").raw
    (mine / "tiny.yaml").write_text(json.dumps({**default, "description": "mine"}))
    (mine / "default.yaml").write_text(json.dumps({**default, "description": "shadowed"}))
    monkeypatch.setenv(SCENARIOS.env_var, str(mine))
    assert load_scenario("tiny").description == "mine"
    assert load_scenario("default").description == "shadowed"
    assert list_scenarios().count("default") == 1 and "tiny" in list_scenarios() and "diurnal-low" in list_scenarios()


def test_several_user_folders_are_searched_in_order(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, margin in ((first, 0.5), (second, 0.4)):
        folder.mkdir()
        (folder / "festina.yaml").write_text(json.dumps({"params": {"ttft_margin": margin}}))
    monkeypatch.setenv(POLICY_PARAMS.env_var, os.pathsep.join([str(first), str(second)]))
    assert rule_params("festina") == {"ttft_margin": 0.5}
    shipped = read_mapping(POLICY_PARAMS.shipped / "max-clock.yaml").get("params") or {}
    assert rule_params("max-clock") == shipped  # not in the user's folders: the shipped file


def test_a_user_profile_and_checkpoint_are_found(tmp_path, monkeypatch):
    shutil.copytree(PROFILES.shipped / "H100-SXM-80GB" / "Llama-3.2-1B", tmp_path / "p" / "H100-SXM-80GB" / "Mine-1B")
    monkeypatch.setenv(PROFILES.env_var, str(tmp_path / "p"))
    assert find_profile_dir("H100-SXM-80GB/Mine-1B") == tmp_path / "p" / "H100-SXM-80GB" / "Mine-1B"
    keys = [f"{p.parent.name}/{p.name}" for p in iter_profile_dirs()]
    assert "H100-SXM-80GB/Mine-1B" in keys and "H100-SXM-80GB/Llama-3.1-8B" in keys and len(keys) == len(set(keys))
    assert load_profile("H100-SXM-80GB/Llama-3.1-8B").path.is_relative_to(PROFILES.shipped)
    shutil.copytree(CHECKPOINTS.shipped / "ppo-local", tmp_path / "c" / "my-ppo")
    monkeypatch.setenv(CHECKPOINTS.env_var, str(tmp_path / "c"))
    assert resolve_checkpoint("my-ppo") == tmp_path / "c" / "my-ppo" and "ppo-local" in find_checkpoints()


def test_a_variable_naming_a_missing_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(SCENARIOS.env_var, str(tmp_path / "nowhere"))
    with pytest.raises(ResourceError, match="FESTGYM_SCENARIOS=.*nowhere is not a folder"):
        load_scenario("default")
    assert isinstance(ResourceError("x"), FestgymError)


def test_an_unknown_name_lists_what_is_known(monkeypatch):
    with pytest.raises(FestgymError, match="no scenario named 'nope'.*default.*FESTGYM_SCENARIOS adds folders"):
        load_scenario("nope")
    with pytest.raises(FestgymError, match="no gpu named .B300-NOPE. .known: A100-SXM-80GB, B200-SXM-180GB, "
                       "H100-SXM-80GB, H200-SXM-141GB"):
        GpuSpec.load("B300-NOPE")
    with pytest.raises(FestgymError,
                       match="no agent named .nope. .known: ppo-lagrangian, ppo-placement-lagrangian, "
                             "ppo-placement, ppo-residual, ppo-spawn-lagrangian, ppo, sac; "
                             "FESTGYM_AGENTS adds folders"):
        AGENTS.resolve("nope", "{}.yaml")


def test_a_retired_variable_is_an_error_naming_its_successor(monkeypatch, tmp_path):
    monkeypatch.setenv("FESTGYM_ENVS", str(tmp_path))
    with pytest.raises(ResourceError, match="FESTGYM_ENVS is no longer read: name the folder in FESTGYM_SCENARIOS"):
        list_scenarios()


def test_blank_and_trailing_separators_are_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv(SCENARIOS.env_var, f"{tmp_path}{os.pathsep} {os.pathsep}")
    assert SCENARIOS.roots() == [tmp_path, SCENARIOS.shipped]


def test_a_user_checkpoint_without_an_export_does_not_hide_the_shipped_one(monkeypatch, tmp_path):
    (tmp_path / "ppo-local").mkdir()
    shutil.copy(CHECKPOINTS.shipped / "ppo-local" / "card.json", tmp_path / "ppo-local" / "card.json")  # no numpy/
    monkeypatch.setenv(CHECKPOINTS.env_var, str(tmp_path))
    assert resolve_checkpoint("ppo-local") == CHECKPOINTS.shipped / "ppo-local"


def test_a_built_wheel_carries_the_data_and_runs_from_elsewhere(tmp_path):
    """``pip wheel .`` (pure Python, to keep the test short), installed into a folder of its own and
    run from another directory: the shipped data comes with the wheel, not from the checkout."""
    source = tmp_path / "src"  # a copy of what git holds: the build leaves nothing in the checkout
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode:
        pytest.skip("not a git checkout")
    for name in listed.stdout.splitlines():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    env = {**os.environ, "FESTGYM_PURE": "1"}
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
                            str(source)], env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("festgym-*.whl"))
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    code = ("import festgym, festgym.resources as r, sys\n"
            f"assert festgym.__file__.startswith({str(target)!r}), festgym.__file__\n"
            "from festgym.cli.main import main\n"
            "sys.exit(main(['compare', '--policies', 'festina,ppo-local', '--duration', '30', '--no-ablation',"
            " '--jobs', '1', '--json', '--out', 'out']))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(target)})
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)["summary"]
    assert {row["policy"] for row in summary} == {"festina", "ppo-local", "max-clock"}
