"""A day of a large fleet on Ray: requests per wall-second per core, and peak memory per worker.

    python benchmarks/fleet_day.py [--gpus 256] [--hours 24] [--rate-per-shard 12] [--ray ADDRESS]

The fleet is ``--gpus`` H100s in shards of ``serverless-multinode`` (4 nodes × 8 GPUs, 17 models,
Festina), each shard serving its own seeded workload over a real day (its diurnal swing on a 24 h
period) at ``--rate-per-shard`` requests per second on average. Shards are independent
simulations (assumption: a fleet routes requests within a shard of 32 GPUs, not across the whole
fleet), so each is one Ray task on the cluster at ``--ray`` (default: a Ray started here on this
machine's CPUs). Prints each shard as it finishes and then the fleet's requests, simulated energy,
wall time, requests per wall-second per core (requests ÷ (wall time × the cores Ray was given)) and
the largest peak resident memory of a worker process.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

SHARD_GPUS = 32


def shard(index: int, hours: float, rate_rps: float, policy: str) -> dict:
    """Simulate shard ``index`` (its own seed); what it served, its wall time and this worker's peak memory."""
    from festgym.policies import make_policy
    from festgym.scenario import load_scenario

    day_s = hours * 3600
    scenario = load_scenario("serverless-multinode", workload={"duration_s": day_s, "rate_rps": rate_rps,
                                                               "diurnal_period_s": 86400.0})
    trace = scenario.trace(index, day_s)
    started = time.perf_counter()
    result = scenario.simulator().run(trace, make_policy(policy))
    wall = time.perf_counter() - started
    s = result.summary
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"shard": index, "requests": s["requests"], "finished": s["finished"], "slo": s["slo_attainment"],
            "energy_kwh": s["energy_kwh"], "wall_s": wall, "peak_rss_mb": peak_mb, "pid": os.getpid()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=256, help="fleet size, a multiple of 32 (default: %(default)s)")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--rate-per-shard", type=float, default=12.0, help="mean req/s per 32 GPUs")
    parser.add_argument("--policy", default="festina")
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help="a Ray cluster (default: one started here)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a Ray started here (default: all)")
    args = parser.parse_args()
    if args.gpus % SHARD_GPUS:
        parser.error(f"--gpus {args.gpus}: a multiple of {SHARD_GPUS}")
    import ray

    if args.ray:
        ray.init(address=args.ray, log_to_driver=False)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    cores = int(ray.cluster_resources().get("CPU", 1))
    task = ray.remote(shard)
    shards = args.gpus // SHARD_GPUS
    print(f"{args.gpus} × H100 in {shards} shards of {SHARD_GPUS}, {args.hours:g} h at {args.rate_per_shard:g} req/s "
          f"per shard, {args.policy}, on {cores} Ray CPUs")
    started = time.perf_counter()
    pending = [task.remote(i, args.hours, args.rate_per_shard, args.policy) for i in range(shards)]
    rows = []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        row = ray.get(ready[0])
        rows.append(row)
        print(f"  shard {row['shard']:3d}: {row['requests']:>10,} requests in {row['wall_s']:7.1f} s "
              f"({row['requests'] / row['wall_s']:8,.0f} req/wall-s), SLO {row['slo']:.3f}, "
              f"{row['energy_kwh']:8.1f} kWh, worker peak {row['peak_rss_mb']:6.0f} MB")
    wall = time.perf_counter() - started
    ray.shutdown()
    requests = sum(r["requests"] for r in rows)
    energy = sum(r["energy_kwh"] for r in rows)
    print(f"fleet: {requests:,} requests, {energy:,.1f} kWh simulated, in {wall:.1f} s wall: "
          f"{requests / wall:,.0f} req/wall-s, {requests / wall / cores:,.0f} req/wall-s per core; "
          f"peak memory per worker {max(r['peak_rss_mb'] for r in rows):,.0f} MB "
          f"({len({r['pid'] for r in rows})} worker processes)")


if __name__ == "__main__":
    main()
