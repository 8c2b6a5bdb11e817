"""Gymnasium environment over a worldweave server: ``WorldEnv``, registered as ``"worldweave/World-v0"``.

    import gymnasium as gym
    import worldweave.sim_clients.gym_env  # registers the id
    env = gym.make("worldweave/World-v0", render_mode="rgb_array")            # starts a local server
    env = gym.make("worldweave/World-v0", address="127.0.0.1:50051")          # or uses yours

or in one line, ``gym.make("worldweave.sim_clients.gym_env:worldweave/World-v0")``. Importing this package only
registers the id; the environment module loads when an env is made. Spaces, units and semantics: ``WorldEnv``.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENV_ID = "worldweave/World-v0"
"""The id ``gymnasium.make`` takes."""
DEFAULT_MAX_EPISODE_STEPS = 200
"""Episode length ``gymnasium.make`` truncates at (its ``TimeLimit``), unless given ``max_episode_steps``."""

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="worldweave.sim_clients.gym_env.env:WorldEnv",
             max_episode_steps=DEFAULT_MAX_EPISODE_STEPS)
