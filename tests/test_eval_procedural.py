"""The procedural benchmark: its noise model, table, plots, and a tiny end-to-end run that writes valid JSON."""

import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

from worldweave.bridge.eval import procedural
from worldweave.bridge.frames import RGBDFrame
from worldweave.proto.geometry import Intrinsics, Pose

FIELDS = {"method", "k", "noise", "scene", "trajectory", "psnr", "ssim", "psnr_c", "ssim_c", "coverage", "warp_err",
          "ms_per_frame", "psnr_all", "psnr_c_all", "psnr_c_earlier", "frames", "revisit_frames", "kept", "generated",
          "unknown", "phantom_rate", "surface_recall", "generator", "plane_continuation", "beyond_truth",
          "free_in_solids"}


def _frame() -> RGBDFrame:
    intrinsics = Intrinsics.from_fov(40, 30, fov_x_deg=70)
    depth = np.full((30, 40), 2.0, np.float32)
    depth[:5] = 0.0
    rgb = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    return RGBDFrame(rgb, depth, Pose.look_at([0, 0, 1.5], [1, 0, 1.5]), intrinsics)


def test_fusion_noise_without_errors_is_the_identity():
    frame = _frame()
    quiet = procedural.FusionNoise(rotation_deg=0, translation_m=0, depth_scale=0, depth_warp=0, depth_pixel=0)
    same = quiet(frame, 1)
    valid = frame.depth > 0
    assert np.array_equal(same.depth > 0, valid)
    assert np.array_equal(same.rgb[valid], frame.rgb[valid])
    np.testing.assert_allclose(same.depth[valid], frame.depth[valid], rtol=1e-6)


def test_fusion_noise_misregisters_content_by_its_delta_and_is_seeded():
    frame = _frame()
    noise = procedural.FusionNoise(depth_scale=0, depth_warp=0, depth_pixel=0, seed=3)
    noisy = noise(frame, 7)
    assert noisy.pose == frame.pose and noisy.intrinsics == frame.intrinsics
    delta, factor = noise.draw(7, frame.depth.shape)
    assert np.all(factor == 1.0)
    assert 0 < np.linalg.norm(delta.position) < 0.3 and 0 < delta.distance_to(Pose.identity())[1] < 6
    # Every fused point lies on the original plane z = 2 (camera frame) moved by delta: z of delta^-1 p is 2, up to
    # the half-pixel snap of splatting on the tilted plane (half a pixel is 3.5 cm here, the tilt a few degrees).
    valid = noisy.depth > 0
    assert valid.mean() > 0.6
    points = frame.intrinsics.backproject(noisy.depth)[valid]
    back = delta.world_to_cam(points)
    np.testing.assert_allclose(back[:, 2], 2.0, atol=5e-3)
    # Colours come from the frame (moved), not made up.
    palette = {tuple(c) for c in frame.rgb.reshape(-1, 3)}
    assert all(tuple(c) in palette for c in noisy.rgb[valid])
    again = noise(frame, 7)
    assert np.array_equal(again.depth, noisy.depth)
    assert not np.array_equal(noise(frame, 8).depth, noisy.depth)


def test_fusion_noise_scales_depth():
    noise = procedural.FusionNoise(rotation_deg=0, translation_m=0, seed=5)
    _, factor = noise.draw(2, (30, 40))
    assert 0.8 < factor.mean() < 1.2 and factor.std() > 0.005


def test_table_and_plot(tmp_path):
    row = {name: 1.0 for name, _, _ in procedural.COLUMNS}
    row.update(scene="room", trajectory="loop", method="global", k=None, noise="none", psnr_c=math.nan)
    table = procedural.format_table([row])
    assert "psnr_c" in table.splitlines()[0] and "global" in table.splitlines()[1]
    path = tmp_path / "plot.png"
    panels = {"covered": {"a": [20.0, 22.0, math.nan, 25.0], "b": [15.0, 16.0, 17.0, 18.0]},
              "all": {"a": [19.0, 21.0, 21.0, 24.0], "b": [math.nan] * 4}}
    procedural.plot_psnr(path, "room / loop", panels, [3])
    image = np.asarray(Image.open(path))
    assert image.shape == (30 + 2 * 300, 900, 3)
    assert (image != 255).any(axis=2).mean() > 0.01  # something was drawn


def test_bad_options_raise():
    parser = argparse.ArgumentParser()
    procedural.add_arguments(parser)
    with pytest.raises(ValueError, match="size"):
        procedural.run(parser.parse_args(["--size", "big"]))
    with pytest.raises(ValueError, match="cases"):
        procedural.run(parser.parse_args(["--cases", "moon/walk"]))


def test_a_tiny_run_end_to_end_writes_valid_json(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    procedural.add_arguments(parser)
    out = tmp_path / "rows.json"
    args = parser.parse_args([
        "--frames", "9", "--size", "64x48", "--chunk", "4", "--cases", "room/look-around",
        "--methods", "no-memory,anchors-coverage", "--json", str(out), "--plots", str(tmp_path / "plots"),
    ])
    assert procedural.run(args) == 0
    rows = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"invalid JSON constant {name}"))
    assert [(r["method"], r["noise"], r["generator"]) for r in rows] == [
        (method, noise, generator) for method, noise in
        (("no-memory", "none"), ("anchors-coverage", "none"), ("anchors-coverage", "pose+depth"))
        for generator in ("reproject", "continue")]
    for row in rows:
        assert FIELDS <= set(row)
        assert row["scene"] == "room" and row["trajectory"] == "look-around" and row["frames"] == 8
        assert 0.0 <= row["coverage"] <= 1.0 and row["ms_per_frame"] > 0
        assert row["psnr"] is None or 5.0 < row["psnr"] <= 100.0
        assert math.isclose(row["kept"] + row["generated"] + row["unknown"], 1.0)
        assert 0.0 <= row["phantom_rate"] <= 1.0 and 0.0 < row["surface_recall"] <= 1.0
        assert row["plane_continuation"] is None or 0.0 <= row["plane_continuation"] <= 1.0
        # Of the 500 points drawn in each of the room's six pieces of furniture.
        assert isinstance(row["free_in_solids"], int) and 0 <= row["free_in_solids"] <= 6 * procedural.SOLID_POINTS_PER_BOX
    assert all(r["generated"] == 0 and r["plane_continuation"] in (None, 0.0) for r in rows if r["generator"] == "reproject")
    clean = {r["method"]: r for r in rows if r["noise"] == "none" and r["generator"] == "reproject"}
    # Without noise, memory holds exact geometry; with pose and depth noise, fused voxels leave the true surface.
    assert clean["anchors-coverage"]["phantom_rate"] < rows[-2]["phantom_rate"]  # reproject, pose+depth
    printed = capsys.readouterr().out
    assert "anchors-coverage" in printed and "phantom_rate" in printed
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "psnr_room_look-around_noise-none.png", "psnr_room_look-around_noise-pose-depth.png"]
