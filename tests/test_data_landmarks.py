"""`python -m dcr_hf.data prepare --landmarks_file`: faces stored aligned to the ArcFace template, the
landmarks file's format and its errors (file and line named, nothing written)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from datasets import DatasetDict
from tests.layouts import make_casia, pixels
from tests.test_alignment import INSIGHTFACE_TEMPLATE, _blob_centres, _render, _similarity

from dcr_hf import DCRImageProcessor
from dcr_hf.data.command import main
from dcr_hf.data.landmarks import read_landmarks_file
from dcr_hf.data.prepare import prepare_dataset

#: (identity/file, photo-from-template similarity) of the folder fixture's photos.
PHOTOS = {"p1/a.png": (1.6, 15.0, 70.0, 30.0), "p1/b.png": (1.2, -10.0, 40.0, 50.0),
          "p2/a.png": (2.0, 5.0, 30.0, 20.0), "p2/b.png": (1.0, 0.0, 10.0, 10.0)}


def _line(relative: str, landmarks: np.ndarray, separator: str = " ") -> str:
    return separator.join([relative, *(f"{value:.6f}" for value in landmarks.ravel())])


def _landmarks_of(similarity: tuple) -> np.ndarray:
    matrix = _similarity(*similarity)
    return (matrix[:, :2] @ np.array(INSIGHTFACE_TEMPLATE).T).T + matrix[:, 2]


@pytest.fixture
def folder(tmp_path) -> Path:
    """An identity folder of PNG photos, each the template face warped by its own similarity."""
    root = tmp_path / "faces"
    for relative, similarity in PHOTOS.items():
        to_template = np.linalg.inv(np.vstack([_similarity(*similarity), [0, 0, 1]]))[:2]
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(_render(300, 300, to_template)).save(root / relative)
    return root


def _write_landmarks(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prepare_stores_every_face_aligned_to_the_template(folder, tmp_path):
    landmarks_file = _write_landmarks(
        tmp_path / "landmarks.txt",
        ["# path x1 y1 ... x5 y5", *(_line(r, _landmarks_of(s)) for r, s in PHOTOS.items()), _line("p3/absent.png", np.ones((5, 2)))],
    )
    prepared = prepare_dataset("folder", folder, tmp_path / "out", landmarks_file=landmarks_file)
    processor = DCRImageProcessor(image_size=112)
    train = prepared["train"]
    assert len(train) == len(PHOTOS)
    names = train.features["label"].names
    expected = {relative: processor.align_image(str(folder / relative), _landmarks_of(similarity))
                for relative, similarity in PHOTOS.items()}
    matched = set()
    for row in train:
        image = pixels(row["image"])
        assert image.shape == (112, 112, 3)
        # Lossless: exactly the processor's alignment of one source photo of the row's identity ...
        same = [r for r, aligned in expected.items() if np.array_equal(image, aligned)]
        assert len(same) == 1 and same[0].split("/")[0] == names[row["label"]]
        matched.add(same[0])
        # ... with the landmarks' blobs back on the template.
        assert np.linalg.norm(_blob_centres(image) - np.array(INSIGHTFACE_TEMPLATE), axis=1).max() < 1.0
    assert matched == set(PHOTOS)
    marker = json.loads((tmp_path / "out" / "dcr_hf_prepared.json").read_text())
    assert marker["options"]["aligned"] == {"template": "arcface", "image_size": 112, "landmarks_file": "landmarks.txt"}


def test_casia_paths_are_relative_to_the_data_root_and_csv_reads(tmp_path):
    root = tmp_path / "data"
    entries = make_casia(root, range(3), images_per_subject=2)
    points = np.array(INSIGHTFACE_TEMPLATE) * 0.9 + 5  # inside the 120 x 120 fixture faces
    landmarks_file = _write_landmarks(
        tmp_path / "landmarks.csv", [_line(f"Casia/120x120_120/{relative}", points, ",") for relative, _ in entries]
    )
    prepared = prepare_dataset("casia", root, tmp_path / "out", num_subjects=3, landmarks_file=landmarks_file,
                               align_size=96)
    assert {pixels(row["image"]).shape for row in prepared["train"]} == {(96, 96, 3)}
    assert DatasetDict.load_from_disk(str(tmp_path / "out"))["train"].num_rows == 6


@pytest.mark.parametrize(
    "line, match",
    [
        ("p1/a.png 1 2 3 4 5 6 7 8 9", r"landmarks.txt:2: malformed line 'p1/a.png 1 2 3 4 5 6 7 8 9'; expected"),
        ("p1/a.png 1 2 3 4 5 6 7 8 9 x", r"landmarks.txt:2: malformed line"),
        ("p1/a.png 1 2 3 4 5 6 7 8 9 nan", r"landmarks.txt:2: malformed line .*finite numbers"),
        ("../elsewhere.png 1 2 3 4 5 6 7 8 9 10", r"landmarks.txt:2: image path '../elsewhere.png' leaves"),
        ("/etc/face.png 1 2 3 4 5 6 7 8 9 10", r"landmarks.txt:2: image path '/etc/face.png' leaves"),
        ("p2/b.png 1 2 3 4 5 6 7 8 9 10", r"landmarks.txt:2: 'p2/b.png' is listed twice \(first on line 1\)"),
    ],
)
def test_a_bad_landmarks_line_is_one_line_naming_file_and_line(folder, tmp_path, capsys, line, match):
    landmarks_file = _write_landmarks(tmp_path / "landmarks.txt", [_line("p2/b.png", np.ones((5, 2)) * [1, 2]), line])
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--dataset", "folder", "--data_root", str(folder), "--output_dir", str(tmp_path / "out"),
              "--landmarks_file", str(landmarks_file)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(error)
    assert re.search(match, error[-1]), error[-1]
    assert not (tmp_path / "out").exists()


def test_images_without_landmarks_are_listed_and_nothing_is_written(folder, tmp_path):
    landmarks_file = _write_landmarks(tmp_path / "landmarks.txt", [_line("p1/a.png", _landmarks_of(PHOTOS["p1/a.png"]))])
    with pytest.raises(ValueError, match=r"^3 image\(s\) have no line in the landmarks file") as error:
        prepare_dataset("folder", folder, tmp_path / "out", landmarks_file=landmarks_file)
    assert str(folder / "p2" / "b.png") in str(error.value)
    assert not (tmp_path / "out").exists()


def test_an_empty_landmarks_file_is_refused(tmp_path):
    landmarks_file = _write_landmarks(tmp_path / "landmarks.txt", ["# header only"])
    with pytest.raises(ValueError, match="lists no landmarks"):
        read_landmarks_file(landmarks_file, tmp_path)
