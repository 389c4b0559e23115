"""TinyFace: the published layout (MATLAB v5 lists written as MATLAB does), the aligned copy, bad
input, and `eval_hf.py --dataset tinyface` against a reference computed here from the same embeddings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from datasets import Image as Image_
from PIL import Image
from scipy.io import loadmat, savemat
from tests.layouts import matlab_cell, save_sized_face
from tests.models import tiny_config

from dcr_hf import DCRImageProcessor, DCRModel
from dcr_hf.data.tinyface import DISTRACTOR_LABEL, load_tinyface
from dcr_hf.errors_dcr import DCRFileNotFoundError, DCRInputError
from dcr_hf.evaluation import compute_embeddings
from dcr_hf.evaluation.command import run

#: (file name, native width, height): identities 1..4; probe sizes spread over the 8/12 branches and HR.
PROBES = [("1_1.jpg", 7, 8), ("2_1.jpg", 12, 13), ("3_1.jpg", 16, 14), ("4_1.jpg", 40, 36), ("1_3.jpg", 10, 9)]
MATCHES = [("1_2.jpg", 14, 14), ("2_2.jpg", 11, 12), ("3_2.jpg", 18, 17), ("4_2.jpg", 20, 20), ("4_3.jpg", 9, 9)]
DISTRACTORS = [(f"{index}_distractor.jpg", 10 + index, 12) for index in range(8)]


def _cell(names: list[str]) -> np.ndarray:
    return matlab_cell([[name] for name in names])


def make_tinyface(root: Path, aligned: str | None = None) -> Path:
    testing = root / "Testing_Set"
    folders = [testing] + ([root / aligned] if aligned else [])
    for number, folder in enumerate(folders):
        for sub, entries in (("Probe", PROBES), ("Gallery_Match", MATCHES), ("Gallery_Distractor", DISTRACTORS)):
            for index, (name, width, height) in enumerate(entries):
                # The aligned copy: other pixels, at the model's size, as aligners write them.
                size = (width, height) if number == 0 else (32, 32)
                save_sized_face(folder / sub / name, *size, seed=1000 * number + 100 * len(sub) + index)
    savemat(testing / "probe_img_ID_pairs.mat", {
        "probe_set": _cell([name for name, *_ in PROBES]),
        "probe_ids": np.array([[float(name.split("_")[0])] for name, *_ in PROBES]),
    })
    savemat(testing / "gallery_match_img_ID_pairs.mat", {
        "gallery_set": _cell([name for name, *_ in MATCHES]),
        "gallery_ids": np.array([[float(name.split("_")[0])] for name, *_ in MATCHES]),
    })
    return root


@pytest.fixture(scope="module")
def branch_model(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-branch")
    torch.manual_seed(0)
    DCRModel(tiny_config(use_branches=True)).save_pretrained(folder)
    DCRImageProcessor(image_size=32).save_pretrained(folder)
    return str(folder)


def test_the_mat_files_are_matlab_cell_arrays(tmp_path):
    root = make_tinyface(tmp_path)
    contents = loadmat(root / "Testing_Set" / "probe_img_ID_pairs.mat")
    assert contents["probe_set"].dtype == object and contents["probe_set"].shape == (5, 1)
    assert contents["probe_set"][0, 0][0] == "1_1.jpg"


def test_load_tinyface(tmp_path):
    splits = load_tinyface(make_tinyface(tmp_path))
    probe, gallery = splits["probe"], splits["gallery"]
    assert probe["label"] == [1, 2, 3, 4, 1]
    assert list(zip(probe["width"], probe["height"])) == [(w, h) for _, w, h in PROBES]
    assert gallery["label"] == [1, 2, 3, 4, 4] + [DISTRACTOR_LABEL] * len(DISTRACTORS)
    assert len(load_tinyface(tmp_path, distractors=False)["gallery"]) == len(MATCHES)


def test_the_aligned_copy_gives_the_pixels_and_testing_set_the_sizes(tmp_path):
    root = make_tinyface(tmp_path, aligned="aligned_pad_0.1_pad_high")
    splits = load_tinyface(root, "aligned_pad_0.1_pad_high")
    probe = splits["probe"]
    assert probe.cast_column("image", Image_(decode=False))[0]["image"]["path"].endswith("aligned_pad_0.1_pad_high/Probe/1_1.jpg")
    assert probe[0]["image"].size == (32, 32)
    assert (probe[0]["width"], probe[0]["height"]) == (7, 8)


def test_a_missing_mat_file_is_one_line(tmp_path):
    root = make_tinyface(tmp_path)
    (root / "Testing_Set" / "gallery_match_img_ID_pairs.mat").unlink()
    with pytest.raises(DCRFileNotFoundError, match="gallery_match_img_ID_pairs.mat' not found") as raised:
        load_tinyface(root)
    assert "\n" not in str(raised.value)


def test_a_listed_but_absent_image_is_one_line(tmp_path):
    root = make_tinyface(tmp_path)
    (root / "Testing_Set" / "Gallery_Match" / "3_2.jpg").unlink()
    with pytest.raises(DCRFileNotFoundError, match=r"Gallery_Match/3_2.jpg' is listed in .*gallery_match_img_ID_pairs"):
        load_tinyface(root)


def test_a_mat_file_without_the_variable_is_one_line(tmp_path):
    root = make_tinyface(tmp_path)
    savemat(root / "Testing_Set" / "probe_img_ID_pairs.mat", {"names": _cell(["1_1.jpg"])})
    with pytest.raises(DCRInputError, match="has no variable 'probe_set'"):
        load_tinyface(root)


def test_a_mat_file_that_links_outside_the_root_is_refused(tmp_path):
    root = make_tinyface(tmp_path / "root")
    outside = tmp_path / "outside.mat"
    (root / "Testing_Set" / "probe_img_ID_pairs.mat").rename(outside)
    (root / "Testing_Set" / "probe_img_ID_pairs.mat").symlink_to(outside)
    with pytest.raises(DCRInputError, match="outside the data root"):
        load_tinyface(root)


def _reference(model_dir: str, root: Path, aligned: str | None, distractors: bool) -> dict[str, float]:
    """Rank-k and mAP computed directly with numpy from the model's embeddings of the same images."""
    model = DCRModel.from_pretrained(model_dir)
    processor = DCRImageProcessor.from_pretrained(model_dir)
    images = root / (aligned or "Testing_Set")
    gallery_paths = [images / "Gallery_Match" / name for name, *_ in MATCHES]
    gallery_labels = [int(name.split("_")[0]) for name, *_ in MATCHES]
    if distractors:
        gallery_paths += [images / "Gallery_Distractor" / name for name in sorted(n for n, *_ in DISTRACTORS)]
        gallery_labels += [-1] * len(DISTRACTORS)
    gallery = compute_embeddings(model, Dataset.from_dict({"image": [Image.open(p) for p in gallery_paths]}),
                                 image_processor=processor, show_progress=False)
    probes = []
    for (name, width, height) in PROBES:
        side = min(width, height)
        branch = 8 if side <= 10 else 12 if side <= 22 else "hr"  # nearest of 8, 12, 32 (HR), ties to the smaller
        pixels = processor(Image.open(images / "Probe" / name), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            probes.append(model(pixels, resolution=branch).pooler_output[0].numpy())
    probes = np.stack(probes)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    p = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    order = np.argsort(-(p @ g.T), axis=1, kind="stable")
    labels = np.asarray(gallery_labels)[order]
    hits = labels == np.asarray([int(name.split("_")[0]) for name, *_ in PROBES])[:, None]
    first = hits.argmax(axis=1) + 1
    expected = {f"rank_{k}": float(np.mean(first <= k)) for k in (1, 5, 20)}
    precisions = [np.mean(np.arange(1, row.sum() + 1) / (np.flatnonzero(row) + 1)) for row in hits]
    expected["map"] = float(np.mean(precisions))
    return expected


@pytest.mark.parametrize("aligned", [None, "aligned_pad_0.1_pad_high"])
def test_eval_hf_tinyface_equals_the_reference(branch_model, tmp_path, aligned):
    root = make_tinyface(tmp_path / "tinyface", aligned=aligned)
    output = tmp_path / "out"
    argv = ["--model_name_or_path", branch_model, "--dataset", "tinyface", "--data_root", str(root),
            "--output_dir", str(output)]
    if aligned:
        argv += ["--tinyface_aligned_dir", aligned]
    result = run(argv)[Path(branch_model).name]
    expected = _reference(branch_model, root, aligned, distractors=True)
    got = result["by_probe_size"]["all"]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert result["protocol"] == "closed-set-identification"
    assert result["num_distractors"] == len(DISTRACTORS)
    assert result["probe_size_histogram"] == {"7": 1, "9": 1, "12": 1, "14": 1, "36": 1}
    assert {row["branch"]: row["num_images"] for row in result["routing"]} == {"8": 2, "12": 2, "hr": 1}
    assert result["cmc"][0] == pytest.approx(expected["rank_1"]) and len(result["cmc"]) == 100
    saved = json.loads((output / "results.json").read_text())["results"][Path(branch_model).name]
    assert saved["by_probe_size"]["all"]["rank_5"] == pytest.approx(expected["rank_5"])
    assert saved["routing"] == result["routing"]
    assert (output / "cmc.png").stat().st_size > 0


def test_no_distractors_is_a_variant_named_as_such_on_the_card(branch_model, tmp_path):
    root = make_tinyface(tmp_path / "tinyface")
    model = shutil.copytree(branch_model, tmp_path / "model")
    result = run(["--model_name_or_path", str(model), "--dataset", "tinyface", "--data_root", str(root),
                  "--tinyface_no_distractors", "--output_dir", str(tmp_path / "out"), "--update_card"])["model"]
    expected = _reference(branch_model, root, None, distractors=False)
    assert result["by_probe_size"]["all"]["rank_1"] == pytest.approx(expected["rank_1"])
    assert result["num_distractors"] == 0
    assert "TinyFace (no distractors)" in (tmp_path / "out" / "results.md").read_text()
    card = ModelCard.load(model / "README.md")
    entries = {(r.dataset_name, r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results}
    for metric in ("rank_1", "rank_5", "rank_20", "map"):
        value = expected[metric]
        assert entries[("TinyFace (no distractors)", metric, "closed-set-identification/all")] == round(100 * value, 2)
    assert "| rank-20 identification accuracy | " in card.text


@pytest.mark.parametrize("option", [["--sizes", "8"], ["--probe_degradation", "blur"]])
def test_simulated_probe_options_are_refused_for_native_faces(tmp_path, option):
    root = make_tinyface(tmp_path)
    with pytest.raises(DCRInputError, match="native LR images"):
        run(["--model_name_or_path", str(tmp_path / "no-model"), "--dataset", "tinyface", "--data_root", str(root), *option])


@pytest.mark.parametrize("option", [["--tinyface_no_distractors"], ["--tinyface_aligned_dir", "aligned"]])
def test_tinyface_options_are_refused_for_other_datasets(tmp_path, option):
    with pytest.raises(DCRInputError, match="applies to --dataset tinyface"):
        run(["--model_name_or_path", str(tmp_path / "no-model"), "--dataset", "synthetic", *option])
