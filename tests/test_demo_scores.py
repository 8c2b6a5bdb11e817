"""The honest demo's scores: pixel provenance, the seen surface, a voxel map's phantom rate, confident-inside share
and confident-surface recall against the exact scene, and a tiny ``worldweave demo`` run that writes them."""

import argparse
import csv
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from worldweave.bridge import demo
from worldweave.bridge.eval import metrics
from worldweave.bridge.eval.scenes import Block, Material, MeshBuilder, Scene, make_scene
from worldweave.bridge.memory.voxel_map import Source, VoxelMap
from worldweave.proto.geometry import Intrinsics

INTRINSICS = Intrinsics.from_fov(64, 48, fov_x_deg=75.0)


@pytest.fixture(scope="module")
def room() -> Scene:
    return make_scene("room", 0)


@pytest.fixture(scope="module")
def floor() -> Scene:
    """One 40 x 40 m floor at z = 0 and nothing else: every point's distance to the surface is |z|."""
    builder = MeshBuilder()
    grey = Material("plain", (90, 90, 90))
    builder.quad(np.array([-20.0, -20.0, 0.0]), np.array([40.0, 0, 0]), np.array([0, 40.0, 0]), grey)
    free = ((np.array([-1.0, -1.0, 1.0]), np.array([1.0, 1.0, 2.0])),)
    return Scene("floor", builder, free_space=free, start_position_m=np.array([0.0, 0.0, 1.5]), start_heading_rad=0.0)


def _seed_map(scene: Scene):
    """The exact view at the scene's start (tilted down 30 degrees) fused as a seed into a 2 cm map; its voxels and
    the surface it saw."""
    frame = scene.render(scene.start_pose(pitch_deg=30.0), INTRINSICS)
    voxel_map = VoxelMap(0.02)
    voxel_map.integrate(frame, frame_id=0, source=Source.SEED)
    seen = metrics.SeenSurface()
    seen.add(frame)
    return frame, voxel_map.voxels(), seen.points_m


def test_provenance_shares_partition_the_pixels():
    confidence = np.zeros((4, 5), np.float32)
    depth = np.zeros((4, 5), np.float32)
    kept = np.zeros((4, 5), bool)
    confidence.flat[:4], depth.flat[:4], kept.flat[:6] = 1.0, 2.0, True  # kept: 6, two of them half-sure memory
    confidence.flat[4:6], depth.flat[4:6] = 0.4, 2.0
    confidence.flat[6:11], depth.flat[6:11] = 0.5, 3.0  # generated with geometry: 5
    depth.flat[11:14] = 1.0  # confidence 0 with depth: unknown (3)
    confidence.flat[14:16] = 1.0  # confidence 1 without depth: unknown (2)
    confidence.flat[16:20] = 0.25  # no depth: unknown (4)
    shares = metrics.provenance_shares(confidence, depth, kept)
    assert shares == metrics.Provenance(6 / 20, 5 / 20, 9 / 20)
    assert math.isclose(sum(shares), 1.0)
    with pytest.raises(ValueError, match="confidence"):
        metrics.provenance_shares(np.full((4, 5), 1.5, np.float32), depth, kept)
    with pytest.raises(ValueError, match="kept_mask"):
        metrics.provenance_shares(confidence, depth, kept[:2])


def test_seen_surface_keeps_one_exact_surface_point_per_cell(room):
    frame = room.render(room.start_pose(pitch_deg=30.0), INTRINSICS)
    seen = metrics.SeenSurface(cell_m=0.05)
    assert seen.points_m.shape == (0, 3)
    seen.add(frame)
    points = seen.points_m
    assert 100 < len(points) < int((frame.depth > 0).sum())
    assert np.all(room.distance_m(points) < 1e-4)  # points of the true surface, not cell centres
    cells = np.floor(points / 0.05).astype(np.int64)
    assert len(np.unique(cells, axis=0)) == len(points)
    seen.add(frame)  # the same view again adds no surface
    np.testing.assert_array_equal(seen.points_m, points)


def test_a_map_of_exact_seed_depth_has_no_phantoms_and_recalls_all_it_saw(room):
    _, voxels, surface = _seed_map(room)
    assert np.all(voxels.confidence == 1.0)
    scores = metrics.score_map(room, voxels.positions_m, voxels.confidence, surface)
    # A voxel centre lies within half a voxel diagonal (1.7 cm) of the points fused into it.
    assert scores == metrics.MapScores(len(voxels), len(voxels), 0.0, 1.0, 1.0)


def test_points_pushed_off_the_surface_are_phantoms_and_recall_nothing(floor):
    _, voxels, surface = _seed_map(floor)
    up = np.array([0.0, 0.0, 1.0], np.float32)
    # Voxel centres sit 1 cm above or below the floor: pushed up 3 cm they are at most 4 cm off, 7 cm at least 6 cm.
    near = metrics.score_map(floor, voxels.positions_m + 0.03 * up, voxels.confidence, surface)
    assert near.phantom_rate == 0.0 and near.confident_surface_recall == 1.0
    far = metrics.score_map(floor, voxels.positions_m + 0.07 * up, voxels.confidence, surface)
    assert far.phantom_rate == 1.0 and far.confident_surface_recall == 0.0
    pushed = metrics.score_map(floor, voxels.positions_m + 0.2 * up, voxels.confidence, surface)
    assert pushed.phantom_rate == 1.0 and pushed.confident_surface_recall == 0.0


def test_inside_share_and_recall_count_only_confident_voxels(room):
    _, voxels, surface = _seed_map(room)
    count = len(voxels)
    outside = voxels.positions_m + np.array([10.0, 0.0, 0.0], np.float32)  # 6.5 m beyond the +x wall
    both = metrics.score_map(room, np.concatenate([voxels.positions_m, outside]), np.ones(2 * count), surface)
    assert both.phantom_rate == 0.5 and both.confident_inside_share == 0.5 and both.confident_surface_recall == 1.0
    unsure = np.full(count, metrics.CONFIDENT_MIN - 0.1, np.float32)
    low = metrics.score_map(room, voxels.positions_m, unsure, surface)
    assert low.confident_voxels == 0 and low.phantom_rate == 0.0
    assert math.isnan(low.confident_inside_share) and low.confident_surface_recall == 0.0
    empty = metrics.score_map(room, np.empty((0, 3)), np.empty(0), surface)
    assert empty.voxels == 0 and math.isnan(empty.phantom_rate) and empty.confident_surface_recall == 0.0
    with pytest.raises(ValueError, match="one confidence per voxel"):
        metrics.score_map(room, voxels.positions_m, np.ones(3), surface)


def test_points_inside_solids_lie_inside_each_box_away_from_its_faces():
    """Two boxes, one yawed 30 degrees, beside a floor (instance 0, never sampled): every point lies inside its box,
    at least the inset from each face, per box in order, and the draws cover the box, not a corner of it."""
    builder = MeshBuilder()
    grey = Material("plain", (90, 90, 90))
    builder.quad(np.array([-5.0, -5.0, 0.0]), np.array([10.0, 0, 0]), np.array([0, 10.0, 0]), grey)
    boxes = [Block((1.0, 0.0, 0.5), (0.8, 0.6, 1.0), grey), Block((-1.0, 1.0, 0.3), (1.0, 0.4, 0.6), grey, yaw_rad=0.5236)]
    for box in boxes:
        builder.block(box)
    builder.block(Block((0.0, -2.0, 0.5), (0.08, 1.0, 1.0), grey))  # thinner than twice the inset: no points
    free = ((np.array([-1.0, -1.0, 1.0]), np.array([1.0, 1.0, 2.0])),)
    scene = Scene("boxes", builder, free_space=free, start_position_m=np.array([0.0, 0.0, 1.5]), start_heading_rad=0.0)
    points = metrics.points_inside_solids(scene, 500, np.random.default_rng(3))
    assert points.shape == (1000, 3)
    for box, chunk in zip(boxes, (points[:500], points[500:])):
        cos, sin = math.cos(box.yaw_rad), math.sin(box.yaw_rad)
        local = (chunk - box.center_m) @ np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
        room = np.asarray(box.size_m) / 2 - metrics.SOLID_INSET_M
        assert np.all(np.abs(local) <= room + 1e-9)
        assert np.all(np.abs(local).max(axis=0) > 0.9 * room)  # spread to the inset walls on every axis


def test_generator_choices_show_in_help():
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert "--generator {" in help_text and "reproject" in help_text.split("--generator {")[1].split("}")[0]


def test_a_tiny_demo_writes_scores_plot_and_labelled_video(tmp_path):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    out = tmp_path / "demo"
    assert demo.run(parser.parse_args(["--out", str(out), "--frames", "8", "--width", "48", "--height", "36"])) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 8 and summary["generator"] == "continue"
    for key in ("mean_psnr_db", "revisit_psnr_db"):
        assert 5.0 < summary[key] <= 100.0
    for key in ("phantom_rate", "confident_inside_share", "confident_surface_recall", "mean_coverage"):
        assert 0.0 <= summary[key] <= 1.0
    assert set(summary["pixel_shares"]) == {"kept", "generated", "unknown"}
    assert math.isclose(sum(summary["pixel_shares"].values()), 1.0, abs_tol=2e-4)
    assert 0 < summary["confident_voxels"] <= summary["voxels"]
    assert summary["surface_tolerance_m"] == 0.05 and summary["confident_min"] == metrics.CONFIDENT_MIN
    assert summary["scoring_seconds"] >= 0 and summary["warmup_seconds"] >= 0
    # The room's six pieces of furniture, asked once each point at the default level.
    assert summary["points_inside_solids"] == 6 * demo.SOLID_POINTS_PER_BOX
    assert 0 <= summary["free_inside_solids"] <= summary["points_inside_solids"]
    assert summary["query_min_confidence"] == 0.5
    assert sorted(p.name for p in out.iterdir()) == sorted(summary["files"])

    with (out / "frame_scores.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(r["frame"]) for r in rows] == list(range(1, 9))
    for row in rows:
        assert math.isclose(float(row["kept"]) + float(row["generated"]) + float(row["unknown"]), 1.0, abs_tol=2e-4)
    assert np.mean([float(r["psnr_db"]) for r in rows]) == pytest.approx(summary["mean_psnr_db"], abs=0.01)

    plot = np.asarray(Image.open(out / "scores.png").convert("RGB"))
    assert plot.shape == (650, 1000, 3) and (plot != 255).any(axis=2).mean() > 0.02

    frames = iio.imread(out / "walk.mp4")
    assert frames.shape == (8, demo.LABEL_HEIGHT_PX + 36, 3 * 48, 3)
    band = frames[0, : demo.LABEL_HEIGHT_PX].astype(int)
    assert (band.mean(axis=2) > 200).mean() > 0.6 and (band.mean(axis=2) < 100).any()  # white band, dark text
