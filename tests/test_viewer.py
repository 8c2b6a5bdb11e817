"""The live viewer end to end: ``worldweave serve --viewer`` in a subprocess, a world made through the SDK, the page
opened in headless Chromium (selenium). The 3D canvas must show the world's points (pixel variance, the wall's two
colours), lose one colour where a region is removed through the API, show a step made by another client (its frame
and timings in the panel, its camera among the drawn frustums), and say so when the world is deleted.

Needs Debian's chromium and chromium-driver (scripts/setup_browser.sh installs them). Screenshots are written to the
test's tmp_path (``pytest --basetemp DIR`` keeps them somewhere to look at).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

MAGENTA, LIME = (220, 0, 220), (150, 230, 0)
"""The seed wall's left and right halves, RGB: colours the page's own widgets do not use."""
WALL_DISTANCE_M = 3.0


def wall_world(client) -> str:
    """A world seeded with one view of a wall 3 m ahead along +x (camera at 1.5 m, world Z up): left half (world +y)
    magenta, right half lime; 5 cm voxels, dense at this image size."""
    from worldweave.proto.geometry import Intrinsics, Pose

    width, height = 160, 120
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:, : width // 2], rgb[:, width // 2 :] = MAGENTA, LIME
    depth = np.full((height, width), WALL_DISTANCE_M, np.float32)
    c2w = Pose.look_at((0.0, 0.0, 1.5), (WALL_DISTANCE_M, 0.0, 1.5)).matrix
    intrinsics = Intrinsics.from_fov(width, height, fov_x_deg=70.0)
    return client.worlds.create([(rgb, depth, c2w)], intrinsics, voxel_size_m=0.05).world_id


def near(image: np.ndarray, color: tuple[int, int, int], tolerance: int = 30) -> np.ndarray:
    """bool (H, W): pixels within ``tolerance`` of ``color`` in every channel."""
    return (np.abs(image.astype(np.int16) - np.array(color, np.int16)) <= tolerance).all(axis=2)


class Page:
    """The viewer's page in headless Chromium; ``shot(name)`` saves a screenshot and returns it as uint8 RGB."""

    def __init__(self, url: str, folder: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,800",
                     "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-gpu-sandbox"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
        self.driver.set_page_load_timeout(20)
        self.driver.get(url)
        self.folder = folder

    def shot(self, name: str) -> np.ndarray:
        png = self.driver.get_screenshot_as_png()
        (self.folder / f"{name}.png").write_bytes(png)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def wait_for(self, name: str, done: Callable[[np.ndarray], bool], timeout_s: float = 30.0) -> np.ndarray:
        """Screenshots until ``done(image)``; the last one is saved as ``name``. Fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            image = self.shot(name)
            if done(image):
                return image
            assert time.monotonic() < deadline, f"the page never showed {name} (see {self.folder / name}.png)"
            time.sleep(0.3)

    def text(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def wait_text(self, text: str, timeout_s: float = 30.0) -> None:
        """Wait until the page's text contains ``text``; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while text not in self.text():
            assert time.monotonic() < deadline, f"the page never said {text!r}; it says {self.text()!r}"
            time.sleep(0.3)

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def served() -> Iterator[tuple[str, str]]:
    """``worldweave serve --viewer 0`` (echo generator); yields (gRPC address, viewer URL)."""
    command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", "--generator", "echo",
               "--no-warm-up", "--viewer", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    drain = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    drain.start()
    try:
        deadline = time.monotonic() + 90
        found: dict[str, str] = {}
        while len(found) < 2:
            assert process.poll() is None, f"serve exited with {process.returncode}: {''.join(lines)}"
            assert time.monotonic() < deadline, f"no serve and viewer banners in 90 s: {''.join(lines)}"
            for line in list(lines):
                if match := re.search(r"worldweave serving on (\S+:\d+)", line):
                    found["grpc"] = match.group(1)
                if match := re.search(r"worldweave viewer on (http://\S+),", line):
                    found["viewer"] = match.group(1)
            time.sleep(0.1)
        yield found["grpc"], found["viewer"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()


def test_viewer_shows_the_cloud_follows_an_edit_and_a_deletion(served: tuple[str, str], tmp_path: Path) -> None:
    from worldweave.sim_clients.client import WorldClient
    from worldweave.sim_clients.world_state import box_region

    address, url = served
    with WorldClient(address) as client:
        world_id = wall_world(client)
        page = Page(url, tmp_path)
        try:
            # 1. The canvas shows the wall: both halves' colours, and far from a blank (uniform) picture.
            before = page.wait_for("1_wall", lambda im: near(im, MAGENTA).sum() > 10000 and near(im, LIME).sum() > 10000)
            assert before.astype(np.float32).std() > 20.0
            magenta = near(before, MAGENTA)
            assert world_id in page.text()

            # 2. Remove the magenta half (world y > 0) through the API: that part of the canvas changes, the rest stays.
            client.edits.remove_region(world_id, box_region((2.0, 0.0, -1.0), (4.0, 5.0, 4.0)))
            after = page.wait_for("2_removed", lambda im: near(im, MAGENTA).sum() < 0.02 * magenta.sum())
            changed = np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=2) > 40
            assert changed[magenta].mean() > 0.9, f"only {changed[magenta].mean():.0%} of the removed half's pixels changed"
            assert changed[~magenta].mean() < 0.05, f"{changed[~magenta].mean():.0%} of the pixels elsewhere changed"
            assert near(after, LIME).sum() > 0.8 * near(before, LIME).sum()

            # 3. Another client steps the world: the page shows its camera, frame and timings (the WatchWorld stream).
            from worldweave.proto.geometry import Pose

            frame = client.step(world_id, Pose.look_at((0.0, -0.5, 1.5), (WALL_DISTANCE_M, -0.5, 1.5)).matrix)[0]
            page.wait_text(f"Latest step: frame {frame.frame_id}")
            drawn = re.search(r"(\d+) step cameras \(orange\) and (\d+) anchors \(blue\) drawn", page.text())
            assert drawn is not None and int(drawn.group(1)) == 1 and int(drawn.group(2)) >= 1, page.text()
            assert "Stage timings (ms)" in page.text() and "total:" in page.text()
            page.shot("3_other_client_stepped")

            # 4. Step the world at the browser's camera from the page: the frame beside the memory render, timings.
            page.driver.find_element("xpath", "//button[contains(., 'Step the world here')]").click()
            page.wait_text("Stage timings of that step")
            page.shot("4_stepped")
            assert "Left: generated frame" in page.text()

            # 5. Delete the world while it is shown: a message, and the page keeps working.
            client.worlds.delete(world_id)
            page.wait_text(f"World {world_id} was deleted")
            page.wait_for("5_deleted", lambda im: near(im, LIME).sum() < 0.02 * near(before, LIME).sum())
        finally:
            page.close()


def test_thinning_is_bounded_and_stable_as_the_cloud_grows() -> None:
    from worldweave.sim_clients.viewer.scene import point_size_m, stable_subset

    keys = np.arange(400_000, dtype=np.int64) * 7919 + (1 << 40)  # distinct voxel keys
    shown = stable_subset(keys, 100_000)
    assert 95_000 < len(shown) < 105_000
    grown = stable_subset(np.concatenate([keys, keys[:4_000] + 1]), 100_000)  # 1% more voxels
    kept = np.isin(shown, grown)
    assert kept.mean() > 0.98, "a voxel shown before the cloud grew by 1% should mostly stay shown"
    assert len(stable_subset(keys[:500], 100_000)) == 500
    assert point_size_m(0.02, len(shown), len(keys)) == pytest.approx(0.02 * np.sqrt(len(keys) / len(shown)))


def test_colours_and_cameras() -> None:
    from worldweave.proto.geometry import Pose
    from worldweave.sim_clients.viewer.scene import (
        SOURCE_COLORS, camera_c2w, camera_intrinsics, framing, point_colors, wxyz_of,
    )

    positions = np.array([[0, 0, 0.0], [0, 0, 1.0], [0, 0, 2.0]], np.float32)
    colors, flags = np.full((3, 3), 7, np.uint8), np.array([0, 1, 2], np.uint8)
    confidence = np.array([0.0, np.nan, 1.0], np.float32)
    assert (point_colors("rgb", colors, flags, positions, confidence) == 7).all()
    assert (point_colors("source", colors, flags, positions, confidence) == SOURCE_COLORS).all()
    height = point_colors("height", colors, flags, positions, confidence)
    by_confidence = point_colors("confidence", colors, flags, positions, confidence)
    assert (height[0] == by_confidence[0]).all() and (height[2] == by_confidence[2]).all()
    assert (by_confidence[1] == by_confidence[0]).all(), "no confidence (NaN) shows as 0"
    with pytest.raises(ValueError, match="colour mode"):
        point_colors("depth", colors, flags, positions, confidence)

    c2w = Pose.look_at((1.0, 2.0, 1.5), (4.0, 0.0, 1.0)).matrix
    assert np.allclose(camera_c2w(wxyz_of(c2w), c2w[:3, 3]), c2w)
    intrinsics = camera_intrinsics(np.radians(60.0), 16 / 9, 320)
    assert (intrinsics.width, intrinsics.height) == (320, 176) and intrinsics.fov_y_deg == pytest.approx(60.0, abs=0.5)

    # A wall 3 m ahead of the origin: framed from the origin's side, every point inside the view.
    ys, zs = np.meshgrid(np.linspace(-2, 2, 41), np.linspace(0, 3, 31))
    wall = np.stack([np.full(ys.size, 3.0), ys.ravel(), zs.ravel()], axis=1)
    eye, target = framing(wall, np.radians(50.0))
    assert eye[0] < 3.0
    view = Pose.look_at(eye, target)
    points_cam = view.world_to_cam(wall)
    u, v = points_cam[:, 0] / points_cam[:, 2], points_cam[:, 1] / points_cam[:, 2]
    assert (points_cam[:, 2] > 0).all() and (np.abs(v) < np.tan(np.radians(25.0))).all() and (np.abs(u) < 1.0).all()


def test_view_refuses_another_interface_without_the_token() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worldweave.server.cli", "view", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60,
        env={name: value for name, value in os.environ.items() if name != "WORLDWEAVE_AUTH_TOKEN"},
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "refusing to serve the viewer on 0.0.0.0 without the server's token" in result.stderr
