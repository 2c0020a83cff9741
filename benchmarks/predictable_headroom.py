"""How much of the clairvoyant reference's headroom an online controller can predict.

    python benchmarks/predictable_headroom.py [--train-seeds 100-102] [--held-out 103]
        [--duration 3600] [--jobs 2] [--out runs/headroom]

The clairvoyant reference (:mod:`festgym.policies.clairvoyant`) beats Festina by choosing, every
5 s and per GPU, the clock adjustment whose rollout with the true future arrivals costs least.
An online controller can take only the part of that choice its observation predicts. This study
measures that part by imitation (docs/headroom.md reports its figures):

1. **Record.** The clairvoyant runs on the default scenario's training seeds (never the
   evaluation seeds 0-4) and on held-out ones; at each plan, per awake GPU, it keeps an
   observation and the rollout cost of every candidate adjustment (``Clairvoyant.costs``). The
   observation holds for any number of resident models: the max and the mean over them of each
   ``LocalGPU-v0`` slot feature, the model count / 4, the GPU features and the time of day.
2. **Imitate.** A small MLP is fitted to choose the candidate from the observation, with the
   expected cost of its choice (softmax over candidates) as the loss: cost-sensitive imitation,
   which weighs each decision by what it is worth rather than copying the planner's arg-min.
3. **Score.** How the planner's gain is spread (a fixed move's mean gain over Festina, the
   share of the gain in the top 10% of decisions); the share of the planner's one-plan gain
   over Festina (the sum over decisions of Festina's cost minus the chosen candidate's) that the
   imitation captures, on the training seeds and on the held-out ones; then the imitation runs
   as a controller in the simulator on the held-out seeds (Festina's decisions moved by its
   choices, held 5 s like the planner's) against Festina and the clairvoyant.
4. **Why.** How much the arrivals of one planning horizon say about the next: the lag-1
   autocorrelation of each model's request counts in consecutive horizon-long windows.

Recordings are cached in ``--out`` (one ``.npz`` per seed and duration): a rerun fits again
without rolling out again. Needs the ``train`` extra (torch). A 3600 s seed costs about 8 min.
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from festgym.config import build_dataclass
from festgym.control.features import SLOT_FEATURES
from festgym.jobs.compare import parse_seeds
from festgym.policies.clairvoyant import Clairvoyant, ClairvoyantConfig
from festgym.policies.residual import Residual
from festgym.policies.rules import make_rule_policy, rule_params
from festgym.scenario import load_scenario
from festgym.sim.views import GpuView

SCENARIO = "default"
N_SLOT = len(SLOT_FEATURES)  # LocalGPU-v0's features per model slot
SEARCH = build_dataclass(ClairvoyantConfig, rule_params("clairvoyant"), "policies/clairvoyant.yaml")
"""The shipped clairvoyant's search: its hold is the imitation's, its horizon the arrivals' window."""


def observe(gpu: GpuView, rank: dict[str, int], now: float, clock_lo_mhz: float, period_s: float) -> np.ndarray:
    """The study's observation of one GPU, whatever the number of resident models."""
    slots = [rank[m] for m in gpu.models]
    obs = np.asarray(gpu.observe(slots, now, clock_lo_mhz, period_s))
    per_slot = obs[:N_SLOT * len(slots)].reshape(len(slots), N_SLOT)
    return np.concatenate([per_slot.max(0), per_slot.mean(0), [len(slots) / 4], obs[N_SLOT * len(slots):]])


class Recording(Clairvoyant):
    """The clairvoyant reference, keeping (observation, cost of each candidate) at every plan."""

    def __init__(self, period_s: float):
        super().__init__(make_rule_policy("festina"), **rule_params("clairvoyant"))
        self.period_s = period_s
        self.rows: list[tuple[np.ndarray, list[float]]] = []

    def foresee(self, sim, now: float) -> None:
        plans = self.plans
        super().foresee(sim, now)
        if self.plans == plans:
            return
        rank = {m: k for k, m in enumerate(sim.model_names)}
        for g in sim.gpus:  # the forks left the state as it was at the plan
            if g.index in self.costs[0]:
                view = GpuView(g)
                x = observe(view, rank, now, self.adjusted.clock.grid(view)[0], self.period_s)
                self.rows.append((x, [self.costs[k][g.index] for k in sorted(self.costs)]))


def record(seed: int, duration_s: float, out: Path) -> Path:
    path = out / f"seed{seed}_{duration_s:g}s.npz"
    if path.exists():
        return path
    scenario = load_scenario(SCENARIO)
    trace = scenario.trace(seed, duration_s)
    policy = Recording(scenario.workload.diurnal_period_s)
    started = time.perf_counter()
    clairvoyant = scenario.simulator().run(trace, policy).summary
    festina = scenario.simulator().run(trace, make_rule_policy("festina")).summary
    print(f"seed {seed}: recorded {len(policy.rows)} decisions in {time.perf_counter() - started:.0f} s", flush=True)
    np.savez(path, X=np.array([x for x, _ in policy.rows]), cost=np.array([c for _, c in policy.rows]),
             steps=np.array(sorted(policy.costs or policy.config.candidates)),
             clairvoyant=[clairvoyant[k] for k in ("energy_kwh", "gpu_energy_kwh", "slo_attainment")],
             festina=[festina[k] for k in ("energy_kwh", "gpu_energy_kwh", "slo_attainment")])
    return path


def load(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations, each candidate's gain over Festina (positive: cheaper), the candidates."""
    data = [np.load(p) for p in paths]
    steps = data[0]["steps"]
    cost = np.concatenate([d["cost"] for d in data])
    zero = int(np.flatnonzero(steps == 0)[0])
    return np.concatenate([d["X"] for d in data]), cost[:, [zero]] - cost, steps


class Imitation:
    """An MLP choosing a candidate from an observation, fitted on the expected cost of its choice."""

    def __init__(self, x: np.ndarray, gain: np.ndarray, hidden: int, epochs: int, weight_decay: float, seed: int):
        import torch

        torch.manual_seed(seed)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-3
        self.net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, gain.shape[1]))
        inputs = torch.tensor((x - self.mean) / self.std, dtype=torch.float32)
        target = torch.tensor(gain / (np.abs(gain).mean() + 1e-12), dtype=torch.float32)  # gains of order 1
        opt = torch.optim.Adam(self.net.parameters(), lr=3e-3, weight_decay=weight_decay)
        for _ in range(epochs):
            order = torch.randperm(len(inputs))
            for i in range(0, len(inputs), 512):
                batch = order[i:i + 512]
                loss = -(torch.softmax(self.net(inputs[batch]), 1) * target[batch]).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()

    def choose(self, x: np.ndarray) -> np.ndarray:
        """Indices of the chosen candidates for a batch of observations."""
        import torch

        with torch.no_grad():
            out = self.net(torch.tensor((np.atleast_2d(x) - self.mean) / self.std, dtype=torch.float32))
        return out.argmax(1).numpy()


def captured(model: Imitation, x: np.ndarray, gain: np.ndarray) -> tuple[float, float, np.ndarray]:
    """The imitation's one-plan gain over Festina, the planner's, and how often each candidate is chosen."""
    chosen = model.choose(x)
    return float(gain[np.arange(len(chosen)), chosen].sum()), float(gain.max(1).sum()), \
        np.bincount(chosen, minlength=gain.shape[1])


class Imitated(Residual):
    """Festina, its clock moved on each GPU by the imitation's choice, held ``hold_s``."""

    def __init__(self, model: Imitation, steps: np.ndarray, hold_s: float, period_s: float):
        super().__init__(make_rule_policy("festina"))
        self.model, self.candidates, self.hold_s, self.period_s = model, steps, hold_s, period_s

    def reset(self, cluster) -> None:
        super().reset(cluster)
        self.rank = {m: k for k, m in enumerate(cluster.models)}
        self.until: dict[int, float] = {}

    def control(self, gpu, now: float):
        control = self.base.control(gpu, now)
        if not gpu.models:
            return control
        if now + 1e-9 >= self.until.get(gpu.index, -1.0):
            x = observe(gpu, self.rank, now, self.clock.grid(gpu)[0], self.period_s)
            self.steps[gpu.index] = int(self.candidates[self.model.choose(x)[0]])
            self.until[gpu.index] = now + self.hold_s
        return self.clock.shift(control, gpu, self.steps[gpu.index])


def replay(model: Imitation, steps: np.ndarray, seed: int, duration_s: float) -> dict[str, float]:
    scenario = load_scenario(SCENARIO)
    run = scenario.simulator().run(scenario.trace(seed, duration_s),
                                   Imitated(model, steps, SEARCH.hold_s, scenario.workload.diurnal_period_s)).summary
    return {k: run[k] for k in ("energy_kwh", "gpu_energy_kwh", "slo_attainment")}


def arrival_memory(seed: int, duration_s: float, window_s: float) -> float:
    """Median over models (with 50 or more requests) of the lag-1 autocorrelation of their
    request counts in consecutive ``window_s`` windows: how much the last window of arrivals
    says about the next, which is all an online controller has of the future."""
    trace = load_scenario(SCENARIO).trace(seed, duration_s)
    arrival_s, model = np.asarray(trace.arrival_s), np.asarray(trace.model)
    bins = np.arange(0.0, duration_s + window_s, window_s)
    counts = [np.histogram(arrival_s[model == m], bins)[0] for m in np.unique(model)]
    return float(np.median([np.corrcoef(c[:-1], c[1:])[0, 1] for c in counts if c.sum() >= 50]))


def versus(run: list[float], festina: list[float]) -> str:
    return (f"energy {run[0] / festina[0] - 1:+.2%}, GPU {run[1] / festina[1] - 1:+.2%}, "
            f"SLO {100 * (run[2] - festina[2]):+.2f} pp")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-seeds", default="100-102")
    ap.add_argument("--held-out", default="103")
    ap.add_argument("--duration", type=float, default=3600.0, help="simulated seconds per seed")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the fit")
    ap.add_argument("--out", default="runs/headroom")
    args = ap.parse_args()
    train_seeds, held_out = parse_seeds(args.train_seeds), parse_seeds(args.held_out)
    if set(train_seeds) & set(held_out) or set(train_seeds + held_out) & set(range(5)):
        ap.error("training and held-out seeds must differ, and neither may be an evaluation seed (0-4)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Pool(args.jobs) as pool:
        paths = pool.starmap(record, [(s, args.duration, out) for s in train_seeds + held_out])
    train_paths, held_paths = paths[:len(train_seeds)], paths[len(train_seeds):]
    x, gain, steps = load(train_paths)
    model = Imitation(x, gain, args.hidden, args.epochs, args.weight_decay, args.seed)
    best = np.sort(gain.max(1))[::-1]
    print(f"candidates {steps.tolist()}; {len(x)} training decisions; the planner's gain: the top 10% of decisions "
          f"carry {best[:len(best) // 10].sum() / best.sum():.0%}, a fixed move gains on average "
          + ", ".join(f"{k:+d}: {g:+.3f}" for k, g in zip(steps.tolist(), gain.mean(0))))
    for name, group in (("training", train_paths), ("held-out", held_paths)):
        got, best, counts = captured(model, *load(group)[:2])
        print(f"{name} seeds: imitation gains {got:.1f} of the planner's {best:.1f} ({got / best:.1%}); "
              f"choices {dict(zip(steps.tolist(), counts.tolist()))}")
    horizon_s = SEARCH.horizon_s
    print(f"arrivals: lag-1 autocorrelation of per-model counts in {horizon_s:g} s windows, median over models, "
          + ", ".join(f"seed {s} {arrival_memory(s, args.duration, horizon_s):.2f}" for s in held_out))
    for seed, path in zip(held_out, held_paths):
        data = np.load(path)
        festina = data["festina"].tolist()
        print(f"seed {seed} vs Festina: clairvoyant {versus(data['clairvoyant'].tolist(), festina)}; imitation "
              f"{versus(list(replay(model, steps, seed, args.duration).values()), festina)}")


if __name__ == "__main__":
    main()
