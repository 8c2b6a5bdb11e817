"""Labels in memory (a semantic class and an instance id per voxel) and the semantic / instance / normal images
rendered from it: the fusion rule, edits, storage, forks, the acceptance figures (box IoU against an exact render,
normals on the room's floor and walls against the mesh) and the gRPC path end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from worldweave.bridge.eval.scenes import heading_pose
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.labels import LabelRequest, render_labels
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.bridge.open3d_import import load_open3d
from worldweave.bridge.regions import Box
from worldweave.bridge.world import Seed, World
from worldweave.proto.errors import InvalidFrameError, InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.proto.worldweave.v1 import world_pb2 as pb

INTRINSICS = Intrinsics(fx=200.0, fy=200.0, cx=159.5, cy=119.5, width=320, height=240)
SMALL = Intrinsics(fx=100.0, fy=100.0, cx=79.5, cy=59.5, width=160, height=120)
"""The same view at half the size, for the tests that check plumbing rather than accuracy."""
VIEW = heading_pose(np.array([0.0, 0.5, 1.4]), -math.pi / 2, pitch_deg=25.0)
"""Looking at the room's -y wall and floor from 3.5 m, pitched down 25 degrees."""
BOX_MIN, BOX_MAX = np.array([-0.4, -1.2, 0.0]), np.array([0.2, -0.6, 0.6])
"""A 0.6 m box on the floor in front of ``VIEW``, world metres (corners on the 2 cm voxel grid)."""
CLASS, INSTANCE = 7, 42
ALL = LabelRequest(semantic=True, instance=True, normals=True)


def box_points(lo: np.ndarray, hi: np.ndarray, step_m: float = 0.01) -> np.ndarray:
    """(N, 3) float32 points on a 1 cm grid over the faces of the box [lo, hi], 1 mm inside it (a point exactly on
    a face at a voxel boundary belongs to the voxel beyond)."""
    axes = [np.arange(a, b + step_m / 2, step_m) for a, b in zip(lo, hi)]
    faces = []
    for axis in range(3):
        for side in (lo[axis], hi[axis]):
            grids = np.meshgrid(*[np.array([side]) if b == axis else axes[b] for b in range(3)], indexing="ij")
            faces.append(np.stack([g.reshape(-1) for g in grids], axis=1))
    return np.clip(np.unique(np.concatenate(faces), axis=0), lo + 1e-3, hi - 1e-3).astype(np.float32)


def cast(vertices: np.ndarray, triangles: np.ndarray, pose: Pose, intrinsics: Intrinsics) -> dict[str, np.ndarray]:
    """Open3D's exact raycast of a mesh through every integer pixel centre: t_hit (inf: miss), primitive_ids."""
    o3d = load_open3d()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(triangles.astype(np.uint32)))
    rays = np.empty((intrinsics.width * intrinsics.height, 6), np.float32)
    rays[:, :3] = pose.position
    rays[:, 3:] = intrinsics.pixel_rays(np.float64).reshape(-1, 3) @ pose.rotation.T
    hits = scene.cast_rays(o3d.core.Tensor(rays))
    return {"t_hit": hits["t_hit"].numpy(), "primitive_ids": hits["primitive_ids"].numpy().astype(np.int64)}


def box_mesh(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o3d = load_open3d()
    mesh = o3d.geometry.TriangleMesh.create_box(*(hi - lo)).translate(lo)
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles)


@pytest.fixture(scope="module")
def room_world(room) -> World:
    """A world seeded with the exact room at ``VIEW``."""
    return World(Seed([room.render(VIEW, INTRINSICS)]))


@pytest.fixture(scope="module")
def small_world(room) -> World:
    """A world seeded with the exact room at ``VIEW``, ``SMALL`` images."""
    return World(Seed([room.render(VIEW, SMALL)]))


# ------------------------------------------------------------------------------------------------ acceptance


def test_an_inserted_box_shows_in_the_semantic_and_instance_images_as_the_exact_render(room_world: World):
    world = room_world.fork()
    points = box_points(BOX_MIN, BOX_MAX)
    world.insert(points, np.full((len(points), 3), 200, np.uint8), semantic_class=CLASS, instance_id=INSTANCE)
    images = world.render_labels([VIEW], LabelRequest(semantic=True, instance=True))[0]
    truth = np.isfinite(cast(*box_mesh(BOX_MIN, BOX_MAX), VIEW, INTRINSICS)["t_hit"]).reshape(INTRINSICS.shape)
    for name, image, value in (("semantic", images.semantic, CLASS), ("instance", images.instance, INSTANCE)):
        shown = image == value
        iou = (shown & truth).sum() / (shown | truth).sum()
        print(f"{name}: box pixels {truth.sum()}, labelled {shown.sum()}, IoU {iou:.4f}")
        assert iou >= 0.95
        assert set(np.unique(image[~shown]).tolist()) == {0}  # the room was seeded without labels
    assert images.semantic.dtype == np.uint16 and images.instance.dtype == np.uint32 and images.normals is None


def test_normals_on_the_room_floor_and_walls_are_within_5_degrees(room, room_world: World):
    normals = room_world.render_labels([VIEW], LabelRequest(normals=True))[0].normals.reshape(-1, 3)
    hits = cast(room.vertices, room.triangles, VIEW, INTRINSICS)
    ids = hits["primitive_ids"]
    # The room's mesh starts with the floor (triangles 0, 1), the ceiling (2, 3) and the four walls (4..11).
    floor_or_wall = np.isfinite(hits["t_hit"]) & ((ids < 2) | ((ids >= 4) & (ids < 12)))
    truth = room.triangle_axes[np.where(floor_or_wall, ids, 0), 2]
    to_camera = VIEW.position - (VIEW.position + (INTRINSICS.pixel_rays(np.float64).reshape(-1, 3) @ VIEW.rotation.T)
                                 * np.where(floor_or_wall, hits["t_hit"], 0)[:, None])
    truth = np.where(((truth * to_camera).sum(axis=1) < 0)[:, None], -truth, truth)  # facing the camera
    cosine = (normals[floor_or_wall] * truth[floor_or_wall]).sum(axis=1)
    within = cosine >= math.cos(math.radians(5.0))
    known = np.abs(normals[floor_or_wall]).sum(axis=1) > 0
    print(f"floor and wall pixels {floor_or_wall.sum()}: within 5 deg {within.mean():.4f}, "
          f"normal known {known.mean():.4f}, within 5 deg where known {within[known].mean():.4f}")
    assert floor_or_wall.mean() > 0.8 and within.mean() >= 0.95
    lengths = np.linalg.norm(normals, axis=1)
    assert np.allclose(lengths[lengths > 0], 1.0, atol=1e-5)


def test_the_numba_and_torch_renderers_give_the_same_label_images(small_world: World):
    world = small_world.fork()
    world.label(Box(BOX_MIN - 1.0, BOX_MAX), 3, 9)
    voxel_map = world.memory.voxel_map
    config = world.memory.config
    options = {"splat": config.weave.splat, "footprint_falloff": config.weave.footprint_falloff}
    numba = render_labels(voxel_map, VIEW, SMALL, ALL, backend="numba", **options)
    torch_ = render_labels(voxel_map, VIEW, SMALL, ALL, backend="torch", **options)
    assert (numba.semantic == 3).sum() > 1000
    np.testing.assert_array_equal(numba.semantic, torch_.semantic)
    np.testing.assert_array_equal(numba.instance, torch_.instance)
    np.testing.assert_array_equal(numba.normals, torch_.normals)


# ------------------------------------------------------------------------------------------------ fusion and edits


def labelled_frame(semantic: int | None, instance: int | None, confidence: float = 1.0) -> RGBDFrame:
    """A 16 x 12 frame of a wall 2 m ahead, every pixel labelled ``semantic`` / ``instance`` (None: no image)."""
    intrinsics = Intrinsics(fx=20.0, fy=20.0, cx=7.5, cy=5.5, width=16, height=12)
    shape = intrinsics.shape
    return RGBDFrame(
        np.full((*shape, 3), 100, np.uint8), np.full(shape, 2.0, np.float32), Pose.identity(), intrinsics,
        confidence=np.full(shape, confidence, np.float32),
        semantic=None if semantic is None else np.full(shape, semantic, np.uint16),
        instance=None if instance is None else np.full(shape, instance, np.uint32),
    )


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_the_most_confident_labelled_observation_wins_and_unlabelled_ones_never_clear(backend: str):
    voxel_map = VoxelMap(1.0, backend=backend)  # 1 m voxels: each holds pixels of both column sets below
    voxel_map.integrate(labelled_frame(5, 50, confidence=0.9), frame_id=0)
    assert set(voxel_map.voxels().semantic.tolist()) == {5} and set(voxel_map.voxels().instance.tolist()) == {50}
    voxel_map.integrate(labelled_frame(6, None, confidence=0.3), frame_id=1)  # a later labelled frame wins ...
    voxel_map.integrate(labelled_frame(0, 0), frame_id=2)  # ... and unlabelled pixels never clear it,
    voxel_map.integrate(labelled_frame(None, None), frame_id=3)  # nor does a frame without label images
    voxels = voxel_map.voxels()
    assert set(voxels.semantic.tolist()) == {6} and set(voxels.instance.tolist()) == {50}
    # Within one frame, per voxel the most confident labelled pixel wins.
    frame = labelled_frame(8, None)
    semantic, confidence = frame.semantic.copy(), frame.confidence.copy()
    semantic[:, ::2], confidence[:, ::2] = 9, 0.4  # every other column, less sure: loses wherever it shares a voxel
    voxel_map.integrate(RGBDFrame(frame.rgb, frame.depth, frame.pose, frame.intrinsics, confidence, semantic), frame_id=4)
    assert set(voxel_map.voxels().semantic.tolist()) == {8}
    # Dynamic boxes (the non-fused path) keep their content out of the labels too.
    keep_out = Box(np.array([-10.0, -10.0, 0.0]), np.array([0.0, 10.0, 10.0]))
    voxel_map.integrate(labelled_frame(11, 110), frame_id=5, exclude_regions=[keep_out])
    voxels = voxel_map.voxels()
    assert set(voxels.semantic[voxels.positions_m[:, 0] > 0.05].tolist()) == {11}
    assert set(voxels.semantic[voxels.positions_m[:, 0] < -0.05].tolist()) == {8}


def test_insert_and_label_region_tag_voxels_and_removed_rows_do_not_leak_labels():
    voxel_map = VoxelMap(0.02)
    points = box_points(BOX_MIN, BOX_MAX)
    colors = np.full((len(points), 3), 50, np.uint8)
    voxel_map.insert(points, colors, semantic_class=CLASS, instance_id=INSTANCE)
    voxels = voxel_map.voxels()
    assert set(voxels.semantic.tolist()) == {CLASS} and set(voxels.instance.tolist()) == {INSTANCE}
    version = voxel_map.version
    top = Box(np.array([-1.0, -2.0, 0.3]), np.array([1.0, 0.0, 1.0]))
    count = voxel_map.label(top, 12, 0)
    changes = voxel_map.changes_since(version)
    assert count > 0 and len(changes.changed) == count and set(changes.changed.semantic.tolist()) == {12}
    assert set(changes.changed.instance.tolist()) == {0}
    voxel_map.insert(points[:10], colors[:10])  # an unlabelled insert leaves labels as they are
    assert set(voxel_map.voxels().semantic.tolist()) == {CLASS, 12}
    voxel_map.remove(Box(BOX_MIN - 1, BOX_MAX + 1))
    voxel_map.insert(points + np.float32(3.0), colors)  # new voxels reuse the removed rows: unlabelled
    assert set(voxel_map.voxels().semantic.tolist()) == {0} and set(voxel_map.voxels().instance.tolist()) == {0}
    with pytest.raises(InvalidInputError, match="semantic_class must be in 0..65535"):
        voxel_map.label(top, 70000, 0)
    with pytest.raises(InvalidInputError, match="instance_id must be in"):
        voxel_map.insert(points, colors, instance_id=-1)
    frame = labelled_frame(None, None)
    with pytest.raises(InvalidFrameError, match="semantic values must lie in 0..65535"):
        RGBDFrame(frame.rgb, frame.depth, frame.pose, frame.intrinsics, semantic=np.full((12, 16), 1 << 20))


def test_unlabelled_voxels_just_in_front_of_a_labelled_surface_do_not_hide_its_labels():
    """Generated frames carry no labels, and re-fusing them adds voxels up to a voxel in front of labelled surfaces:
    those must not erase the labels from the images, while an unlabelled surface well in front still hides them."""
    voxel_map = VoxelMap(0.02)
    xs, zs = np.meshgrid(np.arange(-1.0, 1.0, 0.01), np.arange(-1.0, 1.0, 0.01))

    def wall(y_m: float, x_from: float, x_to: float) -> np.ndarray:
        keep = (xs >= x_from) & (xs < x_to)
        return np.stack([xs[keep], np.full(int(keep.sum()), y_m), zs[keep]], axis=1).astype(np.float32)

    labelled, near, far = wall(1.005, -1.0, 1.0), wall(0.985, -1.0, 0.0), wall(0.905, 0.0, 1.0)
    voxel_map.insert(labelled, np.full((len(labelled), 3), 90, np.uint8), semantic_class=5, instance_id=7)
    voxel_map.insert(near, np.full((len(near), 3), 90, np.uint8))  # one voxel in front, on the left
    voxel_map.insert(far, np.full((len(far), 3), 90, np.uint8))  # five voxels in front, on the right
    pose = Pose.look_at(np.zeros(3), np.array([0.0, 1.0, 0.0]), up=np.array([0.0, 0.0, 1.0]))
    images = render_labels(voxel_map, pose, SMALL, LabelRequest(semantic=True, instance=True))
    half = SMALL.width // 2
    assert (images.semantic[:, : half - 4] == 5).mean() > 0.95 and (images.instance[:, : half - 4] == 7).mean() > 0.95
    assert (images.semantic[:, half + 4:] == 0).mean() > 0.95 and (images.instance[:, half + 4:] == 0).mean() > 0.95


# ------------------------------------------------------------------------------------------------ storage and forks


def label_arrays(world: World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    voxels = world.memory.voxel_map.voxels().sorted_by_key()
    return voxels.keys, voxels.semantic, voxels.instance


def test_labels_survive_save_load_fork_and_restore_and_unlabelled_saves_are_unchanged(small_world: World, tmp_path: Path):
    plain = small_world.fork()
    plain.save(tmp_path / "plain")
    voxels = tmp_path / "plain" / "memory" / "voxels"
    assert not (voxels / "semantic.npy").exists() and not (voxels / "instance.npy").exists()
    assert {"semantic", "instance"}.isdisjoint(json.loads((voxels / "manifest.json").read_text())["files"])

    world = small_world.fork()
    world.label(Box(BOX_MIN - 1.0, BOX_MAX), 3, 9)
    checkpoint = world.checkpoint()
    fork = world.fork()
    world.label(Box(BOX_MIN - 1.0, BOX_MAX), 4, 0)  # neither the fork nor the checkpoint sees this
    np.testing.assert_array_equal(label_arrays(fork)[1][label_arrays(fork)[1] > 0], 3)
    saved = label_arrays(world)
    world.save(tmp_path / "world")
    loaded = World.load(tmp_path / "world")
    for before, after in zip(saved, label_arrays(loaded)):
        np.testing.assert_array_equal(before, after)
    loaded.restore(checkpoint.checkpoint_id)
    for before, after in zip(label_arrays(fork), label_arrays(loaded)):
        np.testing.assert_array_equal(before, after)

    # A save from before labels existed (no label arrays, no manifest entries) loads unlabelled.
    manifest = json.loads((tmp_path / "world" / "memory" / "voxels" / "manifest.json").read_text())
    for name in ("semantic", "instance"):
        del manifest["files"][name]
        (tmp_path / "world" / "memory" / "voxels" / f"{name}.npy").unlink()
    (tmp_path / "world" / "memory" / "voxels" / "manifest.json").write_text(json.dumps(manifest))
    old = World.load(tmp_path / "world")
    assert len(old.memory.voxel_map) == len(world.memory.voxel_map)
    assert not old.memory.voxel_map.voxels().semantic.any() and not old.memory.voxel_map.voxels().instance.any()


# ------------------------------------------------------------------------------------------------ gRPC


def test_labels_and_normals_over_grpc_end_to_end(client, room):
    seed = room.render(VIEW, INTRINSICS)
    semantic = np.zeros(INTRINSICS.shape, np.uint16)
    semantic[INTRINSICS.height // 2 :] = 2  # the lower half of the view (the floor) is class 2
    info = client.worlds.create([(seed.rgb, seed.depth, VIEW.matrix, semantic, None)], INTRINSICS)
    world_id = info.world_id
    try:
        points = box_points(BOX_MIN, BOX_MAX)
        client.edits.insert_points(world_id, points, np.full((len(points), 3), 200, np.uint8), semantic_class=CLASS,
                                   instance_id=INSTANCE)
        frame = client.render(world_id, VIEW.matrix, semantic=True, instance=True, normals=True)[0]
        assert frame.semantic.shape == INTRINSICS.shape and frame.instance.dtype == np.uint32
        assert {0, 2, CLASS} <= set(np.unique(frame.semantic).tolist())
        assert set(np.unique(frame.instance).tolist()) == {0, INSTANCE}
        np.testing.assert_array_equal(frame.semantic == CLASS, frame.instance == INSTANCE)
        assert frame.normals.shape == (*INTRINSICS.shape, 3) and np.abs(frame.normals).sum(axis=2).astype(bool).mean() > 0.9

        from worldweave.sim_clients.world_state import box_region

        edit = client.edits.label_region(world_id, box_region(BOX_MIN - 0.01, BOX_MAX + 0.01), 5, 6)
        assert edit.voxels > 0
        stepped = client.step(world_id, VIEW.matrix, semantic=True, depth=None)[0]
        assert stepped.instance is None and stepped.normals is None and 5 in stepped.semantic
        plain = client.render(world_id, VIEW.matrix)[0]
        assert plain.semantic is None and plain.instance is None and plain.normals is None

        with pytest.raises(InvalidInputError, match="semantic_class must be in 0..65535") as refused:
            client.call("LabelRegion", pb.LabelRegionRequest(world_id=world_id, region=box_region(BOX_MIN, BOX_MAX),
                                                             semantic_class=70000))
        assert refused.value.code == "INVALID_ARGUMENT"
    finally:
        client.worlds.delete(world_id)


def test_a_labelled_dynamic_box_labels_the_step_frame_pixels_inside_it_and_stays_out_of_memory(client, room):
    from worldweave.sim_clients.conversions import step_request
    from worldweave.sim_clients.world_state import box_region

    seed = room.render(VIEW, SMALL)
    world_id = client.worlds.create([(seed.rgb, seed.depth, VIEW.matrix)], SMALL).world_id
    lo, hi = np.array([-0.4, -1.2, -0.05]), np.array([0.2, -0.6, 0.3])  # around the floor in front of VIEW
    pose = heading_pose(np.array([0.3, 0.2, 1.2]), -math.pi / 2 + 0.3, pitch_deg=35.0)  # off the seed view: a plain
    # step there adds voxels in the box (echo frames re-splat memory), so "no new voxels" below has teeth
    try:
        client.edits.label_region(world_id, box_region(lo - 0.05, hi + 0.05), 3, 9)  # memory's own labels there
        shrunk = (lo + 0.02, hi - 0.02)  # voxel centres well inside the box (2 cm voxels)
        before = client.point_cloud.crop(world_id, *shrunk, min_confidence=0.0)
        box = ((lo + hi) / 2, (hi - lo) / 2, np.eye(3))
        frame, = client.step(world_id, pose.matrix, dynamic_boxes=[box], dynamic_box_labels=[(CLASS, INSTANCE)],
                             semantic=True, instance=True)
        memory, = client.render(world_id, pose.matrix, semantic=True, instance=True)  # same version as the frame

        # The mask from the frame's depth (float16 on the wire, ~1 mm: pixels within 3 mm of a face may go either way).
        points = pose.cam_to_world(SMALL.backproject(frame.depth.astype(np.float64)).reshape(-1, 3))
        known = (frame.depth > 0).reshape(-1)
        inside = (known & Box(lo + 0.003, hi - 0.003).contains(points)).reshape(SMALL.shape)
        outside = ~(known & Box(lo - 0.003, hi + 0.003).contains(points)).reshape(SMALL.shape)
        print(f"pixels inside the box {inside.sum()}, near its faces {(~inside & ~outside).sum()}")
        assert inside.sum() > 500 and (~inside & ~outside).sum() < 0.1 * inside.sum()
        assert (memory.semantic[inside] == 3).mean() > 0.9 and (memory.instance[inside] == 9).mean() > 0.9  # overridden:
        assert (frame.semantic[inside] == CLASS).all() and (frame.instance[inside] == INSTANCE).all()
        np.testing.assert_array_equal(frame.semantic[outside], memory.semantic[outside])
        np.testing.assert_array_equal(frame.instance[outside], memory.instance[outside])

        # Memory gained no voxels in the box and carries none of its ids.
        after = client.point_cloud.crop(world_id, *shrunk, min_confidence=0.0)
        assert frame.version > before.version and len(before.points_m) > 100
        np.testing.assert_array_equal(np.unique(after.points_m, axis=0), np.unique(before.points_m, axis=0))
        assert CLASS not in memory.semantic and INSTANCE not in memory.instance
        client.step(world_id, pose.matrix, depth=None)
        assert len(client.point_cloud.crop(world_id, *shrunk, min_confidence=0.0).points_m) > len(after.points_m)

        request = step_request(world_id, VIEW.matrix, pb.FrameFormat(), dynamic_boxes=[box])
        request.dynamic_box_instance_ids.extend([INSTANCE, INSTANCE])
        with pytest.raises(InvalidInputError, match="dynamic_box_instance_ids has 2 entries for 1 dynamic box") as refused:
            client.call("Step", request)
        assert refused.value.code == "INVALID_ARGUMENT"
    finally:
        client.worlds.delete(world_id)


def test_a_seed_label_image_of_the_wrong_size_is_invalid_argument(client, room):
    seed = room.render(VIEW, INTRINSICS)
    with pytest.raises(InvalidInputError, match=r"seed.frames\[0\].instance is 10x10") as refused:
        client.worlds.create([(seed.rgb, seed.depth, VIEW.matrix, None, np.zeros((10, 10), np.uint32))], INTRINSICS)
    assert refused.value.code == "INVALID_ARGUMENT"


def test_the_gateway_sends_normals_in_the_engine_axes_and_labels_as_they_are(client, gateway):
    from worldweave.bridge.eval.wall import wall_seed
    from worldweave.sim_clients import conventions as cv
    from worldweave.sim_clients.gateway import translate
    from worldweave.sim_clients.gateway.engine_client import GatewayClient
    from worldweave.sim_clients.gateway.messages import pose_to_wire
    from worldweave.sim_clients.world_state import box_region

    frames, intrinsics = wall_seed(32, 24)
    world_id = client.worlds.create(frames, intrinsics).world_id
    client.edits.label_region(world_id, box_region([2.0, -5.0, 0.0], [4.0, 0.0, 5.0]), 3, 4)  # the wall's right half
    c2w = frames[0][2]
    direct, = client.render(world_id, c2w, semantic=True, instance=True, normals=True)
    unity = cv.get_convention("unity")
    with GatewayClient(gateway.address, "unity") as engine:
        frame, = engine.call("render", world_id=world_id, poses=[pose_to_wire(unity.from_canonical(c2w))],
                             format={"include_semantic": True, "include_instance": True, "include_normals": True})["frames"]
    client.worlds.delete(world_id)
    semantic = np.frombuffer(frame["semantic"]["data"], "<u2").reshape(24, 32)
    np.testing.assert_array_equal(semantic, direct.semantic)
    assert 3 in semantic and 0 in semantic
    np.testing.assert_array_equal(np.frombuffer(frame["instance"]["data"], "<u4").reshape(24, 32), direct.instance)
    normals = np.frombuffer(frame["normals"]["data"], "<f4").reshape(-1, 3)
    np.testing.assert_allclose(normals, translate.from_canonical("direction", direct.normals.reshape(-1, 3), unity), atol=1e-6)
    facing = normals[np.abs(normals).sum(axis=1) > 0]
    np.testing.assert_allclose(np.median(facing, axis=0), [0.0, 0.0, -1.0], atol=1e-3)  # canonical -x is Unity -z
