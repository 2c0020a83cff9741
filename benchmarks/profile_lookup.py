"""Profile loading time and vectorised lookup throughput.

Targets (issue: profiles): loading one profile < 100 ms; one vectorised lookup of 10^5 points
< 10 ms. Prints the medians of repeated runs on this machine, one core.

    python benchmarks/profile_lookup.py [--profile H100-SXM-80GB/Llama-3.1-8B] [--points 100000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from festgym.profiles.profile import Profile, find_profile_dir


def median_ms(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="H100-SXM-80GB/Llama-3.1-8B")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    folder = find_profile_dir(args.profile)
    load_ms = median_ms(lambda: Profile.load(folder), max(3, args.repeats // 2))
    profile = Profile.load(folder)

    rng = np.random.default_rng(0)
    n = args.points
    batch = rng.integers(1, 1024, n).astype(float)
    ctx = rng.uniform(16, 32768, n)
    share = rng.uniform(0.1, 1.0, n)
    clock = rng.uniform(profile.gpu.sm_clocks_mhz[0], profile.gpu.max_sm_clock_mhz, n)
    tokens = rng.integers(1, 8192, n).astype(float)

    decode_time_ms = median_ms(lambda: profile.decode_time(batch, ctx, share, clock), args.repeats)
    decode_all_ms = median_ms(lambda: profile.decode(batch, ctx, share, clock), args.repeats)
    one_gpu_ms = median_ms(lambda: profile.decode_time(batch, ctx, 0.5, 1500.0), args.repeats)
    prefill_time_ms = median_ms(lambda: profile.prefill_time(tokens, share, clock), args.repeats)
    calls = 1000
    scalar_us = median_ms(lambda: [profile.decode_time(32.0, 1024.0, 0.5, 1500.0) for _ in range(calls)],
                          args.repeats) * 1e3 / calls

    print(f"profile                        {profile.key}")
    print(f"load                           {load_ms:8.2f} ms   (target < 100 ms)")
    print(f"decode time_s, {n:,} points   {decode_time_ms:8.2f} ms   (target < 10 ms)")
    print(f"decode all fields, {n:,} pts  {decode_all_ms:8.2f} ms")
    print(f"decode, one share and clock   {one_gpu_ms:8.2f} ms")
    print(f"prefill time_s, {n:,} points  {prefill_time_ms:8.2f} ms   (target < 10 ms)")
    print(f"one scalar decode lookup       {scalar_us:8.1f} us")


if __name__ == "__main__":
    main()
