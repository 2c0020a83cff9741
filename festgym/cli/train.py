"""``festgym train`` and ``festgym export``: learned controllers (need the train extra)."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

from festgym.cli.common import Command, import_with_extra
from festgym.cli.fields import add_fields, from_args


def _training(backend: str = "sb3") -> ModuleType:
    """:mod:`festgym.jobs.train` (stable-baselines3 and torch) or :mod:`festgym.jobs.train_rllib`
    (Ray's RLlib and torch), or an error naming the extra to install."""
    if backend == "rllib":
        return import_with_extra("festgym.jobs.train_rllib", "training with RLlib", "rllib")
    return import_with_extra("festgym.jobs.train", "training", "train")


def cmd_train(args: argparse.Namespace) -> int:
    from festgym.control.checkpoint import CARD, checkpoint_digest, read_card
    from festgym.jobs.train_config import TrainConfig

    config = from_args(TrainConfig, args)
    checkpoint = _training(config.backend).train(config)
    digest = checkpoint_digest(read_card(checkpoint), str(checkpoint / CARD))
    if config.backend == "rllib":  # exported and sealed as it trained: it runs as it is
        print(f"checkpoint: {checkpoint}\nsha256: {digest} (pin it: festgym deploy --policy {checkpoint} --sha256 "
              f"{digest}; festgym compare --policies festina,{checkpoint} runs it)")
    else:
        print(f"checkpoint: {checkpoint}\nsha256: {digest} (keep it: `festgym export {checkpoint} --sha256 "
              f"{digest}` loads the checkpoint's pickles only under it)")
    return 0


def configure_train(parser: argparse.ArgumentParser) -> None:
    from festgym.jobs.train_config import TrainConfig

    add_fields(parser, TrainConfig)
    parser.set_defaults(func=cmd_train)


def cmd_export(args: argparse.Namespace) -> int:
    from festgym.control.checkpoint import (
        CARD,
        GATE_ENV,
        LOCAL_ENV,
        LocalController,
        checkpoint_digest,
        read_card,
        trained_env,
    )
    from festgym.jobs.export import ExportConfig

    config = from_args(ExportConfig, args, checkpoint=args.checkpoint)
    print(f"numpy policy: {_training().export_checkpoint(config.checkpoint, config.out, config.sha256)}")
    card = read_card(config.checkpoint)
    env = trained_env(card)
    if env != LOCAL_ENV:
        runs = "compare runs it beside Festina (--policies <checkpoint>); deploy runs" if env == GATE_ENV else \
            "compare and deploy run"
        print(f"a {env} controller: it plays {env} (festgym.control.numpy_policy.NumpyPolicy.load); "
              f"{runs} {LOCAL_ENV} controllers only")
        if config.out is None:
            print(f"sha256: {checkpoint_digest(card, str(Path(config.checkpoint) / CARD))}")
    elif config.out is None:  # sealed into the card: the digest that deploy pins
        digest = LocalController(config.checkpoint).sha256
        print(f"sha256: {digest} (pin it: festgym deploy --policy {config.checkpoint} --sha256 {digest})")
    return 0


def configure_export(parser: argparse.ArgumentParser) -> None:
    from festgym.jobs.export import ExportConfig

    parser.add_argument("checkpoint", help="checkpoint folder")
    add_fields(parser, ExportConfig)
    parser.set_defaults(func=cmd_export)


COMMANDS = {
    "train": Command("train a learned controller (stable-baselines3 or RLlib; the train or rllib extra)",
                     configure_train,
                     "Train an agent from its YAML (a shipped agent's name, ppo or sac, or a path) on a scenario; "
                     "writes runs/{scenario}__{algo}__{seed}__{time}/ with the best checkpoint, its card and logs. "
                     "--backend rllib trains PPO with RLlib's environment runners (--env-runners N, --ray ADDRESS "
                     "for a cluster) and exports the best policy as it goes: its checkpoint runs in compare and "
                     "deploy without `festgym export`."),
    "export": Command("a checkpoint as a numpy-only policy (for deployment)", configure_export,
                      "Export a checkpoint folder (model.zip, card.json, vecnormalize.pkl) as weights.npz + "
                      "policy.json that run with numpy alone. The SB3 files are pickles, loaded only under --sha256, "
                      "the checkpoint's digest from a source you trust; prints the exported checkpoint's digest, "
                      "which `festgym deploy --sha256` pins."),
}
