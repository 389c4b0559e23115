"""Generic loaders: identity-per-folder trees, saved datasets and Hub ids, with column renaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from tests.layouts import make_identity_folder, pixels, read_pixels, save_face

import dcr_hf.data.generic as generic
from dcr_hf.data.generic import load_face_dataset, load_image_folder

# "test" as an identity and "x_test_1.jpg" as a file name would be split names for a plain imagefolder.
IDENTITIES = {"alice": 2, "bob": 3, "test": 1}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    make_identity_folder(root, IDENTITIES)
    save_face(root / "bob" / "x_test_1.jpg")
    (root / "alice" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_labels_are_folder_names(folder, tmp_path):
    dataset = load_image_folder(folder, cache_dir=tmp_path)
    assert isinstance(dataset, Dataset)
    assert dataset.features["label"] == ClassLabel(names=["alice", "bob", "test"])
    paths = [Path(item["path"]) for item in dataset.cast_column("image", Image(decode=False))["image"]]
    assert len(paths) == sum(IDENTITIES.values()) + 1
    assert [dataset.features["label"].int2str(label) for label in dataset["label"]] == [p.parent.name for p in paths]
    np.testing.assert_array_equal(pixels(dataset[0]["image"]), read_pixels(paths[0]))


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)missing_tree'.*Expected layout.*<identity_1>"):
        load_image_folder(tmp_path / "missing_tree")
    flat = tmp_path / "flat"
    save_face(flat / "loose.jpg")
    with pytest.raises(ValueError, match="holds images directly"):
        load_image_folder(flat)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no identity sub-folders"):
        load_image_folder(empty)


def test_face_dataset_from_folder(folder, tmp_path):
    dataset = load_face_dataset(folder, cache_dir=tmp_path)
    assert dataset.column_names == ["image", "label"] and dataset.features["label"].names == ["alice", "bob", "test"]


def _saved(tmp_path: Path) -> tuple[Path, list[Path]]:
    paths = [save_face(tmp_path / "src" / f"{i}.jpg") for i in range(5)]
    persons = ["zed", "amy", "zed", "bo", "amy"]
    dataset = Dataset.from_dict(
        {"img": [str(p) for p in paths], "person": persons, "uid": list(range(5))},
        features=Features({"img": Value("string"), "person": Value("string"), "uid": Value("int64")}),
    )
    out = tmp_path / "saved"
    DatasetDict({"train": dataset, "test": dataset.select([0, 1])}).save_to_disk(str(out))
    return out, paths


def test_face_dataset_renames_and_encodes_columns(tmp_path):
    saved, paths = _saved(tmp_path)
    dataset = load_face_dataset(saved, split="train", image_column="img", label_column="person")
    assert dataset.column_names == ["image", "label", "uid"]
    assert isinstance(dataset.features["image"], Image)
    label = dataset.features["label"]
    assert isinstance(label, ClassLabel) and sorted(label.names) == ["amy", "bo", "zed"]
    assert [label.int2str(v) for v in dataset["label"]] == ["zed", "amy", "zed", "bo", "amy"]
    np.testing.assert_array_equal(pixels(dataset[3]["image"]), read_pixels(paths[3]))

    both = load_face_dataset(saved, image_column="img", label_column="person")
    assert isinstance(both, DatasetDict) and set(both) == {"train", "test"} and len(both["test"]) == 2

    # Integer labels keep their ids.
    by_uid = load_face_dataset(saved, split="test", image_column="img", label_column="uid")
    assert by_uid["label"][:] == [0, 1] and by_uid.features["label"].num_classes == 2


def test_face_dataset_errors(tmp_path):
    saved, _ = _saved(tmp_path)
    with pytest.raises(ValueError, match=r"no label column 'label'; its columns are \['img', 'person', 'uid'\]"):
        load_face_dataset(saved, split="train", image_column="img")
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_face_dataset(saved, split="validation", image_column="img", label_column="person")
    with pytest.raises(ValueError, match="must hold images"):
        load_face_dataset(saved, split="train", image_column="uid", label_column="person")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_face_dataset(tmp_path / "does" / "not" / "exist")


def test_face_dataset_hub_id_goes_through_load_dataset(monkeypatch, tmp_path):
    calls = []
    path = save_face(tmp_path / "a.jpg")
    hub = DatasetDict(
        {"train": Dataset.from_dict({"picture": [str(path)], "id": [7]}).cast_column("picture", Image())}
    )

    def fake_load_dataset(name, split=None, cache_dir=None):
        calls.append((name, split))
        return hub[split] if split else hub

    monkeypatch.setattr(generic, "load_dataset", fake_load_dataset)
    dataset = load_face_dataset("owner/faces", split="train", image_column="picture", label_column="id")
    assert calls == [("owner/faces", "train")]
    assert dataset.column_names == ["image", "label"] and dataset["label"][:] == [7]
    assert dataset.features["label"].num_classes == 8
