"""Typed errors. Each one names the file, field or fix, so a user can act on it."""

from __future__ import annotations

from pathlib import Path


class FestgymError(Exception):
    """Base class for every error festgym raises on purpose."""


class SpecError(FestgymError, ValueError):
    """A GPU spec, model config or profile file is missing a field or holds a bad value."""

    def __init__(self, source: str | Path, field: str, problem: str):
        self.source = str(source)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.source}: field '{field}': {problem}")


class RangeError(FestgymError, ValueError):
    """A setting is of the wrong type or outside its allowed range (``owner.field``, the value and
    what was expected); :func:`festgym.config.build_dataclass` adds the file or section it came from."""

    def __init__(self, owner: str, field: str, value: object, expected: str | None = None):
        self.owner = owner
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{owner}.{field}: {self.problem}")

    @property
    def problem(self) -> str:
        return f"out of range ({self.value!r})" + (f"; expected {self.expected}" if self.expected else "")


class PolicyEntryError(FestgymError, ValueError):
    """A policy given as a ``package.module:attribute`` entry point that cannot be imported, called or run."""


class ProfileNotFoundError(FestgymError, LookupError):
    """No profile matches the GPU/model asked for."""


class DataMissingError(FestgymError, FileNotFoundError):
    """A calibration source under the reference-data folder is absent."""
