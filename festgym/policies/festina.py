"""Festina: energy-aware scheduling for serverless LLM serving on shared GPUs.

Reconstructed from the abstract of "Energy-Aware Scheduling for Serverless LLM Serving on Shared
GPUs" (arXiv 2606.30391) and of its predecessor WAGES (SC'25 workshops, same group). The
abstracts give the structure: an SLO-safe, energy-first global placement driven by constant-time
lookups in offline profiles; a phase-aware local scheduler that picks per-model SM shares and
one device clock per GPU; and consolidation that empties lightly loaded GPUs. Everything the
abstracts leave open is a named choice here, with its knob in :class:`FestinaConfig`
(shipped ``policies/festina.yaml``):

* **SLO test** (placement and local control): the profile's decode step time at the batch the
  instance will run (running + prefilling + queued, + 1 for a new request), rounded up to the
  next grid point, must stay under ``(1 − tbt_margin)·TBT``; the time to prefill every pending
  prompt token, in chunks of the engine's token budget, under ``(1 − ttft_margin)·TTFT``.
* **Energy objective** (local control): dynamic energy of the work expected in the next control
  interval (the decode steps it would take at full speed, plus the pending prefill) at each
  (share, clock); the power a GPU draws between iterations is left out (it differs between clocks
  only through resident idle power, at most 36 W on an H100, and the lowest clock that passes is
  what an idle GPU gets anyway).
  Per clock each model takes its least-energy feasible share; if those sum above 1 each takes its
  smallest feasible share; the clock with the least total energy wins. ``clock_hysteresis``:
  keep the current clock unless the best saves that fraction.
* **Idle guard**: an idle engine whose model arrived on its GPU lately (moving-mean rate above
  ``idle_guard_rps``) is planned as if a typical prompt (twice the model's mean) were arriving, so
  its clock and share let that prompt meet its TTFT budget; an idle engine with nothing expected
  gets the lowest control clock (its resident idle power falls with the clock) and a floor share.
  Without the guard, a prompt arriving at a GPU that idles at the lowest clock waits up to a
  control interval at it.
* **Spare SMs**: models with no work get a floor weight (``IDLE_SHARE``), then every share is
  scaled up so that the GPU is fully assigned. Idle SMs would draw less power in the profiles
  (SM activity ∝ share), but a burst arriving between control intervals would then be stuck on
  a sliver; the measured TTFT cost of leaving SMs unassigned outweighed the saving.
* **Overload** (no setting passes): top clock, shares in proportion to each model's need.
* **Marginal energy** (placement): dynamic energy per token at the instance's new batch, at the
  share left to it (1 − the others' needs) and the top clock. It is lowest on busy instances, so
  load packs onto active GPUs, which is where static power is already paid.
* **New instances**: only when no resident instance passes for ``spawn_after`` requests in a row
  (a burst goes to the least-loaded instance) and none is loading (requests then wait for the
  loading one rather than start a cold-start storm): on the awake GPU that fits the
  model with the most load already (best fit), else on a parked GPU (woken), else on the least
  loaded awake GPU with memory, else on the least-loaded instance (SLO not assured).
* **Consolidation**: a GPU whose summed need (each model's smallest feasible share at the top
  clock) stays under ``low_load`` for ``low_windows`` consecutive consolidation calls is emptied,
  one GPU per call, when every model on it can go to another awake GPU (unload where the model
  is already resident or asleep, else migrate) whose need stays under ``absorb_limit``. Then it is
  released (``Park``); empty GPUs are released at once. Releasing saves nothing by itself (an empty
  GPU draws its floor); a node whose GPUs are all released long enough is powered off
  (``sim.node_off_after_s``). New instances go to a released GPU of a node that is on before one
  whose node must boot.
* **Engines** (:attr:`Festina.mechanisms`): a serverless system's: a fast loader, vLLM sleep mode
  (level 1) after ``sleep_after_s`` idle, the scenario's keep-alive. An idle GPU's clock is locked
  at the lowest control clock, which lowers its resident idle power.
* **Multi-GPU engines** run at the lowest clock and the least share their GPUs give them, so each
  GPU's plan keeps to its lead's: the lead GPU plans as above and records the engine's clock and
  the smallest share that meets its SLOs there; every other GPU of the engine then plans with the
  engine at that share or more and a clock no lower (one interval behind where a peer is
  controlled before its lead), unless no setting of that GPU then passes (its other models need
  the SMs), when it plans as if the engine were its own. Planned apart, the four GPUs of a TP 4
  engine ran at clocks 315 MHz apart on average, and the engine at the lowest (``mixed-tp-moe``,
  seed 0).
* **MPS** (``sim.share_mechanism: mps``, where a share change restarts the engine): shares are
  never changed by local control (a restart costs more than any partition saves); the clock is
  the least-energy one that meets every SLO with the current shares, else the top clock.

The ablation switches (``dvfs``, ``partition``, ``placement``, ``consolidation``) turn the parts
off one by one: without DVFS the clock stays at the default; without partitioning shares are
split evenly; without placement requests go to the least-loaded instance (cold start above
``spawn_at`` of the batch limit); without consolidation nothing is migrated or parked.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from festgym.config import build_dataclass, check_ranges
from festgym.control.actions import Action, GpuControl, Migrate, Park, Unload
from festgym.control.levels import SHARE_STEP, normalize_shares, quantize_share
from festgym.memo import Memo, remember
from festgym.policies.demand import CTX_GUESS, Demand
from festgym.policies.least_loaded import LeastLoaded, load_score
from festgym.policies.tables import ProfileTables, TableCache
from festgym.sim.lifecycle import Mechanisms
from festgym.sim.policy import BasePolicy
from festgym.sim.views import ClusterView, GpuView, InstanceView, Request

ALL = (slice(None), slice(None))
NODE_READINESS = {"on": 0, "booting": 1, "shutting_down": 2, "off": 3}
"""How soon a released GPU can start an engine, by its node's state (a shutdown must end before a boot)."""
IDLE_SHARE = 0.2
"""Share weight of a model with no work, before the split is scaled up to the whole GPU."""


@dataclass(frozen=True)
class FestinaConfig:
    """Festina's knobs (the shipped ``policies/festina.yaml`` holds these defaults)."""

    dvfs: bool = True
    """Choose the device clock (off: the GPU's default clock)."""
    partition: bool = True
    """Choose SM shares per model (off: even split)."""
    placement: bool = True
    """SLO-safe, energy-first placement (off: least-loaded)."""
    consolidation: bool = True
    """Migrate models off lightly loaded GPUs and park them (off: never)."""
    tbt_margin: float = 0.2
    """Headroom kept under the TBT SLO, as a fraction of it."""
    ttft_margin: float = 0.55
    """Headroom kept under the TTFT SLO (queueing between control intervals eats into it)."""
    clock_hysteresis: float = 0.03
    """Relative energy gain needed to move the clock."""
    n_share_levels: int = 20
    """Share levels searched (multiples of 1/n)."""
    n_clock_levels: int = 10
    """Clock levels searched, evenly spaced over the control range."""
    low_load: float = 0.3
    """Summed need (SM shares at top clock) under which a GPU counts as lightly loaded."""
    low_windows: int = 2
    """Consecutive consolidation calls a GPU must stay lightly loaded before it is emptied."""
    absorb_limit: float = 0.6
    """A GPU may take migrated models while its summed need stays under this."""
    spawn_after: int = 4
    """Consecutive requests of a model that no instance passes before a new instance starts (the
    ones before go to its least-loaded instance): one burst does not wake a GPU."""
    spawn_at: float = 0.75
    """Least-loaded placement (``placement`` off): cold-start above this fraction of the batch limit."""
    sleep_after_s: float = 30.0
    """Idle time after which an engine sleeps (vLLM sleep level 1: memory freed, context kept)."""
    keep_alive_s: float | None = None
    """Idle time after which an engine is unloaded (None: the scenario's ``sim.keep_alive_s``)."""
    idle_guard_rps: float = 0.003
    """An idle engine whose model's recent arrival rate on its GPU exceeds this keeps a clock and
    share at which a typical new prompt meets its TTFT budget (a huge value turns the guard off)."""

    def __post_init__(self):
        check_ranges(self, {"tbt_margin": 0 <= self.tbt_margin < 1, "ttft_margin": 0 <= self.ttft_margin < 1,
                            "clock_hysteresis": self.clock_hysteresis >= 0,
                            "n_share_levels": 1 <= self.n_share_levels <= int(1 / SHARE_STEP),
                            "n_clock_levels": self.n_clock_levels >= 2,
                            "low_load": 0 <= self.low_load <= 1, "low_windows": self.low_windows >= 1,
                            "absorb_limit": 0 < self.absorb_limit <= 1, "spawn_at": self.spawn_at > 0,
                            "spawn_after": self.spawn_after >= 1, "sleep_after_s": self.sleep_after_s >= 0,
                            "keep_alive_s": self.keep_alive_s is None or self.keep_alive_s >= 0,
                            "idle_guard_rps": self.idle_guard_rps >= 0},
                     {"tbt_margin": "in [0, 1)", "ttft_margin": "in [0, 1)", "clock_hysteresis": "≥ 0",
                      "n_share_levels": f"in 1..{int(1 / SHARE_STEP)}", "n_clock_levels": "≥ 2",
                      "low_load": "in [0, 1]", "low_windows": "≥ 1", "absorb_limit": "in (0, 1]", "spawn_at": "> 0",
                      "spawn_after": "≥ 1", "sleep_after_s": "≥ 0 s", "keep_alive_s": "≥ 0 s or None",
                      "idle_guard_rps": "≥ 0 req/s"})



@dataclass(frozen=True)
class Summary:
    """One instance's energy over [share level, clock] (``inf``: an SLO fails), and per clock two
    candidate settings: its least-energy share level (``pick``) and its smallest feasible one
    (``first``). ``*_level`` hold the level per clock (the number of levels if none is feasible);
    ``pick`` and ``first`` are arrays [share, energy] over clocks, with share 2 and energy
    ``inf`` where nothing is feasible, so that sums over instances exclude such clocks."""

    costs: np.ndarray
    pick_level: list[int]
    first_level: list[int]
    pick: np.ndarray
    first: np.ndarray
    need: float
    """Smallest feasible share at the top clock (above 1 if none)."""

    @classmethod
    def of(cls, costs: np.ndarray, shares: np.ndarray) -> Summary:
        n = costs.shape[0]
        finite = np.isfinite(costs)
        any_ok = finite.any(axis=0)
        first = np.where(any_ok, finite.argmax(axis=0), n)
        pick = np.where(any_ok, costs.argmin(axis=0), n)
        padded = np.append(shares, 2.0)  # level n: nothing feasible
        clocks = np.arange(costs.shape[1])
        padded_costs = np.vstack([costs, np.full(costs.shape[1], np.inf)])
        return cls(costs, pick.tolist(), first.tolist(),
                   np.stack([padded[pick], padded_costs[pick, clocks]]),
                   np.stack([padded[first], padded_costs[first, clocks]]),
                   float(padded[first[-1]]) if first[-1] < n else 1.0 + SHARE_STEP)


@dataclass(frozen=True)
class SpawnGate:
    """A placement at Festina's spawn gate (:meth:`Festina.spawn_gate`)."""

    spawn: bool
    """Festina's choice: start a new instance (else absorb into the least-loaded one)."""
    absorb_gpu: int
    """The GPU of the least-loaded ready instance, where an absorbed request goes."""
    unsafe: int
    """Requests of the model in a row, this one included, that no instance passed."""


class Festina(BasePolicy):
    """The Festina rule policy (see the module docstring for every design choice)."""

    name = "festina"

    def __init__(self, config: FestinaConfig | None = None, name: str | None = None, **params):
        self.config = config or build_dataclass(FestinaConfig, params, "Festina parameters")
        self.mechanisms = Mechanisms(loader="fast", sleep_level=1, sleep_after_s=self.config.sleep_after_s,
                                     keep_alive_s=self.config.keep_alive_s)
        if name:
            self.name = name
        self._context: tuple | None = None
        self._fallback = LeastLoaded(spawn_at=self.config.spawn_at)
        self.spawn_override: bool | None = None
        """The next placement's choice at its spawn gate (:meth:`spawn_gate`), if another
        controller makes it: True starts a new instance, False absorbs the request; ``None``:
        Festina's own rule. Read and cleared by the next :meth:`place`."""

    # --- state --------------------------------------------------------------------------------

    def reset(self, cluster: ClusterView) -> None:
        self.cluster = cluster
        # Lookup tables and decision caches are pure functions of the profiles, the SLOs and the
        # control interval, so they outlive an episode (an environment resets hundreds of times).
        self._interval = cluster.control_interval_s
        context = (self._interval, tuple((m, cluster.slo(m)) for m in cluster.models))
        if context != self._context:
            self._context = context
            self._tables = TableCache(self.config.n_share_levels, self.config.n_clock_levels)
            self._summaries: Memo = Memo()  # situation -> Summary
            self._marginals: Memo = Memo()  # situation -> J per token
            self._plans: Memo = Memo()  # settings -> (clock, shares)
        self._need: dict[tuple[int, str], tuple[float, float]] = {}  # (need, when computed)
        # (lead GPU, model) of a multi-GPU engine -> (when, clock index, share level) its lead planned
        self._lead_plans: dict[tuple[int, str], tuple[float, int, int]] = {}
        self._low = [0] * len(cluster.gpus)
        self._draining: set[int] = set()
        self.demand = Demand()
        self._unsafe: dict[str, int] = {}  # consecutive placements of a model that no instance passed
        self._mps = cluster.share_mechanism == "mps"  # a share change restarts the engine

    def tables(self, gpu: GpuView, model: str) -> ProfileTables:
        """Lookup tables of ``model`` on ``gpu``'s type (built once, kept across resets)."""
        return self._tables.get(self.cluster, gpu, model)

    def need(self, gpu: int, model: str) -> float:
        """Smallest SM share that meets the model's SLOs on ``gpu`` at the top clock under its
        current load (0 if absent or idle). Computed at the GPU's control, or on demand when older
        than a control interval, so it stays current when another controller runs the GPU."""
        return self._need_at(gpu, model, self.cluster.now)

    def _need_at(self, gpu: int, model: str, now: float) -> float:
        key = (gpu, model)
        found = self._need.get(key)
        if found is not None and now - found[1] < self._interval:
            return found[0]
        view = self.cluster.gpu(gpu)
        inst = view.instance(model)
        value = 0.0
        if inst is not None and inst.ready:
            tab = self.tables(view, model)
            situation = self._situation(inst, tab, self._interval)
            if situation is not None:
                value = self._summary(inst, tab, situation, self._interval).need
        self._need[key] = (value, now)
        return value

    def gpu_need(self, gpu: GpuView, skip: str | None = None) -> float:
        """Summed need of the models on ``gpu`` (but ``skip``)."""
        index, now = gpu.index, self.cluster.now
        return sum(self._need_at(index, m, now) for m in gpu.models if m != skip)

    # --- SLO and energy tests -----------------------------------------------------------------

    def _budgets(self, inst: InstanceView, prompt_tokens: int = 0) -> tuple[float, float]:
        """(TBT, TTFT) budgets after the margins; TTFT for a prompt of ``prompt_tokens``."""
        slo, cfg = inst.slo, self.config
        ttft = slo.ttft_s + slo.ttft_per_1k_tokens_s * prompt_tokens / 1000
        return (1 - cfg.tbt_margin) * slo.tbt_s, (1 - cfg.ttft_margin) * ttft

    def _slo_mask(self, inst: InstanceView, tab: ProfileTables, bi: int, ci: int, queued: tuple[int, int],
                  own: tuple[int, int], prompt: float, at=ALL):
        """Whether settings ``at`` (an index into [share, clock]; all by default) keep ``inst``
        within its SLOs: decode step (grid point ``bi, ci``) under the TBT budget, and the prefill
        of everything queued plus a new prompt (``queued``: token point, chunks) under the TTFT
        budget of that prompt (``own``: its token point and chunks; ``prompt``: its tokens)."""
        tbt, ttft = self._budgets(inst, int(prompt))
        dec_s = tab.decode_s[at + (bi, ci)]
        # A prompt's own prefill at the full GPU is not queueing; only the wait beyond it counts.
        floor = tab.prefill_s[-1, -1, own[0]] * own[1]
        return (dec_s <= tbt) & (dec_s + tab.prefill_s[at + (queued[0],)] * queued[1] <= ttft + floor)

    def _situation(self, inst: InstanceView, tab: ProfileTables, interval: float) -> tuple | None:
        """What the local decision for ``inst`` depends on, on the lookup grid (``None``: no work):
        the model, decode grid point, whether it decodes, and the token points and chunk counts of
        its pending prefill, of that plus the prompts expected next interval and a typical one
        (twice the model's mean), and of those prompts alone. Equal situations cost the same, so
        costs are cached by situation (decisions stay constant-time as the paper requires)."""
        running = inst.running
        batch = min(running + inst.prefilling + inst.queue_len, inst.max_num_seqs)
        rate = self.demand.rate(inst.gpu, inst.model)
        if batch == 0 and not rate > self.config.idle_guard_rps:
            return None  # idle and nothing expected: the lowest clock, a floor share
        mean = self.demand.prompt(inst.model)
        prompt = 2 * mean + rate * interval * mean
        chunk = inst.token_budget
        pending = inst.prefill_tokens
        bi, ci = tab.decode_index(max(batch, 1), inst.mean_ctx if running else CTX_GUESS)
        return (tab.profile.key, bi, ci, running > 0, tab.prefill_index(pending, chunk),
                tab.prefill_index(pending + prompt, chunk), tab.prefill_index(prompt, chunk))

    def _summary(self, inst: InstanceView, tab: ProfileTables, situation: tuple, interval: float) -> Summary:
        """Per clock, the least-energy and the smallest feasible share level of ``inst`` and
        their energies (cached by situation)."""
        found = self._summaries.get(situation)
        if found is not None:
            return found
        _, bi, ci, running, pending, queued, own = situation
        prompt = tab.token_points[own[0]] * own[1]  # the prompts' size on the grid (sets their TTFT budget)
        ok = self._slo_mask(inst, tab, bi, ci, queued, own, prompt)
        steps = interval / tab.decode_s[-1, -1, bi, ci] if running else 0.0
        costs = np.where(ok, tab.decode_j[:, :, bi, ci] * steps + tab.prefill_j[:, :, pending[0]] * pending[1], np.inf)
        return remember(self._summaries, situation, Summary.of(costs, tab.shares))

    # --- local control ------------------------------------------------------------------------

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        instances = gpu.instances
        if not instances:
            return None
        interval = self._interval
        busy: list[tuple[InstanceView, Summary]] = []
        idle: list[InstanceView] = []
        situations: list[tuple] = []
        alone: list[tuple[InstanceView, Summary, tuple]] = []  # the same without the lead's floors
        floored = False
        for inst in instances:
            key = (gpu.index, inst.model)
            self.demand.tick(gpu.index, inst.model, interval)
            tab = self.tables(gpu, inst.model)
            situation = self._situation(inst, tab, interval) if inst.ready else None
            if situation is None:
                idle.append(inst)
                self._need[key] = (0.0, now)
                continue
            summary = self._summary(inst, tab, situation, interval)
            alone.append((inst, summary, situation))
            floor = self._lead_floor(gpu, inst, now)
            if floor is not None:
                floored = True
                situation = (situation, floor)
                summary = self._at_least(summary, tab, situation, *floor)
            busy.append((inst, summary))
            situations.append(situation)
        if floored and not self._passes(gpu, busy, len(instances)):
            # Nothing on this GPU passes with the engine held to its lead's setting: plan it as if alone
            # (its other models keep their SLOs; the engine runs at the least its GPUs give it).
            busy, situations = [(i, x) for i, x, _ in alone], [a[2] for a in alone]
        for inst, summary in busy:
            self._need[(gpu.index, inst.model)] = (summary.need, now)
        # The settings depend on nothing else (the current clock only through the hysteresis; the
        # current shares under MPS, which keeps them when it can).
        kept = tuple(i.share for i in instances) if self._mps else ()
        settings = (tuple(situations), tuple(i.model for i in idle), gpu.clock_mhz, kept)
        plan = self._plans.get(settings)
        if plan is None:
            plan = remember(self._plans, settings, self._plan(gpu, busy, idle))
        self._record_leads(gpu, busy, plan[0], now)
        return self._emit(gpu, *plan)

    def _passes(self, gpu: GpuView, busy: list[tuple[InstanceView, Summary]], n_instances: int) -> bool:
        """Whether some setting of ``gpu`` keeps every busy instance within its SLOs (MPS: with its shares)."""
        tab = self.tables(gpu, gpu.instances[0].model)
        if self._mps:
            return self._keep_shares(gpu, tab, busy) is not None
        return self._choose(gpu, tab, [summary for _, summary in busy], n_instances) is not None

    def _lead_floor(self, gpu: GpuView, inst: InstanceView, now: float) -> tuple[int, int] | None:
        """On a GPU of a multi-GPU engine other than its lead: the (clock index, share level) the lead's
        latest plan (this interval or the last) needs the engine to get here at least."""
        if len(inst.gpus) == 1 or gpu.index == inst.gpu:
            return None
        found = self._lead_plans.get((inst.gpu, inst.model))
        if found is None or now - found[0] > self._interval + 1e-9:
            return None
        return found[1], found[2]

    def _at_least(self, summary: Summary, tab: ProfileTables, situation: tuple, clock: int, level: int) -> Summary:
        """``summary`` with every setting below share level ``level`` or clock index ``clock`` ruled out."""
        found = self._summaries.get(situation)
        if found is None:
            costs = summary.costs.copy()
            costs[:level, :] = np.inf
            costs[:, :clock] = np.inf
            found = remember(self._summaries, situation, Summary.of(costs, tab.shares))
        return found

    def _record_leads(self, gpu: GpuView, busy: list[tuple[InstanceView, Summary]], clock_mhz: float,
                      now: float) -> None:
        """On the lead GPU of a multi-GPU engine: the clock it runs and the smallest share that meets the
        engine's SLOs at that clock, for the engine's other GPUs to keep to (none where nothing does)."""
        for inst, summary in busy:
            if len(inst.gpus) > 1 and gpu.index == inst.gpu:
                tab = self.tables(gpu, inst.model)
                c = int(np.abs(tab.clocks - clock_mhz).argmin())
                level = summary.first_level[c]
                if level < len(tab.shares):
                    self._lead_plans[(gpu.index, inst.model)] = (now, c, level)
                else:
                    self._lead_plans.pop((gpu.index, inst.model), None)

    def _plan(self, gpu: GpuView, busy: list[tuple[InstanceView, Summary]],
              idle: list[InstanceView]) -> tuple[float, dict[str, float]]:
        """(clock, shares) of least energy that passes, or the overload fallback."""
        cfg = self.config
        tab = self.tables(gpu, gpu.instances[0].model)
        clocks = tab.clocks
        default = float(gpu.spec.default_sm_clock_mhz)
        current = {i.model: i.share for i in gpu.instances}
        if not busy:
            low = float(clocks[0]) if cfg.dvfs else default
            return (low, current) if self._mps else self._split(gpu, low, {}, idle)
        if self._mps:  # a share change would restart engines: the clock is the only knob
            kept = self._keep_shares(gpu, tab, busy)
            return (kept if kept is not None else float(clocks[-1]) if cfg.dvfs else default), current
        levels = self._choose(gpu, tab, [summary for _, summary in busy], len(busy) + len(idle))
        if levels is None:  # overload: top clock, shares in proportion to need
            need = [max(summary.need, SHARE_STEP) for _, summary in busy]
            return self._split(gpu, float(clocks[-1]) if cfg.dvfs else default,
                               {i.model: s for (i, _), s in zip(busy, normalize_shares(need))}, idle)
        c, picked = levels
        return self._split(gpu, float(clocks[c]), {i.model: float(tab.shares[k]) for (i, _), k in zip(busy, picked)},
                           idle)

    def _choose(self, gpu: GpuView, tab: ProfileTables, summaries: list[Summary], n_instances: int):
        """(clock index, share level per busy instance) of least energy, or ``None`` if no
        setting passes. Per clock, every instance takes its least-energy share; if those do not
        fit in the GPU, each its smallest feasible one; the cheapest clock that fits wins, and
        the current clock stays unless that saves more than the hysteresis."""
        cfg = self.config
        clocks = tab.clocks
        if cfg.partition:
            pick = summaries[0].pick + sum(x.pick for x in summaries[1:])
            first = summaries[0].first + sum(x.first for x in summaries[1:])
            fallback = pick[0] > 1 + 1e-9
            share = np.where(fallback, first[0], pick[0])
            energy = np.where(share <= 1 + 1e-9, np.where(fallback, first[1], pick[1]), np.inf)
        else:  # even split: the largest level not above 1/n, for everyone
            even = max(int(np.searchsorted(tab.shares, quantize_share(1.0 / n_instances) + 1e-9, "right")) - 1, 0)
            energy = sum(x.costs[even] for x in summaries)
        if not cfg.dvfs:
            only = int(np.abs(clocks - gpu.spec.default_sm_clock_mhz).argmin())
            energy = np.where(np.arange(len(clocks)) == only, energy, np.inf)
        best = int(energy.argmin())
        if energy[best] == np.inf:
            return None
        here = int(np.abs(clocks - gpu.clock_mhz).argmin())
        c = here if energy[here] <= energy[best] * (1 + cfg.clock_hysteresis) else best
        if not cfg.partition:
            return c, [even] * len(summaries)
        return c, [x.first_level[c] if fallback[c] else x.pick_level[c] for x in summaries]

    def _keep_shares(self, gpu: GpuView, tab: ProfileTables, busy: list[tuple[InstanceView, Summary]]) -> float | None:
        """The least-energy clock at which every busy model meets its SLOs with the share it has
        (None: none does), under the same hysteresis as :meth:`_choose`."""
        levels = [max(bisect_right(tab.share_list, i.share + 1e-9) - 1, 0) for i, _ in busy]
        energy = sum(summary.costs[level] for (_, summary), level in zip(busy, levels))
        clocks = tab.clocks
        if not self.config.dvfs:
            only = int(np.abs(clocks - gpu.spec.default_sm_clock_mhz).argmin())
            energy = np.where(np.arange(len(clocks)) == only, energy, np.inf)
        best = int(np.argmin(energy))
        if energy[best] == np.inf:
            return None
        here = int(np.abs(clocks - gpu.clock_mhz).argmin())
        return float(clocks[here if energy[here] <= energy[best] * (1 + self.config.clock_hysteresis) else best])

    def _split(self, gpu: GpuView, clock: float, shares: dict[str, float],
               idle: list[InstanceView]) -> tuple[float, dict[str, float]]:
        """Complete ``shares`` with the idle models and fill the GPU (see Spare SMs)."""
        if not self.config.partition:
            even = quantize_share(1.0 / len(gpu.instances))
            return clock, {i.model: even for i in gpu.instances}
        shares.update({i.model: IDLE_SHARE for i in idle})  # idle models get a floor; then all scale up
        names = list(shares)
        total = sum(shares.values())
        return clock, dict(zip(names, normalize_shares([shares[k] / total for k in names])))

    @staticmethod
    def _emit(gpu: GpuView, clock: float, shares: dict[str, float]) -> GpuControl | None:
        """The control that moves ``gpu`` to (clock, shares), or ``None`` if it is there."""
        current = {i.model: i.share for i in gpu.instances}
        changed = any(abs(current[m] - s) > 1e-9 for m, s in shares.items())
        if not changed and clock == gpu.clock_mhz:
            return None
        # Send every share when any changes: the simulator checks the final sum, shrinking first.
        return GpuControl(clock_mhz=clock, shares=shares if changed else None)

    # --- placement ----------------------------------------------------------------------------

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        model = request.model
        override, self.spawn_override = self.spawn_override, None  # one request's only
        self.demand.arrived(model, request.prompt_tokens)
        if cluster.n_gpus == 1:  # nothing to choose: serve it there (cold-starting if needed)
            return self.demand.placed(0, model)
        if not self.config.placement:
            return self.demand.placed(self._fallback.place(request, cluster), model)
        best, loading, least = self._candidates(request, cluster)
        if best is not None:
            self._unsafe[model] = 0
            return self.demand.placed(best.gpu, model)
        if loading is not None:
            return self.demand.placed(loading.gpu, model)
        self._unsafe[model] = self._unsafe.get(model, 0) + 1
        spawn = self._unsafe[model] >= self.config.spawn_after if override is None else override
        if least is not None and not spawn:
            return self.demand.placed(least.gpu, model)  # a burst: absorb it rather than start an instance
        self._unsafe[model] = 0
        return self.demand.placed(self._spawn(request, cluster), model)

    def _candidates(self, request: Request, cluster: ClusterView) \
            -> tuple[InstanceView | None, InstanceView | None, InstanceView | None]:
        """(the ready instance of the request's model with the least marginal energy that passes
        its SLOs, a loading one, the least-loaded ready one); each ``None`` if there is none."""
        model = request.model
        best, best_cost, loading, least, least_score = None, np.inf, None, None, np.inf
        prompt, now = request.prompt_tokens, cluster.now
        for inst in cluster.instances_of(model):
            if inst.gpu in self._draining or (inst.phase == "asleep" and not cluster.can_host(inst.gpu, model)):
                continue
            if not inst.ready:
                loading = loading if loading is not None else inst
                continue
            score = load_score(inst)
            if least is None or score < least_score:
                least, least_score = inst, score
            cost = self._marginal(inst, prompt, cluster, now)
            if cost < best_cost:
                best, best_cost = inst, cost
        return best, loading, least

    def spawn_gate(self, request: Request, cluster: ClusterView) -> SpawnGate | None:
        """Whether placing ``request`` now would face the choice between starting a new instance
        and sending it to the least-loaded one (no instance passes its SLOs, none is loading, one
        is ready), and what :meth:`place` would choose; ``None`` where it would not. Changes
        nothing: :meth:`place` at the same moment computes the same candidates (the load
        estimates it caches are those of this moment). Set :attr:`spawn_override` before the
        request is placed to make the other choice."""
        if cluster.n_gpus == 1 or not self.config.placement:
            return None
        best, loading, least = self._candidates(request, cluster)
        if best is not None or loading is not None or least is None:
            return None
        unsafe = self._unsafe.get(request.model, 0) + 1
        return SpawnGate(unsafe >= self.config.spawn_after, least.gpu, unsafe)

    def _marginal(self, inst: InstanceView, prompt: int, cluster: ClusterView, now: float) -> float:
        """Dynamic energy per token after adding a request of ``prompt`` tokens, or ``inf`` if an
        SLO would fail."""
        index, model = inst.gpu, inst.model
        gpu = cluster.gpu(index)
        tab = self.tables(gpu, model)
        need = self._need_at
        avail = 1.0 - sum(need(index, m, now) for m in gpu.models if m != model)
        s = bisect_right(tab.share_list, avail + 1e-9) - 1
        if s < 0:
            return math.inf
        running = inst.running
        batch = min(running + inst.prefilling + inst.queue_len + 1, inst.max_num_seqs)
        chunk = inst.token_budget
        bi, ci = tab.decode_index(batch, inst.mean_ctx if running else CTX_GUESS)
        own = tab.prefill_index(prompt, chunk)
        key = (tab.profile.key, s, bi, ci, tab.prefill_index(inst.prefill_tokens + prompt, chunk), own)
        step_j = self._marginals.get(key)
        if step_j is None:  # the prompt's TTFT budget is taken at the grid point below it (stricter)
            below = tab.token_points[max(own[0] - 1, 0)] * own[1] if own[1] == 1 else chunk * (own[1] - 1)
            ok = self._slo_mask(inst, tab, bi, ci, key[4], own, below, at=(s, -1))
            step_j = remember(self._marginals, key, float(tab.decode_j[s, -1, bi, ci]) if ok else math.inf)
        return step_j / batch

    def _spawn(self, request: Request, cluster: ClusterView) -> int | None:
        model = request.model
        fits = [g for g in cluster.gpus if g.index not in self._draining and g.instance(model) is None
                and cluster.can_host(g.index, model)]
        awake = [g for g in fits if not g.parked]
        roomy = [g for g in awake if self.gpu_need(g) + SHARE_STEP <= 1.0]
        if roomy:
            return max(roomy, key=lambda g: (self.gpu_need(g), -g.index)).index
        parked = [g for g in fits if g.parked]
        if parked:  # a node that is on first: one that is off must boot (minutes)
            return min(parked, key=lambda g: (NODE_READINESS[g.node_state], g.index)).index
        if awake:
            return min(awake, key=lambda g: (self.gpu_need(g), g.index)).index
        return self._fallback.place(request, cluster)

    # --- consolidation ------------------------------------------------------------------------

    def consolidate(self, cluster: ClusterView, now: float) -> list[Action]:
        if not self.config.consolidation:
            return []
        cfg = self.config
        gpus = cluster.gpus
        actions: list[Action] = []
        self._draining = {g for g in self._draining if not gpus[g].parked and gpus[g].instances}
        for g in gpus:
            if not g.parked and not g.instances and g.node_state == "on":
                actions.append(Park(g.index))
        loads = {g.index: self.gpu_need(g) for g in gpus if not g.parked and g.instances}
        for g in gpus:
            low = g.index in loads and loads[g.index] < cfg.low_load and g.index not in self._draining
            self._low[g.index] = self._low[g.index] + 1 if low else 0
        ready = [i for i in loads if self._low[i] >= cfg.low_windows]
        for src in sorted(ready, key=lambda i: (loads[i], i)):
            moves = self._empty(gpus[src], gpus, loads, cluster)
            if moves is not None:
                self._draining.add(src)
                self._low[src] = 0
                return actions + moves + [Park(src)]
        return actions

    def _empty(self, src: GpuView, gpus, loads: dict[int, float], cluster: ClusterView) -> list[Action] | None:
        """Actions that move every model off ``src`` within ``absorb_limit``, or ``None``."""
        limit = self.config.absorb_limit
        planned = dict(loads)
        used: set[int] = set()
        moves: list[Action] = []
        for inst in src.instances:
            if len(inst.gpus) > 1:  # a multi-GPU engine is not consolidated away, awake or asleep
                return None
            if inst.phase == "asleep":  # nothing runs or waits there: it goes
                moves.append(Unload(inst.model, src.index))
                continue
            if not inst.ready:
                return None
            need = self.need(src.index, inst.model)
            others = [g for g in gpus if g.index != src.index and not g.parked and g.index not in self._draining
                      and g.index in planned]
            resident = [g for g in others if g.instance(inst.model) is not None
                        and planned[g.index] + need <= limit]
            if resident:
                dst = max(resident, key=lambda g: planned[g.index])
                moves.append(Unload(inst.model, src.index))
            else:
                hosts = [g for g in others if g.index not in used and cluster.can_host(g.index, inst.model)
                         and planned[g.index] + need <= limit]
                if not hosts:
                    return None
                dst = max(hosts, key=lambda g: planned[g.index])
                used.add(dst.index)
                moves.append(Migrate(inst.model, src.index, dst.index))
            planned[dst.index] += need
        return moves
