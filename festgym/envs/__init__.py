"""Gymnasium environments (registered on ``import festgym``; entry points load lazily)."""

from __future__ import annotations

ENV_IDS = {
    "festgym/LocalGPU-v0": "festgym.envs.local_gpu:LocalGpuEnv",
    "festgym/Placement-v0": "festgym.envs.placement:PlacementEnv",
    "festgym/Cluster-v0": "festgym.envs.cluster:ClusterEnv",
}


def register_envs() -> None:
    """Register every festgym environment id with Gymnasium (idempotent). Without Gymnasium
    (a deploy-only install: numpy, nvidia-ml-py, prometheus-client) there is nothing to register."""
    try:
        import gymnasium
    except ImportError:
        return

    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, disable_env_checker=False)
