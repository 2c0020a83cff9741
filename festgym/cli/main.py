"""The ``festgym`` command line.

Every command lives in one module of :mod:`festgym.cli` (``COMMANDS`` there); its options are added
only when it runs (:class:`~festgym.cli.common.Command`), from the config dataclasses of the job
it runs where there is one (:mod:`festgym.cli.fields`). So a command imports only what it needs:
``festgym deploy`` runs with numpy alone, and ``festgym --help`` imports neither pandas nor torch
(Gymnasium, where it is installed, comes with ``import festgym``, which registers the environments).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from festgym import __version__
from festgym.cli import deploy, profiles, runs, sensitivity, train
from festgym.cli.common import Command
from festgym.errors import FestgymError

COMMANDS: dict[str, Command] = {**profiles.COMMANDS, **runs.COMMANDS, **sensitivity.COMMANDS, **train.COMMANDS,
                               **deploy.COMMANDS}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the options of the command ``argv`` names (the first word that is not an
    option; every command's options when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="festgym", description="Energy-aware serverless LLM serving testbed.")
    parser.add_argument("--version", action="version", version=f"festgym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description or command.help)
        if argv is None or name == chosen:
            command.configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = build_parser(argv).parse_args(argv)
        except SystemExit as exc:  # argparse's usage errors (2) and --help (0), as a return code
            return int(exc.code or 0)
        return args.func(args)
    except BrokenPipeError:  # output piped into head & co.: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (FestgymError, OSError) as exc:
        print(f"festgym: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
