"""The ``festgym`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from festgym import __version__
from festgym.cli.deploy import add_commands
from festgym.errors import FestgymError
from festgym.resources import PROFILES, data_dir

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def _pandas():
    """pandas, imported by the commands that print tables (not by `festgym deploy`: numpy alone)."""
    import pandas

    return pandas


def _print_table(frame: "pd.DataFrame", as_json: bool) -> None:
    if as_json:
        print(json.dumps(frame.to_dict(orient="records"), indent=2, default=str))
    else:
        print(frame.to_string(index=False))


def _data(args: argparse.Namespace) -> Path | None:
    """The reference data: ``--data`` (which must exist) or the default location, if present."""
    if getattr(args, "data", None):
        if not Path(args.data).is_dir():
            raise FestgymError(f"--data {args.data}: no such folder")
        return Path(args.data)
    return data_dir()


def cmd_profiles_list(args: argparse.Namespace) -> int:
    from festgym.profiles.profile import Profile, iter_profile_dirs

    rows = [Profile.load(p).summary() for p in iter_profile_dirs(args.root)]
    _print_table(_pandas().DataFrame(rows), args.json)
    return 0


def key_numbers(profile) -> dict:
    """Headline figures of a profile at the default clock and full share, and the decode clock
    with the least energy per token."""
    clocks = profile.control_clocks_mhz()
    dec = profile.decode(64, 1024, 1.0, clocks)
    j_per_token = dec["power_w"] * dec["time_s"] / 64
    best = int(np.argmin(j_per_token))
    default = int(np.searchsorted(clocks, profile.gpu.default_sm_clock_mhz))
    pre = profile.prefill(2048)
    one = profile.decode(1, 1024)
    return {
        "profile": profile.key,
        "params_b": round(profile.model.num_params / 1e9, 3),
        "weight_gb": round(profile.model.weight_bytes / 1e9, 2),
        "kv_kb_per_token": round(profile.model.kv_bytes_per_token / 1024, 1),
        "default_clock_mhz": profile.gpu.default_sm_clock_mhz,
        "idle_w": profile.gpu.idle_w,
        "parked_w": profile.gpu.parked_w,
        "tdp_w": profile.gpu.tdp_w,
        "prefill_2048_ms": round(float(pre["time_s"]) * 1e3, 2),
        "prefill_2048_w": round(float(pre["power_w"]), 1),
        "decode_b1_ctx1024_ms": round(float(one["time_s"]) * 1e3, 2),
        "decode_b64_ctx1024_ms": round(float(dec["time_s"][default]) * 1e3, 2),
        "decode_b64_ctx1024_w": round(float(dec["power_w"][default]), 1),
        "decode_b64_j_per_token_at_default_clock": round(float(j_per_token[default]), 4),
        "decode_b64_min_energy_clock_mhz": int(clocks[best]),
        "decode_b64_j_per_token_at_that_clock": round(float(j_per_token[best]), 4),
    }


def cmd_profiles_show(args: argparse.Namespace) -> int:
    from festgym.profiles.profile import load_profile

    profile = load_profile(args.profile, args.root)
    numbers = key_numbers(profile)
    if args.plot:
        from festgym.profiles.plots import plot_profile

        numbers["plot"] = str(plot_profile(profile, args.plot))
    if args.json:
        print(json.dumps({**numbers, "fit_errors": list(profile.fit_errors)}, indent=2, default=str))
        return 0
    width = max(map(len, numbers))
    for key, value in numbers.items():
        print(f"{key:<{width}}  {value}")
    if profile.fit_errors:
        print("\nfit errors recorded at generation:")
        print(_pandas().DataFrame(profile.fit_errors).to_string(index=False))
    return 0


def cmd_profiles_check(args: argparse.Namespace) -> int:
    from festgym.profiles.calibration.check import check_profiles
    from festgym.profiles.profile import Profile, iter_profile_dirs

    data = _data(args)
    if data is None and not args.json:
        print("reference data not found (../shared/data or FESTGYM_DATA): only grid fidelity is checked",
              file=sys.stderr)
    report = check_profiles((Profile.load(p) for p in iter_profile_dirs(args.root)), data)
    _print_table(report, args.json)
    return 0


def cmd_profiles_generate(args: argparse.Namespace) -> int:
    from festgym.profiles.generate import generate

    profile = generate(args.gpu, args.model_config, args.out, args.name, fit_errors=not args.no_check,
                       data=_data(args))
    print(f"wrote {profile.path} ({profile.key})")
    return 0


def cmd_profiles_calibrate(args: argparse.Namespace) -> int:
    from festgym.profiles.calibration import fit
    from festgym.profiles.calibration.sources import summaries
    from festgym.profiles.generate import generate
    from festgym.profiles.specs import GpuSpec, ModelSpec

    data = _data(args)
    if data is None:
        raise FestgymError("calibration needs the reference data: put it at ../shared/data or set FESTGYM_DATA")
    root = Path(args.root) if args.root else PROFILES.shipped
    h100_path, a100_path = root / "H100-SXM-80GB" / "gpu.yaml", root / "A100-SXM-80GB" / "gpu.yaml"
    configs = sorted((root / "model-configs").glob("*/config.json"))
    models = {p.parent.name: ModelSpec.load(p) for p in configs}
    h100, a100, comparisons = fit.calibrate(GpuSpec.load(h100_path), GpuSpec.load(a100_path), models, data)
    fit.write_spec(h100, h100_path, fit.h100_notes(), summaries(comparisons[h100.name]))
    fit.write_spec(a100, a100_path, fit.a100_notes(h100.name), summaries(comparisons[a100.name]))
    report = _pandas().DataFrame([{"gpu": g, **r} for g, c in comparisons.items() for r in summaries(c)])
    _print_table(report, False)
    for gpu_path in (h100_path, a100_path):
        for config in configs:
            generate(gpu_path, config, gpu_path.parent / config.parent.name, data=data)
    print(f"rewrote {h100_path}, {a100_path} and {2 * len(configs)} profiles")
    return 0


def cmd_serve_bench(args: argparse.Namespace) -> int:
    from festgym.jobs.servebench import BenchConfig, mlenergy_validation, run_bench
    from festgym.sim.workload import LengthDist

    if args.validate:
        data = _data(args)
        if data is None:
            raise FestgymError("--validate needs the reference data: put it at ../shared/data or set FESTGYM_DATA")
        table = mlenergy_validation(data, args.root, args.seed)
        if args.json:
            print(json.dumps(table.to_dict(orient="records"), indent=2))
            return 0
        print(table.round(2).to_string(index=False))
        for metric in ("itl", "power"):
            err = table[f"{metric}_err_pct"].abs()
            print(f"{metric}: MAPE {err.mean():.1f}% (max {err.max():.1f}%) over {len(table)} ML.ENERGY rows")
        return 0
    for name in ("max_num_seqs", "requests"):
        if getattr(args, name) < (1 if name == "max_num_seqs" else 0):
            raise FestgymError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    for name in ("prompt_mean", "output_mean"):
        if not getattr(args, name) >= 1:
            raise FestgymError(f"--{name.replace('_', '-')} must be ≥ 1 token, got {getattr(args, name)}")
    for name in ("prompt_cv", "output_cv"):
        if not getattr(args, name) >= 0:
            raise FestgymError(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(args, name)}")
    cfg = BenchConfig(gpu=args.gpu, model=args.model, max_num_seqs=args.max_num_seqs,
                      prompt=LengthDist.from_mean_cv(args.prompt_mean, args.prompt_cv),
                      output=LengthDist.from_mean_cv(args.output_mean, args.output_cv, high=65536),
                      requests=args.requests, clock_mhz=args.clock, seed=args.seed)
    try:
        result = run_bench(cfg, args.root)
    except (ValueError, RuntimeError) as exc:
        raise FestgymError(str(exc)) from None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {round(value, 3) if isinstance(value, float) else value}")
    return 0


def _scenario(args: argparse.Namespace):
    """The scenario of ``compare``/``evaluate``: a name or path, with ``--set`` overrides and
    ``--load`` scaling, renamed to say so (tables and plot titles carry the name)."""
    from dataclasses import replace

    from festgym.scenario import load_scenario, parse_overrides, scale_load

    scenario = load_scenario(args.scenario, **parse_overrides(args.set or []))
    if args.load is not None:
        scenario = scale_load(scenario, args.load)
    changes = list(args.set or []) + ([f"load x{args.load:g}"] if args.load is not None else [])
    return replace(scenario, name=f"{scenario.name} ({', '.join(changes)})") if changes else scenario


def _report(result, as_json: bool) -> int:
    from festgym.jobs.compare import report_lines

    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    for line in report_lines(result):
        print(line)
    return 0


def _check_run_args(args: argparse.Namespace) -> None:
    if args.jobs is not None and args.jobs < 1:
        raise FestgymError(f"--jobs must be ≥ 1, got {args.jobs}")
    if args.duration is not None and not args.duration > 0:
        raise FestgymError(f"--duration must be > 0 seconds, got {args.duration}")


def cmd_compare(args: argparse.Namespace) -> int:
    from festgym.jobs.compare import compare, parse_seeds

    _check_run_args(args)
    policies = None if args.policies is None else args.policies.split(",")
    result = compare(_scenario(args), policies, parse_seeds(args.seeds), args.duration, not args.no_ablation,
                     args.jobs, args.out)
    return _report(result, args.json)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from festgym.jobs.compare import compare, paired_difference, parse_seeds, policy_label
    from festgym.control.checkpoint import resolve_checkpoint
    from festgym.policies.learned import record_evaluation

    _check_run_args(args)
    against = [p for p in (x.strip() for x in (args.against or "").split(",")) if p and p != args.policy]
    result = compare(_scenario(args), [args.policy, *against], parse_seeds(args.seeds), args.duration, False,
                     args.jobs, args.out)
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


def _training():
    """The training module, or a clear error when its extra is not installed."""
    try:
        import festgym.jobs.train as training  # imports stable-baselines3 and torch
    except ImportError as exc:
        raise FestgymError(f"training needs the train extra ({exc.name} is missing): pip install -e '.[train]'") from None
    return training


def cmd_train(args: argparse.Namespace) -> int:
    training = _training()

    if args.timesteps is not None and args.timesteps < 1:
        raise FestgymError(f"--timesteps must be ≥ 1, got {args.timesteps}")
    checkpoint = training.train(training.TrainConfig(args.agent, args.scenario, args.timesteps, args.seed,
                                                     args.runs_dir, not args.no_progress))
    print(f"checkpoint: {checkpoint}")
    return 0


def _numbers(text: str | None, kind, flag: str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(kind(x) for x in text.split(","))
    except ValueError:
        raise FestgymError(f"{flag} {text!r}: expected comma-separated numbers") from None


def cmd_profile(args: argparse.Namespace) -> int:
    from dataclasses import replace

    try:
        from festgym.profiles.profiler.measure import Plan
        from festgym.profiles.profiler.run import ProfileRun, profile
    except ImportError as exc:
        raise FestgymError(f"profiling needs torch ({exc.name} is missing): pip install -e '.[train]'") from None
    plan = Plan.tiny() if args.dry_run else Plan()
    overrides = {"tokens": _numbers(args.tokens, int, "--tokens"), "batches": _numbers(args.batches, int, "--batches"),
                 "ctxs": _numbers(args.ctxs, int, "--ctxs"), "shares": _numbers(args.shares, float, "--shares"),
                 "repeats": args.repeats, "warmup": args.warmup, "min_window_s": args.window}
    plan = replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    run = ProfileRun(Path(args.model_config), Path(args.out), args.gpu, Path(args.gpu_spec) if args.gpu_spec else None,
                     args.name, args.cpu, args.dry_run, args.sweep_clocks, plan)
    from festgym import signals

    with signals.raising_on(lambda signum: KeyboardInterrupt()):  # a killed sweep still restores the clocks
        result = profile(run, progress=lambda line: print(f"  {line}", file=sys.stderr))
    print(f"wrote {result.path} ({result.key}); measured: "
          + ", ".join(k for k, v in result.provenance.items() if isinstance(v, dict) and v.get("kind") == "measured"))
    _print_table(_pandas().DataFrame(list(result.fit_errors)), args.json)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    print(f"numpy policy: {_training().export_checkpoint(args.checkpoint, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="festgym", description="Energy-aware serverless LLM serving testbed.")
    parser.add_argument("--version", action="version", version=f"festgym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    profiles = sub.add_parser("profiles", help="GPU x model latency/power profiles")
    psub = profiles.add_subparsers(dest="action", required=True)

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = psub.add_parser(name, help=help, description=help)
        p.add_argument("--root", help="profiles folder (default: the checkout's profiles/)")
        p.set_defaults(func=func)
        return p

    p = add("list", cmd_profiles_list, "table of shipped profiles")
    p.add_argument("--json", action="store_true")
    p = add("show", cmd_profiles_show, "key numbers of one profile")
    p.add_argument("profile", help="GPU/MODEL, e.g. H100-SXM-80GB/Llama-3.1-8B, or a profile folder")
    p.add_argument("--plot", metavar="DIR", help="write PNG curves into DIR")
    p.add_argument("--json", action="store_true")
    p = add("check", cmd_profiles_check, "fit error of every profile against every calibration source present")
    p.add_argument("--data", help="reference data folder (default: ../shared/data or FESTGYM_DATA)")
    p.add_argument("--json", action="store_true")
    p = add("generate", cmd_profiles_generate, "build a profile for a dense decoder-only transformer")
    p.add_argument("--gpu", required=True, help="GPU spec YAML, e.g. profiles/H100-SXM-80GB/gpu.yaml")
    p.add_argument("--model-config", required=True, help="Hugging Face config.json")
    p.add_argument("--out", required=True, help="output profile folder")
    p.add_argument("--name", help="model name (default: the config's folder name)")
    p.add_argument("--no-check", action="store_true", help="skip fit errors against the reference data")
    p.add_argument("--data", help="reference data folder (default: ../shared/data or FESTGYM_DATA)")
    p = add("calibrate", cmd_profiles_calibrate,
            "refit GPU constants to the reference data and regenerate the shipped profiles (needs scipy)")
    p.add_argument("--data", help="reference data folder (default: ../shared/data or FESTGYM_DATA)")

    bench = sub.add_parser("serve-bench", help="closed-loop serving benchmark of one model on one GPU, simulated",
                           description="Closed-loop serving benchmark (ML.ENERGY leaderboard setting), simulated: "
                           "one model alone on one GPU; reports inter-token latency, power, energy per token.")
    bench.add_argument("--gpu", default="H100-SXM-80GB", help="GPU type (default: %(default)s)")
    bench.add_argument("--model", default="Llama-3.1-8B", help="model (default: %(default)s)")
    bench.add_argument("--max-num-seqs", type=int, default=64, help="batch limit (default: %(default)s)")
    bench.add_argument("--prompt-mean", type=float, default=220.0, help="mean prompt tokens (default: %(default)s)")
    bench.add_argument("--prompt-cv", type=float, default=0.5, help="prompt length CV, lognormal (default: %(default)s)")
    bench.add_argument("--output-mean", type=float, default=400.0, help="mean output tokens (default: %(default)s)")
    bench.add_argument("--output-cv", type=float, default=1.0, help="output length CV, lognormal (default: %(default)s)")
    bench.add_argument("--requests", type=int, default=0, help="requests (default: 8 x max-num-seqs, at least 500)")
    bench.add_argument("--clock", type=float, help="SM clock in MHz (default: the GPU's default clock)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--validate", action="store_true",
                       help="instead, compare against every ML.ENERGY H100 row with a shipped profile")
    bench.add_argument("--data", help="reference data folder for --validate (default: ../shared/data or FESTGYM_DATA)")
    bench.add_argument("--root", help="profiles folder (default: the checkout's profiles/)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_serve_bench)

    comp = sub.add_parser("compare", help="every policy and the Festina ablation on the same seeded workloads",
                          description="Run Festina, every baseline and every shipped checkpoint (and the Festina "
                          "ablation) on the same seeded workload per seed; print energy, latency and SLO tables "
                          "with savings against max-clock; write CSVs and PNG plots into --out.")
    comp.add_argument("--policies", help="comma-separated rule policies, checkpoint names or checkpoint folders "
                      "(default: Festina, the baselines and every shipped checkpoint)")
    comp.add_argument("--no-ablation", action="store_true", help="skip the Festina ablation")
    comp.set_defaults(func=cmd_compare)
    ev = sub.add_parser("evaluate", help="one policy or checkpoint against Festina, on any scenario and seeds",
                        description="Evaluate one policy (a rule policy name, a shipped checkpoint's name or a "
                        "checkpoint folder) next to --against and max-clock on the same seeded workloads; prints "
                        "the table festgym compare prints, and the paired difference per seed against each. "
                        "--set and --load give a controller workloads it never trained on.")
    ev.add_argument("--policy", required=True, help="rule policy name, checkpoint name or checkpoint folder")
    ev.add_argument("--against", default="festina", help="comma-separated policies to show beside it "
                    "(default: %(default)s; max-clock always runs, as the reference)")
    ev.add_argument("--record", action="store_true", help="add the table to the checkpoint's card.json "
                    "(replacing one of the same scenario, seeds and duration)")
    ev.set_defaults(func=cmd_evaluate)
    for p in (comp, ev):
        p.add_argument("--scenario", default="default", help="scenario name or YAML/JSON path (default: %(default)s)")
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override a scenario setting, e.g. workload.lengths=azure-code (repeatable)")
        p.add_argument("--load", type=float, metavar="FACTOR", help="scale the arrival rate, e.g. 0.5 or 1.5")
        p.add_argument("--seeds", default="0", help="seeds and ranges, e.g. 0,1,2 or 0-4 (default: %(default)s)")
        p.add_argument("--duration", type=float, metavar="SECONDS",
                       help="simulated seconds (default: the scenario's workload duration)")
        p.add_argument("--out", metavar="DIR", help="output folder (default: results/<YYYYmmdd-HHMMSS>/)")
        p.add_argument("--jobs", type=int, help="worker processes (default: min(2, CPU count); 1: in-process)")
        p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")

    tr = sub.add_parser("train", help="train a learned controller (stable-baselines3; needs the train extra)",
                        description="Train an agent from its YAML (agents/<algo>.yaml) on a scenario; writes "
                        "runs/{scenario}__{algo}__{seed}__{time}/ with the best checkpoint, its card and logs.")
    tr.add_argument("--agent", required=True, help="agent YAML, e.g. agents/ppo.yaml")
    tr.add_argument("--scenario", default="default", help="scenario name or path (default: %(default)s)")
    tr.add_argument("--timesteps", type=int, help="environment steps (default: the agent's)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--runs-dir", default="runs", help="where run folders go (default: %(default)s)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="a checkpoint as a numpy-only policy (for deployment)",
                        description="Export a checkpoint folder (model.zip, card.json, vecnormalize.pkl) as "
                        "weights.npz + policy.json that run with numpy alone; file hashes are checked.")
    ex.add_argument("checkpoint", help="checkpoint folder")
    ex.add_argument("--out", help="output folder (default: <checkpoint>/numpy)")
    ex.set_defaults(func=cmd_export)
    pr = sub.add_parser("profile", help="measure a GPU x model profile on this machine's GPU (needs torch)",
                        description="Build a decoder-only transformer of the config's architecture with random "
                        "weights, measure prefill and decode step times (CUDA events, warm-ups, medians) and "
                        "energy (the NVML energy counter), and write a profile in the standard format: the "
                        "generated profile corrected by the measurements, each dimension marked measured or "
                        "modelled. --dry-run runs the whole pipeline with a tiny model on the CPU.")
    pr.add_argument("--model-config", required=True, help="Hugging Face config.json")
    pr.add_argument("--out", required=True, help="profile folder, e.g. profiles/H100-SXM-80GB/Llama-3.1-8B-measured")
    pr.add_argument("--gpu", type=int, default=0, help="GPU index after CUDA_VISIBLE_DEVICES (default: %(default)s)")
    pr.add_argument("--gpu-spec", help="GPU spec YAML (default: the shipped one matching the GPU's name)")
    pr.add_argument("--name", help="model name (default: the config's folder name)")
    pr.add_argument("--cpu", action="store_true", help="run on the CPU, without NVML (small configs only)")
    pr.add_argument("--dry-run", action="store_true", help="the whole pipeline on the CPU with a tiny model")
    pr.add_argument("--sweep-clocks", action="store_true", help="lock 5 clocks of the control range in turn (root "
                    "only; the GPU is restored afterwards, even on failure); default: the clocks the GPU runs")
    pr.add_argument("--shares", help="SM shares, e.g. 1,0.5,0.25 (needs CUDA green contexts; default: 1)")
    pr.add_argument("--tokens", help="prefill prompt lengths (comma-separated)")
    pr.add_argument("--batches", help="decode batch sizes (comma-separated)")
    pr.add_argument("--ctxs", help="decode context lengths (comma-separated)")
    pr.add_argument("--repeats", type=int, help="timed steps per point")
    pr.add_argument("--warmup", type=int, help="untimed steps per point")
    pr.add_argument("--window", type=float, help="shortest energy window, s")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_profile)
    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into head & co.: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (FestgymError, OSError) as exc:
        print(f"festgym: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
