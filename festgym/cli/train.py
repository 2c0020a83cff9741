"""``festgym train`` and ``festgym export``: learned controllers (need the train extra)."""

from __future__ import annotations

import argparse
from types import ModuleType

from festgym.cli.common import Command, import_with_extra
from festgym.cli.fields import add_fields, from_args


def _training() -> ModuleType:
    """:mod:`festgym.jobs.train` (it imports stable-baselines3 and torch), or a clear error."""
    return import_with_extra("festgym.jobs.train", "training", "train")


def cmd_train(args: argparse.Namespace) -> int:
    from festgym.jobs.train_config import TrainConfig

    print(f"checkpoint: {_training().train(from_args(TrainConfig, args))}")
    return 0


def configure_train(parser: argparse.ArgumentParser) -> None:
    from festgym.jobs.train_config import TrainConfig

    add_fields(parser, TrainConfig)
    parser.set_defaults(func=cmd_train)


def cmd_export(args: argparse.Namespace) -> int:
    print(f"numpy policy: {_training().export_checkpoint(args.checkpoint, args.out)}")
    return 0


def configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint folder")
    parser.add_argument("--out", help="output folder (default: <checkpoint>/numpy)")
    parser.set_defaults(func=cmd_export)


COMMANDS = {
    "train": Command("train a learned controller (stable-baselines3; needs the train extra)", configure_train,
                     "Train an agent from its YAML (a shipped agent's name, ppo or sac, or a path) on a scenario; "
                     "writes runs/{scenario}__{algo}__{seed}__{time}/ with the best checkpoint, its card and logs."),
    "export": Command("a checkpoint as a numpy-only policy (for deployment)", configure_export,
                      "Export a checkpoint folder (model.zip, card.json, vecnormalize.pkl) as weights.npz + "
                      "policy.json that run with numpy alone; file hashes are checked."),
}
