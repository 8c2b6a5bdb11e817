"""`worldweave eval rgbd` (the dataset loader and the command) and `worldweave train weaver --rgbd`, on a small
synthetic dataset in the 7-Scenes layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worldweave.bridge.eval.rgbd import ROW_FIELDS, RGBDDataset, evaluate
from worldweave.bridge.eval.scenes import make_scene
from worldweave.proto.errors import InvalidInputError, NotFoundError
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.server.cli import main

INTRINSICS = Intrinsics(120.0, 120.0, 79.5, 59.5, 160, 120)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """Twelve frames (ids 0, 5, ..., 55) of a camera turning in the room: colour PNG/JPEG, mm depth, poses."""
    root = tmp_path_factory.mktemp("rgbd")
    for name in ("color", "depth", "poses"):
        (root / name).mkdir()
    room = make_scene("room")
    for i in range(12):
        angle = 0.08 * i
        eye = np.array([-0.5, 0.0, 1.4])
        pose = Pose.look_at(eye, eye + [np.cos(angle), np.sin(angle), -0.2])
        frame = room.render(pose, INTRINSICS)
        stem = f"{5 * i:06d}"
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(frame.rgb).save(root / "color" / f"{stem}{suffix}", quality=95)
        Image.fromarray(np.round(frame.depth * 1000).astype(np.uint16)).save(root / "depth" / f"{stem}.png")
        np.savetxt(root / "poses" / f"{stem}.txt", pose.matrix)
    i = INTRINSICS
    (root / "intrinsics.json").write_text(json.dumps(
        {"width": i.width, "height": i.height, "fx": i.fx, "fy": i.fy, "cx": i.cx, "cy": i.cy,
         "depth_scale_m_per_unit": 0.001}
    ))
    return root


def test_loader_reads_the_layout(dataset_dir: Path) -> None:
    dataset = RGBDDataset.open(dataset_dir)
    assert dataset.ids == tuple(range(0, 60, 5)) and dataset.intrinsics == INTRINSICS
    assert dataset.select(10, 26) == [10, 15, 20, 25]
    frame = dataset.frame(15)
    assert frame.rgb.shape == (120, 160, 3) and frame.depth.dtype == np.float32
    assert 0.3 < float(np.median(frame.depth)) < 6.0  # millimetres became metres
    assert np.allclose(frame.pose.matrix, np.loadtxt(dataset_dir / "poses" / "000015.txt"), atol=1e-9)
    with pytest.raises(NotFoundError, match="intrinsics.json"):
        RGBDDataset.open(dataset_dir / "color")
    with pytest.raises(NotFoundError, match="no pose file"):
        dataset.pose(999)


def test_evaluate_gives_a_row_per_memory_mode(dataset_dir: Path) -> None:
    dataset = RGBDDataset.open(dataset_dir)
    rows, summary = evaluate(dataset, dataset.select(0, 30), dataset.select(35, 55), progress=False)
    names = [(r["memory"], r["k"]) for r in rows]
    assert names[:2] == [("global-1cm", 0), ("global-2cm", 0)]
    assert len(rows) == 2 + 4 * 3 and ("anchors-coverage", 7) in names and ("anchors-random", 1) in names
    for row in rows:
        assert tuple(row) == ROW_FIELDS
        assert 0.0 <= row["coverage"] <= 1.0 and row["ms_per_view"] > 0
    by_name = {(r["memory"], r["k"]): r for r in rows}
    # The camera keeps turning: memory covers part of each later view, and what it shows is close to the truth.
    assert 0.2 < by_name[("anchors-coverage", 3)]["coverage"] < 1.0
    assert by_name[("anchors-coverage", 3)]["psnr"] > 18.0
    assert by_name[("anchors-coverage", 3)]["depth_err_m"] < 0.05
    assert summary["fused_frames"] == 7 and summary["eval_frames"] == 5 and summary["anchors"] >= 1
    with pytest.raises(InvalidInputError, match="overlap"):
        evaluate(dataset, dataset.select(0, 30), dataset.select(30, 55), progress=False)


def test_command_prints_the_table_and_writes_json(dataset_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rows.json"
    code = main(["eval", "rgbd", str(dataset_dir), "--fuse", "0:20", "--eval", "45:55", "--json", str(out),
                 "--modes", "coverage,iou", "--set", "k=3", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "anchors-coverage" in printed and "global-1cm" in printed and "PSNR" in printed
    rows = json.loads(out.read_text())
    assert len(rows) == 2 + 2 * 3
    assert all(set(row) == set(ROW_FIELDS) for row in rows)
    with pytest.raises(SystemExit):
        main(["eval", "rgbd", str(dataset_dir), "--fuse", "20:0", "--eval", "45:55"])


def test_train_weaver_on_an_rgbd_folder_alone(dataset_dir: Path, tmp_path: Path, capsys) -> None:
    """``--scenes ''`` trains on the folder's frames alone: no procedural scene is built, and the weights load."""
    from worldweave.bridge.memory.weaver_net import load_weaver

    out = tmp_path / "run"
    code = main(["train", "weaver", "--rgbd", str(dataset_dir), "--rgbd-ids", "0:60", "--scenes", "", "--heldout", "",
                 "--steps", "3", "--batch", "64", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert re.search(r"\(0 procedural pixels, [1-9]\d* RGB-D pixels\)", printed), printed
    assert (out / "curve.png").is_file() and not (out / "data" / "room-1.safetensors").exists()
    load_weaver(str(out / "weaver.safetensors"))


def test_train_weaver_with_nothing_to_train_on_exits_2_in_one_line(capsys) -> None:
    assert main(["train", "weaver", "--scenes", ""]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "worldweave train: error: nothing to train on: --scenes is empty and no --rgbd folder is given"]
