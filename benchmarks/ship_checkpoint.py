"""Ship a trained controller: export it, copy it into ``festgym/data/checkpoints/<name>/`` and record
in its card how it scores, on the environment it trained in and in the full cluster.

    python benchmarks/ship_checkpoint.py runs/<run>/checkpoint --name ppo-local [--seeds 0-4] [--episodes 5]

Records in ``card.json``:

* ``local_evaluation``: ``LocalGPU-v0`` episodes on seeds from 20000 (training draws from its own
  seed, the evaluation callback from 10000), the controller against Festina's local rule
  (``step(None)``): reward and its terms, kWh, TTFT/TBT attainment, mean ± 95% interval.
* ``evaluations``: the ``festgym compare`` table of the controller, Festina and every baseline on
  the default scenario over ``--seeds`` (1 simulated hour each), then the controller against
  Festina on workloads it never trained on: load x0.5 and x1.5, the Azure code trace's lengths,
  and the other shipped scenarios (``festgym evaluate``).

Needs the train extra (the export reads the SB3 model). Prints every table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SEED = 20_000
GENERALISATION = (  # (scenario, --set overrides, load factor)
    ("default", (), 0.5),
    ("default", (), 1.5),
    ("default", ("workload.lengths=azure-code",), None),
    ("diurnal-low", (), None),
    ("mixed-a100-h100", (), None),
)


def local_evaluation(folder: Path, episodes: int) -> dict:
    """The controller and Festina's local rule on the LocalGPU-v0 episodes of seeds LOCAL_SEED..."""
    import gymnasium as gym

    from festgym.control.checkpoint import read_card
    from festgym.control.numpy_policy import NumpyPolicy
    from festgym.envs.rollout import run_episode
    from festgym.jobs.compare import ci95

    card = read_card(folder)
    env = gym.make(card["env"], scenario=card["scenario"], **card["agent"]["env_kwargs"])
    net = NumpyPolicy.load(folder / "numpy")
    rows = {}
    for name, act in (("controller", net.predict), ("festina (local rule)", lambda obs: None)):
        episodes_out = [run_episode(env, act, LOCAL_SEED + k) for k in range(episodes)]
        rows[name] = {key: (float(np.mean([e[key] for e in episodes_out])), ci95(e[key] for e in episodes_out))
                      for key in episodes_out[0]}
    return {"env": card["env"], "episodes": episodes, "first_seed": LOCAL_SEED, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run's checkpoint folder (runs/<run>/checkpoint)")
    parser.add_argument("--name", required=True, help="festgym/data/checkpoints/<name>/")
    parser.add_argument("--sha256", required=True, help="the run's digest, as `festgym train` printed it")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()

    from festgym.cli.main import main as cli
    from festgym.control.checkpoint import read_card
    from festgym.jobs.train import export_checkpoint
    from festgym.resources import CHECKPOINTS

    source, folder = Path(args.checkpoint), CHECKPOINTS.shipped / args.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in ("model.zip", "vecnormalize.pkl", "card.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    export_checkpoint(folder, sha256=args.sha256)
    card = read_card(folder)
    card["local_evaluation"] = local_evaluation(folder, args.episodes)
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["local_evaluation"]["rows"], indent=1))
    out = ROOT / "results" / f"ship-{args.name}"
    runs = [("default", (), None, "festina,max-clock,mps-even,dvfs-only,miad-llf,power-cap"),
            *[(scenario, sets, load, "festina") for scenario, sets, load in GENERALISATION]]
    for k, (scenario, sets, load, against) in enumerate(runs):
        argv = ["evaluate", "--policy", str(folder), "--against", against, "--scenario", scenario,
                *[x for s in sets for x in ("--set", s)], *(["--load", str(load)] if load else []),
                "--seeds", args.seeds, "--out", str(out / str(k)), "--record"]
        print("festgym", " ".join(argv[1:]), flush=True)
        code = cli(argv)
        if code:
            sys.exit(code)


if __name__ == "__main__":
    main()
