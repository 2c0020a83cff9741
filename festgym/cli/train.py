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
    from festgym.control.checkpoint import CARD, checkpoint_digest, read_card
    from festgym.jobs.train_config import TrainConfig

    checkpoint = _training().train(from_args(TrainConfig, args))
    digest = checkpoint_digest(read_card(checkpoint), str(checkpoint / CARD))
    print(f"checkpoint: {checkpoint}\nsha256: {digest} (keep it: `festgym export {checkpoint} --sha256 {digest}` "
          "loads the checkpoint's pickles only under it)")
    return 0


def configure_train(parser: argparse.ArgumentParser) -> None:
    from festgym.jobs.train_config import TrainConfig

    add_fields(parser, TrainConfig)
    parser.set_defaults(func=cmd_train)


def cmd_export(args: argparse.Namespace) -> int:
    from festgym.control.checkpoint import LocalController
    from festgym.jobs.export import ExportConfig

    config = from_args(ExportConfig, args, checkpoint=args.checkpoint)
    print(f"numpy policy: {_training().export_checkpoint(config.checkpoint, config.out, config.sha256)}")
    if config.out is None:  # sealed into the card: the digest that deploy pins
        digest = LocalController(config.checkpoint).sha256
        print(f"sha256: {digest} (pin it: festgym deploy --policy {config.checkpoint} --sha256 {digest})")
    return 0


def configure_export(parser: argparse.ArgumentParser) -> None:
    from festgym.jobs.export import ExportConfig

    parser.add_argument("checkpoint", help="checkpoint folder")
    add_fields(parser, ExportConfig)
    parser.set_defaults(func=cmd_export)


COMMANDS = {
    "train": Command("train a learned controller (stable-baselines3; needs the train extra)", configure_train,
                     "Train an agent from its YAML (a shipped agent's name, ppo or sac, or a path) on a scenario; "
                     "writes runs/{scenario}__{algo}__{seed}__{time}/ with the best checkpoint, its card and logs."),
    "export": Command("a checkpoint as a numpy-only policy (for deployment)", configure_export,
                      "Export a checkpoint folder (model.zip, card.json, vecnormalize.pkl) as weights.npz + "
                      "policy.json that run with numpy alone. The SB3 files are pickles, loaded only under --sha256, "
                      "the checkpoint's digest from a source you trust; prints the exported checkpoint's digest, "
                      "which `festgym deploy --sha256` pins."),
}
