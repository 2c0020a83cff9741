"""Exported numpy policies act exactly as the SB3 policies they come from, and refuse tampering."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import festgym  # noqa: F401  (registers the environments)
from festgym.control.numpy_policy import NumpyPolicy, PolicyFileError
from festgym.jobs.export import export_sb3

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402

N_OBS = 10_000


def trained(algo, action_type: str, normalize: bool):
    """A briefly trained model (weights away from their initial values) and its VecNormalize."""
    venv = DummyVecEnv([lambda: gym.make("festgym/LocalGPU-v0", action_type=action_type)])
    vec = VecNormalize(venv, norm_reward=False) if normalize else None
    kwargs = {"n_steps": 64, "batch_size": 32} if algo is sb3.PPO else {"learning_starts": 32, "batch_size": 32}
    model = algo("MlpPolicy", vec or venv, seed=0, device="cpu", **kwargs)
    model.learn(128)
    return model, vec


def observations(space, n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32)


@pytest.mark.parametrize("algo, action_type, normalize", [("PPO", "multidiscrete", True), ("PPO", "box", False),
                                                          ("SAC", "box", True)])
def test_exported_policy_matches_sb3(tmp_path, algo, action_type, normalize):
    model, vec = trained(getattr(sb3, algo), action_type, normalize)
    policy = NumpyPolicy.load(export_sb3(model, tmp_path, vec))
    obs = observations(model.observation_space, N_OBS)
    expected, _ = model.predict(vec.normalize_obs(obs) if vec else obs, deterministic=True)
    got = policy.predict(obs)
    if action_type == "multidiscrete":
        assert got.dtype.kind == "i" and np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(policy.predict(obs[0]), got[0], atol=1e-9)  # one observation, no batch axis


def test_tampered_weights_are_refused(tmp_path):
    model, vec = trained(sb3.PPO, "multidiscrete", True)
    folder = export_sb3(model, tmp_path, vec)
    weights = folder / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PolicyFileError, match="SHA-256 .* does not match"):
        NumpyPolicy.load(folder)
    (folder / "policy.json").unlink()
    with pytest.raises(PolicyFileError, match="policy.json: missing"):
        NumpyPolicy.load(folder)


def test_bad_observation_shape_is_named(tmp_path):
    model, vec = trained(sb3.PPO, "multidiscrete", False)
    policy = NumpyPolicy.load(export_sb3(model, tmp_path, vec))
    with pytest.raises(ValueError, match=r"expected \(30,\)"):
        policy.predict(np.zeros((4, 7)))


def test_running_an_exported_policy_needs_no_torch(tmp_path):
    model, vec = trained(sb3.PPO, "multidiscrete", True)
    folder = export_sb3(model, tmp_path, vec)
    code = ("import sys, numpy as np\n"
            "from festgym.control.numpy_policy import NumpyPolicy\n"
            f"p = NumpyPolicy.load({str(folder)!r})\n"
            "print(p.predict(np.zeros(30)).tolist())\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
