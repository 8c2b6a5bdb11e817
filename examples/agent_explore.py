"""An agent explores a generated world through the gymnasium environment, stops at a collision, reports coverage.

The policy is simple and reactive: it reads the observation's depth in the middle of the view; when the nearest
tenth of it is closer than ``--clearance`` metres it turns left on the spot, otherwise it walks forward with a small
random wobble of its heading. The episode ends when the agent's sphere touches the world (``terminated``, the
server's collision query, against surfaces at or above the env's minimum confidence) or at the step limit
(``truncated``). The world's coverage is the surface area its memory holds at or above that confidence (half the
exposed voxel faces, ``gym_env.env.surface_area_m2``), which the default reward pays out step by step; it is reported
beside the room's true surface area (shell and furniture), which it should never exceed: guessed geometry pays
nothing.

    python examples/agent_explore.py                                   # starts a local server itself
    python examples/agent_explore.py --server 127.0.0.1:50051 --steps 300 --out out/explore

Writes, under ``--out``: ``summary.json`` (why the episode ended, steps, coverage reached, the room's true surface
area, return, seconds per step)
and ``trajectory.txt`` (TUM lines ``timestamp tx ty tz qx qy qz qw``: camera-to-world, OpenCV camera, world Z up,
metres; timestamps are simulated seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from worldweave.proto.geometry import quaternion_from_rotation
from worldweave.sim_clients.gym_env import ENV_ID
from worldweave.sim_clients.gym_env.room import make_room


def policy(observation: dict[str, np.ndarray], rng: np.random.Generator, clearance_m: float) -> np.ndarray:
    """Turn left in place when the middle of the view is closer than ``clearance_m``; else walk forward, wobbling.

    Returns a normalised action ``[forward, left, up, yaw_rate, pitch_rate]`` in [-1, 1].
    """
    depth = observation["depth"]
    h, w = depth.shape
    middle = depth[h // 3: 2 * h // 3, w // 3: 2 * w // 3]
    known = middle[middle > 0]
    ahead_m = float(np.percentile(known, 10)) if known.size else 0.0  # nothing known ahead: treat as blocked
    if ahead_m < clearance_m:
        return np.array([0.0, 0.0, 0.0, 1.0, 0.0], np.float32)
    return np.array([1.0, 0.0, 0.0, np.clip(rng.normal(0.0, 0.3), -1, 1), 0.0], np.float32)


def tum_line(time_s: float, c2w: np.ndarray) -> str:
    """One TUM trajectory line for a camera-to-world pose."""
    q, t = quaternion_from_rotation(c2w[:3, :3]), c2w[:3, 3]
    return f"{time_s:.3f} {t[0]:.6f} {t[1]:.6f} {t[2]:.6f} {q.qx:.8f} {q.qy:.8f} {q.qz:.8f} {q.qw:.8f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=None,
                        help="address of a running `worldweave serve` (default: start one on a free loopback port)")
    parser.add_argument("--out", type=Path, default=Path("out/agent_explore"), help="folder to write")
    parser.add_argument("--steps", type=int, default=300, help="step limit of the episode (truncation)")
    parser.add_argument("--clearance", type=float, default=0.8, help="turn when the view's middle is closer, metres")
    parser.add_argument("--width", type=int, default=128, help="observation width, pixels")
    parser.add_argument("--height", type=int, default=96, help="observation height, pixels")
    parser.add_argument("--seed", type=int, default=0, help="episode seed: the room and the policy's wobble")
    parser.add_argument("--min-confidence", type=float, default=None,
                        help="confidence level that reward and collisions count (default: the world's default, 0.5)")
    args = parser.parse_args(argv)

    env = gym.make(ENV_ID, address=args.server, width=args.width, height=args.height, max_episode_steps=args.steps,
                   min_confidence=args.min_confidence)
    world_env = env.unwrapped
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    try:
        observation, info = env.reset(seed=args.seed)
        start_area_m2 = info["covered_area_m2"]
        lines = [tum_line(0.0, observation["pose"])]
        episode_return, steps, ended = 0.0, 0, "step limit"
        with tqdm(total=args.steps, desc="exploring", unit="step") as bar:
            while True:
                action = policy(observation, rng, args.clearance)
                observation, reward, terminated, truncated, info = env.step(action)
                steps += 1
                episode_return += float(reward)
                lines.append(tum_line(steps * world_env.time_step_s, observation["pose"]))
                bar.update()
                bar.set_postfix(area_m2=f"{info['covered_area_m2']:.1f}")
                if terminated:
                    ended = "collision"
                    break
                if truncated:
                    break
    finally:
        env.close()
    elapsed_s = time.perf_counter() - started

    summary = {
        "ended_by": ended,
        "steps": steps,
        "simulated_s": steps * world_env.time_step_s,
        "covered_area_m2": info["covered_area_m2"],
        "start_area_m2": start_area_m2,
        # The default seed's room is made from the episode seed alone (``room_seed``): its true surface in all.
        "room_surface_area_m2": make_room(np.random.default_rng(args.seed)).surface_area_m2,
        "voxel_count": info["voxel_count"],
        "return": episode_return,
        "last_clearance_m": info["clearance_m"] if np.isfinite(info["clearance_m"]) else None,  # None: nothing near
        "seconds_per_step": elapsed_s / max(steps, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "trajectory.txt").write_text(
        "# timestamp tx ty tz qx qy qz qw (camera-to-world, OpenCV camera, metres)\n" + "\n".join(lines) + "\n")
    print(f"ended by {ended} after {steps} steps ({summary['simulated_s']:.1f} s simulated); world coverage "
          f"{start_area_m2:.1f} -> {info['covered_area_m2']:.1f} m² of the room's {summary['room_surface_area_m2']:.1f} m² "
          f"({info['voxel_count']} voxels), "
          f"return {episode_return:.1f}; {summary['seconds_per_step']:.2f} s per step; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
