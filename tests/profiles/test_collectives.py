"""The collective-time model: its shape, its checks, and the shipped coefficients against vidur's
NCCL measurements (skipped without ../shared/data)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from festgym.config import read_mapping
from festgym.errors import SpecError
from festgym.profiles.calibration import network
from festgym.profiles.collectives import OPS, OPTIONAL_OPS, AlphaBeta, Collectives
from festgym.profiles.specs import NodeSpec, spec_path

NODES = ("dgx-a100", "dgx-h100", "dgx-h200", "dgx-b200")
SIZES = np.geomspace(2e3, 1e9, 40)


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("op", OPS + OPTIONAL_OPS)
def test_time_grows_with_size_and_workers(node, op):
    c = NodeSpec.load(node).collectives
    times = np.array([c.time_s(op, SIZES, k) for k in range(2, 9)])
    assert (np.diff(times, axis=1) > 0).all()  # with size
    assert (np.diff(times[:, -5:], axis=0) >= 0).all()  # with workers, at large sizes
    assert times.shape == (7, SIZES.size)


def test_one_worker_runs_no_collective():
    c = NodeSpec.load("dgx-h100").collectives
    for op in OPS:
        assert (c.time_s(op, SIZES, 1) == 0).all()
    assert float(c.time_s("all_reduce", 0.0, 1)) == 0.0
    with pytest.raises(SpecError, match="unknown collective 'broadcast'"):
        c.time_s("broadcast", SIZES, 1)


def test_unlisted_counts_interpolate_between_neighbours():
    c = NodeSpec.load("dgx-a100").collectives
    two, three, four = (c.alpha_beta("all_reduce", k) for k in (2, 3, 4))
    assert two.latency_us <= three.latency_us <= four.latency_us
    assert four.busbw_gbps <= three.busbw_gbps <= two.busbw_gbps
    assert c.alpha_beta("all_reduce", 4) == c.all_reduce[4]


def test_counts_outside_the_table_are_errors_naming_them():
    c = Collectives.from_dict({"all_reduce": {4: {"latency_us": 30, "busbw_gbps": 200},
                                              8: {"latency_us": 30, "busbw_gbps": 150}},
                               "all_to_all": {2: {"latency_us": 8, "busbw_gbps": 700}}}, "c.yaml")
    with pytest.raises(SpecError, match="no worker count 2 .listed: 4, 8"):
        c.time_s("all_reduce", 1e6, 2)
    with pytest.raises(SpecError, match="no worker count 4 .listed: 2"):
        c.time_s("all_to_all", 1e6, 4)
    with pytest.raises(SpecError, match="whole number ≥ 2"):
        c.time_s("all_reduce", 1e6, 0)


def test_round_trip():
    c = NodeSpec.load("dgx-b200").collectives
    assert Collectives.from_dict(c.to_dict(), "again") == c


def _section() -> dict:
    return copy.deepcopy(NodeSpec.load("dgx-h100").collectives.to_dict())


@pytest.mark.parametrize("change, field", [
    (lambda s: s["all_reduce"][8].update(latency_us=-1.0), "collectives.all_reduce.8.latency_us"),
    (lambda s: s["all_to_all"][4].update(busbw_gbps=0), "collectives.all_to_all.4.busbw_gbps"),
    (lambda s: s["all_reduce"][2].pop("busbw_gbps"), "collectives.all_reduce.2.busbw_gbps"),
    (lambda s: s["all_reduce"][2].update(alpha=1.0), "collectives.all_reduce.2.alpha"),
    (lambda s: s.pop("all_to_all"), "collectives.all_to_all"),
    (lambda s: s["all_reduce"].update({1: {"latency_us": 1, "busbw_gbps": 1}}), "collectives.all_reduce.1"),
    (lambda s: s["all_reduce"].update({"two": {"latency_us": 1, "busbw_gbps": 1}}), "collectives.all_reduce.two"),
    (lambda s: s.update(broadcast={}), "collectives.broadcast"),
    (lambda s: s["custom_all_reduce"][4].update(latency_us=-2.0), "collectives.custom_all_reduce.4.latency_us"),
])
def test_bad_sections_name_the_field(change, field):
    section = _section()
    change(section)
    with pytest.raises(SpecError) as info:
        Collectives.from_dict(section, "node.yaml")
    assert info.value.field == field, info.value.field


def test_a_missing_worker_count_is_refused_by_the_node():
    section = _section()
    del section["all_reduce"][8]
    data = read_mapping(spec_path("dgx-h100", "node"))
    with pytest.raises(SpecError, match="no worker count 8 .gpus_per_node is 8; listed: 2, 4") as info:
        NodeSpec.from_dict({**data, "collectives": section}, "node.yaml")
    assert info.value.field == "collectives.all_reduce"


def test_alpha_beta_is_latency_plus_bytes_over_bandwidth():
    ab = AlphaBeta(latency_us=10.0, busbw_gbps=100.0)
    assert ab.time_s(1e9) == pytest.approx(10e-6 + 0.01)


@pytest.mark.parametrize("node", ("dgx-h100", "dgx-a100"))
def test_shipped_coefficients_reproduce_vidur_within_their_recorded_error(node, reference_data):
    spec = NodeSpec.load(node)
    recorded = [row for row in spec.collectives.provenance["fit"] if row["source"] == "vidur-network"]
    assert recorded
    for row in recorded:
        op = row["metric"].removesuffix("_ms")
        _, measured = network.intra_node(reference_data, network.MEASURED[node], op)
        size, time_s = measured[row["workers"]]
        if op == "send_recv":  # the shipped all-to-all's basis: each of 2 workers sends half its buffer
            a2a = spec.collectives.all_to_all[2]
            ab = AlphaBeta(a2a.latency_us, a2a.busbw_gbps / 2)
        else:
            ab = spec.collectives.all_reduce[row["workers"]]
        got = network.comparison(ab, row["file"], op, row["workers"], size, time_s).summary()
        assert got["n"] == row["n"]
        assert got["mape_pct"] <= row["mape_pct"] + 0.01, (row, got)
        assert got["mape_pct"] < 15.0


def test_shipped_custom_all_reduce_reproduces_its_published_times_within_the_recorded_error():
    spec = NodeSpec.load("dgx-h100")
    recorded = [row for row in spec.collectives.provenance["fit"] if row["metric"] == "custom_all_reduce_ms"]
    assert [row["workers"] for row in recorded] == [2, 4, 8]
    sizes = np.asarray(network.VLLM_CUSTOM_ALL_REDUCE_US["size_bytes"], dtype=float)
    for row in recorded:
        measured = np.asarray(network.VLLM_CUSTOM_ALL_REDUCE_US[row["workers"]]) * 1e-6
        predicted = spec.collectives.custom_all_reduce[row["workers"]].time_s(sizes)
        mape = float(np.mean(np.abs(predicted / measured - 1))) * 100
        assert mape <= row["mape_pct"] + 0.01 and mape < 10.0, (row, mape)


def test_an_engine_all_reduces_with_the_faster_of_nccl_and_its_own():
    c = NodeSpec.load("dgx-h100").collectives
    sizes = np.array([8 * 8192 * 2, 512 * 8192 * 2.0, 64e6])  # a decode step's activations up to 64 MB
    nccl, custom = c.time_s("all_reduce", sizes, 4), c.time_s("custom_all_reduce", sizes, 4)
    assert custom[0] < nccl[0] / 2  # small messages: the one-shot all-reduce, at a third of NCCL's latency
    assert nccl[-1] < custom[-1]  # large ones: NCCL's bandwidth wins
    assert np.array_equal(c.engine_all_reduce_s(sizes, 4), np.minimum(nccl, custom))
    assert np.array_equal(c.engine_all_reduce_s(sizes, 1), np.zeros(3))


def test_a_node_without_the_engines_own_all_reduce_uses_nccls():
    section = _section()
    section.pop("custom_all_reduce")
    c = Collectives.from_dict(section, "node.yaml")
    assert not c.custom_all_reduce and "custom_all_reduce" not in c.to_dict()
    assert np.array_equal(c.engine_all_reduce_s(1e5, 8), c.time_s("all_reduce", 1e5, 8))


def test_the_fit_regenerates_the_shipped_sections(reference_data):
    sections = network.node_sections(reference_data)
    assert set(sections) == set(NODES)
    for node, section in sections.items():
        assert Collectives.from_dict(section, node) == Collectives.from_dict(
            NodeSpec.load(node).collectives.to_dict(), node), node
