"""Run benchmark scripts here and on another commit in the same run, alternately, and print both.

The machines are noisy (timings move by tens of percent between runs), so a figure means
something only beside the previous commit's, measured in the same run on the same machine:

    python benchmarks/against.py sim_speed.py env_speed.py            # against HEAD~1
    python benchmarks/against.py --base 27284c8 --rounds 3 sim_speed.py

The base commit is checked out into a temporary worktree and installed (compiled, as here) into
its own virtual environment, unless ``--base-tree`` and ``--base-python`` name a prepared one.
Each round runs every script in the base tree, then in this one (each tree's own copy of the
script, so that a benchmark whose imports moved still runs); the output of every run is printed
with the tree it came from.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def prepare(base: str, workdir: Path) -> tuple[Path, Path]:
    """A worktree of ``base`` and a virtual environment with it installed: (tree, python)."""
    tree, env = workdir / "tree", workdir / "venv"
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(tree), base], check=True)
    try:
        venv.create(env, with_pip=True)
        python = env / "bin" / "python"
        print(f"installing {base} into {env} (compiling takes about half a minute)", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", str(tree)], check=True)
    except BaseException:
        remove(tree)
        raise
    return tree, python


def remove(tree: Path) -> None:
    subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(tree)], check=False)


def run(tree: Path, python: Path, script: str, args: list[str]) -> str:
    done = subprocess.run([str(python), str(tree / "benchmarks" / script), *args], cwd=tree, capture_output=True,
                          text=True)
    if done.returncode:
        return f"(failed with exit code {done.returncode})\n{done.stderr[-2000:]}"
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="+", help="benchmark scripts in benchmarks/, e.g. sim_speed.py")
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare with (default: %(default)s)")
    parser.add_argument("--base-tree", type=Path, help="a prepared checkout of the base commit")
    parser.add_argument("--base-python", type=Path, help="the Python of the base tree's installed environment")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of base and this tree (default: 2)")
    parser.add_argument("--args", default="", help="arguments for every script, e.g. '--steps 4000'")
    args = parser.parse_args()
    trees = {"this": (HERE, Path(sys.executable))}
    with tempfile.TemporaryDirectory(prefix="festgym-against-") as tmp:
        if args.base_tree and args.base_python:
            trees = {"base": (args.base_tree, args.base_python), **trees}
        else:
            trees = {"base": prepare(args.base, Path(tmp)), **trees}
        try:
            for k in range(args.rounds):
                for script in args.scripts:
                    for label, (tree, python) in trees.items():
                        print(f"=== round {k + 1}, {script}, {label} ({tree}) ===", flush=True)
                        print(run(tree, python, script, shlex.split(args.args)), flush=True)
        finally:
            if not (args.base_tree and args.base_python):
                remove(trees["base"][0])


if __name__ == "__main__":
    main()
