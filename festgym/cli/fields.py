"""Command-line options from config dataclasses: each setting's default and help live once, in the
dataclass that uses it.

``add_fields(parser, SafetyConfig)`` adds one option per field, as CleanRL's configs become its
command line: ``--min-change-interval`` for ``min_change_interval_s`` (a trailing ``_s`` is
dropped: seconds are the command line's unit, and the help says so), its type from the annotation,
its default from the dataclass and its help from the docstring under the field. ``from_args``
builds the dataclass back from the parsed options; a value the dataclass refuses is an error
naming the option.

Types: ``int``, ``float``, ``str``, ``Path``, ``X | None`` (the option may be left out), ``bool``
(``--x`` when the default is False; ``--x/--no-x`` when it is True) and ``tuple[X, ...]``
(comma-separated). A field's ``metadata`` may give ``flag`` (another option name), ``metavar``,
``choices``, ``parse`` (a function from the option's text), ``repeat`` (the option is given once
per item), ``bare`` (the value of the option given without one: ``--ray`` beside ``--ray ADDRESS``),
``aliases`` (older option names that still work) or ``cli: False`` (not an option).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import re
import textwrap
import typing
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from festgym.config import unwrap_optional
from festgym.errors import FestgymError, RangeError

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")
Group = argparse.ArgumentParser | argparse._ArgumentGroup


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls`` (and of its dataclass bases), by name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # source not installed: options get no help text
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and \
                    isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and \
                    isinstance(after.value.value, str):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def flag_of(field: dataclasses.Field) -> str:
    """The option of a field: ``metadata["flag"]``, else ``--name-in-kebab-case`` without a
    trailing ``_s``."""
    name = re.sub(r"_s$", "", field.name)
    return field.metadata.get("flag", "--" + name.replace("_", "-"))


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _converter(hint: Any, flag: str) -> tuple[Callable[[str], Any], str | None]:
    """(text -> value, metavar) for an option of type ``hint``."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{flag}: only tuple[X, ...] options are supported, not {hint}")
        item, _ = _converter(args[0], flag)

        def items(text: str) -> tuple:
            try:
                return tuple(item(x.strip()) for x in text.split(",") if x.strip())
            except argparse.ArgumentTypeError:
                raise argparse.ArgumentTypeError(f"expected comma-separated {args[0].__name__} values, got "
                                                 f"{text!r}") from None
        return items, f"{args[0].__name__.upper()},..."
    if hint in (int, float):
        def number(text: str) -> Any:
            try:
                return hint(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {'a whole number' if hint is int else 'a number'}, "
                                                 f"got {text!r}") from None
        number.__name__ = hint.__name__
        return number, None
    if hint in (str, Path):
        return hint, None
    raise TypeError(f"{flag}: no command-line form for {hint}")


def _unit_metavar(name: str) -> str | None:
    """``SECONDS`` for a ``*_s`` field, ``MHZ`` for ``*_mhz`` (argparse's own otherwise)."""
    return "SECONDS" if name.endswith("_s") else "MHZ" if name.endswith("_mhz") else None


def add_fields(parser: Group, cls: type, *, only: Iterable[str] | None = None, skip: Iterable[str] = (),
               overridable: bool = False, help_extra: dict[str, str] | None = None) -> None:
    """One option per field of dataclass ``cls`` (``only`` these, or all but ``skip``).

    ``overridable``: every option defaults to "not given" (None), for settings laid over a base
    instance by :func:`override`; the help still shows the dataclass's default. ``help_extra``
    appends text to a field's help (what the command line adds to the setting)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    wanted = set(only) if only is not None else None
    for field in dataclasses.fields(cls):
        left_out = (wanted is not None and field.name not in wanted) or field.name in skip
        if left_out or not field.metadata.get("cli", True):
            continue
        flag = flag_of(field)
        if any(action.dest == field.name for action in parser._actions):
            raise TypeError(f"{cls.__name__}.{field.name}: another option of this parser sets {field.name!r}")
        hint, optional = unwrap_optional(hints[field.name])
        default = _default(field)
        text = docs.get(field.name, "")
        extra = (help_extra or {}).get(field.name)
        text = f"{text} {extra}".strip() if extra else text
        kwargs: dict[str, Any] = {"dest": field.name}
        if hint is bool:  # --x for a setting that is off unless asked; --x/--no-x where both can be meant
            either = default is not False or overridable or optional
            kwargs["action"] = argparse.BooleanOptionalAction if either else "store_true"
            if default is dataclasses.MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = None if overridable else default
        else:
            parse, metavar = (field.metadata["parse"], None) if "parse" in field.metadata else _converter(hint, flag)
            kwargs["type"] = parse
            kwargs["metavar"] = field.metadata.get("metavar", metavar or _unit_metavar(field.name))
            if "choices" in field.metadata:
                kwargs["choices"] = field.metadata["choices"]
            if field.metadata.get("repeat"):
                kwargs["action"] = "append"
                kwargs["type"] = field.metadata.get("parse", str)
            if "bare" in field.metadata:
                kwargs["nargs"], kwargs["const"] = "?", field.metadata["bare"]
            if default is dataclasses.MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = None if overridable or field.metadata.get("repeat") else default
        text = text.replace("%", "%%")  # argparse formats help strings with %
        if hint is not bool and default is not dataclasses.MISSING and default is not None and default != ():
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
            text += f" (default: {shown.replace('%', '%%')})"
        kwargs["help"] = text
        parser.add_argument(flag, *field.metadata.get("aliases", ()), **kwargs)


def _values(cls: type, args: argparse.Namespace, given_only: bool) -> dict[str, Any]:
    out = {}
    for field in dataclasses.fields(cls):
        if not hasattr(args, field.name) or not field.metadata.get("cli", True):
            continue
        value = getattr(args, field.name)
        if field.metadata.get("repeat"):
            value = tuple(value or ())
            if given_only and not value:
                continue
        elif given_only and value is None:
            continue
        out[field.name] = value
    return out


def _built(cls: Callable[..., T], what: type, values: dict[str, Any]) -> T:
    try:
        return cls(**values)
    except RangeError as exc:  # it names Class.field: name the option instead
        flags = {f.name: flag_of(f) for f in dataclasses.fields(what)}
        raise FestgymError(f"{flags.get(exc.field, exc.field)}: {exc.problem}") from None


def from_args(cls: type[T], args: argparse.Namespace, **extra: Any) -> T:
    """``cls`` from the parsed options (those :func:`add_fields` added) and ``extra`` fields."""
    return _built(cls, cls, {**_values(cls, args, False), **extra})


def override(base: D, args: argparse.Namespace, **extra: Any) -> D:
    """``base`` with the options given on the command line (added with ``overridable=True``)."""
    kind = type(base)
    return _built(lambda **values: dataclasses.replace(base, **values), kind,
                  {**_values(kind, args, True), **extra})


def split_pairs(items: Sequence[str] | None, flag: str, key: str = "KEY") -> dict[str, str]:
    """``KEY=VALUE`` options (repeatable ones, such as ``--engine MODEL=URL``) as a mapping."""
    out = {}
    for item in items or []:
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            raise FestgymError(f"{flag} {item!r}: expected {key}=VALUE")
        out[name] = value
    return out


__all__ = ["add_fields", "field_docs", "flag_of", "from_args", "override", "split_pairs"]
