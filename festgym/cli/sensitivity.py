"""``festgym sensitivity``: savings with bands over festgym's named physics assumptions."""

from __future__ import annotations

import argparse
import json

from festgym.cli.common import Command, ScenarioChoice
from festgym.cli.fields import add_fields, from_args


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from festgym.jobs.sensitivity import SensitivityConfig, report_lines, sensitivity

    result = sensitivity(from_args(ScenarioChoice, args).resolve(), from_args(SensitivityConfig, args))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    for line in report_lines(result):
        print(line)
    return 0


def configure_sensitivity(parser: argparse.ArgumentParser) -> None:
    from festgym.jobs.sensitivity import NAMES, SensitivityConfig

    add_fields(parser, ScenarioChoice)
    add_fields(parser, SensitivityConfig, help_extra={"assumptions": f"Known: {', '.join(NAMES)}."})
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.set_defaults(func=cmd_sensitivity)


COMMANDS = {
    "sensitivity": Command("savings with bands over festgym's named physics assumptions", configure_sensitivity,
                           "Run the policies on the same seeded workloads under the scenario and under a low and a "
                           "high variant of each named physics assumption (V-f curve, HBM, idle and loading power, "
                           "host power, node boot, engine start, SM-share mechanism); print each policy's saving "
                           "against each baseline with its band and the assumption that moves it most; write CSVs "
                           "and a tornado plot into --out (docs/sensitivity.md)."),
}
