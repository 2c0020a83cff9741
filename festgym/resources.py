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
entry of the same name shadows the shipped one. A variable naming a folder that does not exist
is an error naming the variable.

The public reference data (``../shared/data``, not shipped) is found by :func:`data_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from festgym.errors import FestgymError

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

    @property
    def shipped(self) -> Path:
        """The folder shipped with the package."""
        return Path(str(files("festgym") / "data" / self.folder))

    def user_roots(self) -> list[Path]:
        """The folders named by :attr:`env_var`, in order."""
        value = os.environ.get(self.env_var, "")
        roots = [Path(part).expanduser() for part in value.split(os.pathsep) if part]
        missing = [str(p) for p in roots if not p.is_dir()]
        if missing:
            raise ResourceError(f"{self.env_var}={value}: {', '.join(missing)} is not a folder")
        return roots

    def roots(self) -> list[Path]:
        """Every folder searched, in order: the user's, then the shipped one."""
        return [*self.user_roots(), self.shipped]

    def find(self, relative: str | Path) -> Path | None:
        """The first ``root / relative`` that exists, or ``None``."""
        for root in self.roots():
            path = root / relative
            if path.exists():
                return path
        return None

    def glob(self, pattern: str) -> Iterator[tuple[str, Path]]:
        """``(name relative to its root, path)`` of every match of ``pattern`` over the roots,
        sorted by name; a name found in an earlier root shadows the later ones."""
        seen: dict[str, Path] = {}
        for root in self.roots():
            for path in root.glob(pattern):
                seen.setdefault(path.relative_to(root).as_posix(), path)
        yield from sorted(seen.items())


PROFILES = DataKind("profiles", "FESTGYM_PROFILES")
SCENARIOS = DataKind("scenarios", "FESTGYM_SCENARIOS")
POLICY_PARAMS = DataKind("policies", "FESTGYM_POLICIES")
AGENTS = DataKind("agents", "FESTGYM_AGENTS")
CHECKPOINTS = DataKind("checkpoints", "FESTGYM_CHECKPOINTS")
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


__all__ = ["AGENTS", "CHECKPOINTS", "KINDS", "POLICY_PARAMS", "PROFILES", "SCENARIOS", "DataKind", "ResourceError",
           "data_dir"]
