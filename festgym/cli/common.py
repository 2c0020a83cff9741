"""What several commands share: printing tables, finding the reference data, naming a scenario.

Light on purpose (numpy and the standard library): every command module imports it, and
``festgym deploy`` must run with numpy alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from festgym.errors import FestgymError
from festgym.resources import data_dir

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from festgym.scenario import Scenario

Configure = Callable[[argparse.ArgumentParser], None]
"""Adds a command's options to its parser and sets ``func``; called only for the command that runs,
so that a command imports only what it needs."""


@dataclass(frozen=True)
class Command:
    """One ``festgym`` command: its one-line help, its description and how to configure it."""

    help: str
    configure: Configure
    description: str = ""


def print_table(frame: pd.DataFrame, as_json: bool) -> None:
    if as_json:
        print(json.dumps(frame.to_dict(orient="records"), indent=2, default=str))
    else:
        print(frame.to_string(index=False))


def reference_data(args: argparse.Namespace) -> Path | None:
    """The reference data: ``--data`` (which must exist) or the default location, if present."""
    if getattr(args, "data", None):
        if not Path(args.data).is_dir():
            raise FestgymError(f"--data {args.data}: no such folder")
        return Path(args.data)
    return data_dir()


def add_data_option(parser: argparse.ArgumentParser, what: str = "reference data folder") -> None:
    parser.add_argument("--data", help=f"{what} (default: ../shared/data or FESTGYM_DATA)")


@dataclass(frozen=True)
class ScenarioChoice:
    """A scenario as a command names it: a name or a file, some settings overridden, its load scaled."""

    scenario: str = "default"
    """Scenario name or YAML/JSON path."""
    set: tuple[str, ...] = field(default=(), metadata={"repeat": True, "metavar": "SECTION.KEY=VALUE"})
    """Override a scenario setting, e.g. workload.lengths=azure-code (repeatable)."""
    load: float | None = field(default=None, metadata={"metavar": "FACTOR"})
    """Scale the arrival rate, e.g. 0.5 or 1.5."""

    def resolve(self) -> Scenario:
        """The scenario, renamed to say what was changed (tables and plot titles carry the name)."""
        from festgym.scenario import load_scenario, parse_overrides, scale_load

        scenario = load_scenario(self.scenario)
        if self.set:  # keys are matched against the scenario's own (dotted model names)
            scenario = load_scenario(scenario, **parse_overrides(self.set, scenario.raw))
        if self.load is not None:
            scenario = scale_load(scenario, self.load)
        changes = list(self.set) + ([f"load x{self.load:g}"] if self.load is not None else [])
        return replace(scenario, name=f"{scenario.name} ({', '.join(changes)})") if changes else scenario


def import_with_extra(module: str, what: str, extra: str) -> ModuleType:
    """``module``, or an error naming the extra to install when a package it needs is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FestgymError(f"{what} needs the {extra} extra ({exc.name or exc} is missing): pip install "
                           f"'festgym[{extra}]' (in a checkout: pip install -e '.[{extra}]')") from None


__all__ = [
    "Command",
    "Configure",
    "ScenarioChoice",
    "add_data_option",
    "import_with_extra",
    "print_table",
    "reference_data",
]
