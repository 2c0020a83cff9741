"""The profile loader rejects every kind of broken profile folder with a SpecError that names
the file and the field, and finds shipped profiles by case-insensitive GPU/MODEL key.

Each failure-mode test copies one shipped profile into ``tmp_path``, corrupts exactly one thing
and loads it; ``test_untouched_copy_loads`` shows the copy itself is valid, so each error comes
from the corruption alone.
"""

from __future__ import annotations

import dataclasses
import shutil
import timeit
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from festgym.cli import main as cli
from festgym.errors import ProfileNotFoundError, SpecError
from festgym.profiles.profile import (
    DECODE_AXES,
    FIELDS,
    PEAK_TOLERANCE,
    PREFILL_AXES,
    Profile,
    datasheet_ratios,
    find_profile_dir,
    gpu_type_spec,
    iter_profile_dirs,
    load_profile,
)
from festgym.resources import PROFILES

SOURCE_KEY = "H100-SXM-80GB/Llama-3.2-1B"
DECODE_COLUMNS = DECODE_AXES + FIELDS
GRID_COLUMNS = {"prefill.csv": PREFILL_AXES + FIELDS, "decode.csv": DECODE_COLUMNS}
EVERY_COLUMN = [(name, column) for name, columns in GRID_COLUMNS.items() for column in columns]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable copy of a shipped profile folder."""
    dest = tmp_path / "profile-copy"
    shutil.copytree(PROFILES.shipped / SOURCE_KEY, dest)
    return dest


def read_csv(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name)


def write_csv(folder: Path, name: str, frame: pd.DataFrame) -> None:
    frame.to_csv(folder / name, index=False)


def read_meta(folder: Path) -> dict:
    with (folder / "profile.yaml").open() as fh:
        return yaml.safe_load(fh)


def write_meta(folder: Path, meta: dict) -> None:
    with (folder / "profile.yaml").open("w") as fh:
        yaml.safe_dump(meta, fh, sort_keys=False)


def load_error(folder: Path, filename: str, field: str) -> SpecError:
    """Load ``folder``; expect a SpecError about ``field`` in ``filename``, named in the message."""
    with pytest.raises(SpecError) as info:
        Profile.load(folder)
    err = info.value
    message = str(err)
    assert filename in message, message
    assert field in message, message
    assert filename in err.source, err.source
    assert err.field == field, err.field
    return err


# --- the copy itself is valid ------------------------------------------------------------------


def test_untouched_copy_loads(folder):
    profile = Profile.load(folder)
    assert profile.key == SOURCE_KEY
    assert profile.path == folder
    assert profile.prefill_grid.names == PREFILL_AXES
    assert profile.decode_grid.names == DECODE_AXES
    # one row per grid point
    assert int(np.prod(profile.decode_grid.shape)) == len(read_csv(folder, "decode.csv"))
    assert int(np.prod(profile.prefill_grid.shape)) == len(read_csv(folder, "prefill.csv"))


def test_csv_rewritten_by_pandas_still_loads(folder):
    """The corruption helpers' round trip (read, to_csv(index=False)) alone breaks nothing."""
    for name in ("prefill.csv", "decode.csv"):
        write_csv(folder, name, read_csv(folder, name))
    write_meta(folder, read_meta(folder))
    original = load_profile(SOURCE_KEY)
    copy = Profile.load(folder)
    np.testing.assert_allclose(copy.decode_grid.fields["time_s"], original.decode_grid.fields["time_s"])
    np.testing.assert_allclose(copy.prefill_grid.fields["power_w"], original.prefill_grid.fields["power_w"])


# --- grid files ----------------------------------------------------------------------------


@pytest.mark.parametrize("column", DECODE_COLUMNS)
def test_missing_decode_column(folder, column):
    write_csv(folder, "decode.csv", read_csv(folder, "decode.csv").drop(columns=[column]))
    err = load_error(folder, "decode.csv", column)
    assert "missing column" in err.problem


def test_nan_time(folder):
    frame = read_csv(folder, "decode.csv")
    frame.loc[5, "time_s"] = np.nan
    write_csv(folder, "decode.csv", frame)
    err = load_error(folder, "decode.csv", "time_s")
    assert "NaN" in err.problem
    assert "row 6" in err.problem  # data rows counted from 1


def test_negative_power(folder):
    frame = read_csv(folder, "decode.csv")
    frame.loc[3, "power_w"] = -120.0
    write_csv(folder, "decode.csv", frame)
    load_error(folder, "decode.csv", "power_w")


@pytest.mark.parametrize("bad_time", [0.0, -0.004])
def test_non_positive_time(folder, bad_time):
    frame = read_csv(folder, "prefill.csv")
    frame.loc[17, "time_s"] = bad_time
    write_csv(folder, "prefill.csv", frame)
    err = load_error(folder, "prefill.csv", "time_s")
    assert "row 18" in err.problem


def test_sm_share_above_one(folder):
    frame = read_csv(folder, "prefill.csv")
    # Move the whole top share level from 1.0 to 1.5: the grid stays complete and sorted, so
    # only the share range can be at fault.
    top = frame["sm_share"] == frame["sm_share"].max()
    assert top.any() and frame["sm_share"].max() == 1.0
    frame.loc[top, "sm_share"] = 1.5
    write_csv(folder, "prefill.csv", frame)
    err = load_error(folder, "prefill.csv", "sm_share")
    assert "1.5" in err.problem


def test_unsorted_rows(folder):
    frame = read_csv(folder, "decode.csv")
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert not shuffled[list(DECODE_AXES)].equals(frame[list(DECODE_AXES)])
    write_csv(folder, "decode.csv", shuffled)
    err = load_error(folder, "decode.csv", ",".join(DECODE_AXES))
    assert "sorted" in err.problem


def test_unsorted_prefill_rows(folder):
    frame = read_csv(folder, "prefill.csv")
    swapped = frame.copy()
    swapped.iloc[[10, 11]] = frame.iloc[[11, 10]].to_numpy()  # two neighbours swapped
    write_csv(folder, "prefill.csv", swapped)
    err = load_error(folder, "prefill.csv", ",".join(PREFILL_AXES))
    assert "sorted" in err.problem


def test_missing_row(folder):
    frame = read_csv(folder, "decode.csv")
    write_csv(folder, "decode.csv", frame.drop(index=1234))
    err = load_error(folder, "decode.csv", ",".join(DECODE_AXES))
    assert str(len(frame) - 1) in err.problem and str(len(frame)) in err.problem


def test_duplicated_row(folder):
    frame = read_csv(folder, "prefill.csv")
    write_csv(folder, "prefill.csv", pd.concat([frame, frame.iloc[[7]]]).sort_values(list(PREFILL_AXES)))
    load_error(folder, "prefill.csv", ",".join(PREFILL_AXES))


def test_power_above_tdp(folder):
    tdp = float(read_meta(folder)["gpu"]["tdp_w"])
    frame = read_csv(folder, "decode.csv")
    frame["power_w"] *= 3
    assert frame["power_w"].max() > tdp
    write_csv(folder, "decode.csv", frame)
    err = load_error(folder, "decode.csv", "power_w")
    assert "TDP" in err.problem and f"{tdp:g}" in err.problem


def test_power_below_idle(folder):
    idle = float(read_meta(folder)["gpu"]["constants"]["power"]["idle_w"])
    frame = read_csv(folder, "prefill.csv")
    frame.loc[100, "power_w"] = idle / 2
    write_csv(folder, "prefill.csv", frame)
    err = load_error(folder, "prefill.csv", "power_w")
    assert "idle" in err.problem


def test_negative_hbm_util(folder):
    frame = read_csv(folder, "decode.csv")
    frame.loc[9, "hbm_util"] = -0.1
    write_csv(folder, "decode.csv", frame)
    err = load_error(folder, "decode.csv", "hbm_util")
    assert "row 10" in err.problem


def test_missing_prefill_file(folder):
    (folder / "prefill.csv").unlink()
    err = load_error(folder, "prefill.csv", "<file>")
    assert "prefill" in err.problem


def test_empty_decode_file(folder):
    (folder / "decode.csv").write_text("")
    load_error(folder, "decode.csv", "<file>")


@pytest.mark.parametrize("name", GRID_COLUMNS)
def test_header_only_grid(folder, name):
    write_csv(folder, name, read_csv(folder, name).iloc[:0])
    err = load_error(folder, name, "<file>")
    assert "header" in err.problem


@pytest.mark.parametrize("name, column", EVERY_COLUMN)
def test_text_in_a_cell(folder, name, column):
    frame = read_csv(folder, name).astype({column: object})
    frame.loc[4, column] = "12 ms"
    write_csv(folder, name, frame)
    err = load_error(folder, name, column)
    assert "row 5" in err.problem and "'12 ms'" in err.problem


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -1.0, 0.0])
@pytest.mark.parametrize("name, column", EVERY_COLUMN)
def test_non_finite_or_non_positive_cell(folder, name, column, value):
    frame = read_csv(folder, name).astype({column: float})
    frame.loc[3, column] = value
    write_csv(folder, name, frame)
    err = load_error(folder, name, column)
    assert "row 4" in err.problem


# --- what the GPU's datasheet rules out ------------------------------------------------------


def scale(folder: Path, name: str, column: str, factor: float) -> None:
    frame = read_csv(folder, name)
    frame[column] *= factor
    write_csv(folder, name, frame)


def assert_names_a_grid_point(err: SpecError, name: str) -> None:
    axes = GRID_COLUMNS[name][:-len(FIELDS)]
    assert all(f"{axis}=" in err.problem for axis in axes) and "data row" in err.problem, err.problem


@pytest.mark.parametrize("name", GRID_COLUMNS)
@pytest.mark.parametrize("factor", [1e-3, 1e-6, 1 / 16], ids=["ms-read-as-ks", "1e-6", "one-of-16-layers"])
def test_times_faster_than_the_datasheet_peaks(folder, name, factor):
    gpu = read_meta(folder)["gpu"]
    scale(folder, name, "time_s", factor)
    err = load_error(folder, name, "time_s")
    assert_names_a_grid_point(err, name)
    assert "datasheet's peak" in err.problem
    assert f"{gpu['hbm_bandwidth_gbps']:g} GB/s" in err.problem or f"{gpu['peak_bf16_tflops']:g} TFLOP/s" in err.problem


@pytest.mark.parametrize("name", GRID_COLUMNS)
@pytest.mark.parametrize("factor", [1e3, 1e6], ids=["ms-as-s", "us-as-s"])
def test_times_far_slower_than_any_kernel(folder, name, factor):
    gpu = read_meta(folder)["gpu"]
    scale(folder, name, "time_s", factor)
    err = load_error(folder, name, "time_s")
    assert_names_a_grid_point(err, name)
    assert "slowest plausible" in err.problem and "times in ms?" in err.problem
    assert f"datasheet's {gpu['hbm_bandwidth_gbps']:g}" in err.problem


@pytest.mark.parametrize("name", GRID_COLUMNS)
def test_ten_times_slower_still_loads(folder, name):
    """The lower bound keeps its margin: a slow host or GPU is not mistaken for wrong units."""
    scale(folder, name, "time_s", 10.0)
    Profile.load(folder)


def test_every_shipped_profile_sits_well_inside_the_datasheet_bounds():
    for path in iter_profile_dirs():
        profile = Profile.load(path)
        for kind, grid in (("prefill", profile.prefill_grid), ("decode", profile.decode_grid)):
            bandwidth, flops, slow = datasheet_ratios(kind, grid, profile.gpu, profile.model, profile.parallel.gpus)
            assert max(bandwidth.max(), flops.max()) < PEAK_TOLERANCE / 1.15, (profile.key, kind)
            # 5× from the refusal. The closest: a MoE prefill (Qwen3-30B-A3B on a B200 at 120 MHz and a 2%
            # share, 0.15), as the least work a MoE layer may do reads only one token's top-k experts.
            assert slow.max() < 0.2, (profile.key, kind)


@pytest.mark.parametrize("name", GRID_COLUMNS)
@pytest.mark.parametrize("factor", [1e3, 1e-3], ids=["mW", "kW"])
def test_power_in_other_units(folder, name, factor):
    scale(folder, name, "power_w", factor)
    err = load_error(folder, name, "power_w")
    assert_names_a_grid_point(err, name)
    assert "idle" in err.problem and "TDP" in err.problem


@pytest.mark.parametrize("name", GRID_COLUMNS)
def test_power_above_idle_only(folder, name):
    idle = float(read_meta(folder)["gpu"]["constants"]["power"]["idle_w"])
    frame = read_csv(folder, name)
    frame["power_w"] = (frame["power_w"] - idle).clip(lower=1.0)
    write_csv(folder, name, frame)
    load_error(folder, name, "power_w")


@pytest.mark.parametrize("name", GRID_COLUMNS)
def test_hbm_util_in_percent(folder, name):
    scale(folder, name, "hbm_util", 100.0)
    err = load_error(folder, name, "hbm_util")
    assert_names_a_grid_point(err, name)
    assert "fraction" in err.problem


@pytest.mark.parametrize("factor", [1e3, 1e-3], ids=["kHz", "GHz"])
def test_clocks_in_other_units(folder, factor):
    scale(folder, "decode.csv", "sm_clock_mhz", factor)
    err = load_error(folder, "decode.csv", "sm_clock_mhz")
    assert "MHz" in err.problem


def test_datasheet_check_is_cheap(h100_llama8b):
    seconds = min(timeit.repeat(lambda: h100_llama8b.validate(h100_llama8b.path), number=5, repeat=3)) / 5
    assert seconds < 0.01


def test_check_exits_non_zero_on_a_refused_profile(tmp_path, capsys):
    root = tmp_path / "profiles"
    for name in ("Good", "Bad"):
        shutil.copytree(PROFILES.shipped / SOURCE_KEY, root / "H100-SXM-80GB" / name)
    scale(root / "H100-SXM-80GB" / "Bad", "decode.csv", "time_s", 1e3)
    (tmp_path / "no-data").mkdir()
    assert cli.main(["profiles", "check", "--root", str(root), "--data", str(tmp_path / "no-data")]) == 1
    out, err = capsys.readouterr()
    assert "grid-vs-model" in out  # the good profile is still checked
    assert "H100-SXM-80GB/Bad refused" in err and "decode.csv" in err and "time_s" in err
    assert "Good" not in err


def test_check_passes_every_shipped_profile(capsys):
    assert cli.main(["profiles", "check", "--json"]) == 0
    assert "refused" not in capsys.readouterr().err


# --- one GPU type, many models -----------------------------------------------------------------


@pytest.mark.parametrize("change", [{"memory_gb": 40.0}, {"tdp_w": 500.0}, {"sm_clocks_mhz": (210, 1500)}],
                         ids=lambda c: next(iter(c)))
def test_one_models_gpu_figures_do_not_set_the_gpu_type_for_the_others(change):
    small, big = load_profile(SOURCE_KEY), load_profile("H100-SXM-80GB/Llama-3.1-8B")
    odd = dataclasses.replace(small, gpu=dataclasses.replace(small.gpu, **change))
    for order in ([odd, big], [big, odd]):
        with pytest.raises(SpecError) as info:
            gpu_type_spec(order)
        assert info.value.field == f"gpu.{next(iter(change))}"
        assert small.key in str(info.value) and big.key in str(info.value)
    assert gpu_type_spec([small, big]).device_figures() == gpu_type_spec([big, small]).device_figures()


def test_model_side_constants_may_differ_between_models():
    """Only what the GPU itself is must agree; each model's grids keep their own constants."""
    small, big = load_profile(SOURCE_KEY), load_profile("H100-SXM-80GB/Llama-3.1-8B")
    tuned = dataclasses.replace(small.gpu, latency=small.gpu.latency.replace(seq_overhead_s=1e-4))
    assert gpu_type_spec([big, dataclasses.replace(small, gpu=tuned)]) is big.gpu


# --- profile.yaml --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["gpu", "model"])
def test_missing_profile_yaml_section(folder, key):
    meta = read_meta(folder)
    del meta[key]
    write_meta(folder, meta)
    load_error(folder, "profile.yaml", key)


def test_missing_model_config(folder):
    meta = read_meta(folder)
    del meta["model"]["config"]
    write_meta(folder, meta)
    load_error(folder, "profile.yaml", "model.config")


def test_missing_gpu_constant(folder):
    meta = read_meta(folder)
    del meta["gpu"]["constants"]["power"]["idle_w"]
    write_meta(folder, meta)
    err = load_error(folder, "profile.yaml", "power.idle_w")
    assert "missing" in err.problem


def test_non_numeric_gpu_constant(folder):
    meta = read_meta(folder)
    meta["gpu"]["constants"]["latency"]["kv_frac"] = "very fast"
    write_meta(folder, meta)
    err = load_error(folder, "profile.yaml", "latency.kv_frac")
    assert "very fast" in err.problem


def test_missing_model_config_field(folder):
    meta = read_meta(folder)
    del meta["model"]["config"]["num_hidden_layers"]
    write_meta(folder, meta)
    load_error(folder, "profile.yaml", "num_hidden_layers")


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_format_version(folder, version):
    meta = read_meta(folder)
    if version is None:
        del meta["format_version"]
    else:
        meta["format_version"] = version
    write_meta(folder, meta)
    err = load_error(folder, "profile.yaml", "format_version")
    assert repr(version) in err.problem


def test_missing_profile_yaml(folder):
    (folder / "profile.yaml").unlink()
    load_error(folder, "profile.yaml", "<file>")


def test_profile_yaml_not_a_mapping(folder):
    (folder / "profile.yaml").write_text("- just\n- a list\n")
    load_error(folder, "profile.yaml", "<file>")


def test_unparsable_profile_yaml(folder):
    text = (folder / "profile.yaml").read_text()
    (folder / "profile.yaml").write_text("format_version: 1\ngpu: {name: [unclosed\n" + text)
    with pytest.raises(SpecError) as info:
        Profile.load(folder)
    assert "profile.yaml" in str(info.value)
    assert "profile.yaml" in info.value.source
    assert info.value.field == "<file>"  # read_mapping's convention for whole-file problems


# --- finding profiles ----------------------------------------------------------------------


def test_load_shipped_profile():
    profile = load_profile(SOURCE_KEY)
    assert profile.gpu.name == "H100-SXM-80GB"
    assert profile.model.name == "Llama-3.2-1B"
    assert profile.path == PROFILES.shipped / SOURCE_KEY
    time = profile.decode_time(8, 512)
    assert np.all(np.isfinite(time)) and np.all(time > 0)


def test_every_shipped_profile_loads():
    dirs = list(iter_profile_dirs())
    assert len(dirs) >= 10
    keys = {Profile.load(d).key for d in dirs}
    assert keys == {f"{d.parent.name}/{d.name}" for d in dirs}


def test_load_profile_key_is_case_insensitive():
    profile = load_profile("h100-sxm-80gb/llama-3.1-8b")
    assert profile.key == "H100-SXM-80GB/Llama-3.1-8B"
    assert profile.path == PROFILES.shipped / "H100-SXM-80GB" / "Llama-3.1-8B"
    assert find_profile_dir("A100-sxm-80GB/QWEN3-14B") == PROFILES.shipped / "A100-SXM-80GB" / "Qwen3-14B"


def test_load_profile_accepts_a_folder_path(folder):
    assert load_profile(str(folder)).path == folder


def test_unknown_profile_lists_available():
    with pytest.raises(ProfileNotFoundError) as info:
        load_profile("NOPE/NOPE")
    message = str(info.value)
    assert "NOPE/NOPE" in message
    assert "available" in message
    shipped = [f"{d.parent.name}/{d.name}" for d in iter_profile_dirs()]
    assert shipped
    for key in shipped:
        assert key in message


def test_unknown_profile_in_other_root_lists_none(tmp_path):
    with pytest.raises(ProfileNotFoundError, match="none"):
        find_profile_dir("H100-SXM-80GB/Llama-3.1-8B", root=tmp_path)


def test_cli_unknown_profile_is_an_error(capsys):
    assert cli.main(["profiles", "show", "NOPE/NOPE"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("festgym: error")
    assert "NOPE/NOPE" in err
    assert out == ""


def test_cli_broken_profile_is_an_error(folder, capsys):
    frame = read_csv(folder, "decode.csv")
    write_csv(folder, "decode.csv", frame.drop(columns=["power_w"]))
    assert cli.main(["profiles", "show", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("festgym: error")
    assert "decode.csv" in err and "power_w" in err
    assert out == ""
