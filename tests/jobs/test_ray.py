"""``--ray``: the simulations of ``compare`` (and ``evaluate``, ``sensitivity``) as Ray tasks on a Ray
started here, with the local pool's results bit for bit."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from test_compare import SHORT, WALL

from festgym.cli.main import main
from festgym.errors import FestgymError
from festgym.jobs.compare import compare

ONE = {**SHORT, "policies": ["festina", "least-loaded"], "ablation": False, "duration_s": 60.0}


def test_without_ray_installed_the_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with pytest.raises(FestgymError, match=r"--ray needs Ray: pip install 'festgym\[ray\]'"):
        compare(**ONE, seeds=(0,), ray="local", out=tmp_path)


def test_compare_on_a_local_ray_gives_the_pools_results_bit_for_bit(tmp_path):
    pytest.importorskip("ray")
    pool = compare(**ONE, seeds=(0, 1), jobs=2, out=tmp_path / "pool")
    on_ray = compare(**ONE, seeds=(0, 1), ray="local", out=tmp_path / "ray")
    pd.testing.assert_frame_equal(pool.runs.drop(columns=WALL), on_ray.runs.drop(columns=WALL), check_exact=True)
    pd.testing.assert_frame_equal(pool.models, on_ray.models, check_exact=True)
    pd.testing.assert_frame_equal(pool.summary, on_ray.summary, check_exact=True)


def test_cli_ray_alone_starts_a_local_ray(tmp_path, capsys):
    pytest.importorskip("ray")
    assert main(["compare", "--ray", "--policies", "festina", "--no-ablation", "--seeds", "0", "--duration", "30",
                 "--out", str(tmp_path)]) == 0
    assert "2 runs" in capsys.readouterr().out  # with max-clock, the reference
