"""The README's client snippet, runnable: seed a world from one RGB-D frame, step a camera through it, mirror its
point cloud, cast rays into it and remove part of it.

    python examples/minimal_client.py                          # starts `worldweave serve` on a free loopback port
    python examples/minimal_client.py --server 127.0.0.1:50051  # or uses a running one

Below the marker line this file is the two Python blocks of README.md's "Serving worlds" section, word for word
(tests/test_readme_snippet.py checks that, and runs the README's blocks against a server on loopback).
"""

import argparse
import os

from worldweave.sim_clients.gym_env.local_server import LocalServer

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--server", help="host:port of a running `worldweave serve` (default: $WORLDWEAVE_SERVER, else "
                    "start one on a free loopback port for this run)")
arguments = parser.parse_args()
local_server = None
if arguments.server:
    os.environ["WORLDWEAVE_SERVER"] = arguments.server
elif "WORLDWEAVE_SERVER" not in os.environ:
    local_server = LocalServer()
    os.environ["WORLDWEAVE_SERVER"] = local_server.address

# ----------------------------------------------------------------------------------- README.md, "Serving worlds"
import os

import numpy as np

from worldweave.proto import Intrinsics
from worldweave.sim_clients import WorldClient

address = os.environ.get("WORLDWEAVE_SERVER", "127.0.0.1:50051")  # host:port of `worldweave serve`
intrinsics = Intrinsics.from_fov(320, 240, fov_x_deg=75.0)       # pixels: fx, fy, cx, cy, width, height
rgb = np.full((240, 320, 3), 160, np.uint8)                       # seed image: uint8 (H, W, 3) RGB
depth_m = np.full((240, 320), 3.0, np.float32)                    # its depth: float32 (H, W) metres, 0 = unknown
c2w = np.array([[0.0, 0.0, 1.0, 0.0],                             # float64 4x4 camera-to-world: an OpenCV camera
                [-1.0, 0.0, 0.0, 0.0],                            # (x right, y down, z forward) 1.5 m above the
                [0.0, -1.0, 0.0, 1.5],                            # floor, looking along world +x (Z up, metres)
                [0.0, 0.0, 0.0, 1.0]])
poses = np.stack([c2w] * 4)                                       # float64 (4, 4, 4): four camera poses,
poses[:, 1, 3] = [0.0, -0.05, -0.10, -0.15]                       # sidestepping 5 cm to the right each

client = WorldClient(address)                                     # checks the server's API version
print(client.info.api_version, client.info.capabilities)          # the handshake's answer
world = client.worlds.create([(rgb, depth_m, c2w)], intrinsics, prompt="a grey wall")
for frame in client.step_stream(world.world_id, poses):           # one generated frame per pose, in order
    print(frame.frame_id, frame.rgb.shape, frame.depth.dtype)     # uint8 (240, 320, 3); float32 (240, 320) metres

from worldweave.sim_clients import box_region

world_id = world.world_id
mirror = client.point_cloud.mirror(world_id)                      # a local copy of the voxel cloud
positions_m, colors = mirror.points()                             # float32 (N, 3) voxel centres; uint8 (N, 3)
origins_m = np.tile([0.0, 0.0, 1.5], (8, 1))                      # float (8, 3) ray origins, world metres
directions = np.column_stack([np.ones(8), np.linspace(-0.5, 0.5, 8), np.zeros(8)])  # (8, 3), any length
hits = client.queries.raycast(world_id, origins_m, directions, max_range_m=10.0)
print(hits.hit, hits.distance_m, hits.unknown)                    # bool (8,); float32 (8,) metres; bool (8,)
client.edits.remove_region(world_id, box_region([2.5, -0.5, 1.0], [3.5, 0.5, 2.0]))  # never comes back
mirror = client.point_cloud.mirror(world_id, mirror)              # catch up: the removal arrives as a change
client.close()
# ----------------------------------------------------------------------------------- end of the README's code
if local_server is not None:
    local_server.stop()
