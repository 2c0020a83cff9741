"""The settings mechanism: values converted to their fields' types or refused by name, range
errors as festgym errors that say the allowed range."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import festgym
from festgym.config import build_dataclass, check_ranges
from festgym.errors import FestgymError, RangeError, SpecError


@dataclass(frozen=True)
class Example:
    rate_s: float = 1.0
    count: int = 2
    flag: bool = False
    name: str = "x"
    caps: tuple[int, ...] = ()
    limit: float | None = None

    def __post_init__(self):
        check_ranges(self, {"rate_s": self.rate_s > 0, "count": self.count >= 1}, {"rate_s": "> 0 s", "count": "≥ 1"})


@pytest.mark.parametrize("data, expected", [
    ({"rate_s": "1e7"}, Example(rate_s=1e7)),
    ({"rate_s": 3}, Example(rate_s=3.0)),
    ({"count": 4.0}, Example(count=4)),
    ({"caps": [1, "2"]}, Example(caps=(1, 2))),
    ({"limit": None}, Example()),
])
def test_values_take_their_fields_types(data, expected):
    built = build_dataclass(Example, data, "f.yaml")
    assert built == expected and type(built.rate_s) is float and type(built.count) is int


@pytest.mark.parametrize("data, message", [
    ({"rate_s": "fast"}, "field 'rate_s': expected float, got 'fast'"),
    ({"rate_s": float("nan")}, "field 'rate_s': must be finite"),
    ({"rate_s": True}, "field 'rate_s': expected float"),
    ({"count": 2.5}, "field 'count': expected a whole number"),
    ({"flag": "yes"}, "field 'flag': expected true or false"),
    ({"name": 3}, "field 'name': expected str"),
    ({"caps": "1,2"}, "field 'caps': expected a list"),
    ({"caps": [1, "x"]}, "field 'caps[1]': expected a whole number"),
    ({"rate_s": None}, "field 'rate_s': missing"),
    ({"rate_s": -1}, "field 'rate_s': out of range (-1.0); expected > 0 s"),
    ({"count": 0}, "field 'count': out of range (0); expected ≥ 1"),
])
def test_bad_values_are_spec_errors_naming_the_file_and_field(data, message):
    with pytest.raises(SpecError) as caught:
        build_dataclass(Example, data, "f.yaml")
    assert str(caught.value).startswith("f.yaml: field") and message in str(caught.value)


def test_range_errors_raised_directly_are_festgym_errors():
    with pytest.raises(RangeError, match=r"^Example.rate_s: out of range \(0\); expected > 0 s$") as caught:
        Example(rate_s=0)
    assert isinstance(caught.value, FestgymError) and isinstance(caught.value, ValueError)


def _check_ranges_calls():
    root = Path(festgym.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check_ranges":
                yield path.relative_to(root), node


def test_every_range_rule_says_what_it_expects():
    """A user told "out of range" must also be told the range: each rule has its expectation."""
    calls = list(_check_ranges_calls())
    assert len(calls) > 10
    for path, node in calls:
        if path.name == "config.py":
            continue  # the definition's own call
        assert len(node.args) == 3 and all(isinstance(a, ast.Dict) for a in node.args[1:]), f"{path}:{node.lineno}"
        rules, expect = ({ast.literal_eval(k) for k in d.keys} for d in node.args[1:])
        assert rules == expect, f"{path}:{node.lineno}: rules without an expected range: {rules - expect}"
