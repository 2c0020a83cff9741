"""Simulator speed: one simulated hour of an 8 × H100 cluster serving 4 models at 20 req/s.

Prints requests simulated per wall-second (target ≥ 9,000, i.e. ≤ 8 s for the hour on one core),
events, and how cost scales with requests, GPUs and output length. ``--million`` also measures
peak memory for 10^6 requests (target ≤ 1 GB).

    python benchmarks/sim_speed.py [--million]
"""

from __future__ import annotations

import argparse
import resource
import time

from festgym.policies.least_loaded import LeastLoaded
from festgym.sim.simulator import Simulator
from festgym.sim.workload import AZURE_CONV_OUTPUT, LengthDist, SyntheticWorkload

MODELS = ("Llama-3.1-8B", "Qwen3-8B", "Qwen3-14B", "Llama-3.2-3B")


def one(gpus: int, rate: float, duration: float, output: LengthDist = AZURE_CONV_OUTPUT, seed: int = 0) -> dict:
    sim = Simulator(["H100-SXM-80GB"] * gpus, MODELS)
    trace = SyntheticWorkload(MODELS, rate_rps=rate, duration_s=duration, output=output).generate(seed)
    started = time.perf_counter()
    result = sim.run(trace, LeastLoaded())
    wall = time.perf_counter() - started
    s = result.summary
    return {"gpus": gpus, "rate": rate, "requests": len(trace), "tokens": s["output_tokens"], "wall_s": wall,
            "req_per_s": len(trace) / wall, "runs": len(result.runs), "finished": s["finished"],
            "slo": s["slo_attainment"]}


def show(row: dict) -> None:
    print(f"{row['gpus']:>4} GPUs {row['rate']:>6.0f} req/s {row['requests']:>8,} requests "
          f"{row['tokens']:>11,} tokens {row['runs']:>9,} decode runs  wall {row['wall_s']:6.2f} s  "
          f"{row['req_per_s']:>8,.0f} req/wall-s  finished {row['finished']:,}  SLO {row['slo']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", action="store_true", help="also run 10^6 requests and report peak memory")
    args = parser.parse_args()
    print("target: 1 h, 8 × H100, 4 models, 20 req/s in ≤ 8 s wall (≥ 9,000 req/wall-s)")
    show(one(8, 20, 3600))
    print("scaling (10 simulated minutes each):")
    for gpus, rate in ((8, 10), (8, 40), (16, 40), (32, 80)):
        show(one(gpus, rate, 600))
    print("output length ×4 (tokens ×4, same requests):")
    long = LengthDist(AZURE_CONV_OUTPUT.mu + 1.386, AZURE_CONV_OUTPUT.sigma, 28, 4000)
    show(one(8, 20, 600, long))
    if args.million:
        row = one(64, 160, 6250)
        show(row)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory: {peak:,.0f} MB (target ≤ 1,024 MB)")


if __name__ == "__main__":
    main()
