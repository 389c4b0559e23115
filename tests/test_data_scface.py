"""SCface loaders: layout parsing, the fine-tune/test subject split, probes, the fine-tuning form."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from datasets import Image
from tests.layouts import make_scface, pixels, read_pixels

from dcr_hf.data.scface import load_scface, load_scface_finetune, load_scface_images

SUBJECTS = range(1, 7)  # file numbers 001..006 -> labels 0..5
CAMERAS = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def scface_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scface_root")
    make_scface(root, SUBJECTS)
    return root


def _paths(dataset, column: str = "image") -> list[Path]:
    return [Path(item["path"]) for item in dataset.cast_column(column, Image(decode=False))[column]]


def test_gallery_and_probe_columns_follow_file_names(scface_root):
    dataset = load_scface(scface_root, num_finetune_subjects=2)
    gallery, probe = dataset["gallery"], dataset["probe"]
    assert gallery.column_names == ["image", "label", "subject"]
    assert probe.column_names == ["image", "label", "subject", "distance", "camera"]

    # Test subjects only: 003..006, i.e. labels 2..5; label = int(NNN) - 1 and names are NNN.
    assert gallery["subject"][:] == ["003", "004", "005", "006"]
    assert gallery["label"][:] == [2, 3, 4, 5]
    assert gallery.features["label"].names[:6] == ["001", "002", "003", "004", "005", "006"]
    assert gallery.features["label"].num_classes == 130
    assert [p.name for p in _paths(gallery)] == [f"00{s}_frontal.JPG" for s in range(3, 7)]

    assert len(probe) == 4 * len(CAMERAS) * 3
    for path, row in zip(_paths(probe), probe.select_columns(["label", "subject", "distance", "camera"])):
        subject, camera, distance = re.match(r"(\d+)_cam(\d)_(\d)\.jpg", path.name).groups()
        assert (row["subject"], row["label"], row["camera"], row["distance"]) == (
            subject,
            int(subject) - 1,
            int(camera),
            int(distance),
        )
        assert path.parent.parent.name == f"surveillance_cameras_distance_{distance}"
    assert sorted(set(probe["distance"][:])) == [1, 2, 3] and sorted(set(probe["camera"][:])) == list(CAMERAS)
    np.testing.assert_array_equal(pixels(gallery[0]["image"]), read_pixels(_paths(gallery)[0]))


def test_split_is_configurable_and_defaults_to_50(scface_root):
    # With the default split every fixture subject (labels 0..5) is a fine-tuning subject.
    assert len(load_scface(scface_root)["gallery"]) == 0
    everyone = load_scface(scface_root, num_finetune_subjects=0)
    assert everyone["gallery"]["label"][:] == list(range(6))
    only_cameras = load_scface(scface_root, num_finetune_subjects=0, cameras=(2, 4))["probe"]
    assert sorted(set(only_cameras["camera"][:])) == [2, 4] and len(only_cameras) == 6 * 2 * 3
    raw = load_scface_images(scface_root)
    assert len(raw["mugshot"]) == 6 and len(raw["surveillance"]) == 6 * 5 * 3


def test_finetune_form_pairs_mugshot_with_each_distance(scface_root):
    dataset = load_scface_finetune(scface_root, num_finetune_subjects=3)
    assert dataset.column_names == ["image", "low_resolution_images", "label", "camera"]
    assert dataset.features["label"].names == ["001", "002", "003"]
    assert len(dataset) == 3 * len(CAMERAS)
    assert [(row["label"], row["camera"]) for row in dataset.select_columns(["label", "camera"])] == [
        (label, camera) for label in range(3) for camera in CAMERAS
    ]
    scface = scface_root / "SCface"
    for index in (0, 7, 14):
        row = dataset[index]
        subject, camera = row["label"] + 1, row["camera"]
        np.testing.assert_array_equal(
            pixels(row["image"]), read_pixels(scface / "mugshot_frontal_cropped_all" / f"{subject:03d}_frontal.JPG")
        )
        assert len(row["low_resolution_images"]) == 3
        for distance, image in zip((1, 2, 3), row["low_resolution_images"]):
            expected = (
                scface
                / f"surveillance_cameras_distance_{distance}"
                / f"cam{camera}"
                / f"{subject:03d}_cam{camera}_{distance}.jpg"
            )
            np.testing.assert_array_equal(pixels(image), read_pixels(expected))


def test_missing_distance_or_mugshot_drops_rows_with_one_warning(tmp_path, caplog):
    make_scface(tmp_path, range(1, 5), skip=[(1, 2, 3), (2, 5, 1)], skip_mugshots=[3, 4], camera_subfolders=False)
    with caplog.at_level(logging.WARNING):
        finetune = load_scface_finetune(tmp_path, num_finetune_subjects=3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Subject 001 camera 2 lacks d3, subject 002 camera 5 lacks d1, subject 003 has no mugshot (5 rows).
    assert len(warnings) == 1 and "Dropped 7 of 15 fine-tuning" in warnings[0]
    assert [(r["label"], r["camera"]) for r in finetune.select_columns(["label", "camera"])] == [
        (0, 1),
        (0, 3),
        (0, 4),
        (0, 5),
        (1, 1),
        (1, 2),
        (1, 3),
        (1, 4),
    ]
    assert finetune.features["label"].names == ["001", "002"]
    with pytest.raises(FileNotFoundError, match=r"(?s)subject 001 camera 2: no d3.*subject 003 camera 1: no mugshot"):
        load_scface_finetune(tmp_path, num_finetune_subjects=3, strict=True)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        test = load_scface(tmp_path, num_finetune_subjects=2)
    # Probes of 003 and 004 cannot be identified without their mugshot.
    assert any("Dropped 30 of 30 probes" in r.getMessage() for r in caplog.records)
    assert len(test["probe"]) == 0 and len(test["gallery"]) == 0
    with pytest.raises(FileNotFoundError, match="subject 003 .no mugshot."):
        load_scface(tmp_path, num_finetune_subjects=2, strict=True)


def test_missing_layout_parts(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere'.*Expected layout.*mugshot_frontal_cropped_all"):
        load_scface(tmp_path / "nowhere")
    tmp_path.joinpath("SCface").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"(?s)SCface mugshot folder not found: '.*mugshot_frontal_cropped_all'"
    ):
        load_scface(tmp_path)
    make_scface(tmp_path, [1], distances=(1, 2))
    with pytest.raises(FileNotFoundError, match=r"(?s)surveillance_cameras_distance_3'.*Expected layout"):
        load_scface_finetune(tmp_path)


def test_distance_in_name_must_match_folder(tmp_path):
    make_scface(tmp_path, [1])
    misplaced = tmp_path / "SCface" / "surveillance_cameras_distance_2" / "cam1" / "001_cam1_3.jpg"
    (tmp_path / "SCface" / "surveillance_cameras_distance_3" / "cam1" / "001_cam1_3.jpg").rename(misplaced)
    with pytest.raises(ValueError, match=r"001_cam1_3\.jpg' is named for distance 3 but lies in .*distance_2"):
        load_scface(tmp_path)


def test_bad_split_arguments(scface_root):
    with pytest.raises(ValueError, match="num_finetune_subjects"):
        load_scface(scface_root, num_finetune_subjects=-1)
    with pytest.raises(ValueError, match="cameras"):
        load_scface_finetune(scface_root, cameras=())


def test_images_of_unknown_cameras_are_left_out_with_a_warning(tmp_path, caplog):
    make_scface(tmp_path, [51, 52], cameras=(1, 9))
    with caplog.at_level(logging.WARNING):
        probe = load_scface(tmp_path)["probe"]
    assert set(probe["camera"]) == {1}
    assert "camera(s) [9]" in caplog.text and "6 surveillance images" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert set(load_scface(tmp_path, cameras=(1, 9))["probe"]["camera"]) == {1, 9}
    assert "camera(s)" not in caplog.text
