"""QMUL-SurvFace: the published layout (MATLAB v5 cell arrays), bad input, and both protocols
through `eval_hf.py` against references computed here by brute force from the same embeddings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from PIL import Image
from scipy.io import loadmat, savemat
from tests.layouts import matlab_cell, save_sized_face, write_survface_ids, write_survface_pairs
from tests.models import tiny_config

from dcr_hf import DCRImageProcessor, DCRModel
from dcr_hf.data.survface import load_survface_identification, load_survface_verification
from dcr_hf.errors_dcr import DCRFileNotFoundError, DCRInputError
from dcr_hf.evaluation import compute_embeddings
from dcr_hf.evaluation.command import run


def _face(path: Path, side: int, seed: int) -> None:
    save_sized_face(path, side + 2, side, seed)


VERIFICATION_IMAGES = [f"{identity}_cam{camera}_{frame}.jpg" for identity in (101, 102, 103, 104, 105)
                       for camera, frame in ((1, 1), (2, 7))]
POSITIVE = [[f"{i}_cam1_1.jpg", f"{i}_cam2_7.jpg"] for i in (101, 102, 103, 104, 105)] * 2
NEGATIVE = [[f"{a}_cam1_1.jpg", f"{b}_cam2_7.jpg"] for a, b in
            ((101, 102), (102, 103), (103, 104), (104, 105), (105, 101), (101, 103), (102, 104), (103, 105),
             (104, 101), (105, 102))]
GALLERY = [("201_cam1_1.jpg", 201), ("201_cam3_4.jpg", 201), ("202_cam1_2.jpg", 202), ("203_cam2_9.jpg", 203)]
MATED = [("201_cam2_5.jpg", 201), ("202_cam4_1.jpg", 202), ("203_cam1_3.jpg", 203), ("202_cam3_8.jpg", 202)]
# Unmated probes as the release names them: other test persons' images and unlabelled distractors.
UNMATED = [f"{900 + i}_cam1_1.jpg" for i in range(6)] + [f"distractors_{i}.jpg" for i in (3, 17, 40, 112)]


def make_survface(root: Path, id_dtype: type = np.uint16) -> Path:
    """The release's layout (docs/evaluation.md, QMUL-SurvFace), written by the shared writers."""
    verification = root / "Face_Verification_Test_Set"
    for index, name in enumerate(VERIFICATION_IMAGES):
        _face(verification / "verification_images" / name, 8 + index, seed=index)
    write_survface_pairs(verification / "positive_pairs_names.mat", "positive_pairs_names", POSITIVE)
    write_survface_pairs(verification / "negative_pairs_names.mat", "negative_pairs_names", NEGATIVE)
    identification = root / "Face_Identification_Test_Set"
    for folder, entries in (("gallery", GALLERY), ("mated_probe", MATED)):
        for index, (name, _) in enumerate(entries):
            _face(identification / folder / name, 10 + 3 * index, seed=100 + len(folder) * 10 + index)
    for index, name in enumerate(UNMATED):
        _face(identification / "unmated_probe" / name, 9 + index, seed=500 + index)
    write_survface_ids(identification / "gallery_img_ID_pairs.mat", "gallery_set", "gallery_ids", GALLERY, id_dtype)
    write_survface_ids(identification / "mated_probe_img_ID_pairs.mat", "mated_probe_set", "mated_probe_ids", MATED,
                       id_dtype)
    return root


@pytest.fixture(scope="module")
def trunk_model(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-trunk")
    torch.manual_seed(1)
    DCRModel(tiny_config(use_branches=False)).save_pretrained(folder)
    DCRImageProcessor(image_size=32).save_pretrained(folder)
    return str(folder)


def _embed(model_dir: str, paths: list[Path]) -> np.ndarray:
    model = DCRModel.from_pretrained(model_dir)
    processor = DCRImageProcessor.from_pretrained(model_dir)
    embeddings = compute_embeddings(model, Dataset.from_dict({"image": [Image.open(p) for p in paths]}),
                                    image_processor=processor, show_progress=False)
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def test_load_survface_verification(tmp_path):
    splits = load_survface_verification(make_survface(tmp_path))
    assert len(splits["images"]) == len(VERIFICATION_IMAGES)
    pairs = splits["pairs"]
    assert pairs["is_same"] == [True] * 10 + [False] * 10
    # Each fold holds a tenth of the positive and of the negative pairs.
    assert pairs["fold"] == list(range(10)) * 2


def test_load_survface_identification(tmp_path):
    splits = load_survface_identification(make_survface(tmp_path))
    assert splits["gallery"]["label"] == [201, 201, 202, 203]
    assert splits["mated_probe"]["label"] == [201, 202, 203, 202]
    assert len(splits["unmated_probe"]) == len(UNMATED)


def test_the_fixture_has_the_form_the_release_has(tmp_path):
    # What a check of the release zip reports (see the module docstring of dcr_hf.data.survface):
    # {N x 2} / {N x 1} cells each holding one basename, and integer-valued id columns.
    root = make_survface(tmp_path)
    pairs = loadmat(root / "Face_Verification_Test_Set" / "positive_pairs_names.mat")["positive_pairs_names"]
    assert pairs.shape == (len(POSITIVE), 2) and pairs.dtype == object
    assert all(cell.shape == (1,) and cell.dtype.kind == "U" for cell in pairs.reshape(-1))
    gallery = loadmat(root / "Face_Identification_Test_Set" / "gallery_img_ID_pairs.mat")
    assert gallery["gallery_set"].shape == (len(GALLERY), 1) and gallery["gallery_ids"].shape == (len(GALLERY), 1)
    assert [str(cell[0]) for cell in gallery["gallery_set"][:, 0]] == [name for name, _ in GALLERY]


def test_ids_as_matlab_doubles_and_lists_in_the_evaluation_folder(tmp_path):
    # MATLAB saves numbers as double unless told otherwise; and one public loader reads the two
    # identification lists from Face_Identification_Evaluation/ rather than the test-set folder.
    root = make_survface(tmp_path, id_dtype=np.float64)
    evaluation = root / "Face_Identification_Evaluation"
    evaluation.mkdir()
    for name in ("gallery_img_ID_pairs.mat", "mated_probe_img_ID_pairs.mat"):
        shutil.move(root / "Face_Identification_Test_Set" / name, evaluation / name)
    splits = load_survface_identification(root)
    assert splits["gallery"]["label"] == [201, 201, 202, 203]
    assert splits["mated_probe"]["label"] == [201, 202, 203, 202]


def test_bad_input_is_one_line(tmp_path):
    root = make_survface(tmp_path)
    (root / "Face_Verification_Test_Set" / "verification_images" / "103_cam2_7.jpg").unlink()
    with pytest.raises(DCRFileNotFoundError, match="103_cam2_7.jpg' is listed in"):
        load_survface_verification(root)
    savemat(root / "Face_Verification_Test_Set" / "negative_pairs_names.mat",
            {"negative_pairs_names": matlab_cell([[name] for name, _ in GALLERY])})
    with pytest.raises(DCRInputError, match=r"shape \(4, 1\); expected an N x 2 cell array"):
        load_survface_verification(root)
    (root / "Face_Identification_Test_Set" / "mated_probe_img_ID_pairs.mat").unlink()
    with pytest.raises(DCRFileNotFoundError, match=r"mated_probe_img_ID_pairs.mat' not found \(nor '.*Face_Identification_Evaluation"):
        load_survface_identification(root)


def test_verification_equals_a_brute_force_reference(trunk_model, tmp_path):
    root = make_survface(tmp_path / "survface")
    output = tmp_path / "out"
    model = shutil.copytree(trunk_model, tmp_path / "model")
    result = run(["--model_name_or_path", str(model), "--dataset", "survface", "--protocol", "native-verification",
                  "--data_root", str(root), "--output_dir", str(output), "--update_card"])["model"]
    folder = root / "Face_Verification_Test_Set" / "verification_images"
    embeddings = dict(zip(VERIFICATION_IMAGES, _embed(trunk_model, [folder / name for name in VERIFICATION_IMAGES])))
    scores = np.array([embeddings[a] @ embeddings[b] for a, b in POSITIVE + NEGATIVE])
    same = np.array([True] * len(POSITIVE) + [False] * len(NEGATIVE))
    column = result["by_resolution"]["native"]
    for far in (0.3, 0.1, 0.01, 0.001):
        # TAR at FAR f: the best true accept rate over every threshold whose false accept rate is <= f.
        best = max(np.mean(scores[same] >= t) for t in [*scores, np.inf] if np.mean(scores[~same] >= t) <= far)
        assert column["tar_at_far"][f"{far:g}"] == pytest.approx(best, abs=1e-6), far
    saved = json.loads((output / "results.json").read_text())["results"]["model"]
    assert saved["by_resolution"]["native"]["auc"] == pytest.approx(column["auc"])
    card = ModelCard.load(model / "README.md")
    entries = {(r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results}
    assert entries[("tar@far=0.01", "native-verification/native")] == round(100 * column["tar_at_far"]["0.01"], 2)
    assert entries[("accuracy", "native-verification/native")] == round(100 * column["accuracy"], 2)
    assert (output / "roc.png").is_file()
    assert "TAR@FAR=0.3" in (output / "results.md").read_text()


def test_open_set_identification_equals_a_brute_force_reference(trunk_model, tmp_path):
    root = make_survface(tmp_path / "survface")
    output = tmp_path / "out"
    result = run(["--model_name_or_path", trunk_model, "--dataset", "survface", "--protocol", "open-set-identification",
                  "--data_root", str(root), "--output_dir", str(output)])[Path(trunk_model).name]
    folder = root / "Face_Identification_Test_Set"
    gallery = _embed(trunk_model, [folder / "gallery" / name for name, _ in GALLERY])
    mated = _embed(trunk_model, [folder / "mated_probe" / name for name, _ in MATED])
    unmated = _embed(trunk_model, [folder / "unmated_probe" / name for name in sorted(UNMATED)])
    identities = [201, 202, 203]
    templates = np.stack([gallery[[i for i, (_, g) in enumerate(GALLERY) if g == identity]].mean(0) for identity in identities])
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    mate_scores = np.array([mated[i] @ templates[identities.index(label)] for i, (_, label) in enumerate(MATED)])
    mate_ranks = np.array([1 + np.sum(mated[i] @ templates.T > mate_scores[i]) for i in range(len(MATED))])
    unmated_best = (unmated @ templates.T).max(axis=1)
    for target in (0.3, 0.2, 0.1):
        # The lowest threshold (from the unmated scores, or +inf) whose FPIR is <= the target.
        threshold = min(t for t in [*unmated_best, np.inf] if np.mean(unmated_best > t) <= target + 1e-12)
        for rank in (1, 20):
            expected = np.mean((mate_ranks <= rank) & (mate_scores > threshold))
            assert result["by_rank"][f"rank_{rank}"][f"tpir@fpir={target:g}"] == pytest.approx(expected, abs=1e-6)
    assert result["num_templates"] == 3 and result["num_unmated"] == 10
    assert (output / "tpir_fpir.png").is_file()
    saved = json.loads((output / "results.json").read_text())["results"][Path(trunk_model).name]
    assert set(saved["tpir_curves"]) == {"rank_1", "rank_20"}
