"""Checkpoints are untrusted input: nothing in one runs unless a digest the user trusts pins it,
and that digest covers everything that changes a controller's decisions.

* **Pickles.** A checkpoint may hold pickles in ``vecnormalize.pkl`` and in SB3's ``model.zip``
  (cloudpickled objects in ``data``, torch ``.pth`` files). Each one here is a bomb (unpickling it
  writes a marker file); ``festgym export`` must not run any of them, nor call any deserialiser,
  unless the digest pinned with ``--sha256`` covers the bytes. The bombs are live: loaded, they
  go off, and a pinned export does load them (a pin is trust).
* **The pin.** :func:`~festgym.control.checkpoint.checkpoint_digest` changes with every field that
  changes decisions (the card's interface, the export's layers, action, normalisation and weights,
  what it was trained on), even when the tamperer reseals the card's own hashes; it does not
  change with the training record or the card's layout.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from festgym.cli.main import main
from festgym.control.checkpoint import (
    CARD,
    EXPORTED,
    LocalController,
    checkpoint_digest,
    pinned_training_files,
    read_card,
)
from festgym.control.numpy_policy import SPEC, WEIGHTS, PolicyFileError, sha256_file
from festgym.resources import CHECKPOINTS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = CHECKPOINTS.shipped / "ppo-local"
PICKLES = ("vecnormalize.pkl", "model.zip:data", "model.zip:policy.pth", "model.zip:pytorch_variables.pth")
"""Every pickle a checkpoint may hold."""


class Bomb:
    """Unpickled, it writes its marker file: a stand-in for any code a pickle may run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def digest_of(folder: Path, with_export: bool = True) -> str:
    return checkpoint_digest(read_card(folder), str(folder / CARD), with_export=with_export)


def reseal(folder: Path, edit: Callable[[dict], None] = lambda card: None) -> None:
    """Edit the card and record every file's current hash in it: what a tamperer who controls
    the whole folder does, so that the card's own checks pass."""
    card = read_card(folder)
    edit(card)
    card["sha256"] = {name: sha256_file(folder / name) for name in card["sha256"] if (folder / name).is_file()}
    (folder / CARD).write_text(json.dumps(card, indent=2))


def copy_shipped(folder: Path) -> Path:
    return Path(shutil.copytree(SHIPPED, folder))


def bomb_model(path: Path, markers: Path) -> None:
    """An SB3-shaped ``model.zip`` with a bomb in each of its pickles."""
    torch = pytest.importorskip("torch")

    def pth(name: str) -> bytes:
        buffer = io.BytesIO()
        torch.save({"w": Bomb(markers / name)}, buffer)
        return buffer.getvalue()

    data = {"policy_class": {":serialized:": base64.b64encode(pickle.dumps(Bomb(markers / "data"))).decode()}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps(data))
        archive.writestr("policy.pth", pth("policy.pth"))
        archive.writestr("pytorch_variables.pth", pth("pytorch_variables.pth"))
        archive.writestr("_stable_baselines3_version", "2.3.0")


@pytest.fixture
def markers(tmp_path):
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


@pytest.fixture
def honest(tmp_path):
    """A copy of a shipped checkpoint, its trusted digests (exported, and as `festgym train` printed it)."""
    folder = copy_shipped(tmp_path / "honest")
    return folder, digest_of(folder), digest_of(folder, with_export=False)


@pytest.fixture
def bombed(tmp_path, markers):
    """Another copy with a bomb in every pickle, its card resealed over them."""
    folder = copy_shipped(tmp_path / "bombed")
    bomb_model(folder / "model.zip", markers)
    (folder / "vecnormalize.pkl").write_bytes(pickle.dumps(Bomb(markers / "vecnormalize.pkl")))
    reseal(folder)
    return folder


@pytest.fixture
def tripwires(monkeypatch):
    """Every deserialiser export may reach, recording each call (a .pth bomb stays quiet under
    torch's weights_only loader: that it is never even opened is what the tests check)."""
    pytest.importorskip("stable_baselines3")
    import cloudpickle
    import torch

    import festgym.jobs.train  # noqa: F401  (imported before the wires: importing SB3 may unpickle)

    calls: list[str] = []

    def wire(owner, name: str) -> None:
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, **k: calls.append(f"{owner.__name__}.{name}") or real(*a, **k))

    for owner, name in ((pickle, "load"), (pickle, "loads"), (cloudpickle, "loads"), (torch, "load")):
        wire(owner, name)
    return calls


def export(folder: Path, sha256: str | None) -> Path:
    """``festgym export`` (SB3 and torch load the model; the rest of the suite runs without them)."""
    pytest.importorskip("stable_baselines3")
    from festgym.jobs.train import export_checkpoint

    return export_checkpoint(folder, sha256=sha256)


# --- nothing runs unless pinned ---------------------------------------------------------------------


def _no_pin(folder, honest):
    return None


def _wrong_pin(folder, honest):
    return "0" * 64


def _honest_pin_over_a_resealed_card(folder, honest):
    return honest[1]


def _honest_training_pin_over_a_resealed_card(folder, honest):
    return honest[2]


def _files_swapped_under_the_honest_card(folder, honest):
    shutil.copy(honest[0] / CARD, folder / CARD)  # the card the user pinned; the files are the bombs
    return honest[1]


def _unhashed_statistics(folder, honest):
    """The card lists no vecnormalize.pkl (trained without it, or the entry removed), yet one is there;
    the user pins that very card."""
    card = read_card(folder)
    del card["sha256"]["vecnormalize.pkl"]
    (folder / CARD).write_text(json.dumps(card))
    return digest_of(folder)


def _unhashed_model(folder, honest):
    card = read_card(folder)
    del card["sha256"]["model.zip"]
    (folder / CARD).write_text(json.dumps(card))
    return digest_of(folder)


def _interface_changed(folder, honest):
    shutil.copy(honest[0] / CARD, folder / CARD)
    card = read_card(folder)
    card["interface"]["period_s"] = 3600.0
    (folder / CARD).write_text(json.dumps(card))
    return honest[1]


def _not_a_digest(folder, honest):
    return honest[1][:12]


def _hash_outside_the_folder(folder, honest):
    card = read_card(folder)
    card["sha256"]["../honest/model.zip"] = read_card(honest[0])["sha256"]["model.zip"]
    (folder / CARD).write_text(json.dumps(card))
    return honest[1]


REFUSALS = {
    _no_pin: "without a pinned digest",
    _wrong_pin: "is not the pinned",
    _honest_pin_over_a_resealed_card: "is not the pinned",
    _honest_training_pin_over_a_resealed_card: "is not the pinned",
    _files_swapped_under_the_honest_card: "SHA-256 differs",
    _unhashed_statistics: "vecnormalize.pkl: a pickle that .* lists no SHA-256",
    _unhashed_model: "no SHA-256 for model.zip",
    _interface_changed: "is not the pinned",
    _not_a_digest: "not a SHA-256 digest",
    _hash_outside_the_folder: "not a file inside the checkpoint folder",
}


@pytest.mark.parametrize("attack", REFUSALS, ids=lambda f: f.__name__.strip("_"))
def test_no_pickle_runs_unless_a_trusted_digest_pins_it(attack, honest, bombed, markers, tripwires):
    pin = attack(bombed, honest)
    with pytest.raises(PolicyFileError, match=REFUSALS[attack]):
        export(bombed, pin)
    assert sorted(p.name for p in markers.iterdir()) == [] and tripwires == []
    assert (bombed / EXPORTED / WEIGHTS).read_bytes() == (SHIPPED / EXPORTED / WEIGHTS).read_bytes()  # no export


def test_the_refusal_says_how_to_pin(bombed):
    with pytest.raises(PolicyFileError) as refused:
        pinned_training_files(bombed, read_card(bombed), None)
    message = str(refused.value)
    assert "--sha256" in message and "festgym train" in message and digest_of(bombed) in message
    assert "model.zip and vecnormalize.pkl" in message


@pytest.mark.parametrize("pickled", PICKLES)
def test_the_bombs_are_live(pickled, tmp_path, markers):
    """Each bomb goes off when its pickle is loaded as SB3 and the export would load it unpinned."""
    torch = pytest.importorskip("torch")
    cloudpickle = pytest.importorskip("cloudpickle")
    bomb_model(tmp_path / "model.zip", markers)
    if pickled == "vecnormalize.pkl":
        pickle.loads(pickle.dumps(Bomb(markers / pickled)))
    else:
        with zipfile.ZipFile(tmp_path / "model.zip") as archive:
            member = archive.read(pickled.split(":")[1])
        if pickled.endswith("data"):
            cloudpickle.loads(base64.b64decode(json.loads(member)["policy_class"][":serialized:"]))
        else:
            torch.load(io.BytesIO(member), weights_only=False)
    assert (markers / pickled.split(":")[-1]).read_text() == "ran"


def test_a_pinned_export_loads_what_the_pin_covers(honest, bombed, markers):
    """A pin is trust: under the bomb checkpoint's own digest its model's pickles run, and so
    does a bomb in vecnormalize.pkl beside the real model (so the refusals above are what stops them)."""
    pin = digest_of(bombed)
    with pytest.raises(Exception):  # noqa: B017  (the bomb model is no model: SB3 fails after the bomb)
        export(bombed, pin)
    assert (markers / "data").is_file()
    shutil.copy(honest[0] / "model.zip", bombed / "model.zip")
    reseal(bombed)
    export(bombed, digest_of(bombed))
    assert (markers / "vecnormalize.pkl").is_file()


def test_what_is_swapped_in_after_the_check_is_never_loaded_nor_sealed(honest, bombed, markers, monkeypatch):
    """A race: the moment the pinned files pass their check, the folder is swapped for the bomb
    checkpoint (its pickles and its resealed card). Export loads the bytes it hashed, and seals
    the card it verified: the bombs stay quiet and the sealed card is the honest one, so the
    digest export prints is the honest checkpoint's."""
    pytest.importorskip("stable_baselines3")
    import festgym.jobs.train as training

    folder, pin, trained = honest
    verified = training.pinned_training_files

    def then_swap(*args):
        files = verified(*args)
        for name in ("model.zip", "vecnormalize.pkl", CARD):
            shutil.copy(bombed / name, folder / name)
        return files

    monkeypatch.setattr(training, "pinned_training_files", then_swap)
    export(folder, pin)
    assert list(markers.iterdir()) == []
    card = read_card(folder)
    assert digest_of(folder, with_export=False) == trained  # the honest card's hashes and training
    assert {k: v for k, v in card["sha256"].items() if not k.startswith(EXPORTED)} == \
        {k: v for k, v in read_card(SHIPPED)["sha256"].items() if not k.startswith(EXPORTED)}
    assert (folder / EXPORTED / WEIGHTS).read_bytes() == (SHIPPED / EXPORTED / WEIGHTS).read_bytes()


# --- the pin covers every decision ------------------------------------------------------------------


def _interface(key, value):
    def edit(folder):
        reseal(folder, lambda card: card["interface"].__setitem__(key, value))
    edit.__name__ = f"interface.{key}"
    return edit


def _spec(key, value):
    def edit(folder):
        spec = json.loads((folder / EXPORTED / SPEC).read_text())
        spec[key] = value
        (folder / EXPORTED / SPEC).write_text(json.dumps(spec))
        reseal(folder)
    edit.__name__ = f"policy.json:{key}"
    return edit


def _weights(folder):
    with np.load(folder / EXPORTED / WEIGHTS) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["b0"] = arrays["b0"] + 1e-3
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (folder / EXPORTED / WEIGHTS).write_bytes(buffer.getvalue())
    spec = json.loads((folder / EXPORTED / SPEC).read_text())
    spec["sha256"][WEIGHTS] = sha256_file(folder / EXPORTED / WEIGHTS)
    (folder / EXPORTED / SPEC).write_text(json.dumps(spec))
    reseal(folder)


def _card(path, value):
    def edit(folder):
        def put(card):
            *parents, key = path
            node = card
            for name in parents:
                node = node[name]
            node[key] = value
        reseal(folder, put)
    edit.__name__ = ".".join(path)
    return edit


def _training_file(folder):
    (folder / "vecnormalize.pkl").write_bytes(b"other statistics")
    reseal(folder)


NORMALISATION = {"mean": [0.5] * 30, "var": [2.0] * 30, "epsilon": 1e-8, "clip": 10.0}
DECISIVE = [
    _interface("period_s", 3600.0), _interface("batch_caps", [8, 32, 128]), _interface("slots", 3),
    _interface("clock_levels", 4), _interface("share_levels", 8), _interface("action_type", "box"),
    _spec("obs_normalization", NORMALISATION), _spec("action", {"type": "multidiscrete", "nvec": [8, 4, 4, 2]}),
    _spec("layers", ["relu", "tanh", "identity"]), _weights,
    _card(("scenario",), "diurnal-low"), _card(("agent", "algo"), "a2c"),
    _card(("agent", "env_kwargs", "reward"), {"energy_weight": 1.0}), _training_file,
]


@pytest.mark.parametrize("tamper", DECISIVE, ids=lambda f: f.__name__.strip("_"))
def test_tampering_with_a_decision_breaks_the_pin(tamper, honest):
    folder, pin, _ = honest
    tamper(folder)
    assert digest_of(folder) != pin
    with pytest.raises(PolicyFileError, match="is not the pinned"):
        LocalController(folder, expect_sha256=pin)


def test_without_a_pin_a_resealed_card_is_believed(honest):
    """What the card's own hashes cannot do: a tamperer who reseals the card is caught only by a pin."""
    folder = honest[0]
    _interface("period_s", 3600.0)(folder)
    assert LocalController(folder).interface.period_s == 3600.0


def _record(folder):
    reseal(folder, lambda card: card.update(wall_s=1.0, timesteps=1, name="renamed", evaluations=[],
                                            local_evaluation={}, evaluation={}))


def _layout(folder):
    """The same card, keys reversed and re-indented, a whole-number period written as an integer."""
    card = read_card(folder)
    card["interface"]["period_s"] = int(card["interface"]["period_s"])
    (folder / CARD).write_text(json.dumps(dict(reversed(card.items())), indent=7))


@pytest.mark.parametrize("change", [_record, _layout], ids=["training record", "card layout"])
def test_what_does_not_change_decisions_keeps_the_pin(change, honest):
    folder, pin, _ = honest
    change(folder)
    assert LocalController(folder, expect_sha256=pin).sha256 == pin


def test_an_older_pin_is_named():
    """The pin of older festgym versions (policy.json's hash) is refused with what to pin instead."""
    old = read_card(SHIPPED)["sha256"][f"{EXPORTED}/{SPEC}"]
    with pytest.raises(PolicyFileError, match="pin of older festgym versions"):
        LocalController("ppo-local", expect_sha256=old)


@pytest.mark.parametrize("name", ["ppo-local", "sac-local"])
def test_the_docs_list_the_shipped_digests(name):
    doc = (REPO / "docs" / "learned.md").read_text()
    assert f"| `{name}` | `{LocalController(name).sha256}` |" in doc


# --- the command line -------------------------------------------------------------------------------


def test_cli_export_pins_and_prints_the_digest(honest, capsys):
    pytest.importorskip("stable_baselines3")
    folder, _, trained = honest
    assert main(["export", str(folder)]) == 2
    assert "without a pinned digest" in capsys.readouterr().err
    assert main(["export", str(folder), "--sha256", trained]) == 0
    printed = capsys.readouterr().out.split("sha256: ")[1].split()[0]
    assert printed == LocalController(folder).sha256
    assert main(["export", str(folder), "--sha256", printed.upper()]) == 0  # a re-export, under the exported digest


def test_cli_train_prints_the_digest_export_needs(honest, monkeypatch, capsys):
    import types

    import festgym.cli.train as cli_train

    folder, _, trained = honest
    card = read_card(folder)
    card.pop("interface")
    card["sha256"] = {k: v for k, v in card["sha256"].items() if not k.startswith(EXPORTED + "/")}
    (folder / CARD).write_text(json.dumps(card))
    monkeypatch.setattr(cli_train, "_training", lambda backend: types.SimpleNamespace(train=lambda config: folder))
    assert main(["train", "--agent", "ppo"]) == 0
    assert f"sha256: {trained} (keep it: `festgym export {folder} --sha256 {trained}`" in capsys.readouterr().out


def test_a_deployed_controller_runs_the_export_it_hashed(tmp_path, monkeypatch):
    """An export swapped on disk (a consistent pair: weights doubled, policy.json's hash of them
    updated) right after the card's hashes were checked is not what runs."""
    from festgym.control import checkpoint

    folder = copy_shipped(tmp_path / "ckpt")
    pin = digest_of(folder)
    export = folder / EXPORTED
    honest = np.load(export / WEIGHTS)
    honest_arrays = {k: honest[k].copy() for k in honest.files}
    checked = checkpoint._verified_bytes
    seen = []

    def check_then_swap(folder_, name, expected, refusing):
        data = checked(folder_, name, expected, refusing)
        seen.append(name)
        if set(checkpoint.SEALED) <= set(seen) and not (export / "swapped").exists():
            np.savez(export / WEIGHTS, **{k: v * 2 for k, v in honest_arrays.items()})
            spec = json.loads((export / SPEC).read_text())
            spec["sha256"][WEIGHTS] = sha256_file(export / WEIGHTS)
            (export / SPEC).write_text(json.dumps(spec))
            (export / "swapped").write_text("")
        return data

    monkeypatch.setattr(checkpoint, "_verified_bytes", check_then_swap)
    controller = LocalController(folder, expect_sha256=pin)
    assert (export / "swapped").exists()
    np.testing.assert_array_equal(controller.net.layers[0][0], honest_arrays["W0"])
