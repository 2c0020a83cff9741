"""The roofline for the models clusters serve: tensor and expert parallelism, mixture-of-experts traffic,
and weight precision (:mod:`festgym.profiles.roofline`, :mod:`festgym.profiles.parallel`).

Each test states what the model says in closed form and checks the roofline's work or time against
it, so that a wrong split, a lost factor or a format run at the wrong peak fails here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from festgym.errors import SpecError
from festgym.profiles import roofline
from festgym.profiles.generate import build_profile, shipped_plans
from festgym.profiles.models import FORMAT_BYTES, ModelSpec
from festgym.profiles.parallel import (
    SINGLE_GPU,
    Parallel,
    Plan,
    kv_bytes_per_token,
    kv_cache_tokens,
    weight_bytes_per_gpu,
)
from festgym.profiles.profile import iter_profile_dirs, load_profile
from festgym.profiles.specs import GpuSpec, NodeSpec
from festgym.resources import PROFILES

H100 = GpuSpec.load("H100-SXM-80GB")
B200 = GpuSpec.load("B200-SXM-180GB")
NODE = NodeSpec.load("dgx-h100")
DENSE = ModelSpec.load("Llama-3.1-70B")
MOE = ModelSpec.load("Qwen3-30B-A3B")
OSS = ModelSpec.load("gpt-oss-20b")


def work(model, parallel=SINGLE_GPU.parallel, **kw):
    return roofline.iteration_work(model, parallel=parallel, collectives=NODE.collectives
                                   if parallel.gpus > 1 else None, **kw)


def test_tensor_parallel_splits_weights_flops_and_kv_per_gpu():
    one, four = work(DENSE, decode_batch=64.0, decode_ctx=1000.0), work(DENSE, Parallel(4), decode_batch=64.0,
                                                                          decode_ctx=1000.0)
    assert float(four.bytes_weights) == pytest.approx(float(one.bytes_weights) / 4)
    assert float(four.flops_linear) == pytest.approx(float(one.flops_linear) / 4)
    assert float(four.bytes_kv) == pytest.approx(float(one.bytes_kv) / 4)  # 8 KV heads: 2 per GPU
    eight_way = work(DENSE, Parallel(8), decode_batch=64.0, decode_ctx=1000.0)
    assert float(eight_way.bytes_kv) == pytest.approx(float(one.bytes_kv) / 8)
    assert float(one.comm_s) == 0 and float(four.comm_s) > 0


def test_kv_heads_fewer_than_the_degree_are_replicated():
    few = dataclasses.replace(DENSE, num_kv_heads=2)  # 2 KV heads over 8 GPUs: each GPU holds one
    one, eight = work(few, decode_batch=8.0, decode_ctx=4000.0), work(few, Parallel(8), decode_batch=8.0,
                                                                      decode_ctx=4000.0)
    assert float(eight.bytes_kv) == pytest.approx(float(one.bytes_kv) / 2)


def test_all_reduces_per_iteration_are_two_per_layer_of_the_activations():
    w = work(DENSE, Parallel(4), decode_batch=32.0, decode_ctx=500.0)
    size = 32.0 * DENSE.hidden_size * DENSE.dtype_bytes
    want = 2 * DENSE.num_layers * float(NODE.collectives.engine_all_reduce_s(size, 4))
    assert float(w.comm_s) == pytest.approx(want)
    assert want < 2 * DENSE.num_layers * float(NODE.collectives.time_s("all_reduce", size, 4))  # not NCCL's here
    with pytest.raises(ValueError, match="collectives"):
        roofline.iteration_work(DENSE, decode_batch=1.0, decode_ctx=10.0, parallel=Parallel(2))


@pytest.mark.parametrize("tokens", [1, 4, 16, 64, 256, 4096])
def test_expert_traffic_follows_the_distinct_expert_model(tokens):
    w = work(MOE, prefill_tokens=float(tokens), prefill_seqs=1.0)
    e, k = MOE.num_experts, MOE.experts_per_token
    expected = e * (1 - (1 - k / e) ** tokens)
    want = MOE.moe_layers * expected * MOE.expert_weight_bytes
    assert float(w.bytes_expert_weights) == pytest.approx(want, rel=1e-9)


def test_expert_traffic_grows_with_batch_and_saturates_at_every_expert():
    tokens = np.array([1, 2, 8, 32, 128, 512, 4096, 65536], dtype=float)
    traffic = work(MOE, decode_batch=tokens, decode_ctx=100.0).bytes_expert_weights
    assert np.all(np.diff(traffic) >= 0) and np.all(np.diff(traffic)[:5] > 0)
    per_token = np.diff(traffic) / np.diff(tokens)
    assert np.all(np.diff(per_token) <= 0)  # concave: each token adds fewer new experts
    every = MOE.moe_layers * MOE.num_experts * MOE.expert_weight_bytes
    assert traffic[0] == pytest.approx(MOE.moe_layers * MOE.experts_per_token * MOE.expert_weight_bytes)
    assert traffic[-1] == pytest.approx(every, rel=1e-6) and (traffic <= every * (1 + 1e-12)).all()


def test_expert_parallel_splits_the_experts_and_replicates_the_rest():
    one, two = work(MOE, decode_batch=64.0, decode_ctx=500.0), work(MOE, Parallel(1, 2), decode_batch=64.0,
                                                                    decode_ctx=500.0)
    dense = float(one.bytes_weights - one.bytes_expert_weights)
    assert float(two.bytes_weights - two.bytes_expert_weights) == pytest.approx(dense)  # replicated
    assert float(two.bytes_expert_weights) == pytest.approx(float(one.bytes_expert_weights) / 2)
    assert float(two.flops_expert) == pytest.approx(float(one.flops_expert) / 2)
    # Each replica runs half the sequences' attention and dense layers.
    assert float(two.bytes_kv) == pytest.approx(float(one.bytes_kv) / 2)
    assert float(two.comm_s) > 0


def test_weights_per_gpu_of_a_plan():
    profile = load_profile("H100-SXM-80GB/Qwen3-30B-A3B-ep2")
    experts = MOE.num_experts * MOE.moe_layers * MOE.expert_weight_bytes
    assert weight_bytes_per_gpu(profile) == pytest.approx(MOE.weight_bytes - experts / 2)
    tp8 = load_profile("H100-SXM-80GB/Llama-3.1-405B-FP8-tp8")
    assert weight_bytes_per_gpu(tp8) == pytest.approx(tp8.model.weight_bytes / 8)


def test_fp8_weights_halve_bytes_and_run_at_twice_the_bf16_peak_on_hopper():
    bf16 = ModelSpec.load("Llama-3.1-8B")
    fp8 = dataclasses.replace(bf16, weight_format="fp8")
    assert fp8.streamed_weight_bytes < 0.6 * bf16.streamed_weight_bytes
    big = {"prefill_tokens": np.array([[16384.0]]), "prefill_seqs": 1.0}
    t16 = roofline.evaluate(work(bf16, **big), H100, 1.0, [1980.0], power_cap=False).time_s
    t8 = roofline.evaluate(work(fp8, **big), H100, 1.0, [1980.0], power_cap=False).time_s
    lin16, lin8 = work(bf16, **big).flops_linear, work(fp8, **big).flops_linear
    assert lin8.item() == pytest.approx(lin16.item())  # the same FLOPs ...
    assert t8.item() < 0.75 * t16.item()  # ... at twice the rate: compute-bound prefill is much faster
    assert H100.peak_tflops("fp8") == pytest.approx(2 * H100.peak_tflops("bf16"), rel=1e-3)


def test_mxfp4_runs_native_on_blackwell_and_dequantised_on_hopper():
    assert not H100.native("mxfp4") and B200.native("mxfp4")
    assert OSS.expert_format == "mxfp4" and OSS.weight_format == "bf16"
    assert OSS.expert_weight_bytes == pytest.approx(OSS.expert_params * FORMAT_BYTES["mxfp4"], rel=0.01)
    w = work(OSS, decode_batch=256.0, decode_ctx=2000.0)
    extra = roofline._dequant_flops(w, H100)
    assert float(extra) == pytest.approx(roofline.DEQUANT_FLOPS_PER_WEIGHT * float(w.bytes_expert_weights)
                                         / FORMAT_BYTES["mxfp4"])
    assert float(roofline._dequant_flops(w, B200)) == 0.0


def test_fp8_kv_halves_kv_bytes():
    fp8 = ModelSpec.load("Qwen3-8B").with_kv_format("fp8")
    base = ModelSpec.load("Qwen3-8B")
    assert fp8.kv_bytes_per_token * 2 == base.kv_bytes_per_token
    a, b = work(base, decode_batch=64.0, decode_ctx=4000.0), work(fp8, decode_batch=64.0, decode_ctx=4000.0)
    assert float(b.bytes_kv) == pytest.approx(float(a.bytes_kv) / 2)


def test_sliding_window_layers_cap_attention_at_the_window():
    short, long_ = (work(OSS, decode_batch=1.0, decode_ctx=c) for c in (100.0, 100_000.0))
    full = OSS.num_layers - OSS.sliding_layers
    per = OSS.kv_bytes_per_token / OSS.num_layers
    assert float(long_.bytes_kv - 2 * per * OSS.num_layers) == pytest.approx(
        per * (full * 100_000 + OSS.sliding_layers * OSS.sliding_window), rel=1e-9)
    assert float(long_.flops_attention) / float(short.flops_attention) < 1000 * full / OSS.num_layers + 1


def test_a_plan_lies_in_one_node_and_names_its_node():
    with pytest.raises(SpecError, match="one node"):
        Plan(Parallel(8), NodeSpec.load("dgx-h100").replace(gpus_per_node=4))
    with pytest.raises(SpecError, match="needs a node"):
        Plan(Parallel(2))
    with pytest.raises(SpecError, match="power of two"):
        Parallel(3)
    with pytest.raises(SpecError, match="multiple of tp"):
        Parallel(tp=4, ep=2)


def test_a_group_profile_round_trips_its_plan(tmp_path):
    profile = build_profile(H100, DENSE, Plan.of(H100, tp=4))
    assert profile.name == "Llama-3.1-70B-tp4" and profile.provenance["communication"]["node"] == "dgx-h100"
    from festgym.profiles.generate import model_from_config
    _, config = model_from_config("Llama-3.1-70B")
    loaded = type(profile).load(profile.save(tmp_path / "p", config))
    assert loaded.parallel == Parallel(4) and loaded.key == "H100-SXM-80GB/Llama-3.1-70B-tp4"


def test_the_manifest_lists_every_shipped_profile():
    listed = {f"{gpu}/{model}{plan.suffix}" for gpu, model, plan in shipped_plans(PROFILES.shipped)}
    shipped = {f"{p.parent.name}/{p.name}" for p in iter_profile_dirs(PROFILES.shipped)}
    assert listed == shipped


def test_an_expert_parallel_step_is_its_busiest_replicas():
    """Data-parallel attention keeps a sequence on one replica: one prompt is prefilled whole there."""
    one = work(MOE, prefill_tokens=np.array([8192.0]), prefill_seqs=1.0)
    two = work(MOE, Parallel(1, 2), prefill_tokens=np.array([8192.0]), prefill_seqs=1.0)
    assert two.flops_attention.item() == pytest.approx(one.flops_attention.item())
    assert two.flops_linear.item() == pytest.approx(one.flops_linear.item())  # replicated dense layers
    odd = work(MOE, Parallel(1, 2), decode_batch=np.array([3.0]), decode_ctx=100.0)
    assert odd.seqs.item() == 2  # 3 sequences over 2 replicas: the busier holds 2


def test_replicated_kv_heads_take_more_cache_per_token():
    from festgym.profiles.parallel import kv_bytes_per_token

    profile = dataclasses.replace(load_profile("H100-SXM-80GB/Qwen3-30B-A3B"), parallel=Parallel(8))
    assert MOE.num_kv_heads == 4
    assert kv_bytes_per_token(profile) == pytest.approx(2 * MOE.kv_bytes_per_token)  # 8 GPUs, 4 heads
    single = load_profile("H100-SXM-80GB/Qwen3-30B-A3B")
    assert kv_bytes_per_token(single) == MOE.kv_bytes_per_token


def test_sliding_window_prefill_counts_the_windowed_causal_pairs():
    s, w = 4096.0, float(OSS.sliding_window)
    got = work(OSS, prefill_tokens=np.array([s]), prefill_seqs=1.0).flops_attention.item()
    full = OSS.num_layers - OSS.sliding_layers
    want = 4 * OSS.q_dim * (full * s * s / 2 + OSS.sliding_layers * (s * w - w * w / 2))
    assert got == pytest.approx(want)


def test_generating_a_model_too_big_for_its_gpus_names_the_fix(tmp_path):
    from festgym.profiles.generate import generate

    with pytest.raises(SpecError, match="raise --tp"):
        generate("H100-SXM-80GB", "Llama-3.1-70B", tmp_path / "p", fit_errors=False)
    assert generate("H100-SXM-80GB", "Llama-3.1-70B", tmp_path / "q", fit_errors=False, tp=2).name == \
        "Llama-3.1-70B-tp2"


@pytest.mark.parametrize("key", ["H100-SXM-80GB/Llama-3.1-8B", "H100-SXM-80GB/Llama-3.1-70B-tp4",
                                 "H100-SXM-80GB/Qwen3-30B-A3B-ep2"])
def test_a_kv_cache_without_window_layers_holds_its_bytes_over_the_per_token_figure(key):
    profile = load_profile(key)
    assert kv_cache_tokens(profile, 40e9) == (int(40e9 // kv_bytes_per_token(profile)), 0)


@pytest.mark.parametrize("ctx", [128, 129, 1000, 8192])
def test_window_layers_hold_their_window_once_per_sequence(ctx):
    profile = load_profile("H100-SXM-80GB/gpt-oss-20b")
    model = profile.model
    capacity, per_seq = kv_cache_tokens(profile, 40e9)
    assert per_seq == 128  # 12 window layers of 128 tokens, counted in tokens of the other 12 layers
    full_token = kv_bytes_per_token(profile) / 2  # half the layers attend to everything
    assert capacity == int(40e9 // full_token)
    # A sequence past its window holds exactly what the model says, in these units.
    assert (ctx + per_seq) * full_token == pytest.approx(float(model.kv_bytes(ctx)), rel=1e-12)
    # The cache holds about twice as many such sequences as counting every layer's KV per token would.
    assert capacity // (ctx + per_seq) >= int(40e9 // (ctx * kv_bytes_per_token(profile))) * 1.9 * ctx / (ctx + 128)
