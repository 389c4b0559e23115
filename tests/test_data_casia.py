"""CASIA-WebFace loader: list parsing, the subject-level 10-fold split, missing files, bad layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from datasets import Image
from tests.layouts import make_casia, pixels, read_pixels, write_casia_list

from dcr_hf.data.casia import casia_validation_mask, load_casia

NUM_SUBJECTS = 15  # not a multiple of 10, so the fold bounds k/10*N are fractional


@pytest.fixture(scope="module")
def casia_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("casia_root")
    make_casia(root, range(NUM_SUBJECTS), images_per_subject=2)
    return root


def _subject_of_path(path: str) -> int:
    return int(Path(path).parent.name)


def _row_subjects(split) -> list[int]:
    """Subject of every row, read from the file path (independent of the label)."""
    return [_subject_of_path(item["path"]) for item in split.cast_column("image", Image(decode=False))["image"]]


@pytest.mark.parametrize("fold", range(10))
def test_fold_puts_the_kth_tenth_of_subjects_in_validation(casia_root, fold):
    dataset = load_casia(casia_root, fold=fold, num_subjects=NUM_SUBJECTS)
    # Oracle: the interval of the reference, evaluated with exact fractions.
    expected_validation = [s for s in range(NUM_SUBJECTS) if fold * NUM_SUBJECTS <= 10 * s < (fold + 1) * NUM_SUBJECTS]
    expected_train = [s for s in range(NUM_SUBJECTS) if s not in expected_validation]

    assert set(dataset) == {"train", "validation"}
    for split, expected in (("train", expected_train), ("validation", expected_validation)):
        part = dataset[split]
        label_feature = part.features["label"]
        assert label_feature.names == [str(s) for s in expected]
        assert len(part) == 2 * len(expected)
        # Each row's label names the subject its file belongs to; labels are contiguous 0..n-1.
        names = [label_feature.int2str(label) for label in part["label"]]
        assert names == [str(s) for s in _row_subjects(part)]
        assert sorted(set(part["label"])) == list(range(len(expected)))


@pytest.mark.parametrize("fold", [None, 10, 11])
def test_no_validation_for_fold_none_or_at_least_10(casia_root, fold):
    dataset = load_casia(casia_root, fold=fold, num_subjects=NUM_SUBJECTS)
    assert list(dataset) == ["train"]
    assert dataset["train"].features["label"].num_classes == NUM_SUBJECTS
    assert len(dataset["train"]) == 2 * NUM_SUBJECTS
    assert sorted(_row_subjects(dataset["train"])) == sorted(list(range(NUM_SUBJECTS)) * 2)


def test_default_num_subjects_fold_bounds():
    subjects = np.arange(10575)
    # Hand-computed: fold 0 -> [0, 1057.5), fold 1 -> [1057.5, 2115), fold 9 -> [9517.5, 10575).
    assert np.flatnonzero(casia_validation_mask(subjects, 0))[[0, -1]].tolist() == [0, 1057]
    assert np.flatnonzero(casia_validation_mask(subjects, 1))[[0, -1]].tolist() == [1058, 2114]
    assert np.flatnonzero(casia_validation_mask(subjects, 9))[[0, -1]].tolist() == [9518, 10574]
    # Every subject is in exactly one validation fold.
    counts = sum(casia_validation_mask(subjects, k).astype(int) for k in range(10))
    assert (counts == 1).all()
    assert not casia_validation_mask(subjects, 11).any()


def test_images_decode_to_the_files(casia_root):
    train = load_casia(casia_root)["train"]
    paths = [item["path"] for item in train.cast_column("image", Image(decode=False)).select(range(3))["image"]]
    for row, path in zip(train.select(range(3)), paths):
        assert row["image"].size == (120, 120)
        np.testing.assert_array_equal(pixels(row["image"]), read_pixels(Path(path)))


def test_missing_images_are_dropped_with_one_warning(tmp_path, caplog):
    entries = make_casia(tmp_path, range(4), images_per_subject=2)
    write_casia_list(tmp_path, entries + [("0000003/009.jpg", 3), ("0000099/001.jpg", 2)])
    with caplog.at_level(logging.WARNING):
        dataset = load_casia(tmp_path, num_subjects=100)
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Dropped 2 of 10 images" in warnings[0].getMessage()
    assert len(dataset["train"]) == 8

    with pytest.raises(FileNotFoundError, match=r"0000003/009\.jpg[\s\S]*0000099/001\.jpg"):
        load_casia(tmp_path, num_subjects=100, strict=True)
    # Without verification nothing is checked (nor dropped).
    assert len(load_casia(tmp_path, num_subjects=100, verify_files=False)["train"]) == 10


def test_missing_data_root_list_and_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere.*Expected layout.*casia_cleaned_list\.txt"):
        load_casia(tmp_path / "nowhere")
    (tmp_path / "Casia" / "120x120_120").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"(?s)casia_cleaned_list\.txt'.*Expected layout.*120x120_120"):
        load_casia(tmp_path)
    with pytest.raises(FileNotFoundError, match="other_list.txt"):
        load_casia(tmp_path, list_file=tmp_path / "other_list.txt")
    (tmp_path / "Casia" / "120x120_120").rmdir()
    write_casia_list(tmp_path, [("0000000/001.jpg", 0)])
    with pytest.raises(FileNotFoundError, match=r"(?s)120x120_120'.*Expected layout"):
        load_casia(tmp_path)


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("0000001/001.jpg", r"casia_cleaned_list\.txt:3: malformed line '0000001/001\.jpg'"),
        ("0000001/001.jpg one", r"casia_cleaned_list\.txt:3: malformed line"),
        ("0000001/001.jpg 15", r"casia_cleaned_list\.txt:3: subject id 15 is outside \[0, 15\)"),
        ("0000001/001.jpg -1", r"casia_cleaned_list\.txt:3: subject id -1"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    entries = make_casia(tmp_path, range(2), images_per_subject=1)
    write_casia_list(tmp_path, [f"{p} {s}" for p, s in entries] + [bad_line])
    with pytest.raises(ValueError, match=message):
        load_casia(tmp_path, num_subjects=NUM_SUBJECTS)


def test_negative_fold_is_rejected(casia_root):
    with pytest.raises(ValueError, match="fold must be None or >= 0"):
        load_casia(casia_root, fold=-1, num_subjects=NUM_SUBJECTS)


@pytest.mark.parametrize("line", ["/etc/passwd 3", "../outside.jpg 3", "0000001/../../x.jpg 1"])
def test_list_paths_may_not_leave_the_image_folder(tmp_path, line):
    make_casia(tmp_path, [0], images_per_subject=1)
    write_casia_list(tmp_path, ["0000000/001.jpg 0", line])
    with pytest.raises(ValueError, match=r"casia_cleaned_list\.txt:2: image path .* leaves the image folder"):
        load_casia(tmp_path)


def test_byte_order_mark_does_not_eat_the_first_line(tmp_path):
    make_casia(tmp_path, [0, 1], images_per_subject=1)
    list_file = tmp_path / "Casia" / "casia_cleaned_list.txt"
    list_file.write_bytes(b"\xef\xbb\xbf" + list_file.read_bytes())
    assert len(load_casia(tmp_path)["train"]) == 2
    list_file.write_bytes(b"0000000/001.jpg 0\n0000001/\xff.jpg 1\n")
    with pytest.raises(ValueError, match=r"casia_cleaned_list\.txt:2: byte 0xff at column 9 is not UTF-8"):
        load_casia(tmp_path)
