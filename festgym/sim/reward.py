"""The environments' reward: energy minus SLO penalties, returned with its terms (as Sinergym does).
It is the cost the clairvoyant reference plans with too (:mod:`festgym.policies.clairvoyant`).

For one control interval of the GPUs an agent controls::

    r = − energy_weight · E / E_ref  −  ttft_weight · TTFT_term  −  tbt_weight · TBT_term

* ``E``: joules the GPUs drew over the interval (static power included), ``E_ref``: the same GPUs
  at TDP for the interval, so the energy term lies in [−energy_weight, 0].
* ``smooth`` mode (default): TTFT_term is the growth over the interval of the total lateness of
  first tokens in TTFT-SLO units, requests still waiting included (a request 50% late adds 0.5 in
  all, spread over the intervals it was late in, so a starved queue is charged while it
  starves); TBT_term is the sum over inter-token
  gaps of max(0, gap − TBT)/TBT. Both grow continuously with lateness. A request the GPU it was
  sent to turns away counts as a first token a cold start of its model late (``count`` mode: one
  late first token; ``info["rejected"]`` counts them), so that refusing never avoids lateness.
* ``count`` mode: TTFT_term counts first tokens later than their SLO, TBT_term gaps longer than
  the TBT SLO. A step per violation: simpler to read, harder to learn from.

Every term, the raw joules and the interval's SLO attainment go into ``info`` so that a user can
re-weight offline. ``info["cost"]`` is the SLO part alone as a non-negative cost,
``ttft_weight·TTFT_term + tbt_weight·TBT_term`` (so ``reward = reward_energy − cost``): the
per-step constraint cost safe-RL libraries read, as Safety-Gymnasium's environments give it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from festgym.config import check_ranges
from festgym.sim.gpu import SimGpu
from festgym.sim.ledger import Counters

REWARD_MODES = ("smooth", "count")


@dataclass(frozen=True)
class RewardConfig:
    """Reward weights (a scenario's ``reward`` section)."""

    energy_weight: float = 1.0
    """Weight of the interval's energy over its reference (TDP × interval × GPUs)."""
    ttft_weight: float = 1.0
    """Weight of the TTFT term."""
    tbt_weight: float = 0.01
    """Weight of the TBT term (per gap: a busy GPU produces thousands of gaps a second)."""
    mode: str = "smooth"
    """``smooth`` (graded excess) or ``count`` (violations)."""

    def __post_init__(self):
        check_ranges(self, {"energy_weight": self.energy_weight >= 0, "ttft_weight": self.ttft_weight >= 0,
                            "tbt_weight": self.tbt_weight >= 0, "mode": self.mode in REWARD_MODES},
                     {"energy_weight": "≥ 0", "ttft_weight": "≥ 0", "tbt_weight": "≥ 0",
                      "mode": f"one of {', '.join(REWARD_MODES)}"})


@dataclass
class IntervalStats:
    """What the controlled GPUs did in one interval: energy and SLO counter differences."""

    energy_j: float
    slo: Counters


class Meter:
    """Reads energy and SLO counters of a set of GPUs; each :meth:`read` returns what happened
    since the previous one."""

    def __init__(self, gpus: Sequence[SimGpu]):
        self.gpus = list(gpus)
        self._energy = 0.0
        self._counters = Counters()

    def _totals(self, now: float) -> tuple[float, Counters]:
        energy, counters = 0.0, Counters()
        for gpu in self.gpus:
            gpu.update(now)
            energy += gpu.energy_total_j
            counters.add(gpu.counters(now))
        return energy, counters

    def start(self, now: float) -> None:
        self._energy, self._counters = self._totals(now)

    def read(self, now: float) -> IntervalStats:
        energy, counters = self._totals(now)
        stats = IntervalStats(energy - self._energy, counters.minus(self._counters))
        self._energy, self._counters = energy, counters
        return stats


class EnergySLOReward:
    """``reward(stats) -> (total, terms)``; ``reference_j`` is E_ref for one interval."""

    def __init__(self, config: RewardConfig, reference_j: float):
        if reference_j <= 0:
            raise ValueError(f"reference energy must be positive, got {reference_j}")
        self.config = config
        self.reference_j = reference_j

    def __call__(self, stats: IntervalStats) -> tuple[float, dict[str, float]]:
        cfg, slo = self.config, stats.slo
        smooth = cfg.mode == "smooth"
        energy = -cfg.energy_weight * stats.energy_j / self.reference_j
        ttft = -cfg.ttft_weight * (slo.ttft_excess if smooth else slo.ttft_over)
        tbt = -cfg.tbt_weight * (slo.tbt_excess if smooth else slo.gaps_over)
        # Attainment of an interval with nothing to attain is 1 (nothing missed; NaN would break
        # equality checks on info); the raw counts beside it tell the two apart.
        terms = {
            "reward_energy": energy, "reward_ttft": ttft, "reward_tbt": tbt, "cost": -(ttft + tbt),
            "energy_j": stats.energy_j,
            "ttft_attainment": 1 - slo.ttft_over / slo.first_tokens if slo.first_tokens else 1.0,
            "tbt_attainment": 1 - slo.gaps_over / slo.gaps if slo.gaps else 1.0,
            "first_tokens": slo.first_tokens, "ttft_over": slo.ttft_over, "ttft_excess": slo.ttft_excess,
            "gaps": slo.gaps, "gaps_over": slo.gaps_over, "tbt_excess": slo.tbt_excess,
            "rejected": slo.rejected,
        }
        return energy + ttft + tbt, terms
