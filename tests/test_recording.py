"""MCAP recordings read back with the ``mcap`` reader: the driving capture's file and ``worldweave record``'s."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory

from worldweave.server.cli import main as worldweave

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


def test_driving_capture_writes_an_mcap_foxglove_reads(client, tmp_path) -> None:
    out = tmp_path / "capture"
    argv = sys.argv
    sys.argv = [str(EXAMPLES / "driving_capture.py"), "--server", client.target, "--out", str(out), "--frames", "8",
                "--width", "64", "--height", "48", "--lidar-channels", "16", "--lidar-points", "1600"]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as done:
        assert not done.code
    finally:
        sys.argv = argv
    assert (out / "transforms.json").is_file() and (out / "poses_front.txt").is_file()  # nerfstudio / TUM kept
    topics = read_mcap(out / "capture.mcap")
    expected = {"/tf": "foxglove.FrameTransforms", "/lidar/points": "foxglove.PointCloud", "/lidar/pose": "foxglove.PoseInFrame"}
    for name in ("front", "left", "right"):
        expected |= {f"/{name}/image": "foxglove.CompressedImage", f"/{name}/calibration": "foxglove.CameraCalibration",
                     f"/{name}/pose": "foxglove.PoseInFrame"}
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
