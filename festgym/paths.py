"""Where festgym finds its shipped files (profiles, scenarios, agents) and the reference data."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def project_dir(name: str, env_var: str) -> Path:
    """A top-level project folder (``profiles``, ``envs``, ...), overridable by ``env_var``."""
    override = os.environ.get(env_var)
    path = Path(override) if override else REPO_ROOT / name
    if not path.is_dir():
        raise FileNotFoundError(
            f"festgym cannot find its '{name}/' folder at {path}. Install festgym from a checkout "
            f"with 'pip install -e .', or set {env_var} to the folder."
        )
    return path


def profiles_dir() -> Path:
    return project_dir("profiles", "FESTGYM_PROFILES")


def data_dir() -> Path | None:
    """The public reference data (``../shared/data`` beside the checkout), or None if absent.

    ``FESTGYM_DATA`` overrides the location; an override that does not exist is an error.
    """
    override = os.environ.get("FESTGYM_DATA")
    if override:
        path = Path(override)
        if not path.is_dir():
            raise FileNotFoundError(f"FESTGYM_DATA={override} is not a folder")
        return path
    for candidate in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None
