"""The benchmark metrics against hand-computed values."""

import math

import numpy as np
import pytest

from worldweave.bridge.eval import metrics
from worldweave.proto.errors import InvalidFrameError
from worldweave.proto.geometry import Intrinsics, Pose


def _image(seed: int = 0, shape=(24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def test_identical_images_give_the_cap_and_ssim_one():
    image = _image()
    mask = np.ones(image.shape[:2], bool)
    assert metrics.psnr(image, image, mask) == metrics.PSNR_MAX_DB
    assert metrics.ssim(image, image, mask) == pytest.approx(1.0, abs=1e-12)


def test_known_noise_gives_known_psnr():
    target = np.full((20, 30, 3), 128, np.uint8)
    noise = np.where(np.indices((20, 30)).sum(axis=0) % 2 == 0, 5, -5)[..., None]
    pred = (target.astype(int) + noise).astype(np.uint8)
    mask = np.ones((20, 30), bool)
    assert metrics.psnr(pred, target, mask) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)


def test_mask_is_respected_and_empty_mask_is_nan():
    target = _image(1)
    pred = target.copy()
    pred[:, :10] = 255 - pred[:, :10]
    mask = np.zeros(target.shape[:2], bool)
    mask[:, 10:] = True
    assert metrics.psnr(pred, target, mask) == metrics.PSNR_MAX_DB
    assert metrics.psnr(pred, target, ~mask) < 20.0
    assert math.isnan(metrics.psnr(pred, target, np.zeros_like(mask)))
    assert math.isnan(metrics.ssim(pred, target, np.zeros_like(mask)))
    # SSIM far from the corrupted columns (more than the window radius) is exactly 1.
    far = np.zeros_like(mask)
    far[:, 10 + metrics.SSIM_WINDOW // 2 :] = True
    assert metrics.ssim(pred, target, far) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(pred, target, ~mask) < 0.5


def test_ssim_of_flat_images_matches_the_closed_form():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 140, np.uint8)
    c1 = (metrics.SSIM_K1 * 255) ** 2
    expected = (2 * 100 * 140 + c1) / (100**2 + 140**2 + c1)
    assert metrics.ssim(a, b, np.ones((16, 16), bool)) == pytest.approx(expected, rel=1e-9)


def test_bad_inputs_raise_naming_the_array():
    image = _image()
    with pytest.raises(InvalidFrameError, match="pred_rgb"):
        metrics.psnr(image.astype(np.float32), image, np.ones(image.shape[:2], bool))
    with pytest.raises(InvalidFrameError, match="mask"):
        metrics.psnr(image, image, np.ones((3, 3), bool))


def test_coverage_and_mean_psnr():
    valid = np.zeros((4, 4), bool)
    valid[:, :2] = True
    covered = np.zeros((4, 4), bool)
    covered[:2, :] = True
    assert metrics.coverage(covered, valid) == pytest.approx(0.5)
    assert math.isnan(metrics.coverage(covered, np.zeros((4, 4), bool)))
    assert metrics.mean_psnr([20.0, math.nan, 30.0]) == pytest.approx(25.0)
    assert math.isnan(metrics.mean_psnr([math.nan]))


def _ring(count: int, laps: float) -> list[Pose]:
    """Cameras on a 2 m circle looking outwards, going ``laps`` times round."""
    poses = []
    for i in range(count):
        angle = 2 * math.pi * laps * i / count
        eye = np.array([2 * math.cos(angle), 2 * math.sin(angle), 1.5])
        poses.append(Pose.look_at(eye, eye + np.array([math.cos(angle), math.sin(angle), 0.0])))
    return poses


def test_revisits_on_a_hand_made_loop():
    # 100 poses, 1.2 laps: frame i >= 84 is back at the angle of frame i - 83.3; the step is 0.15 m, 4.3 degrees.
    poses = _ring(100, 1.2)
    pairs = metrics.revisits(poses)
    assert pairs, "the second lap must revisit the first"
    assert [i for i, _ in pairs] == list(range(pairs[0][0], 100))
    for i, j in pairs:
        assert i - j >= 30
        distance, angle = poses[i].distance_to(poses[j])
        assert distance <= 0.3 and angle <= 20.0
        assert abs(j - (i - 83)) <= 1
    assert metrics.revisits(_ring(100, 0.9)) == []  # never closes the loop
    # Standing still revisits only once the gap is reached.
    still = [Pose.identity()] * 40
    assert metrics.revisits(still) == [(i, 0) for i in range(30, 40)]


def _plane_views(shift_m: float):
    """A textured plane 2 m ahead, seen from x = 0 and from x = shift_m; colour is a function of world x."""
    intrinsics = Intrinsics(100.0, 100.0, 16.0, 12.0, 32, 24)
    rng = np.random.default_rng(3)
    texture = rng.integers(0, 256, size=(24, 200, 3), dtype=np.uint8)

    def view(x_m: float):
        u = np.arange(32)
        world_x = (u - intrinsics.cx) / intrinsics.fx * 2.0 + x_m
        column = np.round(world_x / 0.02).astype(int) + 100  # one texture column per 2 cm = one pixel at 2 m
        return texture[:, column], np.full((24, 32), 2.0, np.float32), Pose(np.eye(3), [x_m, 0.0, 0.0])
    return intrinsics, view(0.0), view(shift_m)


def test_warping_error_is_zero_for_an_exact_static_scene():
    intrinsics, (rgb0, depth0, pose0), (rgb1, depth1, pose1) = _plane_views(0.04)  # a 2-pixel shift
    assert metrics.warping_error(rgb1, rgb0, depth1, pose1, pose0, intrinsics, depth0) == pytest.approx(0.0, abs=1e-6)
    # An occluder in frame t-1 over columns 5..9 (depth 1 m): those pixels are left out, so its colour does not count.
    rgb0_occluded, depth0_occluded = rgb0.copy(), depth0.copy()
    rgb0_occluded[:, 5:10] = 0
    depth0_occluded[:, 5:10] = 1.0
    assert metrics.warping_error(rgb1, rgb0_occluded, depth1, pose1, pose0, intrinsics, depth0_occluded) == pytest.approx(
        0.0, abs=1e-6)
    # The wrong pose (no motion assumed) is penalised.
    assert metrics.warping_error(rgb1, rgb0, depth1, pose0, pose0, intrinsics, depth0) > 20.0
    assert math.isnan(metrics.warping_error(rgb1, rgb0, np.zeros_like(depth1), pose1, pose0, intrinsics, depth0))


def test_warp_to_view_reproduces_the_destination_where_visible():
    intrinsics, (rgb0, depth0, pose0), (rgb1, depth1, pose1) = _plane_views(0.04)
    depth0_occluded = depth0.copy()
    depth0_occluded[:, 5:10] = 1.0
    warped, visible = metrics.warp_to_view(rgb0, depth0_occluded, pose0, depth1, pose1, intrinsics)
    # Camera 1 sits 4 cm (2 pixels) right: its column u sees camera 0's column u + 2. The last two columns fall
    # outside camera 0, and columns 3..7 of camera 1 see camera 0's occluded columns 5..9 (column 2 interpolates
    # next to column 5 or not, depending on the last bit of x = 4).
    assert visible[:, :2].all() and visible[:, 8:30].all()
    assert not visible[:, 3:8].any() and not visible[:, 30:].any()
    np.testing.assert_allclose(warped[visible], rgb1[visible].astype(float), atol=1e-6)
    assert np.all(warped[~visible] == 0)
