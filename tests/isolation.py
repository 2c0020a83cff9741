"""A script prefix for subprocess checks that some packages stay unimported: the one blocker the
numpy-only tests share."""

from __future__ import annotations

HEAVY = ("pandas", "yaml", "gymnasium", "matplotlib", "scipy", "torch", "stable_baselines3", "tqdm")
"""What the deploy path must run without (it has numpy, nvidia-ml-py and prometheus-client)."""


def blocking(names: tuple[str, ...] = HEAVY) -> str:
    """Python source that makes ``names`` (top-level packages) unimportable in the process that runs it."""
    return f"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(names)!r}:
            raise ModuleNotFoundError(f"{{name}} is blocked: the deploy path must run with numpy alone", name=name)
        return None
sys.meta_path.insert(0, Block())
"""
