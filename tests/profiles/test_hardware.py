"""GPU types and their nodes: every shipped spec loads and round-trips, precision peaks follow the
tensor cores each GPU has, H200 is an H100 die with more memory, and bad values name their field."""

from __future__ import annotations

import copy

import pytest
import yaml

from festgym.errors import SpecError
from festgym.profiles.specs import GPU_TYPES, WEIGHT_FORMATS, GpuSpec, NodeSpec, gpu_type_of
from festgym.resources import PROFILES

GPUS = sorted(p.parent.name for p in PROFILES.shipped.glob("*/gpu.yaml"))
NODES = sorted(p.stem for p in (PROFILES.shipped / "nodes").glob("*.yaml"))


def raw(path_in_profiles: str) -> dict:
    return yaml.safe_load((PROFILES.shipped / path_in_profiles).read_text())


def spec_error(func, *args, field: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        func(*args)
    assert info.value.field == field, info.value.field
    assert f"'{field}'" in str(info.value)
    return info.value


def test_the_new_types_ship():
    assert {"H100-SXM-80GB", "A100-SXM-80GB", "H200-SXM-141GB", "B200-SXM-180GB"} <= set(GPUS)
    assert {"dgx-h100", "dgx-a100", "dgx-h200", "dgx-b200"} <= set(NODES)


@pytest.mark.parametrize("gpu", GPUS)
def test_every_gpu_spec_loads_and_round_trips(gpu):
    spec = GpuSpec.load(gpu)
    assert spec.name == gpu
    again = GpuSpec.from_dict(spec.to_dict(), "round-trip")
    assert again.to_dict() == spec.to_dict()
    assert again.device_figures() == spec.device_figures()
    assert {"peak_fp8_tflops", "peak_fp4_tflops"} <= set(spec.device_figures())


@pytest.mark.parametrize("gpu", GPUS)
def test_every_new_figure_names_its_source(gpu):
    provenance = GpuSpec.load(gpu).provenance
    for key in ("peak_fp8_tflops", "peak_fp4_tflops"):
        assert str(provenance[key]).startswith(("datasheet:", "measured:", "assumption:")), provenance[key]
    notes = provenance["constants"]
    assert set(notes) >= set(GpuSpec.load(gpu).latency.to_dict()) | set(GpuSpec.load(gpu).power.to_dict())


def test_precision_peaks():
    h100, a100, b200 = (GpuSpec.load(g) for g in ("H100-SXM-80GB", "A100-SXM-80GB", "B200-SXM-180GB"))
    assert h100.peak_tflops("fp8") == pytest.approx(2 * h100.peak_tflops("bf16"), rel=1e-3)
    assert h100.native("fp8") and not h100.native("mxfp4")
    assert h100.peak_tflops("mxfp4") == h100.peak_bf16_tflops  # dequantised to BF16, not FP8
    assert not a100.native("fp8") and a100.peak_tflops("fp8") == a100.peak_tflops("mxfp4") == 312
    assert b200.native("mxfp4") and b200.native("fp8")
    assert [b200.peak_tflops(f) for f in WEIGHT_FORMATS] == [2250, 4500, 9000]
    assert all(g.native("bf16") for g in (h100, a100, b200))
    with pytest.raises(SpecError, match="unknown weight format 'int4'"):
        h100.peak_tflops("int4")


def test_h200_is_an_h100_die_with_more_memory():
    h100, h200 = GpuSpec.load("H100-SXM-80GB"), GpuSpec.load("H200-SXM-141GB")
    for field in ("sm_count", "sm_clocks_mhz", "default_sm_clock_mhz", "peak_bf16_tflops", "peak_fp8_tflops",
                  "peak_fp4_tflops", "tdp_w", "host_to_gpu_gbps"):
        assert getattr(h200, field) == getattr(h100, field), field
    assert (h200.memory_gb, h200.hbm_bandwidth_gbps) == (141, 4800)
    assert h200.latency == h100.latency
    assert h200.power.replace(memory_w=h100.power.memory_w) == h100.power
    assert h200.power.memory_w == pytest.approx(h100.power.memory_w * 4800 / 3350, rel=1e-4)  # same J per byte


def test_b200_figures():
    b200 = GpuSpec.load("B200-SXM-180GB")
    assert (b200.sm_count, b200.memory_gb, b200.hbm_bandwidth_gbps, b200.tdp_w) == (148, 180, 8000, 1000)
    assert b200.max_sm_clock_mhz == b200.default_sm_clock_mhz == 1965
    notes = b200.provenance["constants"]
    for name in ("gemm_peak_frac", "hbm_frac", "kv_frac", "kernel_floor_s", "seq_overhead_s", "active_w"):
        assert notes[name].startswith("transferred from H100-SXM-80GB"), name  # its table fits no roofline


def test_old_specs_without_low_precision_peaks_load():
    data = raw("H100-SXM-80GB/gpu.yaml")
    del data["peak_fp8_tflops"], data["peak_fp4_tflops"]
    spec = GpuSpec.from_dict(data, "old.yaml")
    assert (spec.peak_fp8_tflops, spec.peak_fp4_tflops) == (0.0, 0.0)
    assert spec.peak_tflops("fp8") == spec.peak_bf16_tflops


@pytest.mark.parametrize("key, value, problem", [
    ("peak_fp8_tflops", -1.0, "must be ≥ 0"),
    ("peak_fp8_tflops", 500.0, "below peak_bf16_tflops"),
    ("peak_fp4_tflops", 900.0, "below peak_bf16_tflops"),
    ("peak_fp8_tflops", "fast", "expected float"),
])
def test_bad_low_precision_peak_names_the_field(key, value, problem):
    data = copy.deepcopy(raw("H100-SXM-80GB/gpu.yaml"))
    data[key] = value
    assert problem in spec_error(GpuSpec.from_dict, data, "bad.yaml", field=key).problem


@pytest.mark.parametrize("node", NODES)
def test_every_node_spec_loads_and_round_trips(node):
    spec = NodeSpec.load(node)
    assert spec.name == node and spec.nvlink_gbps > 0
    assert NodeSpec.from_dict(spec.to_dict(), spec.source) == spec
    assert NodeSpec.from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict())), spec.source) == spec
    again = spec.replace(host_w=spec.host_w + 1, gpus_per_node=2)
    assert (again.host_w, again.gpus_per_node, again.collectives) == (spec.host_w + 1, 2, spec.collectives)
    assert set(spec.provenance) >= {"host_w", "off_w", "boot_s", "shutdown_s", "gpus_per_node", "nvlink_gbps"}


def test_nvlink_ordering():
    bw = {n: NodeSpec.load(n).nvlink_gbps for n in ("dgx-a100", "dgx-h100", "dgx-h200", "dgx-b200")}
    assert bw["dgx-a100"] < bw["dgx-h100"] == bw["dgx-h200"] < bw["dgx-b200"]
    assert (bw["dgx-a100"], bw["dgx-h100"], bw["dgx-b200"]) == (300, 450, 900)


def test_node_fields_are_required_and_checked():
    data = raw("nodes/dgx-h100.yaml")
    for key in ("nvlink_gbps", "collectives"):
        broken = {k: v for k, v in data.items() if k != key}
        spec_error(NodeSpec.from_dict, broken, "node.yaml", field=key)
    spec_error(NodeSpec.from_dict, {**data, "nvlink_gbps": 0}, "node.yaml", field="nvlink_gbps")
    err = spec_error(NodeSpec.from_dict, {**data, "nvlink": 1}, "node.yaml", field="nvlink")
    assert "collectives" in err.problem and "nvlink_gbps" in err.problem


def test_a_node_wider_than_its_collectives_is_refused():
    spec = NodeSpec.load("dgx-h100")
    with pytest.raises(SpecError, match="no worker count 16") as wide:
        spec.replace(gpus_per_node=16)
    assert wide.value.field == "collectives.all_reduce"
    with pytest.raises(SpecError, match="does not fit a node of 2") as info:
        spec.replace(gpus_per_node=2).collective_time_s("all_reduce", 1e6, 4)
    assert info.value.field == "gpus_per_node"


def test_gpu_types_map_nvml_names():
    assert gpu_type_of("NVIDIA H200") == "H200-SXM-141GB"
    assert gpu_type_of("NVIDIA B200") == "B200-SXM-180GB"
    assert gpu_type_of("NVIDIA H100 80GB HBM3") == "H100-SXM-80GB"
    assert gpu_type_of("NVIDIA GH200 480GB") is None and gpu_type_of("NVIDIA GB200") is None  # superchips differ
    assert set(GPU_TYPES.values()) <= set(GPUS)
