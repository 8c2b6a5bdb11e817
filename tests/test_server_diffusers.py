"""A world steps end to end through a real server with each diffusers backend (``wan-vace``, ``sd-inpaint``) and a
Depth Anything estimator for the depth those backends do not return.

The models are tiny and random (``worldweave.bridge.generators.tiny_models``), saved to temporary folders and loaded
by the server from its config, as ``worldweave serve --generator ... --depth-estimator ...`` does. The frames are
noise; what is checked is the plumbing: frame shapes, ids and versions, the chunk padding of Wan's 4k+1 rule, that
generated content lands in memory (the point cloud grows, its new voxels flagged "generated"), and that a saved world
loads and steps again with the shared estimator. Without an estimator the server refuses to start.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: tests never reach the network

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed
from worldweave.bridge.generators.tiny_models import (
    save_tiny_depth_anything,
    save_tiny_sd_inpaint,
    save_tiny_wan_vace,
)
from worldweave.proto.errors import PreconditionError
from worldweave.proto.geometry import Pose
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.world_state import SOURCE_NAMES

WIDTH, HEIGHT = 32, 24
"""Seed and step image size, pixels: neither a multiple of Wan's 16, so the backends' padding runs too."""
STEPS = 2
BUILDERS = {"wan-vace": save_tiny_wan_vace, "sd-inpaint": save_tiny_sd_inpaint}
OPTIONS = {
    # No references: the transformer's latent frame count then tells the video's frame count (see below).
    "wan-vace": {"num_inference_steps": STEPS, "max_references": 0},
    "sd-inpaint": {"num_inference_steps": STEPS, "batch_size": 2},
}
GENERATED = next(code for code, name in SOURCE_NAMES.items() if name == "generated")


@pytest.fixture(scope="module")
def depth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_depth_anything(tmp_path_factory.mktemp("depth-anything"), "relative")


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: build(tmp_path_factory.mktemp(name)) for name, build in BUILDERS.items()}


def turned(yaw_deg: float) -> np.ndarray:
    """4x4 camera-to-world pose at the wall seed's camera turned left by ``yaw_deg``: part of the view is new."""
    yaw = np.radians(yaw_deg)
    return Pose.look_at((0.0, 0.0, 1.5), (3.0 * np.cos(yaw), 3.0 * np.sin(yaw), 1.5)).matrix


def voxel_sources(client: WorldClient, world_id: str) -> np.ndarray:
    """The flags (source codes) of every voxel of a world, from a point-cloud snapshot."""
    chunks = list(client.point_cloud.stream(world_id, min_confidence=0.0))  # every voxel, guesses included
    assert chunks and all(chunk.is_snapshot for chunk in chunks)
    return np.concatenate([chunk.flags for chunk in chunks])


@pytest.mark.parametrize("backend", sorted(BUILDERS))
def test_world_steps_end_to_end(backend: str, model_folders: dict[str, Path], depth_folder: Path, tmp_path: Path):
    config = ServerConfig(
        data_dir=tmp_path / "worlds",
        generator=backend,
        generator_options={"model": str(model_folders[backend]), "device": "cpu", **OPTIONS[backend]},
        depth_estimator="depth-anything",
        depth_estimator_options={"model": str(depth_folder), "device": "cpu"},
    )
    seed_frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    with BackgroundServer(config=config) as server, WorldClient(server.address, timeout_s=60) as client:
        assert (client.info.generator.name, client.info.generator.returns_depth) == (backend, False)
        world = client.worlds.create(seed_frames, intrinsics, world_id="wall", prompt="a wall")
        seed_voxels = voxel_sources(client, "wall")
        assert world.voxel_count == len(seed_voxels) > 0 and not (seed_voxels == GENERATED).any()
        registry = server.server.registry
        assert registry.entry("wall").world.depth_estimator is registry.depth_estimator is not None, "one shared"

        # Frames per generate call, seen where the pipeline hands its latents to the denoiser.
        inner = registry.generator.inner
        denoiser = inner.pipeline.transformer if backend == "wan-vace" else inner.pipeline.unet
        latent_frames: list[int] = []

        def record(module: object, args: tuple, kwargs: dict) -> None:
            sample = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            # Wan: (B, C, T, H, W) video latents; the UNet: (B, C, H, W), one image.
            latent_frames.append(sample.shape[2] if sample.ndim == 5 else 1)

        hook = denoiser.register_forward_pre_hook(record, with_kwargs=True)
        try:
            poses = [turned(20.0), turned(30.0), turned(40.0)]
            one = client.step("wall", poses[0])
            after_one = len(latent_frames)
            two = client.step("wall", np.stack(poses[1:]))
        finally:
            hook.remove()

        frames = one + two
        assert [f.frame_id for f in frames] == [1, 2, 3], "frame ids follow the seed frame (0)"
        versions = [world.version] + [f.version for f in frames]
        assert versions == sorted(set(versions)), f"memory versions must increase: {versions}"
        for frame, pose in zip(frames, poses):
            assert frame.rgb.shape == (HEIGHT, WIDTH, 3) and frame.rgb.dtype == np.uint8
            assert frame.depth.shape == (HEIGHT, WIDTH) and (frame.depth > 0).any(), "estimated depth, aligned"
            np.testing.assert_allclose(frame.pose, pose, atol=1e-5)
            assert 0.0 < frame.coverage < 1.0, "memory covers part of a turned view"
        if backend == "wan-vace":
            # One leading frame + 1 view -> 5 frames (2 latent frames); 1 leading + 2 views padded by the world to a
            # chunk of 5 -> 9 frames (3 latent frames). Only the 2 asked-for frames came back.
            assert set(latent_frames[:after_one]) == {2} and set(latent_frames[after_one:]) == {3}
        else:
            assert latent_frames, "views with holes went through the inpainting UNet"

        grown = client.worlds.get("wall")
        sources = voxel_sources(client, "wall")
        assert grown.frame_count == 4 and grown.version == frames[-1].version
        assert grown.voxel_count == len(sources) > len(seed_voxels), "generated frames add to the point cloud"
        assert (sources == GENERATED).any()

        # A saved world loads with the same shared estimator and steps on.
        client.worlds.save("wall")
        client.worlds.delete("wall")
        client.worlds.load("wall")
        assert registry.entry("wall").world.depth_estimator is registry.depth_estimator
        (again,) = client.step("wall", turned(-20.0))
        assert again.frame_id == 4 and again.version > frames[-1].version and (again.depth > 0).any()


@pytest.mark.parametrize("backend", sorted(BUILDERS))
def test_server_without_depth_estimator_refuses_to_start(backend: str, tmp_path: Path):
    # The weights folder does not exist: the depth check comes first, before any model is loaded.
    config = ServerConfig(generator=backend, generator_options={"model": str(tmp_path / "absent"), "device": "cpu"})
    expected = f"generator '{backend}' returns no depth.*--depth-estimator depth-anything"
    with pytest.raises(PreconditionError, match=expected):
        BackgroundServer(config=config).start()


def test_serve_flags(model_folders: dict[str, Path], depth_folder: Path, serve_process):
    serve = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", "--generator", "sd-inpaint",
             "--generator-option", f"model={model_folders['sd-inpaint']}", "--generator-option", "device=cpu",
             "--generator-option", f"num_inference_steps={STEPS}"]
    refused = subprocess.run(serve, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "generator 'sd-inpaint' returns no depth" in refused.stderr
    assert "--depth-estimator depth-anything" in refused.stderr

    depth = ["--depth-estimator", "depth-anything", "--depth-estimator-option", f"model={depth_folder}",
             "--depth-estimator-option", "device=cpu"]
    banner = r"on 127\.0\.0\.1:(\d+) \(generator sd-inpaint, depth estimator depth-anything"
    with serve_process(serve + depth, banner) as port:  # stopped by SIGTERM, expecting exit code 0
        with WorldClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            seed_frames, intrinsics = wall_seed(WIDTH, HEIGHT)
            client.worlds.create(seed_frames, intrinsics, world_id="cli")
            (frame,) = client.step("cli", turned(20.0))
            assert frame.frame_id == 1 and (frame.depth > 0).any()
