"""Rule policies on a host: Festina, or any festgym policy, deciding from NVML and engine metrics.

A rule policy's ``control`` reads views of the simulator (:class:`~festgym.sim.views.GpuView`,
:class:`~festgym.sim.views.InstanceView`, :class:`~festgym.sim.views.ClusterView`). Here the same
properties come from the interval's :class:`~festgym.deploy.deciders.HostState`; the policy code
runs unchanged. It needs the (GPU type, model) profiles, so the full install, unlike a checkpoint.

Figures the metrics do not give are estimated (named assumptions):

* **Arrivals**: finished requests plus the growth of running + waiting over the interval (at
  least 0), each with the interval's mean prompt (prompt tokens over first tokens). They reach
  the policy through ``place`` (a one-GPU host: nothing to choose), as in the simulator, so that
  its memory of the traffic (Festina's demand estimate) sees them.
* **Running / prefilling**: the engine's running gauge (vLLM counts sequences in prefill there);
  nothing counts as prefilling. **Pending prompt tokens**: waiting requests × the mean prompt.
* **Mean context**: KV-cache use × its capacity in tokens / running sequences (less the window each
  sequence holds in sliding-window layers, counted as the simulator counts them:
  :func:`festgym.profiles.parallel.kv_cache_tokens`).
* **Peak TTFT ratio and longest gap**: the interval's 99th percentiles (as the observation).

A policy's batch caps (``max_num_seqs``) are not applied: engines fix them at start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import cast

from festgym.control.actions import GpuControl
from festgym.control.states import STATES
from festgym.deploy.deciders import HostState
from festgym.deploy.engine_metrics import EngineWindow
from festgym.deploy.observation import EngineSpec, host_state, nan_to_zero, peak_gap_s
from festgym.policies.demand import CTX_GUESS
from festgym.profiles.parallel import kv_cache_tokens
from festgym.profiles.profile import Profile, load_profile
from festgym.sim.policy import Policy
from festgym.sim.serving import ModelServing, Slo
from festgym.sim.views import ClusterView, GpuView, Request


class HostInstance:
    """One engine as an :class:`~festgym.sim.views.InstanceView` (plain attributes, set each interval)."""

    gpu = 0
    gpus = (0,)  # one GPU per engine on a host
    prefilling = 0
    last_arrival_s = -1.0

    def __init__(self, spec: EngineSpec, serving: ModelServing, profile: Profile):
        self.model, self.profile = spec.model, profile
        self.kv_tokens, self.kv_seq = kv_cache_tokens(profile, serving.engine.kv_cache_gb * 1e9)
        self.spec = spec
        self.slo = replace(serving.slo, ttft_s=spec.ttft_slo_s, tbt_s=spec.tbt_slo_s, tbt_quantile=spec.slo_quantile,
                           ttft_per_1k_tokens_s=spec.ttft_per_1k_tokens_s)
        self.max_num_seqs = self.engine_max_num_seqs = spec.max_num_seqs
        self.token_budget = serving.engine.max_num_batched_tokens
        self.update(None, 1.0, 0.0)

    def update(self, window: EngineWindow | None, share: float, mean_prompt: float) -> None:
        self.ready, self.share = window is not None, share
        if window is None:
            self.phase, self.queue_len, self.running, self.kv_used_frac = "loading", 0, 0, 0.0
            self.prefill_tokens, self.mean_ctx, self.peak_ttft_ratio, self.peak_gap_s = 0, 0.0, 0.0, 0.0
            return
        self.queue_len, self.running = int(window.waiting), int(window.running)
        self.phase = "decode" if self.running else "idle"
        self.kv_used_frac = nan_to_zero(window.kv_used)
        self.prefill_tokens = int(self.queue_len * mean_prompt)
        self.mean_ctx = max(self.kv_used_frac * self.kv_tokens / self.running - self.kv_seq, 0.0) if self.running \
            else 0.0
        self.peak_ttft_ratio, self.peak_gap_s = self.spec.peak_ttft_ratio(window), peak_gap_s(window)


class HostGpu:
    """The host's GPU as a :class:`~festgym.sim.views.GpuView`."""

    index = 0
    parked = False

    def __init__(self, profile: Profile, instances: Sequence[HostInstance]):
        self.spec = profile.gpu
        self.instances = tuple(instances)
        self.models = [i.model for i in instances]
        self.state, self.clock_mhz = "idle", float(self.spec.default_sm_clock_mhz)
        self.power_w = self.mem_free_gb = 0.0

    def instance(self, model: str) -> HostInstance | None:
        return next((i for i in self.instances if i.model == model), None)


class HostCluster:
    """A one-GPU :class:`~festgym.sim.views.ClusterView` of the host."""

    n_gpus = 1
    share_mechanism = "green-contexts"  # as the simulated host applies shares (real hosts: devices.shares)

    def __init__(self, gpu: HostGpu, profiles: Mapping[str, Profile], interval_s: float):
        self.gpus, self._gpu, self._profiles = (gpu,), gpu, profiles
        self.models, self.control_interval_s, self.now = tuple(profiles), interval_s, 0.0

    def gpu(self, index: int) -> HostGpu:
        return self._gpu

    def instances_of(self, model: str) -> tuple[HostInstance, ...]:
        found = self._gpu.instance(model)
        return (found,) if found is not None else ()

    def profile(self, gpu: int, model: str) -> Profile:
        return self._profiles[model]

    def slo(self, model: str) -> Slo:
        inst = self._gpu.instance(model)
        if inst is None:
            raise KeyError(f"{model} is not served on this host")
        return inst.slo

    def can_host(self, gpu: int, model: str) -> bool:
        return model in self._profiles


class RuleDecider:
    """``policy`` (a festgym rule policy) deciding one host GPU of type ``gpu_type``.

    ``serving``: each model's engine settings and SLOs (the scenario's; the engines' specs
    override the SLOs and batch limits)."""

    sha256 = None

    def __init__(self, policy: Policy, gpu_type: str, engines: Sequence[EngineSpec],
                 serving: Mapping[str, ModelServing], interval_s: float, profiles_root=None):
        self.policy, self.name = policy, getattr(policy, "name", type(policy).__name__)
        profiles = {e.model: load_profile(f"{gpu_type}/{e.model}", profiles_root) for e in engines}
        self.instances = [HostInstance(e, serving[e.model], profiles[e.model]) for e in engines]
        self.gpu = HostGpu(next(iter(profiles.values())), self.instances)
        self.cluster = HostCluster(self.gpu, profiles, interval_s)
        # The host's views offer every property of the simulator's that rule policies read.
        self._cluster_view, self._gpu_view = cast(ClusterView, self.cluster), cast(GpuView, self.gpu)
        self._active = {e.model: 0.0 for e in engines}  # running + waiting at the last interval
        self._prompt = {e.model: CTX_GUESS for e in engines}  # until the metrics show prompts
        self._rid = 0
        policy.reset(self._cluster_view)

    def decide(self, state: HostState) -> tuple[GpuControl | None, None]:
        self.cluster.now = state.now
        self.gpu.state = STATES[host_state(state.windows)]
        self.gpu.clock_mhz, self.gpu.power_w = float(state.reading.sm_clock_mhz), state.reading.power_mw / 1e3
        mem = state.reading.memory
        self.gpu.mem_free_gb = mem.free_bytes / 1e9
        for inst in self.instances:
            window = state.windows.get(inst.model)
            self._arrivals(inst.model, window, state.now)
            inst.update(window, state.shares[inst.model], self._prompt[inst.model])
        control = self.policy.control(self._gpu_view, state.now)
        if control is None:
            return None, None
        return GpuControl(clock_mhz=control.clock_mhz, shares=control.shares), None

    def _arrivals(self, model: str, window: EngineWindow | None, now: float) -> None:
        """Hand the interval's estimated arrivals to the policy's ``place``."""
        if window is None:
            return
        active = window.running + window.waiting
        arrived = max(0, round(nan_to_zero(window.finished) + active - self._active[model]))
        self._active[model] = active
        firsts = window.ttft_s.count
        if firsts > 0 and nan_to_zero(window.prompt_tokens) > 0:
            self._prompt[model] = window.prompt_tokens / firsts
        for _ in range(arrived):
            self._rid += 1
            self.policy.place(Request(self._rid, model, int(self._prompt[model]), now), self._cluster_view)


__all__ = ["HostCluster", "HostGpu", "HostInstance", "RuleDecider"]
