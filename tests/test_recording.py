"""MCAP recordings read back with the ``mcap`` reader: the driving capture's file and ``worldweave record``'s."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory
from PIL import Image

from worldweave.bridge.eval.scenes import SEMANTIC_CLASSES, make_street
from worldweave.bridge.memory.anchors import AnchorOptions
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose, Quaternion
from worldweave.server.cli import main as worldweave
from worldweave.sim_clients.recording import McapRecorder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def read_mcap(path: Path) -> dict[str, tuple[str, list[int], list]]:
    """topic -> (schema name, log times in ns, decoded messages), every message decoded with Foxglove's schemas."""
    topics: dict[str, tuple[str, list[int], list]] = {}
    with path.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            entry = topics.setdefault(channel.topic, (schema.name, [], []))
            assert entry[0] == schema.name and schema.encoding == "protobuf" and channel.message_encoding == "protobuf"
            entry[1].append(message.log_time)
            entry[2].append(decoded)
    return topics


@pytest.fixture(scope="module")
def capture(client, tmp_path_factory) -> Path:
    """The folder ``examples/driving_capture.py`` wrote: 8 vehicle poses of 64 x 48 with a 16-channel LiDAR."""
    out = tmp_path_factory.mktemp("capture")
    argv = sys.argv
    sys.argv = [str(EXAMPLES / "driving_capture.py"), "--server", client.target, "--out", str(out), "--frames", "8",
                "--width", "64", "--height", "48", "--lidar-channels", "16", "--lidar-points", "1600"]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as done:
        assert not done.code
    finally:
        sys.argv = argv
    return out


def test_driving_capture_writes_an_mcap_foxglove_reads(capture: Path) -> None:
    out = capture
    assert (out / "transforms.json").is_file() and (out / "poses_front.txt").is_file()  # nerfstudio / TUM kept
    topics = read_mcap(out / "capture.mcap")
    expected = {"/tf": "foxglove.FrameTransforms", "/lidar/points": "foxglove.PointCloud", "/lidar/pose": "foxglove.PoseInFrame"}
    for name in ("front", "left", "right"):
        expected |= {f"/{name}/image": "foxglove.CompressedImage", f"/{name}/calibration": "foxglove.CameraCalibration",
                     f"/{name}/pose": "foxglove.PoseInFrame", f"/{name}/semantic": "foxglove.RawImage",
                     f"/{name}/instance": "foxglove.RawImage"}
    assert {topic: schema for topic, (schema, _, _) in topics.items()} == expected
    for topic, (_, times, messages) in topics.items():
        per_frame = 4 if topic == "/tf" else 1  # /tf: the LiDAR and the three cameras at each time
        assert len(messages) == 8 * per_frame, topic
        assert np.all(np.diff(times[::per_frame]) > 0), topic
    image = topics["/front/image"][2][0]
    assert image.format == "jpeg" and image.data[:2] == b"\xff\xd8" and image.frame_id == "front"
    calibration = topics["/front/calibration"][2][0]
    assert (calibration.width, calibration.height) == (64, 48) and calibration.K[8] == 1.0
    cloud = topics["/lidar/points"][2][-1]
    fields = {field.name: field.offset for field in cloud.fields}
    assert fields == {"x": 0, "y": 4, "z": 8, "intensity": 12, "ring": 16} and cloud.frame_id == "lidar"
    points = np.frombuffer(cloud.data, dtype=[("xyz", "<f4", 3), ("intensity", "<f4"), ("ring", "<u2")])
    assert len(points) > 0 and np.all(points["ring"] < 16) and np.all((points["intensity"] >= 0) & (points["intensity"] <= 1))
    assert {t.child_frame_id for m in topics["/tf"][2] for t in m.transforms} == {"front", "left", "right", "lidar"}


def label_image(message) -> np.ndarray:
    """A ``foxglove.RawImage`` of label ids (``mono16``: little-endian uint16, ``step`` bytes per row) -> (H, W)."""
    assert message.encoding == "mono16" and message.step == 2 * message.width
    assert len(message.data) == message.step * message.height
    return np.frombuffer(message.data, "<u2").reshape(message.height, message.width)


def test_driving_capture_segmentation_matches_the_exact_labels(capture: Path) -> None:
    # The first frames, at the seed views, carry the street's exact labels, which the seed put in memory (memory fuses
    # depth up to AnchorOptions.max_depth_m: what lies further is not in it, so unlabelled).
    topics = read_mcap(capture / "capture.mcap")
    street = make_street(0)
    fused_m = AnchorOptions().max_depth_m
    for name in ("front", "left", "right"):
        images = {kind: [label_image(message) for message in topics[f"/{name}/{kind}"][2]] for kind in ("semantic", "instance")}
        assert all(image.shape == (48, 64) for kind in images for image in images[kind])
        assert {message.frame_id for kind in images for message in topics[f"/{name}/{kind}"][2]} == {name}
        semantic, instance = images["semantic"][0], images["instance"][0]
        np.testing.assert_array_equal(np.asarray(Image.open(capture / "segmentation" / name / "000000.png")), semantic)
        np.testing.assert_array_equal(np.asarray(Image.open(capture / "instances" / name / "000000.png")), instance)
        pose = topics[f"/{name}/pose"][2][0].pose
        c2w = Pose.from_position_quaternion(
            np.array([pose.position.x, pose.position.y, pose.position.z]),
            Quaternion(pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z),
        )
        k = topics[f"/{name}/calibration"][2][0]
        truth = street.render(c2w, Intrinsics(k.K[0], k.K[4], k.K[2], k.K[5], k.width, k.height), labels=True)
        buildings = truth.semantic == SEMANTIC_CLASSES["building"]
        assert buildings.any() and np.all(truth.instance[buildings] > 0) and np.all(truth.instance[~buildings] == 0)
        if name == "front":  # down the road: asphalt, its centre line and a sidewalk
            assert {SEMANTIC_CLASSES[c] for c in ("road", "lane_marking", "sidewalk")} <= set(truth.semantic.ravel().tolist())
        labelled, in_memory = semantic > 0, (truth.depth > 0) & (truth.depth <= fused_m)
        agree = (semantic == truth.semantic)[labelled].mean()
        same_instance = (instance == truth.instance)[labelled].mean()
        print(f"{name}: labelled {labelled.mean():.3f} of pixels ({labelled[in_memory].mean():.3f} of those within "
              f"{fused_m} m); class agrees on {agree:.4f}, instance on {same_instance:.4f}")
        assert labelled[in_memory].mean() >= 0.9 and agree >= 0.95 and same_instance >= 0.95
    summary = json.loads((capture / "summary.json").read_text())
    assert set(summary["mean_labelled"]) == {"front", "left", "right"}
    assert all(0 < share <= 1 for share in summary["mean_labelled"].values())
    assert json.loads((capture / "classes.json").read_text())["semantic_classes"] == SEMANTIC_CLASSES


def test_label_images_that_do_not_fit_mono16_are_refused(tmp_path) -> None:
    with McapRecorder(tmp_path / "labels.mcap") as recorder:
        recorder.labels("camera", 0.0, np.array([[0, 65535]], np.uint32), kind="instance")
        with pytest.raises(InvalidInputError, match=r"instance labels of 'camera' must lie in 0\.\.65535"):
            recorder.labels("camera", 0.1, np.array([[0, 65536]], np.uint32), kind="instance")
        with pytest.raises(InvalidInputError, match="label kind must be one of"):
            recorder.labels("camera", 0.1, np.zeros((1, 2), np.uint16), kind="depth")
        with pytest.raises(InvalidInputError, match="integer"):
            recorder.labels("camera", 0.1, np.zeros((1, 2), np.float32))
    (message,) = read_mcap(tmp_path / "labels.mcap")["/camera/instance"][2]
    np.testing.assert_array_equal(label_image(message), [[0, 65535]])


def test_worldweave_record(client, world_id, tmp_path, capsys) -> None:
    poses = tmp_path / "poses.txt"
    # The wall seed's camera (0, 0, 1.5) looking along +x (OpenCV: x right = -y world, y down = -z, z forward = +x).
    poses.write_text("# t x y z qx qy qz qw\n" + "".join(f"{t:.1f} 0 {0.1 * t:.2f} 1.5 -0.5 0.5 -0.5 0.5\n" for t in range(3)))
    out = tmp_path / "run.mcap"
    assert worldweave(["record", "--server", client.target, "--world", world_id, "--poses", str(poses), "--out", str(out),
                       "--lidar-channels", "8", "--lidar-points", "800"]) == 0
    assert "wrote" in capsys.readouterr().out
    topics = read_mcap(out)
    assert len(topics["/camera/image"][2]) == len(topics["/lidar/points"][2]) == 3
    assert topics["/world/points"][0] == "foxglove.PointCloud" and len(topics["/world/points"][2][0].data) > 0
    assert worldweave(["record", "--server", client.target, "--world", world_id, "--poses", str(tmp_path / "none.txt"),
                       "--out", str(out)]) == 2
