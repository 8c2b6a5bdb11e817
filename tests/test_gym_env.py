"""``WorldEnv`` against a real server (``worldweave serve``'s ``WorldServer``, default generator ``continue``):
gymnasium's own checker, the motion model and its units, the default reward, truncation, rendering, the vector env,
the local server it starts when given no address, and the errors it raises."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from worldweave.sim_clients.gym_env import ENV_ID
from worldweave.sim_clients.gym_env.env import EpisodeSeed, StepOutcome, WorldEnv
from worldweave.sim_clients.gym_env.room import heading_c2w, make_room, seed_views

WIDTH, HEIGHT = 64, 48


@pytest.fixture(scope="module")
def server(default_server):
    """The default-generator server (``continue``), as ``worldweave serve`` starts it."""
    return default_server


@pytest.fixture
def env(server):
    made = gym.make(ENV_ID, address=server.address, width=WIDTH, height=HEIGHT, render_mode="rgb_array")
    yield made.unwrapped
    made.close()


def test_registered_env_has_the_documented_spaces(env):
    assert isinstance(env, WorldEnv)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
    spaces = env.observation_space.spaces
    assert spaces["rgb"].shape == (HEIGHT, WIDTH, 3) and spaces["rgb"].dtype == np.uint8
    assert spaces["depth"].shape == (HEIGHT, WIDTH) and spaces["depth"].dtype == np.float32
    assert spaces["pose"].shape == (4, 4) and spaces["pose"].dtype == np.float64
    assert env.metadata["render_fps"] == pytest.approx(10.0)  # 1 / time_step_s


def test_passes_gymnasiums_env_checker(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    remarks = {str(w.message) for w in caught}
    assert not remarks, remarks  # not even on bounds: the pose's are finite (the map's extent)


def test_motion_follows_the_documented_units(env):
    """Default scales: 1 m/s, 90 deg/s, 0.1 s steps. Forward then yaw within one step; pitch is clamped."""
    start = heading_c2w(np.array([0.0, 0.0, 1.4]), 0.0)
    obs, _ = env.reset(seed=0, options={"start_pose": start})
    np.testing.assert_allclose(obs["pose"], start, atol=1e-9)

    obs, *_ = env.step(np.array([1.0, 0.0, 0.0, 1.0, 0.0], np.float32))  # 0.1 m along +x, then 9 deg left
    np.testing.assert_allclose(obs["pose"], heading_c2w(np.array([0.1, 0.0, 1.4]), math.radians(9.0)), atol=1e-7)

    obs, *_ = env.step(np.array([0.0, 1.0, -0.5, 0.0, 0.0], np.float32))  # left of a heading of 9 deg, and down
    left = 0.1 * np.array([-math.sin(math.radians(9.0)), math.cos(math.radians(9.0)), 0.0])
    expected = heading_c2w(np.array([0.1, 0.0, 1.35]) + left, math.radians(9.0))
    np.testing.assert_allclose(obs["pose"], expected, atol=1e-7)

    for _ in range(8):  # 8 x 9 deg up would be 72 deg: kept at max_pitch_deg = 60
        obs, *_ = env.step(np.array([0.0, 0.0, 0.0, 0.0, 5.0], np.float32))  # clipped to 1
    forward = obs["pose"][:3, 2]
    assert math.degrees(math.asin(forward[2])) == pytest.approx(60.0, abs=1e-6)
    np.testing.assert_allclose(obs["pose"][:3, 3], expected[:3, 3], atol=1e-7)  # turning does not move
    # Camera axes stay OpenCV with no roll: x (right) level.
    assert abs(obs["pose"][2, 0]) < 1e-9


def test_observation_is_the_generated_frame_and_render_returns_it(env):
    obs, info = env.reset(seed=1)
    assert obs["rgb"].shape == (HEIGHT, WIDTH, 3) and obs["rgb"].std() > 5  # the room, textured
    depth = obs["depth"]
    assert ((depth == 0) | ((depth > 0.3) & (depth < 5.0))).all()  # inside a 6 x 5 x 2.7 m room
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(env.render(), obs["rgb"])
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(env.render(), obs["rgb"])
    assert info["frame_id"] is not None and info["voxel_count"] > 0


def test_default_reward_is_the_newly_covered_area(env):
    env.reset(seed=2)
    voxel_m = env.voxel_size_m
    _, reward, _, _, info = env.step(np.array([0.0, 0.0, 0.0, 0.0, 0.0], np.float32))
    assert reward == 0.0 and info["new_area_m2"] == 0.0  # the same view again adds nothing
    before, area_before = info["voxel_count"], info["covered_area_m2"]
    _, reward, _, _, info = env.step(np.array([0.0, 0.0, 0.0, 0.0, -1.0], np.float32))  # looks down at new floor
    assert reward > 0 and info["voxel_count"] > before
    assert reward == pytest.approx(info["covered_area_m2"] - area_before)
    # Every voxel stands for at most three faces of surface (a lone voxel: six exposed faces, half of them).
    assert 0 < info["covered_area_m2"] <= 3 * info["voxel_count"] * voxel_m**2


def test_custom_reward_gets_the_step_outcome(server):
    outcomes: list[StepOutcome] = []

    def novelty(outcome: StepOutcome) -> float:
        outcomes.append(outcome)
        return 1.0 - outcome.frame.coverage

    env = WorldEnv(address=server.address, width=WIDTH, height=HEIGHT, reward_fn=novelty)
    try:
        obs0, _ = env.reset(seed=3)
        obs, reward, _, _, info = env.step(np.array([0.5, 0.0, 0.0, 0.0, 0.0], np.float32))
    finally:
        env.close()
    (outcome,) = outcomes
    assert reward == pytest.approx(1.0 - info["coverage"])
    np.testing.assert_allclose(outcome.previous_c2w, obs0["pose"], atol=1e-9)
    np.testing.assert_allclose(outcome.frame.pose, obs["pose"])
    np.testing.assert_array_equal(outcome.action, [0.5, 0, 0, 0, 0])
    assert outcome.voxel_size_m == pytest.approx(0.05) and not outcome.collided


def empty_room(rng: np.random.Generator, intrinsics) -> EpisodeSeed:
    """A 6 x 5 x 2.7 m room without furniture: its +x wall is the plane x = 3 m."""
    frames = seed_views(make_room(rng, furniture=0), intrinsics)
    return EpisodeSeed(frames, frames[0][2])


def test_terminates_when_the_agents_sphere_reaches_a_wall(server):
    env = WorldEnv(address=server.address, width=WIDTH, height=HEIGHT, seed_fn=empty_room, agent_radius_m=0.2)
    try:
        env.reset(seed=0, options={"start_pose": heading_c2w(np.array([2.0, 0.0, 1.4]), 0.0)})
        clearances = []
        for _ in range(15):
            obs, _, terminated, truncated, info = env.step(np.array([1.0, 0.0, 0.0, 0.0, 0.0], np.float32))
            clearances.append(info["clearance_m"])
            if terminated:
                break
    finally:
        env.close()
    assert terminated and not truncated and info["collided"]
    # The sphere (0.2 m) reaches the wall at x = 3 m: the camera stops at 2.8 m, give or take a 5 cm voxel.
    assert 2.7 <= obs["pose"][0, 3] <= 2.9
    assert clearances[-1] <= 0 < clearances[-2]
    known = [c for c in clearances[:-1] if math.isfinite(c)]
    assert known == sorted(known, reverse=True)  # the gap closes as the agent walks at the wall


def test_truncates_on_the_step_limit_and_reset_restores_the_start(server):
    assert gym.spec(ENV_ID).max_episode_steps == 200
    env = gym.make(ENV_ID, address=server.address, width=WIDTH, height=HEIGHT, max_episode_steps=3)
    world_env = env.unwrapped
    try:
        env.reset(seed=4)
        first_world = world_env.world_id
        flags = [env.step(np.zeros(5, np.float32))[3] for _ in range(3)]
        assert flags == [False, False, True]
        env.reset()  # no seed: the seed world's checkpoint is restored, in the same world
        assert world_env.world_id == first_world
        env.reset(seed=5)  # a seed: a new seed world, the old one deleted
        worlds = {w.world_id for w in world_env.client.worlds.list()}
        assert world_env.world_id in worlds and first_world not in worlds
    finally:
        env.close()
    assert world_env.world_id is None and world_env.client is None


def test_reset_is_seeded(server):
    env = WorldEnv(address=server.address, width=WIDTH, height=HEIGHT)
    try:
        a, _ = env.reset(seed=5)
        b, _ = env.reset(seed=5)
        c, _ = env.reset(seed=6)
    finally:
        env.close()
    np.testing.assert_array_equal(a["rgb"], b["rgb"])
    np.testing.assert_array_equal(a["pose"], b["pose"])
    assert not np.array_equal(a["rgb"], c["rgb"])  # another room, another start yaw


def test_runs_in_a_sync_vector_env(server):
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make(ENV_ID, address=server.address, width=WIDTH, height=HEIGHT, max_episode_steps=2)] * 2
    )
    try:
        obs, _ = envs.reset(seed=7)
        assert obs["rgb"].shape == (2, HEIGHT, WIDTH, 3) and obs["pose"].shape == (2, 4, 4)
        assert not np.array_equal(obs["rgb"][0], obs["rgb"][1])  # seeds 7 and 8: two rooms
        truncations = []
        for _ in range(3):
            obs, rewards, terminations, truncated, infos = envs.step(envs.action_space.sample())
            assert rewards.shape == (2,) and infos["voxel_count"].shape == (2,)
            truncations.append(truncated.tolist())
        assert truncations[1] == [True, True]  # then the next step resets them (gymnasium's autoreset)
    finally:
        envs.close()


def test_without_an_address_it_starts_and_stops_a_local_server():
    env = gym.make(ENV_ID, width=WIDTH, height=HEIGHT).unwrapped
    process = env.local_server.process
    try:
        assert env.client.target.startswith("127.0.0.1:") and process.poll() is None
        env.reset(seed=0)
        _, reward, *_ = env.step(np.array([1.0, 0.0, 0.0, 0.0, -1.0], np.float32))
        assert reward > 0
    finally:
        env.close()
    assert process.returncode == 0  # stopped gracefully by SIGTERM


def test_errors_name_the_bad_value(env, server):
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(5, np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        env.step(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="non-finite.*'yaw_rate': nan"):
        env.step(np.array([0, 0, 0, np.nan, 0], np.float32))
    with pytest.raises(ValueError, match="unknown reset options \\['start'\\]"):
        env.reset(options={"start": np.eye(4)})
    quiet = WorldEnv(address=server.address, width=WIDTH, height=HEIGHT)
    try:
        with pytest.warns(UserWarning, match="render_mode='rgb_array'"):
            assert quiet.render() is None
    finally:
        quiet.close()
    with pytest.raises(ValueError, match="render_mode 'human'"):
        WorldEnv(render_mode="human", address=server.address)
    with pytest.raises(ValueError, match="--port"):
        WorldEnv(server_args=["--port", "50051"])


def test_the_env_imports_neither_the_engine_nor_the_server():
    code = (
        "import sys, worldweave.sim_clients.gym_env.env; "
        "print(sorted({m for m in sys.modules if m.startswith(('worldweave.bridge', 'worldweave.server', 'torch'))}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"the gym env imports {loaded}"
