"""Which modules run compiled, and the warning when a source is newer than its compiled module
(festgym.compiled): given where sources can be edited, never from an installed wheel."""

from __future__ import annotations

import os
import warnings

import pytest

from festgym import compiled

COMPILED = {"festgym.sim.instance", "festgym.sim.gpu", "festgym.sim.simulator", "festgym.control.levels"}


def test_compiled_modules_are_the_hot_ones_or_none():
    names = set(compiled.compiled_modules())
    assert not names or names >= COMPILED, names  # a pure-Python install, or the hot modules compiled


def fake_package(tmp_path, monkeypatch, installed: bool):
    package = tmp_path / "festgym"
    (package / "sim").mkdir(parents=True)
    ext = package / "sim" / "gpu.cpython-311-x86_64-linux-gnu.so"
    ext.write_bytes(b"")
    source = package / "sim" / "gpu.py"
    source.write_text("")
    os.utime(ext, (1_000_000, 1_000_000))  # the source is newer than its compiled module
    if installed:
        (tmp_path / "festgym-0.1.0.dist-info").mkdir()
    monkeypatch.setattr(compiled, "PACKAGE_DIR", package)
    monkeypatch.setattr(compiled.importlib.machinery, "EXTENSION_SUFFIXES", [".cpython-311-x86_64-linux-gnu.so"])


def test_a_stale_compiled_module_is_named_in_a_checkout(tmp_path, monkeypatch):
    fake_package(tmp_path, monkeypatch, installed=False)
    assert compiled.compiled_modules() == ["festgym.sim.gpu"]
    with pytest.warns(RuntimeWarning, match="gpu.py is newer than its compiled module"):
        compiled.warn_if_stale()


def test_an_installed_wheel_never_warns(tmp_path, monkeypatch):
    fake_package(tmp_path, monkeypatch, installed=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled.warn_if_stale()
