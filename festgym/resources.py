"""Where festgym finds its files: the data it ships, the user's own folders, and the reference data.

The shipped data lives inside the package, under ``festgym/data/``, so that an installed wheel
has it (found through :mod:`importlib.resources`). It comes in five kinds:

============  ==========================  ==========================================================
kind          environment variable        holds
============  ==========================  ==========================================================
profiles      ``FESTGYM_PROFILES``        ``<gpu>/gpu.yaml``, ``<gpu>/<model>/`` profiles,
                                          ``model-configs/<model>/config.json``
scenarios     ``FESTGYM_SCENARIOS``       ``<name>.yaml`` scenarios (``festgym.scenario``)
policies      ``FESTGYM_POLICIES``        ``<name>.yaml``: a rule policy's parameters
agents        ``FESTGYM_AGENTS``          ``<algo>.yaml``: stable-baselines3 agent specs (training)
checkpoints   ``FESTGYM_CHECKPOINTS``     ``<name>/``: trained controllers (card, SB3 model, export)
============  ==========================  ==========================================================

Each variable names the user's own folders (several, separated by ``os.pathsep``), searched
before the shipped one: a user adds a profile or a scenario without copying festgym's, and an
entry of the same name replaces the shipped one (a policy's parameters are not merged with the
shipped file's; a scenario named ``default`` also changes the background policy of the shipped
controllers trained on it). A variable naming a folder that does not exist is an error naming
the variable, and so is a variable an older festgym read (``FESTGYM_ENVS``).

The public reference data (``../shared/data``, not shipped) is found by :func:`data_dir`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from festgym.errors import FestgymError, SpecError

RETIRED = {"FESTGYM_ENVS": "FESTGYM_SCENARIOS"}
"""Variables an older festgym read, and what replaced them."""

PACKAGE_DIR = Path(__file__).resolve().parent
"""The installed package (a checkout's ``festgym/`` in an editable install)."""


class ResourceError(FestgymError, FileNotFoundError):
    """A data folder festgym was pointed at does not exist."""


@dataclass(frozen=True)
class DataKind:
    """One kind of data file: its shipped folder and the variable that adds the user's folders."""

    folder: str
    """Sub-folder of ``festgym/data/``."""
    env_var: str
    """Environment variable naming the user's folders (``os.pathsep``-separated)."""
    what: str
    """What one entry is, in messages (``scenario``)."""

    @property
    def shipped(self) -> Path:
        """The folder shipped with the package."""
        return Path(str(files("festgym") / "data" / self.folder))

    def user_roots(self) -> list[Path]:
        """The folders named by :attr:`env_var`, in order."""
        for old, new in RETIRED.items():
            if new == self.env_var and old in os.environ:
                raise ResourceError(f"{old} is no longer read: name the folder in {new} instead")
        value = os.environ.get(self.env_var, "")
        roots = [Path(part.strip()).expanduser() for part in value.split(os.pathsep) if part.strip()]
        missing = [str(p) for p in roots if not p.is_dir()]
        if missing:
            raise ResourceError(f"{self.env_var}={value}: {', '.join(missing)} is not a folder")
        return roots

    def roots(self) -> list[Path]:
        """Every folder searched, in order: the user's, then the shipped one."""
        return [*self.user_roots(), self.shipped]

    def find(self, relative: str | Path) -> Path | None:
        """The first file ``root / relative`` over the roots, or ``None``."""
        for root in self.roots():
            path = root / relative
            if path.is_file():
                return path
        return None

    def glob(self, pattern: str, keep: Callable[[Path], bool] | None = None) -> Iterator[tuple[str, Path]]:
        """``(name relative to its root, path)`` of every match of ``pattern`` over the roots (that
        ``keep`` accepts), sorted by name; a name found in an earlier root shadows the later ones."""
        seen: dict[str, Path] = {}
        for root in self.roots():
            for path in root.glob(pattern):
                if keep is None or keep(path):
                    seen.setdefault(path.relative_to(root).as_posix(), path)
        yield from sorted(seen.items())

    def names(self, entry: str) -> list[str]:
        """The names of the entries found, where ``entry`` places a name (``"{}.yaml"``)."""
        pattern = re.compile(re.escape(entry).replace(re.escape("{}"), "(.+)") + "$")
        return [m.group(1) for rel, _ in self.glob(entry.format("*")) if (m := pattern.match(rel))]

    def resolve(self, spec: str | Path, entry: str, what: str | None = None) -> Path:
        """``spec`` as the path of a file, else as the name of an entry (``entry.format(name)`` in the
        roots: ``"{}.yaml"``, ``"{}/gpu.yaml"``). Neither is an error that lists the names found
        (``what`` one is: default :attr:`what`)."""
        path = Path(spec)
        if path.is_file():
            return path
        name = str(spec)
        found = self.find(entry.format(name)) if name and "/" not in name else None
        if found is None:
            raise SpecError(spec, "<file>", f"no such file, and no {what or self.what} named {name!r} (known: "
                            f"{', '.join(self.names(entry)) or 'none'}; {self.env_var} adds folders)")
        return found


PROFILES = DataKind("profiles", "FESTGYM_PROFILES", "profile")
SCENARIOS = DataKind("scenarios", "FESTGYM_SCENARIOS", "scenario")
POLICY_PARAMS = DataKind("policies", "FESTGYM_POLICIES", "rule policy")
AGENTS = DataKind("agents", "FESTGYM_AGENTS", "agent")
CHECKPOINTS = DataKind("checkpoints", "FESTGYM_CHECKPOINTS", "checkpoint")
KINDS = (PROFILES, SCENARIOS, POLICY_PARAMS, AGENTS, CHECKPOINTS)


def data_dir() -> Path | None:
    """The public reference data (``shared/data`` beside the checkout or the working directory's
    parent), or ``None`` if absent. ``FESTGYM_DATA`` overrides the location; an override that
    does not exist is an error."""
    override = os.environ.get("FESTGYM_DATA")
    if override:
        path = Path(override)
        if not path.is_dir():
            raise ResourceError(f"FESTGYM_DATA={override} is not a folder")
        return path
    for candidate in (PACKAGE_DIR.parent.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


__all__ = ["AGENTS", "CHECKPOINTS", "KINDS", "POLICY_PARAMS", "PROFILES", "RETIRED", "SCENARIOS", "DataKind",
           "ResourceError", "data_dir"]
