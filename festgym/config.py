"""Settings from files and mappings, validated: every error names the file, the field and the fix.

The one mechanism behind GPU specs, model configs, scenarios, policy and agent parameters: read a
YAML or JSON mapping (:func:`read_mapping`, safe loaders only: nothing in a file is executed),
turn it into a dataclass with unknown keys reported by name and each value converted to its
field's type or refused (:func:`build_dataclass`), convert and check single fields (:func:`require`,
:func:`require_positive`) and check a dataclass's ranges (:func:`check_ranges`, which raises
:class:`~festgym.errors.RangeError`: a festgym error, so the command line reports it without a
traceback).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from festgym.errors import RangeError, SpecError


def require(mapping: Mapping[str, Any], key: str, source: str | Path, kind: type = float) -> Any:
    """Return ``mapping[key]`` converted to ``kind``; raise :class:`SpecError` naming the field."""
    if key not in mapping or mapping[key] is None:
        raise SpecError(source, key, "missing")
    value = mapping[key]
    shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
    bad = SpecError(source, key, f"expected {'a whole number' if kind is int else kind.__name__}, got {shown}")
    # bool is an int in Python, and int() truncates: reject both rather than guess.
    if isinstance(value, bool) or not isinstance(value, str if kind is str else (int, float, str)):
        raise bad
    if kind is str:
        return value
    if kind is int and isinstance(value, int):
        return _int64(value, key, source)
    try:  # "1e7" is a number too (YAML reads it as text)
        number = float(value)
    except (ValueError, OverflowError):
        raise bad from None
    if not math.isfinite(number):
        raise SpecError(source, key, f"must be finite, got {shown}")
    if kind is float:
        return number
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return _int64(int(value), key, source)  # exact, however many digits
    if not number.is_integer():
        raise bad
    return _int64(int(number), key, source)


def _int64(value: int, key: str, source: str | Path) -> int:
    """Whole numbers end up in int64 arrays and NumPy seeds: larger ones are refused, not wrapped."""
    if not -(2**63) <= value < 2**63:
        raise SpecError(source, key, f"{value:.3g} does not fit a 64-bit integer")
    return value


def require_positive(mapping: Mapping[str, Any], key: str, source: str | Path, kind: type = float):
    value = require(mapping, key, source, kind)
    if value <= 0:
        raise SpecError(source, key, f"must be > 0, got {value!r}")
    return value


def check_ranges(obj: Any, rules: Mapping[str, bool], expect: Mapping[str, str] | None = None) -> None:
    """Raise :class:`~festgym.errors.RangeError` naming ``Class.field`` and its value for the first
    rule that fails, and what it should be when ``expect`` says (``{"jobs": "≥ 1"}``)."""
    for name, ok in rules.items():
        if not ok:
            raise RangeError(type(obj).__name__, name, getattr(obj, name), (expect or {}).get(name))


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _coerce(value: Any, hint: Any, key: str, source: str | Path) -> Any:
    """``value`` as a field of type ``hint`` holds it (a YAML ``1e7`` is a string: it becomes a float),
    or a :class:`SpecError` naming ``key``; types other than numbers, text, flags and tuples of them
    pass unchanged (their own constructors check them)."""
    hint, optional = unwrap_optional(hint)
    if value is None:
        if optional:
            return None
        raise SpecError(source, key, "missing (null)")
    if hint in (float, int, str):
        return require({key: value}, key, source, hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(source, key, f"expected true or false, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise SpecError(source, key, f"expected a list, got {value!r}")
        if items[1:] == (Ellipsis,):
            items = (items[0],) * len(value)
        elif len(items) != len(value):
            raise SpecError(source, key, f"expected a list of {len(items)}, got {value!r}")
        return tuple(_coerce(v, kind, f"{key}[{i}]", source) for i, (v, kind) in enumerate(zip(value, items)))
    return value


def _field_types(kind: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(kind)
    except (NameError, TypeError):  # an annotation names a type imported only for type checking
        return {}


def build_dataclass(kind: type, data: Mapping[str, Any] | None, source: str | Path = "<dict>"):
    """``kind(**data)`` for a dataclass, with unknown keys reported by name (and the known ones),
    values converted to their fields' types, and range errors named after ``source`` and the key."""
    if data is not None and not isinstance(data, Mapping):
        raise SpecError(source, "<section>", f"expected a mapping of settings, got {data!r}")
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(source, ", ".join(unknown), f"unknown setting; expected one of {', '.join(sorted(known))}")
    hints = _field_types(kind)
    values = {k: _coerce(v, hints[k], k, source) if k in hints else v for k, v in data.items()}
    try:
        return kind(**values)
    except RangeError as exc:
        raise SpecError(source, exc.field, exc.problem) from None


def read_mapping(path: str | Path) -> dict:
    """Read a YAML or JSON file that must hold a mapping at its top level."""
    import yaml  # here, not at the top: the deploy path imports this module's dataclasses, not YAML

    path = Path(path)
    if not path.is_file():
        raise SpecError(path, "<file>", "no such file")
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh) if path.suffix == ".json" else yaml.safe_load(fh)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(path, "<file>", f"cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(path, "<file>", "top level must be a mapping")
    return data
