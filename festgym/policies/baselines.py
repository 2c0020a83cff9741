"""The baselines Festina is compared with, each standing for a family of published systems.

Every baseline keeps its GPUs claimed (no parking, so no node is ever powered off, and no
migration). They differ in placement, in what they control, and in how their engines live
(:class:`~festgym.sim.lifecycle.Mechanisms`: loader, sleep, keep-alive):

============== ==================================== ========= ========================= ========= ==============
name           stands for                           placement clock                     SM shares other
============== ==================================== ========= ========================= ========= ==============
max-clock      vLLM serving, one model per GPU      dedicated default                   whole GPU
serverless-llm ServerlessLLM-style scale-to-zero    dedicated default                   whole GPU
mps-even       GPU sharing, no energy control (MPS) colocated default                   even
dvfs-only      DVFS serving (throttLL'eM, GreenLLM) dedicated lowest that meets TBT     whole GPU
miad-llf       FREESH                               colocated MIAD on observed latency  even      LLF queues
power-cap      PALS                                 dedicated highest under a power cap whole GPU TBT batch caps
============== ==================================== ========= ========================= ========= ==============

Engines: ``max-clock`` keeps one per model always resident and reloads with safetensors;
``serverless-llm`` loads with a fast loader and unloads an engine idle for 60 s; the others reload
with safetensors and keep an idle engine for the scenario's keep-alive.

*Always resident*: a model's last engine is never unloaded (a static vLLM deployment; extra
replicas still expire). *Keep-alive*: the scenario's ``sim.keep_alive_s``. ``serverless-llm``'s 60 s
keep-alive is an assumption (serverless GPU platforms keep an idle engine for seconds to minutes).

*Dedicated*: a model's instances each get a GPU of their own. Requests go to the least-loaded
instance, and a new instance starts on an empty GPU when every instance is over ``spawn_at`` of
its batch limit (co-located on the emptiest GPU only when no GPU is empty). *Colocated*: the
same routing, but a new instance goes beside others: on the least-loaded GPU that holds fewer
than ``colocate_max`` models and can host it (else an empty GPU), so models share GPUs in pairs
by default (MPS) with the SMs split evenly; the GPUs left empty stay awake.

Assumptions, named:

* ``dvfs-only`` looks up, per busy instance, the profile's decode step time at the batch it will
  run (running + prefilling + queued) and its mean context, rounded up to the grid, and takes the
  lowest clock level where every ready instance stays under ``(1 − tbt_margin)·TBT``. Those
  controllers target TBT; a clock chosen on TBT alone starves prefill under bursts (TTFT
  attainment fell to 76% on the default scenario), so the prefill of the queued prompts, of the
  prompts expected in the next interval (moving-mean arrival rate × mean prompt) and of a typical
  new one (twice the mean prompt) must also fit ``(1 − ttft_margin)`` of that prompt's TTFT SLO
  (the guard those systems get from their queue or throughput models).
* ``miad-llf`` raises the clock multiplicatively (``× (1 + increase)``) after any interval in
  which a first token came later than ``(1 − ttft_margin)`` of its TTFT SLO or a gap exceeded
  ``(1 − tbt_margin)`` of the TBT SLO, and lowers it by ``decrease_mhz`` otherwise (FREESH's
  multiplicative-increase / additive-decrease on observed latency). Queues are least laxity
  first (``queue_order = "llf"``: TTFT deadline minus estimated prefill time).
* ``power-cap`` models a power cap of ``cap_frac`` × TDP as the highest clock level whose predicted
  power fits: idle power plus each busy instance's dynamic power at its batch, from the profile.
  At that clock, an instance whose decode step at the projected batch would break
  ``(1 − tbt_margin)·TBT`` gets its batch capped at the largest grid batch that meets it (PALS's
  batch-size control); otherwise its engine limit is restored.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from festgym.config import build_dataclass, check_ranges
from festgym.control.actions import GpuControl
from festgym.control.levels import quantize_share
from festgym.policies.demand import CTX_GUESS, Demand
from festgym.policies.least_loaded import load_score
from festgym.policies.tables import ProfileTables, TableCache
from festgym.sim.lifecycle import Mechanisms
from festgym.sim.policy import BasePolicy
from festgym.sim.views import ClusterView, GpuView, InstanceView, Request


@dataclass
class BaselineConfig:
    """Parameters every baseline reads (each ignores what its rule does not use)."""

    spawn_at: float = 0.75
    """Load (queued + running over the batch limit) above which every instance must be before a
    new one starts."""
    tbt_margin: float = 0.2
    """Headroom under the TBT SLO (fraction) for clock and batch decisions."""
    ttft_margin: float = 0.2
    """Headroom under the TTFT SLO (fraction) for miad-llf's risk signal."""
    increase: float = 0.25
    """miad-llf: relative clock increase after a risky interval."""
    decrease_mhz: float = 30.0
    """miad-llf: clock decrease after a safe interval (MHz)."""
    cap_frac: float = 0.7
    """power-cap: power cap as a fraction of TDP."""
    n_clock_levels: int = 16
    """Clock levels searched over the control range (dvfs-only, power-cap)."""
    colocate_max: int = 2
    """Co-located baselines: models per GPU before a new instance takes an empty GPU."""

    def __post_init__(self):
        check_ranges(self, {"spawn_at": self.spawn_at > 0, "tbt_margin": 0 <= self.tbt_margin < 1,
                            "ttft_margin": 0 <= self.ttft_margin < 1, "increase": self.increase > 0,
                            "decrease_mhz": self.decrease_mhz > 0, "cap_frac": 0 < self.cap_frac <= 1,
                            "n_clock_levels": self.n_clock_levels >= 2, "colocate_max": self.colocate_max >= 1},
                     {"spawn_at": "> 0", "tbt_margin": "in [0, 1)", "ttft_margin": "in [0, 1)", "increase": "> 0",
                      "decrease_mhz": "> 0 MHz", "cap_frac": "in (0, 1]", "n_clock_levels": "≥ 2",
                      "colocate_max": "≥ 1"})


class Baseline(BasePolicy):
    """Placement (dedicated or co-located) plus a per-GPU clock rule; subclasses set the rule."""

    co_locate = False
    """Place new instances beside others (MPS sharing) instead of on a GPU of their own."""
    mechanisms = Mechanisms()
    """How its engines load, sleep and expire (default: vLLM reload, the scenario's keep-alive)."""

    def __init__(self, config: BaselineConfig | None = None, **params):
        self.config = config or build_dataclass(BaselineConfig, params, f"{self.name} parameters")
        self._tables = TableCache(n_shares=20, n_clocks=self.config.n_clock_levels)

    def reset(self, cluster: ClusterView) -> None:
        self.cluster = cluster
        self.demand = Demand()

    def tables(self, gpu: GpuView, model: str) -> ProfileTables:
        return self._tables.get(self.cluster, gpu, model)

    # --- placement ----------------------------------------------------------------------------

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        model = request.model
        self.demand.arrived(model, request.prompt_tokens)
        best, best_score = None, float("inf")
        for inst in cluster.instances_of(model):
            if inst.phase == "asleep" and not cluster.can_host(inst.gpu, model):
                continue  # its memory was taken while it slept
            score = load_score(inst)
            if score < best_score:
                best, best_score = inst, score
        return self.demand.placed(self._target(model, best, best_score, cluster), model)

    def _target(self, model: str, best: InstanceView | None, best_score: float, cluster: ClusterView) -> int | None:
        if best is not None and best_score < self.config.spawn_at:
            return best.gpu
        hosts = [g for g in cluster.gpus if g.instance(model) is None and cluster.can_host(g.index, model)]
        empty = [g for g in hosts if not g.instances]
        beside = [g for g in hosts if 0 < len(g.instances) < self.config.colocate_max]
        if self.co_locate and beside:
            return min(beside, key=lambda g: (sum(load_score(i) for i in g.instances), g.index)).index
        if empty:
            return empty[0].index
        if best is not None:
            return best.gpu  # no GPU of its own left: the existing instances absorb the load
        if hosts:
            return min(hosts, key=lambda g: (len(g.instances), g.index)).index
        return None

    # --- local control ------------------------------------------------------------------------

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        instances = gpu.instances
        interval = self.cluster.control_interval_s
        for inst in instances:
            self.demand.tick(gpu.index, inst.model, interval)
        if not instances:
            return None
        share = quantize_share(1.0 / len(instances))
        clock, caps = self.clock(gpu, share)
        shares = {i.model: share for i in instances} if any(i.share != share for i in instances) else None
        limits = {i.model: i.max_num_seqs for i in instances}
        changed = {m: c for m, c in caps.items() if limits.get(m) != c} or None
        if shares is None and changed is None and clock == gpu.clock_mhz:
            return None
        return GpuControl(clock_mhz=clock, shares=shares, max_num_seqs=changed)

    def clock(self, gpu: GpuView, share: float) -> tuple[float, dict[str, int]]:
        """(clock in MHz, batch caps by model) for ``gpu`` whose models each hold ``share``."""
        return float(gpu.spec.default_sm_clock_mhz), {}

    # --- profile lookups shared by the clock rules ------------------------------------------------

    def _busy(self, gpu: GpuView) -> list[InstanceView]:
        return [i for i in gpu.instances if i.ready and i.running + i.prefilling + i.queue_len > 0]

    def _step_s(self, gpu: GpuView, inst: InstanceView, share: float, batch: int | None = None):
        """Decode step time of ``inst`` over the clock levels at its projected batch (grid-rounded
        up), with the tables it came from and the share index."""
        tab = self.tables(gpu, inst.model)
        if batch is None:
            batch = max(min(inst.running + inst.prefilling + inst.queue_len, inst.max_num_seqs), 1)
        bi, ci = tab.decode_index(batch, inst.mean_ctx if inst.running else CTX_GUESS)
        si = max(bisect_right(tab.share_list, share + 1e-9) - 1, 0)
        return tab.decode_s[si, :, bi, ci], tab, si, bi, ci

    def _tbt_budget(self, inst: InstanceView) -> float:
        return (1 - self.config.tbt_margin) * inst.slo.tbt_s


class MaxClock(Baseline):
    """vLLM-like serving: every model on GPUs of its own, default clock, whole GPU per model,
    least-loaded routing across replicas, no SM partitioning, no parking; one engine per model
    always resident (safetensors reload when one must start)."""

    name = "max-clock"
    mechanisms = Mechanisms(loader="safetensors", always_resident=True)


class ServerlessLlm(Baseline):
    """ServerlessLLM-style serving: dedicated GPUs at the default clock, a fast multi-tier loader,
    and scale-to-zero (an engine idle for 60 s is unloaded, its GPU back at the empty floor)."""

    name = "serverless-llm"
    mechanisms = Mechanisms(loader="fast", keep_alive_s=60.0)


class MpsEven(Baseline):
    """GPU sharing without energy control: models co-located under MPS with an even split of
    SMs, default clock, least-loaded routing, no parking."""

    name = "mps-even"
    co_locate = True


class DvfsOnly(Baseline):
    """DVFS-augmented serving (throttLL'eM / GreenLLM style): vLLM-like placement, and each
    control interval the lowest clock at which every model's decode step meets its TBT SLO.
    No SM partitioning, no consolidation."""

    name = "dvfs-only"

    def clock(self, gpu: GpuView, share: float) -> tuple[float, dict[str, int]]:
        level = 0
        clocks = None
        for inst in gpu.instances:  # idle ones too: a new prompt must still prefill in time
            if not inst.ready:
                continue
            step_s, tab, si, _, _ = self._step_s(gpu, inst, share)
            clocks = tab.clock_list
            mean = self.demand.prompt(inst.model)
            typical = 2 * mean
            expected = self.demand.rate(gpu.index, inst.model) * self.cluster.control_interval_s * mean
            ti, chunks = tab.prefill_index(inst.prefill_tokens + expected + typical, inst.token_budget)
            prefill_s = tab.prefill_s[si, :, ti] * chunks
            slo = inst.slo
            ttft = (1 - self.config.ttft_margin) * (slo.ttft_s + slo.ttft_per_1k_tokens_s * typical / 1000)
            ok = [k for k, (t, p) in enumerate(zip(step_s.tolist(), prefill_s.tolist()))
                  if t <= self._tbt_budget(inst) and t + p <= ttft]
            level = max(level, ok[0] if ok else len(clocks) - 1)
        if clocks is None:  # nothing ready: the lowest control clock
            clocks = self.tables(gpu, gpu.instances[0].model).clock_list
        return float(clocks[level]), {}


class MiadLlf(Baseline):
    """FREESH-style control: multiplicative-increase / additive-decrease of the clock on
    observed TTFT and TBT against their SLOs, least-laxity-first queues, co-located models with
    an even SM split, no parking."""

    name = "miad-llf"
    co_locate = True
    queue_order = "llf"

    def reset(self, cluster: ClusterView) -> None:
        super().reset(cluster)
        self._clock: dict[int, float] = {}

    def clock(self, gpu: GpuView, share: float) -> tuple[float, dict[str, int]]:
        cfg = self.config
        ladder = gpu.spec.sm_clocks_mhz
        low = self.tables(gpu, gpu.instances[0].model).clock_list[0]
        current = self._clock.get(gpu.index, float(gpu.spec.default_sm_clock_mhz))
        risky = any(i.peak_ttft_ratio > 1 - cfg.ttft_margin or i.peak_gap_s > (1 - cfg.tbt_margin) * i.slo.tbt_s
                    for i in gpu.instances)
        target = current * (1 + cfg.increase) if risky else current - cfg.decrease_mhz
        target = min(max(target, low), ladder[-1])
        self._clock[gpu.index] = target
        return target, {}  # the simulator snaps it to a supported clock


class PowerCap(Baseline):
    """PALS-style serving under a power cap: vLLM-like placement, the highest clock whose
    predicted power fits ``cap_frac`` × TDP, and batch caps that keep TBT at that clock."""

    name = "power-cap"

    def clock(self, gpu: GpuView, share: float) -> tuple[float, dict[str, int]]:
        busy = self._busy(gpu)
        spec = gpu.spec
        if not busy:
            return float(spec.default_sm_clock_mhz), self._restore(gpu)
        looked = [(inst, *self._step_s(gpu, inst, share)) for inst in busy]
        clocks = looked[0][2].clock_list
        dynamic = sum(tab.decode_j[si, :, bi, ci] / step_s for _, step_s, tab, si, bi, ci in looked)
        fits = [k for k, w in enumerate((spec.idle_w + dynamic).tolist()) if w <= self.config.cap_frac * spec.tdp_w]
        level = fits[-1] if fits else 0
        caps = self._restore(gpu)
        for inst, step_s, tab, si, _bi, ci in looked:
            if step_s[level] > self._tbt_budget(inst):
                ok = [b for b, t in enumerate(tab.decode_s[si, level, :, ci].tolist()) if t <= self._tbt_budget(inst)]
                caps[inst.model] = max(int(tab.batch_points[ok[-1]]), 1) if ok else 1
        return float(clocks[level]), caps

    @staticmethod
    def _restore(gpu: GpuView) -> dict[str, int]:
        """Every model's engine batch limit (the cap lifted)."""
        return {i.model: i.engine_max_num_seqs for i in gpu.instances}


BASELINES = {cls.name: cls for cls in (MaxClock, ServerlessLlm, MpsEven, DvfsOnly, MiadLlf, PowerCap)}

__all__ = ["BASELINES", "Baseline", "BaselineConfig", "DvfsOnly", "MaxClock", "MiadLlf", "MpsEven", "PowerCap",
           "ServerlessLlm"]
