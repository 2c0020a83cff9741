"""Which modules run compiled (setup.py compiles the simulator's hot modules with mypyc).

A compiled module shadows its ``.py`` source: after editing the source, rebuild with
``pip install -e .`` (or delete the ``.so`` files, or install with ``FESTGYM_PURE=1``), or the
old compiled code keeps running. ``warn_if_stale`` says so on import, where sources can be edited:
in an editable install or a checkout on the path (an installed wheel writes its files in no
particular order, so their times say nothing).
"""

from __future__ import annotations

import importlib.machinery
import warnings
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _extensions() -> dict[str, Path]:
    """Compiled module files in the package, by dotted module name."""
    suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
    found = {}
    for path in PACKAGE_DIR.rglob("*"):
        suffix = next((s for s in suffixes if path.name.endswith(s)), None)
        if suffix is not None:
            relative = path.relative_to(PACKAGE_DIR).as_posix()[: -len(suffix)]
            found["festgym." + relative.replace("/", ".")] = path
    return found


def compiled_modules() -> list[str]:
    """Dotted names of the festgym modules running compiled (empty for a pure-Python install)."""
    return sorted(_extensions())


def _from_sources() -> bool:
    """Whether festgym runs from its sources (an editable install, or a checkout on the path) rather
    than from an installed wheel, whose ``festgym-*.dist-info`` lies beside the package."""
    return not any(PACKAGE_DIR.parent.glob("festgym-*.dist-info"))


def warn_if_stale() -> None:
    if not _from_sources():
        return
    for name, ext in _extensions().items():
        source = ext.with_name(name.rsplit(".", 1)[1] + ".py")
        if source.is_file() and source.stat().st_mtime > ext.stat().st_mtime:
            warnings.warn(f"{source} is newer than its compiled module {ext.name}, which is what runs; rebuild with "
                          "'pip install -e .' (FESTGYM_PURE=1 for pure Python) or delete the .so file",
                          RuntimeWarning, stacklevel=2)
