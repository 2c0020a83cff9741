"""``festgym compare``, ``festgym evaluate`` and ``festgym serve-bench``: simulated runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from festgym.cli.common import Command, ScenarioChoice, add_data_option, reference_data
from festgym.cli.fields import add_fields, from_args
from festgym.errors import FestgymError


def cmd_serve_bench(args: argparse.Namespace) -> int:
    from festgym.jobs.servebench import BenchConfig, mlenergy_validation, run_bench

    if args.validate:
        data = reference_data(args)
        if data is None:
            raise FestgymError("--validate needs the reference data: put it at ../shared/data or set FESTGYM_DATA")
        table = mlenergy_validation(data, args.root, args.seed)
        if args.json:
            print(json.dumps(table.to_dict(orient="records"), indent=2))
            return 0
        print(table.round(2).to_string(index=False))
        for (gpu, model), rows in table.groupby(["gpu", "model"]):
            print(f"{gpu} {model}: " + ", ".join(
                f"{m} MAPE {rows[f'{m}_err_pct'].abs().mean():.1f}% (max {rows[f'{m}_err_pct'].abs().max():.1f}%)"
                for m in ("itl", "power")) + f" over {len(rows)} rows")
        return 0
    try:
        result = run_bench(from_args(BenchConfig, args), args.root)
    except (ValueError, RuntimeError) as exc:
        raise FestgymError(str(exc)) from None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {round(value, 3) if isinstance(value, float) else value}")
    return 0


def configure_serve_bench(parser: argparse.ArgumentParser) -> None:
    from festgym.jobs.servebench import BenchConfig

    add_fields(parser, BenchConfig)
    parser.add_argument("--validate", action="store_true",
                        help="instead, compare against every ML.ENERGY row (H100, B200) with a shipped profile")
    add_data_option(parser, "reference data folder for --validate")
    parser.add_argument("--root", help="a profiles folder (default: FESTGYM_PROFILES' folders, then the shipped one)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_serve_bench)


def _report(result: Any, as_json: bool) -> int:
    from festgym.jobs.compare import report_lines

    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    for line in report_lines(result):
        print(line)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from festgym.jobs.compare import CompareConfig, compare

    result = compare(from_args(ScenarioChoice, args).resolve(), from_args(CompareConfig, args))
    return _report(result, args.json)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from festgym.control.checkpoint import resolve_checkpoint
    from festgym.jobs.compare import CompareConfig, compare, paired_difference, policy_label
    from festgym.policies.learned import record_evaluation

    against = [p for p in (x.strip() for x in (args.against or "").split(",")) if p and p != args.policy]
    config = from_args(CompareConfig, args, policies=(args.policy, *against), ablation=False)
    result = compare(from_args(ScenarioChoice, args).resolve(), config)
    label = policy_label(args.policy)
    result.paired = {policy_label(p): paired_difference(result.runs, label, policy_label(p)) for p in against}
    for other, d in result.paired.items():
        result.notes.append(f"{label} vs {other}, paired per seed: energy {d['energy_pct']:+.1f}% "
                            f"± {d['energy_pct_ci95']:.1f}, joint SLO {d['slo_pp']:+.1f} ± {d['slo_pp_ci95']:.1f} pp "
                            f"(95% intervals over {d['seeds']} seeds)")
    if args.record:
        folder = resolve_checkpoint(args.policy)
        if folder is None:
            raise FestgymError(f"--record: {args.policy!r} is not a checkpoint; only checkpoint cards record results")
        print(f"recorded in {record_evaluation(folder, result)}", file=sys.stderr)
    return _report(result, args.json)


def _add_run_options(parser: argparse.ArgumentParser, **skip: Any) -> None:
    from festgym.jobs.compare import CompareConfig

    add_fields(parser, ScenarioChoice)
    add_fields(parser, CompareConfig, **skip)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def configure_compare(parser: argparse.ArgumentParser) -> None:
    _add_run_options(parser)
    parser.set_defaults(func=cmd_compare)


def configure_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="rule policy name, checkpoint name or checkpoint folder")
    parser.add_argument("--against", default="festina", help="comma-separated policies to show beside it "
                        "(default: %(default)s; max-clock always runs, as the reference)")
    parser.add_argument("--record", action="store_true", help="add the table to the checkpoint's card.json "
                        "(replacing one of the same scenario, seeds and duration)")
    _add_run_options(parser, skip=("policies", "ablation"))
    parser.set_defaults(func=cmd_evaluate)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from festgym.jobs.benchmark import BenchmarkConfig, run_benchmark
    from festgym.jobs.compare import default_out

    config = from_args(BenchmarkConfig, args)
    entries, tasks = config.chosen_entries(), config.chosen_tasks()
    default = default_out()
    out = Path(config.out) if config.out is not None else default.with_name(f"benchmark-{default.name}")
    result = run_benchmark(entries, out, tasks, config.seeds, config.jobs, config.ray)
    if args.json:
        print(json.dumps({"leaderboard": result.leaderboard.to_dict(orient="records"),
                          "files": {k: str(v) for k, v in result.files.items()}}, indent=2, default=str))
    else:
        print(result.files["leaderboard.md"].read_text())
        print(f"wrote {out}/: {', '.join(result.files)}")
    return 0


def configure_benchmark(parser: argparse.ArgumentParser) -> None:
    from festgym.jobs.benchmark import BenchmarkConfig

    add_fields(parser, BenchmarkConfig)
    parser.add_argument("--json", action="store_true", help="print the leaderboard as JSON")
    parser.set_defaults(func=cmd_benchmark)


COMMANDS = {
    "serve-bench": Command("closed-loop serving benchmark of one model (one GPU or a parallel group), simulated",
                           configure_serve_bench,
                           "Closed-loop serving benchmark (ML.ENERGY leaderboard setting), simulated: one model "
                           "alone on one GPU or its tensor/expert-parallel group (any Hugging Face config with "
                           "--model-config); reports inter-token latency, power, energy per token."),
    "compare": Command("every policy and the Festina ablation on the same seeded workloads", configure_compare,
                       "Run Festina, every baseline and every shipped checkpoint (and the Festina ablation) on the "
                       "same seeded workload per seed; print energy, latency and SLO tables with savings against "
                       "max-clock; write CSVs and PNG plots into --out."),
    "evaluate": Command("one policy or checkpoint against Festina, on any scenario and seeds", configure_evaluate,
                        "Evaluate one policy (a rule policy name, a shipped checkpoint's name or a checkpoint "
                        "folder) next to --against and max-clock on the same seeded workloads; prints the table "
                        "festgym compare prints, and the paired difference per seed against each. --set and --load "
                        "give a controller workloads it never trained on."),
    "benchmark": Command("the fixed controller benchmark: a versioned suite of tasks, a leaderboard",
                         configure_benchmark,
                         "Run the benchmark suite (scenarios x loads on held-out seeds, heterogeneous and multi-node "
                         "among them) for the shipped entries and any --submit FILE (a YAML naming a policy: a "
                         "package.module:Class entry point, a checkpoint folder or a rule policy), each validated "
                         "(built and run twice: a non-deterministic one is refused); write leaderboard.md and .csv."),
}
