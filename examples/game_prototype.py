"""A game prototype's loop: a scripted camera asks for a frame per pose and picks what is under the crosshair.

The world is seeded with exact views of a procedural room (``worldweave.bridge.eval.scenes``) from its spawn point.
A scripted camera then follows a path (a lap of the room, or a look-around on the spot); at each pose the game asks
the server for the frame (``WorldClient.step``: generated and remembered) and casts a ray from the screen centre into
the world's memory (``client.queries.raycast``), as a game picks the object under its crosshair (the pixel nearest the
principal point). The hit's distance agrees with the frame's own depth there up to the memory's voxel size.

    worldweave serve --port 50051 &
    python examples/game_prototype.py --server 127.0.0.1:50051 --path loop --frames 90 --out out/game

Writes, under ``--out``: ``frames/NNNNNN.png`` (each frame with a crosshair, green on a hit, red on a miss) and
``picks.json``: per frame the camera pose (4x4 camera-to-world, OpenCV camera, world Z up, metres), whether the ray
hit, the hit distance (metres) and point (world metres), its colour, whether the ray crossed unobserved space, and the
ray length to the frame's own depth at that pixel (metres, 0 where unknown); and a summary (hit rate, median
|pick distance - frame ray length|).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from worldweave.bridge.eval.scenes import heading_pose, make_room
from worldweave.bridge.eval.trajectories import make_trajectory
from worldweave.proto.geometry import Intrinsics
from worldweave.sim_clients.client import WorldClient

MAX_PICK_RANGE_M = 30.0
"""How far the crosshair ray reaches, metres."""


def pixel_ray(c2w: np.ndarray, intrinsics: Intrinsics, u: int, v: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The ray through the centre of pixel ``(u, v)``: origin (world metres), unit direction (world), and the ray
    length per metre of depth along the optical axis (``|((u - cx) / fx, (v - cy) / fy, 1)|``)."""
    direction_cam = np.array([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, 1.0])
    length_per_depth = float(np.linalg.norm(direction_cam))
    return c2w[:3, 3].copy(), c2w[:3, :3] @ direction_cam / length_per_depth, length_per_depth


def draw_crosshair(rgb: np.ndarray, u: int, v: int, color: tuple[int, int, int], size: int = 5) -> np.ndarray:
    """A copy of ``rgb`` with a plus sign centred at pixel ``(u, v)``."""
    out = np.array(rgb)
    h, w = out.shape[:2]
    out[v, max(u - size, 0): min(u + size + 1, w)] = color
    out[max(v - size, 0): min(v + size + 1, h), u] = color
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:50051", help="address of a running `worldweave serve`")
    parser.add_argument("--out", type=Path, default=Path("out/game_prototype"), help="folder to write")
    parser.add_argument("--path", choices=("loop", "look-around"), default="loop",
                        help="the scripted camera: a lap of the room, or a full turn on the spot and back")
    parser.add_argument("--frames", type=int, default=90, help="poses on the path (one frame and one pick each)")
    parser.add_argument("--width", type=int, default=160, help="image width, pixels")
    parser.add_argument("--height", type=int, default=120, help="image height, pixels")
    parser.add_argument("--fov-x", type=float, default=80.0, help="horizontal field of view, degrees")
    parser.add_argument("--voxel-size", type=float, default=0.03, help="voxel edge of the world's memory, metres")
    parser.add_argument("--seed", type=int, default=0, help="seed of the procedural room")
    args = parser.parse_args(argv)

    # 1. The level: a room, seen exactly from its spawn in four directions.
    room = make_room(args.seed)
    intrinsics = Intrinsics.from_fov(args.width, args.height, fov_x_deg=args.fov_x)
    seed = []
    for k in range(4):
        pose = heading_pose(room.start_position_m, room.start_heading_rad + k * math.pi / 2)
        view = room.render(pose, intrinsics)
        seed.append((view.rgb, view.depth, pose.matrix))
    path = [pose.matrix for pose in make_trajectory(args.path, room, args.frames, seed=args.seed).poses]

    (args.out / "frames").mkdir(parents=True, exist_ok=True)
    u, v = int(round(intrinsics.cx)), int(round(intrinsics.cy))
    picks = []
    with WorldClient(args.server) as client:
        world = client.worlds.create(seed, intrinsics, prompt="a furnished room", voxel_size_m=args.voxel_size)
        try:
            # 2. The game loop: a frame per pose, then a pick under the crosshair.
            for index, c2w in enumerate(tqdm(path, desc="game loop", unit="frame")):
                (frame,) = client.step(world.world_id, c2w, depth="float16_m")
                origin, direction, length_per_depth = pixel_ray(frame.pose, intrinsics, u, v)
                ray = client.queries.raycast(world.world_id, origin[None], direction[None], MAX_PICK_RANGE_M)
                hit = bool(ray.hit[0])
                color = (0, 255, 0) if hit else (255, 0, 0)
                Image.fromarray(draw_crosshair(frame.rgb, u, v, color)).save(args.out / "frames" / f"{index:06d}.png")
                picks.append({
                    "frame": index,
                    "c2w": frame.pose.tolist(),
                    "hit": hit,
                    "distance_m": float(ray.distance_m[0]) if hit else None,
                    "point_m": ray.points_m[0].tolist() if hit else None,
                    "color": ray.colors[0].tolist() if hit else None,
                    "crossed_unknown": bool(ray.unknown[0]),
                    "centre_ray_length_m": float(frame.depth[v, u]) * length_per_depth,  # 0: depth unknown
                })
        finally:
            client.worlds.delete(world.world_id)

    hits = [p for p in picks if p["hit"]]
    errors = [abs(p["distance_m"] - p["centre_ray_length_m"]) for p in hits if p["centre_ray_length_m"] > 0]
    summary = {"frames": len(picks), "hits": len(hits), "hit_rate": len(hits) / len(picks),
               "median_abs_ray_minus_frame_m": float(np.median(errors)) if errors else None,
               "voxel_size_m": args.voxel_size}
    (args.out / "picks.json").write_text(json.dumps({"summary": summary, "picks": picks}, indent=1))
    median = summary["median_abs_ray_minus_frame_m"]
    print(f"{len(picks)} frames, {len(hits)} picks hit ({summary['hit_rate']:.0%}); median |pick distance - the "
          f"frame's depth there| {'n/a' if median is None else f'{median:.3f} m'} at {args.voxel_size} m voxels; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
