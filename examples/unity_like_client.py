"""A stand-in Unity engine loop that talks to worldweave through the ZMQ gateway in Unity's own conventions.

What ``sim_clients/unity/WorldweaveCamera.cs`` does in Unity, as a Python loop: the engine keeps a camera Transform
in Unity terms (left-handed, **Y up**, metres; rotation a quaternion ``x, y, z, w`` built like
``Quaternion.Euler(pitch, yaw, 0)``; ``Camera.fieldOfView`` vertical), declares ``"unity"`` once in ``hello`` and sends
the Transform as it is: the gateway converts both ways. The world is seeded with exact views of a procedural room
(``worldweave.bridge.eval.scenes``), their poses sent as Unity Transforms too. Each ``Update()`` tick walks the
camera along its level heading while it turns left, so it circles the room's centre, and asks for that tick's
frame (``step``). Run against a server (a gateway is started in this process unless ``--gateway`` names one):

    worldweave serve --port 50051 &
    python examples/unity_like_client.py --server 127.0.0.1:50051 --out out/unity
    worldweave gateway --zmq tcp://127.0.0.1:5555 --server 127.0.0.1:50051 &
    python examples/unity_like_client.py --gateway tcp://127.0.0.1:5555

Writes, under ``--out``: ``frames/NNNNNN.png`` (each tick's generated frame) and ``unity_log.json``: per tick the
Transform sent and the pose the gateway sent back (both Unity: position x right, y up, z forward; rotation x, y, z, w),
the memory version, coverage and frame id.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from worldweave.bridge.eval.scenes import heading_pose, make_room
from worldweave.proto.geometry import Intrinsics, Quaternion
from worldweave.sim_clients.conventions import UNITY, TransformPose
from worldweave.sim_clients.gateway.engine_client import GatewayClient
from worldweave.sim_clients.gateway.messages import pose_from_wire, pose_to_wire
from worldweave.sim_clients.gateway.server import BackgroundGateway

EYE_HEIGHT_M = 1.5
"""Camera height above the room's floor (Unity y), metres."""
ORBIT_RADIUS_M = 1.0
"""Radius of the circle the camera walks around the room's centre, metres."""
PITCH_DEG = 10.0
"""The camera's Euler x angle, degrees: in Unity, positive tilts the view down (towards the floor)."""


def unity_euler(pitch_deg: float, yaw_deg: float) -> Quaternion:
    """Unity's ``Quaternion.Euler(pitch, yaw, 0)``: yaw about Unity +y after pitch about +x (Unity applies z, x, y).

    In Unity's left-handed axes, positive pitch tilts the view down and positive yaw turns it right.
    """
    p, y = math.radians(pitch_deg) / 2, math.radians(yaw_deg) / 2
    # Hamilton product q_yaw(about y) * q_pitch(about x).
    return Quaternion(qw=math.cos(y) * math.cos(p), qx=math.cos(y) * math.sin(p), qy=math.sin(y) * math.cos(p),
                      qz=-math.sin(y) * math.sin(p))


def level_forward(yaw_deg: float) -> np.ndarray:
    """The level heading of a Unity camera at ``yaw_deg``: its ``transform.forward`` with pitch 0 (Unity axes: x
    right, y up, z forward)."""
    return np.array([math.sin(math.radians(yaw_deg)), 0.0, math.cos(math.radians(yaw_deg))])


def unity_pose_dict(pose: TransformPose) -> dict[str, object]:
    """A Unity Transform for the log: position (x, y, z metres) and rotation (x, y, z, w)."""
    q = pose.rotation
    return {"position": [float(v) for v in pose.position], "rotation": {"x": q.qx, "y": q.qy, "z": q.qz, "w": q.qw}}


def raw_rgb(image: dict) -> np.ndarray:
    """A ``raw`` wire image (``{width, height, encoding, data}``) as uint8 (H, W, 3)."""
    return np.frombuffer(image["data"], np.uint8).reshape(image["height"], image["width"], 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:50051",
                        help="address of a running `worldweave serve` (for the in-process gateway)")
    parser.add_argument("--gateway", default=None, help="ZMQ address of a running `worldweave gateway` (tcp://...)")
    parser.add_argument("--out", type=Path, default=Path("out/unity_like_client"), help="folder to write")
    parser.add_argument("--ticks", type=int, default=120, help="Update() ticks, one generated frame each")
    parser.add_argument("--fps", type=float, default=15.0, help="engine ticks per simulated second")
    parser.add_argument("--turn-rate", type=float, default=30.0, help="degrees per second the camera turns left")
    parser.add_argument("--width", type=int, default=160, help="Screen.width, pixels")
    parser.add_argument("--height", type=int, default=120, help="Screen.height, pixels")
    parser.add_argument("--fov-y", type=float, default=60.0, help="Camera.fieldOfView (vertical), degrees")
    parser.add_argument("--seed", type=int, default=0, help="seed of the procedural room")
    args = parser.parse_args(argv)

    # The world side of the engine: a room, and its exact views from the centre (canonical poses, made Unity poses).
    room = make_room(args.seed)
    camera = Intrinsics.from_fov(args.width, args.height, fov_y_deg=args.fov_y)
    views = []
    for k in range(4):
        pose = heading_pose(np.array([0.0, 0.0, EYE_HEIGHT_M]), k * math.pi / 2)
        view = room.render(pose, camera)
        views.append({"rgb": {"width": args.width, "height": args.height, "encoding": "raw", "data": view.rgb.tobytes()},
                      "depth": {"width": args.width, "height": args.height, "encoding": "float16_m",
                                "data": view.depth.astype("<f2").tobytes()},
                      "pose": pose_to_wire(UNITY.from_canonical(pose.matrix))})
    # Unity's Camera: Screen size and the vertical field of view; the gateway makes the pinhole intrinsics.
    unity_camera = {"width": args.width, "height": args.height, "fov_y_deg": args.fov_y}

    (args.out / "frames").mkdir(parents=True, exist_ok=True)
    dt = 1.0 / args.fps
    speed_mps = math.radians(args.turn_rate) * ORBIT_RADIUS_M  # walking on a circle of ORBIT_RADIUS_M
    position = np.array([ORBIT_RADIUS_M, EYE_HEIGHT_M, 0.0])  # Unity: 1 m right of the centre (canonical y = -1)
    yaw_deg = 0.0  # facing Unity +z (canonical +x), tangent to the circle
    log = []
    with contextlib.ExitStack() as stack:
        address = args.gateway or stack.enter_context(BackgroundGateway(args.server)).address
        engine = stack.enter_context(GatewayClient(address, "unity"))
        print(f"gateway {address}: convention {engine.info['convention']}, pose form {engine.info['pose_form']}, "
              f"generator {engine.info['server']['generator']['name']}")
        world_id = engine.call("create_world", seed={"frames": views, "intrinsics": unity_camera,
                                                     "prompt": "a furnished room"})["world"]["world_id"]
        started = time.perf_counter()
        try:
            for tick in tqdm(range(args.ticks), desc="Update()", unit="frame"):
                # Update(): walk along the level heading, turn left (negative yaw in Unity), send the Transform.
                position = position + level_forward(yaw_deg) * speed_mps * dt
                yaw_deg -= args.turn_rate * dt
                sent = TransformPose(position, unity_euler(PITCH_DEG, yaw_deg))
                (reply,) = engine.stream("step", world_id=world_id, poses=[pose_to_wire(sent)])
                frame = reply["frame"]
                Image.fromarray(raw_rgb(frame["rgb"])).save(args.out / "frames" / f"{tick:06d}.png")
                received = pose_from_wire(frame["pose"], "pose", UNITY.pose_form)
                log.append({"tick": tick, "time_s": (tick + 1) * dt, "sent": unity_pose_dict(sent),
                            "received": unity_pose_dict(received), "memory_version": frame["version"],
                            "coverage": frame["coverage"], "frame_id": frame["frame_id"]})
        finally:
            engine.call("delete_world", world_id=world_id)
        elapsed_s = time.perf_counter() - started
    (args.out / "unity_log.json").write_text(json.dumps({"convention": "unity", "fov_y_deg": args.fov_y,
                                                         "ticks": log}, indent=1))
    coverage = np.mean([entry["coverage"] for entry in log])
    print(f"{args.ticks} ticks in {elapsed_s:.1f} s ({args.ticks / elapsed_s:.1f} frames/s); mean memory coverage "
          f"{coverage:.2f}; frames and unity_log.json in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
