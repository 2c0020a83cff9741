"""Deploy agent decision latency: observation + controller + action decoding, per interval.

    python benchmarks/deploy_decision.py [--intervals 600] [--policies ppo-local,sac-local]

Target (issue 7): ≤ 2 ms per interval for the exported (numpy) policy. Each shipped controller
runs on a simulated host (default scenario, its local models and rate) for ``--intervals``
control intervals in apply mode; the agent times each decision with ``perf_counter`` (what the
JSONL's ``decision_ms`` holds). Also printed: the whole interval's wall time (GPU read, metrics
of every engine rendered and parsed, decision, actuation, log line), which on a real host adds
the NVML and HTTP round trips instead of the simulator's.
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np

from festgym.control.checkpoint import LocalController
from festgym.deploy.agent import DeployAgent, DeployConfig
from festgym.deploy.deciders import CheckpointDecider
from festgym.deploy.telemetry import Telemetry
from festgym.simhost.host import SimulatedHost

TARGET_MS = 2.0


def measure(policy: str, intervals: int) -> dict:
    host = SimulatedHost("default", seed=0, duration_s=intervals + 1.0)
    log = io.StringIO()
    agent = DeployAgent(host.host, CheckpointDecider.for_gpu(LocalController(policy), host.engine_specs(), host.gpu),
                        host.engine_specs(),
                        DeployConfig(duration_s=float(intervals), apply=True), Telemetry(stream=log))
    step_ms = []
    for _ in range(intervals):
        start = time.perf_counter()
        agent.step()
        step_ms.append((time.perf_counter() - start) * 1e3)
        host.sleep(1.0)
    agent.restore("benchmark")
    decision = np.array([json.loads(line)["decision_ms"] for line in log.getvalue().splitlines()
                         if '"event":"interval"' in line])
    return {"policy": policy, "intervals": len(decision),
            "decision_ms_p50": round(float(np.median(decision)), 3),
            "decision_ms_p99": round(float(np.quantile(decision, 0.99)), 3),
            "decision_ms_max": round(float(decision.max()), 3),
            "interval_ms_p50": round(float(np.median(step_ms)), 3),
            "interval_ms_p99": round(float(np.quantile(step_ms, 0.99)), 3),
            "meets_target": bool(np.quantile(decision, 0.99) <= TARGET_MS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=600)
    parser.add_argument("--policies", default="ppo-local,sac-local")
    args = parser.parse_args()
    print(f"target: decision p99 <= {TARGET_MS} ms")
    for policy in args.policies.split(","):
        print(json.dumps(measure(policy, args.intervals)))


if __name__ == "__main__":
    main()
