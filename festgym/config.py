"""Settings from files and mappings, validated: every error names the file, the field and the fix.

The one mechanism behind GPU specs, model configs, scenarios, policy and agent parameters: read a
YAML or JSON mapping (:func:`read_mapping`, safe loaders only: nothing in a file is executed),
turn it into a dataclass with unknown keys reported by name (:func:`build_dataclass`), convert and
check single fields (:func:`require`, :func:`require_positive`) and check a dataclass's ranges
(:func:`check_ranges`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from festgym.errors import SpecError


def require(mapping: Mapping[str, Any], key: str, source: str | Path, kind: type = float) -> Any:
    """Return ``mapping[key]`` converted to ``kind``; raise :class:`SpecError` naming the field."""
    if key not in mapping or mapping[key] is None:
        raise SpecError(source, key, "missing")
    value = mapping[key]
    bad = SpecError(source, key, f"expected {'a whole number' if kind is int else kind.__name__}, got {value!r}")
    # bool is an int in Python, and int() truncates: reject both rather than guess.
    if isinstance(value, bool) or not isinstance(value, str if kind is str else (int, float, str)):
        raise bad
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise bad from None
    if kind is int and out != float(value):
        raise bad
    if kind in (int, float) and not math.isfinite(out):
        raise SpecError(source, key, f"must be finite, got {value!r}")
    return out


def require_positive(mapping: Mapping[str, Any], key: str, source: str | Path, kind: type = float):
    value = require(mapping, key, source, kind)
    if value <= 0:
        raise SpecError(source, key, f"must be > 0, got {value!r}")
    return value


def check_ranges(obj: Any, rules: Mapping[str, bool], expect: Mapping[str, str] | None = None) -> None:
    """Raise ValueError naming ``Class.field`` and its value for the first rule that fails, and
    what it should be when ``expect`` says (``{"jobs": "≥ 1"}``)."""
    for name, ok in rules.items():
        if not ok:
            wanted = (expect or {}).get(name)
            raise ValueError(f"{type(obj).__name__}.{name}: out of range ({getattr(obj, name)!r})"
                             + (f"; expected {wanted}" if wanted else ""))


def build_dataclass(kind: type, data: Mapping[str, Any] | None, source: str | Path = "<dict>"):
    """``kind(**data)`` for a dataclass, with unknown keys reported by name (and the known ones)."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(source, ", ".join(unknown), f"unknown setting; expected one of {', '.join(sorted(known))}")
    return kind(**data)


def read_mapping(path: str | Path) -> dict:
    """Read a YAML or JSON file that must hold a mapping at its top level."""
    import yaml  # here, not at the top: the deploy path imports this module's dataclasses, not YAML

    path = Path(path)
    if not path.is_file():
        raise SpecError(path, "<file>", "no such file")
    try:
        with path.open() as fh:
            data = json.load(fh) if path.suffix == ".json" else yaml.safe_load(fh)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(path, "<file>", f"cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(path, "<file>", "top level must be a mapping")
    return data
