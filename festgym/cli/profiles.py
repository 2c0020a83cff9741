"""``festgym profiles`` (list, show, check, generate, calibrate) and ``festgym profile`` (measure one)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from festgym.cli.common import Command, add_data_option, import_with_extra, print_table, reference_data
from festgym.errors import FestgymError, SpecError


def _pandas() -> Any:
    import pandas

    return pandas


def cmd_list(args: argparse.Namespace) -> int:
    from festgym.profiles.profile import Profile, iter_profile_dirs

    rows = [Profile.load(p).summary() for p in iter_profile_dirs(args.root)]
    print_table(_pandas().DataFrame(rows), args.json)
    return 0


def key_numbers(profile: Any) -> dict[str, Any]:
    """Headline figures of a profile at the default clock and full share, and the decode clock
    with the least energy per token."""
    import numpy as np

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
        "empty_w": profile.gpu.states.empty_w,
        "resident_idle_w": profile.gpu.states.resident_w,
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


def cmd_show(args: argparse.Namespace) -> int:
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


def cmd_check(args: argparse.Namespace) -> int:
    """Fit errors of every profile that loads; each one the loader refuses (a broken file, or
    grids the GPU's datasheet rules out) is reported on stderr and makes the exit code 1."""
    from festgym.profiles.calibration.check import check_profiles
    from festgym.profiles.profile import Profile, iter_profile_dirs

    data = reference_data(args)
    if data is None and not args.json:
        print("reference data not found (../shared/data or FESTGYM_DATA): only grid fidelity is checked",
              file=sys.stderr)
    profiles, refused = [], []
    for path in iter_profile_dirs(args.root):
        try:
            profiles.append(Profile.load(path))
        except SpecError as exc:
            refused.append(f"festgym: error: profile {path.parent.name}/{path.name} refused: {exc}")
    print_table(check_profiles(profiles, data), args.json)
    for line in refused:
        print(line, file=sys.stderr)
    return 1 if refused else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from festgym.profiles.generate import generate

    profile = generate(args.gpu, args.model_config, args.out, args.name, fit_errors=not args.no_check,
                       data=reference_data(args), tp=args.tp, ep=args.ep, node=args.node, kv_format=args.kv_format)
    print(f"wrote {profile.path} ({profile.key})")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from festgym.profiles.calibration import fit
    from festgym.profiles.calibration.sources import summaries
    from festgym.profiles.generate import generate, shipped_plans
    from festgym.profiles.models import ModelSpec
    from festgym.profiles.specs import GpuSpec
    from festgym.resources import PROFILES

    data = reference_data(args)
    if data is None:
        raise FestgymError("calibration needs the reference data: put it at ../shared/data or set FESTGYM_DATA")
    root = Path(args.root) if args.root else PROFILES.shipped
    paths = {g: root / g / "gpu.yaml" for g in (fit.H100, fit.A100, fit.H200, fit.B200)
             if (root / g / "gpu.yaml").is_file()}
    configs = sorted((root / "model-configs").glob("*/config.json"))
    models = {p.parent.name: ModelSpec.load(p) for p in configs}
    calibration = fit.calibrate({g: GpuSpec.load(p) for g, p in paths.items()}, models, data)
    idle = {fit.H200: f"transferred from {fit.H100}: {fit.SOURCE_NOTES['idle_w']}",
            fit.B200: "assumption: the busy-power intercept at about the measured empty power (136-145 W), as "
                      "H100's 75 W sits at its empty 67-79 W; band 110-190 W"}
    for gpu, path in paths.items():
        fit.write_spec(calibration.specs[gpu], path, fit.notes_for(gpu, idle.get(gpu)),
                       summaries(calibration.comparisons[gpu]))
    report = _pandas().DataFrame([{"gpu": g, **r} for g, c in calibration.comparisons.items() for r in summaries(c)])
    print_table(report, False)
    plans = shipped_plans(root)
    for gpu, model, plan in plans:
        out = root / gpu / (model + plan.suffix)
        generate(paths[gpu], root / "model-configs" / model / "config.json", out, data=data, tp=plan.tp, ep=plan.ep)
    print(f"rewrote {', '.join(map(str, paths.values()))} and {len(plans)} profiles")
    return 0


def configure_profiles(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--root", help="a profiles folder (default: FESTGYM_PROFILES' folders, then the shipped one)")
        p.set_defaults(func=func)
        return p

    p = add("list", cmd_list, "table of the profiles found")
    p.add_argument("--json", action="store_true")
    p = add("show", cmd_show, "key numbers of one profile")
    p.add_argument("profile", help="GPU/MODEL, e.g. H100-SXM-80GB/Llama-3.1-8B, or a profile folder")
    p.add_argument("--plot", metavar="DIR", help="write PNG curves into DIR")
    p.add_argument("--json", action="store_true")
    p = add("check", cmd_check, "fit error of every profile against every calibration source present; "
            "exit code 1 if a profile is refused (a broken file, or grids the GPU's datasheet rules out)")
    add_data_option(p)
    p.add_argument("--json", action="store_true")
    p = add("generate", cmd_generate, "build a profile for a decoder-only transformer (dense or MoE, on one GPU "
            "or a tensor/expert-parallel group)")
    p.add_argument("--gpu", required=True, help="GPU spec YAML or type, e.g. H100-SXM-80GB")
    p.add_argument("--model-config", required=True, help="Hugging Face config.json, or a shipped model's name")
    p.add_argument("--out", required=True, help="output profile folder")
    p.add_argument("--name", help="model name (default: a profile folder's model-configs/<name>/, else the "
                   "config's _name_or_path without -Instruct, else its model_type and size)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree of the engine (default 1)")
    p.add_argument("--ep", type=int, default=1, help="expert-parallel degree of a MoE engine (default 1: none)")
    p.add_argument("--node", help="node spec whose collectives time a multi-GPU engine (default: the GPU type's)")
    p.add_argument("--kv-format", choices=("bf16", "fp8"), help="KV-cache format (default: the activations')")
    p.add_argument("--no-check", action="store_true", help="skip fit errors against the reference data")
    add_data_option(p)
    p = add("calibrate", cmd_calibrate,
            "refit GPU constants to the reference data and regenerate the shipped profiles (needs scipy)")
    add_data_option(p)


def cmd_profile(args: argparse.Namespace) -> int:
    from festgym import signals
    from festgym.cli.fields import from_args, override
    from festgym.profiles.profiler.plan import Plan, ProfileRun

    profile = import_with_extra("festgym.profiles.profiler.run", "profiling", "train").profile

    run = from_args(ProfileRun, args, plan=override(Plan.tiny() if args.dry_run else Plan(), args))
    with signals.raising_on(lambda signum: KeyboardInterrupt()):  # a killed sweep still restores the clocks
        result = profile(run, progress=lambda line: print(f"  {line}", file=sys.stderr))
    print(f"wrote {result.path} ({result.key}); measured: "
          + ", ".join(k for k, v in result.provenance.items() if isinstance(v, dict) and v.get("kind") == "measured"))
    print_table(_pandas().DataFrame(list(result.fit_errors)), args.json)
    return 0


def configure_profile(parser: argparse.ArgumentParser) -> None:
    from festgym.cli.fields import add_fields
    from festgym.profiles.profiler.plan import Plan, ProfileRun

    add_fields(parser, ProfileRun)
    group = parser.add_argument_group("what to measure (default: the full plan; a tiny one with --dry-run)")
    add_fields(group, Plan, overridable=True)
    parser.add_argument("--json", action="store_true", help="print the fit errors as JSON")
    parser.set_defaults(func=cmd_profile)


COMMANDS = {
    "profiles": Command("GPU x model latency/power profiles", configure_profiles),
    "profile": Command("measure a GPU x model profile on this machine's GPU (needs torch)", configure_profile,
                       "Build a decoder-only transformer of the config's architecture with random weights, measure "
                       "prefill and decode step times (CUDA events, warm-ups, medians) and energy (the NVML energy "
                       "counter), and write a profile in the standard format: the generated profile corrected by "
                       "the measurements, each dimension marked measured or modelled. --dry-run runs the whole "
                       "pipeline with a tiny model on the CPU."),
}
