"""Isaac Sim standalone script: each N physics steps, read a camera prim's pose, send it to a worldweave gateway,
and write the frame that comes back (PNG) with its canonical pose (JSON lines).

    worldweave serve --port 50051 &
    worldweave gateway --zmq tcp://127.0.0.1:5555 --server 127.0.0.1:50051 &
    ./python.sh -m pip install pyzmq msgpack        # into Isaac Sim's own Python
    ./python.sh worldweave_isaac.py --stage scene.usd --camera /World/Camera --world-id demo --out frames/
    ./python.sh worldweave_isaac.py --camera /World/Rig/Front --camera /World/Rig/Left ...   # a rig: one step

The gateway converts poses (convention "usd", declared with the stage's up axis and metersPerUnit), so Isaac Sim's
Python needs only pyzmq and msgpack, not grpc. Wire schema: ``sim_clients/gateway/SCHEMA.md``; conventions:
``docs/conventions.md``. The constants and pure functions above ``main`` are checked against
``worldweave.sim_clients.conventions`` by ``tests/test_engine_code.py``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import msgpack
import numpy as np
import zmq

CONVENTION = "usd"
SCHEMA_MAJOR = 2
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
"""A: a USD camera's local axes (x right, y up, looking down -z) of an OpenCV camera vector (x right, y down, z fwd)."""
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""W of a Y-up stage: (x, y, z) -> (x, -z, y). A Z-up stage has W = identity."""


def local_to_world_columns(gf_matrix_rows: np.ndarray) -> np.ndarray:
    """USD's ``Gf.Matrix4d`` is for row vectors (translation in the last row): transpose to the column form."""
    return np.asarray(gf_matrix_rows, dtype=np.float64).T


def canonical_c2w(local_to_world: np.ndarray, up_axis: str, metres_per_unit: float) -> np.ndarray:
    """A camera prim's column-form local-to-world 4x4 -> worldweave's canonical camera-to-world (OpenCV, Z up, m)."""
    world = Y_UP_TO_Z_UP if up_axis == "Y" else np.eye(3)
    c2w = np.eye(4)
    c2w[:3, :3] = world @ local_to_world[:3, :3] @ OPENGL_TO_OPENCV
    c2w[:3, 3] = metres_per_unit * (world @ local_to_world[:3, 3])
    return c2w


def focal_length_px(width: int, focal_length: float, horizontal_aperture: float) -> float:
    """Focal length in pixels of a USD camera: ``focalLength / horizontalAperture * width`` (square pixels)."""
    return focal_length / horizontal_aperture * width


def step_request(request_id: int, world_id: str, local_to_world: np.ndarray, width: int, height: int, fx: float) -> dict:
    """A gateway ``step`` request for one pose: the prim's local-to-world matrix, row-major, stage units."""
    return {"version": SCHEMA_MAJOR, "type": "step", "id": request_id, "body": {
        "world_id": world_id,
        "poses": [{"matrix": [float(v) for v in local_to_world.reshape(16)]}],
        "intrinsics": {"width": width, "height": height, "fx": fx, "fy": fx, "cx": (width - 1) / 2, "cy": (height - 1) / 2},
        "format": {"image_encoding": "png"},
    }}


def rig_step_request(request_id: int, world_id: str, cameras_local_to_world: list[np.ndarray], width: int, height: int,
                     fxs: list[float]) -> dict:
    """A gateway ``step`` request for a rig of cameras read at one instant: the body is the first camera (its
    column-form local-to-world is the pose), each camera's mount is its transform relative to it
    (``body^-1 @ camera``, stage units), and each camera has its own focal length in pixels."""
    body = np.asarray(cameras_local_to_world[0], dtype=np.float64)
    cameras = []
    for local_to_world, fx in zip(cameras_local_to_world, fxs):
        mount = np.linalg.solve(body, np.asarray(local_to_world, dtype=np.float64))
        cameras.append({"mount": {"matrix": [float(v) for v in mount.reshape(16)]},
                        "intrinsics": {"width": width, "height": height, "fx": fx, "fy": fx, "cx": (width - 1) / 2,
                                       "cy": (height - 1) / 2}})
    return {"version": SCHEMA_MAJOR, "type": "step", "id": request_id, "body": {
        "world_id": world_id,
        "poses": [{"matrix": [float(v) for v in body.reshape(16)]}],
        "rig": {"cameras": cameras},
        "format": {"image_encoding": "png"},
    }}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", help="USD file to open (default: the stage Isaac Sim starts with)")
    parser.add_argument("--camera", action="append", help="camera prim path (default /World/Camera); several make a rig "
                        "stepped as one request, its body the first camera")
    parser.add_argument("--world-id", default="demo")
    parser.add_argument("--gateway", default="tcp://127.0.0.1:5555")
    parser.add_argument("--out", default="worldweave_frames", help="folder for PNG frames and poses.jsonl")
    parser.add_argument("--every", type=int, default=10, help="send a pose every N physics steps")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    parser.add_argument("--headless", action="store_true")
    args = parser.parse_args()

    from isaacsim import SimulationApp  # must start before any omni / pxr import

    app = SimulationApp({"headless": args.headless})
    import omni.usd
    from omni.isaac.core import World
    from pxr import Usd, UsdGeom

    if args.stage:
        omni.usd.get_context().open_stage(args.stage)
    stage = omni.usd.get_context().get_stage()
    paths = args.camera or ["/World/Camera"]
    prims = [stage.GetPrimAtPath(path) for path in paths]
    for path, prim in zip(paths, prims):
        if not prim.IsValid() or not prim.IsA(UsdGeom.Camera):
            raise SystemExit(f"no camera prim at {path}")
    up_axis = str(UsdGeom.GetStageUpAxis(stage))
    metres_per_unit = float(UsdGeom.GetStageMetersPerUnit(stage))
    width, height = args.size
    fxs = [focal_length_px(width, camera.GetFocalLengthAttr().Get(), camera.GetHorizontalApertureAttr().Get())
           for camera in map(UsdGeom.Camera, prims)]

    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(args.gateway)
    socket.send(msgpack.packb({"version": SCHEMA_MAJOR, "type": "hello", "id": 0, "body": {
        "convention": CONVENTION, "up_axis": up_axis, "metres_per_unit": metres_per_unit, "client_name": "isaac-sim"}}))
    hello = msgpack.unpackb(socket.recv())
    if hello["type"] == "error":
        raise SystemExit(f"gateway refused hello: {hello['body']['code']}: {hello['body']['message']}")

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    poses_file = (out / "poses.jsonl").open("a")
    state = {"step": 0, "next_id": 1, "waiting": False}

    def on_physics_step(step_size_s: float) -> None:
        if state["waiting"] and socket.poll(0):
            state["waiting"] = False
            reply = msgpack.unpackb(socket.recv())
            body = reply["body"]
            if reply["type"] == "error":
                print(f"[worldweave] {body['code']}: {body['message']}")
            else:  # one step_reply per frame of the request (per camera of a rig)
                state["waiting"] = not body["last_in_request"]
                frame = body["frame"]
                name = f"{frame['frame_id']:06d}.png"
                (out / name).write_bytes(frame["rgb"]["data"])
                local_to_world = np.array(frame["pose"]["matrix"]).reshape(4, 4)
                c2w = canonical_c2w(local_to_world, up_axis, metres_per_unit)
                poses_file.write(json.dumps({"file": name, "frame_id": frame["frame_id"], "camera": paths[body["camera_index"]],
                                             "c2w_opencv_z_up_m": c2w.tolist(), "coverage": frame["coverage"]}) + "\n")
                poses_file.flush()
        state["step"] += 1
        if not state["waiting"] and state["step"] % args.every == 0:
            now = Usd.TimeCode.Default()
            poses = [local_to_world_columns(np.array(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(now)))
                     for prim in prims]
            request = (step_request(state["next_id"], args.world_id, poses[0], width, height, fxs[0]) if len(prims) == 1
                       else rig_step_request(state["next_id"], args.world_id, poses, width, height, fxs))
            socket.send(msgpack.packb(request))
            state["next_id"] += 1
            state["waiting"] = True

    world = World()
    world.reset()
    world.add_physics_callback("worldweave", on_physics_step)
    while app.is_running():
        world.step(render=not args.headless)
    poses_file.close()
    app.close()


if __name__ == "__main__":
    main()
