"""``WorldVectorEnv``: N ``WorldEnv`` episodes side by side on one server, each in its own fork of one seed world
(``gymnasium.vector.SyncVectorEnv`` conventions: batched observations, rewards and flags; autoreset).

    from worldweave.sim_clients.gym_env.vector import WorldVectorEnv
    envs = WorldVectorEnv(4, seed=0, width=128, height=96)     # starts a local server unless given address=
    obs, infos = envs.reset(seed=0)
    obs, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())

A seed env (not stepped) builds the seed world and checkpoints it; each of the N envs forks that checkpoint on its
first reset and restores it on later ones, so all start from the same world and state and differ only through
their own actions. The seed given to ``reset`` seeds each env's random generator, not the world.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from worldweave.sim_clients.gym_env import ENV_ID
from worldweave.sim_clients.gym_env.env import WorldEnv


class WorldVectorEnv(gym.vector.SyncVectorEnv):
    """``num_envs`` forks of one seed world (built from ``seed``) on one server; ``env_options`` are ``WorldEnv``'s
    (``address`` None starts a local server, stopped on ``close``) plus ``max_episode_steps`` (default the
    registered 200)."""

    def __init__(self, num_envs: int = 4, *, seed: int | None = None, **env_options: Any) -> None:
        if not (isinstance(num_envs, int) and num_envs >= 1):
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        steps = env_options.pop("max_episode_steps", None)
        self.seed_env = WorldEnv(**env_options)
        """Holds the seed world (and the local server, if it started one); never stepped."""
        try:
            self.seed_env.reset(seed=seed)
            options = {**env_options, "address": self.seed_env.address, "start": self.seed_env.start}
            if steps is not None:
                options["max_episode_steps"] = steps
            super().__init__([lambda: gym.make(ENV_ID, **options)] * num_envs)
        except BaseException:
            self.seed_env.close()
            raise

    def close_extras(self, **kwargs: Any) -> None:
        """Close the N envs (deleting their worlds), then the seed env (its world and any local server)."""
        try:
            super().close_extras(**kwargs)
        finally:
            self.seed_env.close()
