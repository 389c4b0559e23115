"""Confinement by real path: a symbolic link cannot pull a file from outside the data root into a dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from datasets import Image
from tests.layouts import (
    lfw_name,
    make_casia,
    make_identity_folder,
    make_lfw,
    make_scface,
    read_pixels,
    save_face,
    write_original_pairs,
)

from dcr_hf.data.casia import load_casia
from dcr_hf.data.command import main
from dcr_hf.data.generic import load_face_dataset, load_image_folder
from dcr_hf.data.lfw import load_lfw_identities, load_lfw_pairs
from dcr_hf.data.prepare import prepare_dataset
from dcr_hf.data.registry import DatasetOptions, load_protocol_data, options_dict
from dcr_hf.data.scface import load_scface_images
from dcr_hf.errors_dcr import DCRInputError

_PAIRS = [(lfw_name("Ann", 1), lfw_name("Ann", 2), 1), (lfw_name("Ev", 1), lfw_name("Ann", 1), 0)]


def _lfw_with_link(tmp_path: Path, target: Path) -> Path:
    """An LFW root whose `Ev/Ev_0001.jpg`, listed in `lfw_test_pair.txt`, is a link to `target`."""
    root = tmp_path / "root"
    make_lfw(root, {"Ann": 2})
    link = root / "LFW" / "LFW_120x120_120" / lfw_name("Ev", 1)
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    write_original_pairs(root, _PAIRS)
    return root


@pytest.fixture
def secret(tmp_path) -> Path:
    return save_face(tmp_path / "outside" / "secret.jpg", seed=7)


def test_the_issue_reproduction_refuses_in_one_line_and_writes_nothing(tmp_path, secret, capsys):
    """`ln -s /outside/secret.jpg ROOT/LFW/LFW_120x120_120/Ev/Ev_0001.jpg` + `python -m dcr_hf.data prepare`."""
    root = _lfw_with_link(tmp_path, secret)
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--dataset", "lfw", "--data_root", str(root), "--output_dir", str(output)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    link = root / "LFW" / "LFW_120x120_120" / lfw_name("Ev", 1)
    assert f"'{link}' is a symbolic link to '{secret}', outside the data root" in error
    assert "--follow_symlinks_outside_root" in error
    assert not output.exists()
    assert not any(path.name.startswith(".out.") for path in tmp_path.iterdir())  # no staging folder left


def test_the_option_lets_an_outside_link_through_and_is_recorded(tmp_path, secret, capsys):
    root = _lfw_with_link(tmp_path, secret)
    output = tmp_path / "out"
    argv = ["prepare", "--dataset", "lfw", "--data_root", str(root), "--output_dir", str(output)]
    assert main([*argv, "--follow_symlinks_outside_root"]) == 0
    pairs = load_lfw_pairs(output)
    assert pairs.features["image_a"] == Image()
    assert (read_pixels(secret) == _decoded(pairs[1]["image_a"])).all()
    assert '"follow_symlinks_outside_root": true' in (output / "dcr_hf_prepared.json").read_text()


def _decoded(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_a_link_inside_the_root_keeps_working(tmp_path):
    root = tmp_path / "root"
    make_lfw(root, {"Ann": 2})
    inside = root / "LFW" / "LFW_120x120_120" / lfw_name("Ann", 1)
    link = root / "LFW" / "LFW_120x120_120" / lfw_name("Ev", 1)
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(inside, link.parent))
    write_original_pairs(root, _PAIRS)
    pairs = load_lfw_pairs(root)
    assert len(pairs) == 2
    assert (_decoded(pairs[1]["image_a"]) == read_pixels(inside)).all()
    assert "Ev" in load_lfw_identities(root, min_images_per_identity=1).features["label"].names
    # A data root reached through a link is its real path: nothing in it leaves it.
    (tmp_path / "alias").symlink_to(root)
    assert len(load_lfw_pairs(tmp_path / "alias")) == 2


def test_the_lfw_identities_and_the_registry_refuse_the_link_too(tmp_path, secret):
    root = _lfw_with_link(tmp_path, secret)
    with pytest.raises(DCRInputError, match="is a symbolic link to"):
        load_lfw_identities(root)
    options = DatasetOptions(data_root=str(root))
    assert options_dict(options)["follow_symlinks_outside_root"] is False
    with pytest.raises(DCRInputError, match="outside the data root"):
        load_protocol_data("lfw", "verification", options, 112)
    followed = DatasetOptions(data_root=str(root), follow_symlinks_outside_root=True)
    assert len(load_protocol_data("lfw", "verification", followed, 112)) == 2


def test_a_linked_lfw_folder_is_named_as_the_link(tmp_path):
    """A data root that is a tree of links: the link named is the folder's, with its target."""
    elsewhere = tmp_path / "elsewhere"
    make_lfw(elsewhere, {"Ann": 2})
    write_original_pairs(elsewhere, _PAIRS[:1])
    root = tmp_path / "root"
    root.mkdir()
    (root / "LFW").symlink_to(elsewhere / "LFW")
    with pytest.raises(DCRInputError, match=f"'{root / 'LFW'}' is a symbolic link to '{elsewhere / 'LFW'}'"):
        load_lfw_pairs(root)
    assert len(load_lfw_pairs(root, follow_symlinks_outside_root=True)) == 1


def test_a_symlinked_identity_folder_of_a_folder_dataset_is_refused(tmp_path):
    root = tmp_path / "faces"
    make_identity_folder(root, {"ann": 2, "bob": 2})
    make_identity_folder(tmp_path / "outside", {"eve": 2})
    (root / "eve").symlink_to(tmp_path / "outside" / "eve")
    with pytest.raises(DCRInputError, match=f"'{root / 'eve'}' is a symbolic link to"):
        load_image_folder(root)
    with pytest.raises(DCRInputError, match="outside the data root"):
        load_face_dataset(str(root))
    with pytest.raises(DCRInputError, match="outside the data root"):
        prepare_dataset("folder", root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_symlinked_image_of_a_folder_dataset_is_refused_and_one_inside_is_read(tmp_path, secret):
    root = tmp_path / "faces"
    make_identity_folder(root, {"ann": 2, "bob": 2})
    (root / "bob" / "bob_copy.jpg").symlink_to(root / "ann" / "ann_0.jpg")
    assert len(load_image_folder(root)) == 5
    (root / "bob" / "bob_secret.jpg").symlink_to(secret)
    with pytest.raises(DCRInputError, match="bob_secret.jpg' is a symbolic link to"):
        load_image_folder(root)
    assert len(load_image_folder(root, follow_symlinks_outside_root=True)) == 6


@pytest.mark.parametrize("verify_files", [True, False])
def test_a_casia_image_linked_outside_is_refused(tmp_path, secret, verify_files):
    root = tmp_path / "root"
    make_casia(root, [0, 1])
    image = root / "Casia" / "120x120_120" / "0000001" / "001.jpg"
    image.unlink()
    image.symlink_to(secret)
    with pytest.raises(DCRInputError, match="001.jpg' is a symbolic link to"):
        load_casia(root, verify_files=verify_files)
    assert len(load_casia(root, verify_files=verify_files, follow_symlinks_outside_root=True)["train"]) == 4


def test_a_casia_list_file_linked_outside_is_refused(tmp_path):
    root = tmp_path / "root"
    make_casia(root, [0, 1])
    listed = root / "Casia" / "casia_cleaned_list.txt"
    outside = tmp_path / "list.txt"
    listed.rename(outside)
    listed.symlink_to(outside)
    with pytest.raises(DCRInputError, match="casia_cleaned_list.txt' is a symbolic link to"):
        load_casia(root)


def test_an_scface_mugshot_linked_outside_is_refused(tmp_path, secret):
    root = tmp_path / "root"
    make_scface(root, [1, 51])
    mugshot = root / "SCface" / "mugshot_frontal_cropped_all" / "051_frontal.JPG"
    mugshot.unlink()
    mugshot.symlink_to(secret)
    with pytest.raises(DCRInputError, match="051_frontal.JPG' is a symbolic link to"):
        load_scface_images(root)
    assert len(load_scface_images(root, follow_symlinks_outside_root=True)["mugshot"]) == 2


def test_an_scface_camera_folder_linked_outside_is_refused(tmp_path):
    root = tmp_path / "root"
    make_scface(root, [1, 51], camera_subfolders=True)
    make_scface(tmp_path / "elsewhere", [52], camera_subfolders=True)
    camera = root / "SCface" / "surveillance_cameras_distance_2" / "cam9"
    camera.symlink_to(tmp_path / "elsewhere" / "SCface" / "surveillance_cameras_distance_2" / "cam1")
    with pytest.raises(DCRInputError, match=f"'{camera}' is a symbolic link to"):
        load_scface_images(root)


@pytest.mark.parametrize("module", ["dcr_hf.training.arguments", "dcr_hf.evaluation.command"])
def test_train_and_eval_take_the_option_off_by_default(module):
    """`train_hf.py` / `eval_hf.py` get the option from `DatasetOptions`; `eval_hf.py` records it with its
    results (`asdict(data_args)`), training in `training_recipe.json` when it is on."""
    import importlib

    from transformers import HfArgumentParser

    arguments = importlib.import_module(module).DataArguments
    parser = HfArgumentParser(arguments)
    default = parser.parse_args_into_dataclasses([], return_remaining_strings=True)[0]
    given = parser.parse_args_into_dataclasses(["--follow_symlinks_outside_root"], return_remaining_strings=True)[0]
    assert (default.follow_symlinks_outside_root, given.follow_symlinks_outside_root) == (False, True)
    assert options_dict(given)["follow_symlinks_outside_root"] is True


def test_a_link_above_the_data_root_is_not_named_as_the_culprit(tmp_path, secret):
    """A data root under a linked folder (macOS's /tmp -> /private/tmp): the error names the image's link."""
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    root = _lfw_with_link(tmp_path / "linked", secret)
    with pytest.raises(DCRInputError, match=f"'{root}/LFW/LFW_120x120_120/Ev/Ev_0001.jpg' is a symbolic link"):
        load_lfw_pairs(root)
