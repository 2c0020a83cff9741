"""Command-line options come from the config dataclasses: one default and one help text per setting
(festgym.cli.fields), and every command's parser is built only when the command runs."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from festgym.cli.common import ScenarioChoice
from festgym.cli.fields import add_fields, field_docs, flag_of, from_args, override, split_pairs
from festgym.cli.main import COMMANDS, build_parser, main
from festgym.deploy.agent import DeployConfig
from festgym.deploy.safety import SafetyConfig
from festgym.errors import FestgymError
from festgym.jobs.compare import CompareConfig
from festgym.jobs.servebench import BenchConfig

REPO = Path(__file__).resolve().parents[2]


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser([command])
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings}


@pytest.mark.parametrize("command, configs", [("serve-bench", (BenchConfig,)),
                                              ("compare", (CompareConfig, ScenarioChoice)),
                                              ("deploy", (DeployConfig, SafetyConfig))])
def test_each_field_is_one_option_with_the_dataclass_default_and_docstring(command, configs):
    found = options(subparser(command))
    for config in configs:
        docs = field_docs(config)
        for field in dataclasses.fields(config):
            if field.name == "safety" or (command == "deploy" and field.name == "load"):
                continue  # a nested config (its own options) / not a deploy setting
            action = found[field.name]
            assert flag_of(field) in action.option_strings
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            assert action.default == (None if field.metadata.get("repeat") else default), field.name
            assert action.help.replace("%%", "%").startswith(docs[field.name]), field.name


def test_a_trailing_seconds_unit_is_dropped_from_the_flag():
    flags = {f.name: flag_of(f) for f in dataclasses.fields(SafetyConfig)}
    assert flags["min_change_interval_s"] == "--min-change-interval" and flags["hysteresis_mhz"] == "--hysteresis-mhz"


def test_options_build_the_config_back():
    parser = argparse.ArgumentParser()
    add_fields(parser, BenchConfig)
    config = from_args(BenchConfig, parser.parse_args(["--max-num-seqs", "16", "--clock-mhz", "1200"]))
    assert config == BenchConfig(max_num_seqs=16, clock_mhz=1200.0)
    assert from_args(BenchConfig, parser.parse_args([])) == BenchConfig()


def test_a_value_the_config_refuses_names_the_option():
    parser = argparse.ArgumentParser()
    add_fields(parser, SafetyConfig)
    with pytest.raises(FestgymError, match="^--watchdog-intervals: out of range"):
        from_args(SafetyConfig, parser.parse_args(["--watchdog-intervals", "0"]))


def test_bool_and_tuple_options():
    parser = argparse.ArgumentParser()
    add_fields(parser, CompareConfig)
    args = parser.parse_args(["--no-ablation", "--policies", "festina, max-clock", "--seeds", "0-2"])
    config = from_args(CompareConfig, args)
    assert config.ablation is False and config.policies == ("festina", "max-clock") and config.seeds == (0, 1, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--jobs", "two"])


def test_overridable_options_lay_only_what_is_given_over_a_base():
    @dataclasses.dataclass(frozen=True)
    class Plan:
        repeats: int = 10
        """Timed steps."""
        tokens: tuple[int, ...] = (128, 512)
        """Prompt lengths."""

    parser = argparse.ArgumentParser()
    add_fields(parser, Plan, overridable=True)
    tiny = Plan(repeats=3, tokens=(8,))
    assert override(tiny, parser.parse_args([])) == tiny
    assert override(tiny, parser.parse_args(["--tokens", "16,32"])) == Plan(repeats=3, tokens=(16, 32))
    assert "(default: 128,512)" in parser.format_help()


def test_bool_fields_of_every_kind():
    @dataclasses.dataclass(frozen=True)
    class Flags:
        must: bool
        """No default."""
        maybe: bool | None = None
        """Unset by default."""
        off: bool = False
        """Off unless asked."""
        on: bool = True
        """On unless turned off."""

    parser = argparse.ArgumentParser()
    add_fields(parser, Flags)
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --must/--no-must is required
    assert from_args(Flags, parser.parse_args(["--no-must"])) == Flags(must=False)
    given = parser.parse_args(["--must", "--maybe", "--off", "--no-on"])
    assert from_args(Flags, given) == Flags(True, True, True, False)
    overriding = argparse.ArgumentParser()
    add_fields(overriding, Flags, skip=("must",), overridable=True)
    base = Flags(must=True, off=True)
    assert override(base, overriding.parse_args(["--no-off"])) == Flags(must=True, off=False)  # back to False
    assert override(base, overriding.parse_args([])) == base


def test_a_default_beside_none_is_shown_and_a_clash_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Limits:
        timeout_s: float | None = 5.0
        """Give up after this long (None: never)."""

    parser = argparse.ArgumentParser()
    add_fields(parser, Limits)
    assert "(default: 5.0)" in parser.format_help() and "--timeout SECONDS" in parser.format_help()
    with pytest.raises(TypeError, match="another option of this parser sets 'timeout_s'"):
        add_fields(parser, Limits)


def test_an_older_option_name_still_works():
    parser = argparse.ArgumentParser()
    add_fields(parser, BenchConfig)
    assert from_args(BenchConfig, parser.parse_args(["--clock", "1200"])).clock_mhz == 1200.0


def test_split_pairs():
    assert split_pairs(["a=1", "b=x=y"], "--slo", "MODEL") == {"a": "1", "b": "x=y"}
    with pytest.raises(FestgymError, match="--slo 'a': expected MODEL=VALUE"):
        split_pairs(["a"], "--slo", "MODEL")


def test_every_command_has_help_and_configures(capsys):
    for name in COMMANDS:
        if name in ("train", "profile"):
            continue  # they need the train extra to configure (tested where it is installed)
        assert main([name, "--help"]) == 0
        assert "usage: festgym" in capsys.readouterr().out


def test_usage_errors_return_2(capsys):
    assert main(["compare", "--jobs", "two"]) == 2
    assert "argument --jobs: expected a whole number, got 'two'" in capsys.readouterr().err


def test_the_top_level_help_imports_nothing_heavy():
    """(Gymnasium is imported where installed: ``import festgym`` registers the environments.)"""
    check = ("import sys\nfrom festgym.cli.main import build_parser\nbuild_parser(['--help'])\n"
             "heavy = [m for m in ('pandas', 'yaml', 'matplotlib', 'torch', 'scipy') if m in sys.modules]\n"
             "print(heavy)\n")
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
