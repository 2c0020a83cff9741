"""Wrappers for algorithms that need another action space."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

MAX_ACTIONS = 1_000_000


class DiscreteActions(gym.ActionWrapper):
    """Flatten a ``MultiDiscrete`` action space into one ``Discrete`` (mixed-radix numbering,
    first component most significant), for SB3's DQN and QR-DQN.

    The product of the components grows fast (``Cluster-v0``: astronomically), so it is refused
    above ``MAX_ACTIONS``; use PPO or A2C on the ``MultiDiscrete`` space there.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.MultiDiscrete):
            raise TypeError(f"DiscreteActions needs a MultiDiscrete action space, got {space}")
        self.nvec = space.nvec.astype(np.int64).ravel()
        total = int(np.prod(self.nvec.astype(object)))
        if total > MAX_ACTIONS:
            raise ValueError(f"{total:,} joint actions is too many for a Discrete space (limit {MAX_ACTIONS:,}); "
                             "use PPO or A2C on the MultiDiscrete space, or fewer levels (env.clock_levels, "
                             "env.share_levels)")
        self.n_actions = total
        self.action_space = gym.spaces.Discrete(total)

    def action(self, action) -> np.ndarray:
        if not self.action_space.contains(int(action)):
            raise ValueError(f"DiscreteActions: action {action!r} is outside 0..{self.n_actions - 1}")
        out = np.empty(len(self.nvec), dtype=np.int64)
        rest = int(action)
        for i in range(len(self.nvec) - 1, -1, -1):
            rest, out[i] = divmod(rest, int(self.nvec[i]))
        return out
