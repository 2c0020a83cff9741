from __future__ import annotations

import pytest

from festgym.profiles.profile import load_profile
from festgym.resources import data_dir


@pytest.fixture(scope="session")
def h100_llama8b():
    return load_profile("H100-SXM-80GB/Llama-3.1-8B")


@pytest.fixture(scope="session")
def reference_data():
    """The public reference data (../shared/data); tests using it skip cleanly without it."""
    path = data_dir()
    if path is None:
        pytest.skip("reference data (../shared/data or FESTGYM_DATA) not present")
    return path
