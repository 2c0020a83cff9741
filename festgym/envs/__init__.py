"""Gymnasium environments (registered on ``import festgym``; entry points load lazily)."""

from __future__ import annotations

ENV_IDS = {
    "festgym/LocalGPU-v0": "festgym.envs.local_gpu:LocalGpuEnv",
    "festgym/Placement-v0": "festgym.envs.placement:PlacementEnv",
    "festgym/Cluster-v0": "festgym.envs.cluster:ClusterEnv",
    "festgym/Spawn-v0": "festgym.envs.spawn:SpawnEnv",
}
VECTOR_ENTRY_POINTS = {
    "festgym/LocalGPU-v0": "festgym.envs.vector:local_gpu",
    "festgym/Placement-v0": "festgym.envs.vector:placement",
    "festgym/Cluster-v0": "festgym.envs.vector:cluster",
    "festgym/Spawn-v0": "festgym.envs.vector:spawn",
}
"""What ``gym.make_vec(id, num_envs)`` builds by default: N environments in one process
(:class:`festgym.envs.vector.ServingVectorEnv`)."""


def register_envs() -> None:
    """Register every festgym environment id with Gymnasium (idempotent). Without Gymnasium
    (a deploy-only install: numpy, nvidia-ml-py, prometheus-client) there is nothing to register."""
    try:
        import gymnasium
    except ImportError:
        return

    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, vector_entry_point=VECTOR_ENTRY_POINTS[env_id],
                               disable_env_checker=False)
