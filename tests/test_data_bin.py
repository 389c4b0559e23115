"""insightface `.bin` verification sets: the restricted unpickler, bad files, and `eval_hf.py --dataset bin`
giving insightface's 10-fold accuracy (its protocol written out below as a small reference)."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.models import tiny_config

from dcr_hf import DCRImageProcessor, DCRModel
from dcr_hf.data.bin import load_bin, read_bin
from dcr_hf.errors_dcr import DCRFileError, DCRInputError
from dcr_hf.evaluation.command import run

NUM_PAIRS = 20


def _encoded(seed: int, side: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _images() -> list[bytes]:
    # Pair i: for a "same" pair the second image is the first with light noise (a genuine-looking pair).
    images = []
    for pair in range(NUM_PAIRS):
        first = _encoded(pair)
        same = pair % 2 == 0
        if same:
            pixels = np.asarray(Image.open(io.BytesIO(first))).astype(np.int16)
            noisy = np.clip(pixels + np.random.default_rng(100 + pair).integers(-20, 21, pixels.shape), 0, 255)
            buffer = io.BytesIO()
            Image.fromarray(noisy.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
            images += [first, buffer.getvalue()]
        else:
            images += [first, _encoded(1000 + pair)]
    return images


ISSAME = [pair % 2 == 0 for pair in range(NUM_PAIRS)]


def write_bin(path: Path, issame=None, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    with open(path, "wb") as stream:
        pickle.dump((_images(), ISSAME if issame is None else issame), stream, protocol=protocol)
    return path


def write_python2_bin(path: Path) -> Path:
    """The pickle Python 2 writes for `(list of str, list of bool)` (insightface's original files): images as
    BINSTRING opcodes, which only `encoding="bytes"` reads back as bytes."""
    body = b"\x80\x02]q\x00("
    for data in _images():
        body += b"T" + len(data).to_bytes(4, "little") + data
    body += b"e]q\x01(" + b"".join(b"\x88" if same else b"\x89" for same in ISSAME) + b"e\x86q\x02."
    path.write_bytes(body)
    return path


class _Payload:
    """A pickle that, when loaded by a plain unpickler, creates a file (the way a pickle runs code)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("issame", [ISSAME, np.array(ISSAME)], ids=["list", "numpy"])
@pytest.mark.parametrize("protocol", [4, 5])
def test_read_bin_accepts_lists_and_numpy_bool_arrays(tmp_path, issame, protocol):
    images, same = read_bin(write_bin(tmp_path / "lfw.bin", issame, protocol))
    assert len(images) == 2 * NUM_PAIRS and same.tolist() == ISSAME


def test_read_bin_reads_python2_files(tmp_path):
    images, same = read_bin(write_python2_bin(tmp_path / "lfw.bin"))
    assert images == _images() and same.tolist() == ISSAME


def test_a_pickle_that_would_run_code_never_runs_it(tmp_path):
    target = tmp_path / "created_by_the_pickle"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps((_images(), [_Payload(target)] * NUM_PAIRS)))
    with pytest.raises(DCRFileError, match=r"refused: its pickle holds global (posix|os|nt)\.system"):
        read_bin(path)
    assert not target.exists()


@pytest.mark.parametrize("content, message", [
    ({"images": []}, "expected the pair"),
    (([b"x"] * 4, [1, 0]), "list of booleans"),
    ((["text"] * 4, [True, False]), "list of encoded image bytes"),
    (([b"x"] * 3, [True, False]), "3 images for 2 pairs"),
])
def test_other_contents_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(DCRInputError, match=message):
        read_bin(path)


def test_a_numpy_array_of_another_dtype_is_refused(tmp_path):
    path = tmp_path / "ints.bin"
    path.write_bytes(pickle.dumps((_images(), np.array(ISSAME, dtype=np.int64)), protocol=4))
    with pytest.raises(DCRFileError, match="only bool arrays"):
        read_bin(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DCRFileError, match="not a readable insightface .bin"):
        read_bin(path)


def test_load_bin_folds_are_insightfaces(tmp_path):
    pairs = load_bin(write_bin(tmp_path / "lfw.bin"))
    assert pairs["fold"] == [fold for fold in range(10) for _ in range(2)]
    assert pairs["is_same"] == ISSAME


def _insightface_accuracy(model_dir: str, images: list[bytes], low_resolution_size: int | None) -> float:
    """insightface's `test` + `evaluate` (arcface_torch/eval/verification.py): embeddings of each image and its
    mirror added and L2-normalized, squared L2 distance of each pair, thresholds 0..4 step 0.01 ("same" when
    below), 10 folds of sklearn's KFold without shuffling, the first best threshold of the 9 training folds."""
    model = DCRModel.from_pretrained(model_dir).eval()
    processor = DCRImageProcessor.from_pretrained(model_dir)
    embeddings = []
    for index, data in enumerate(images):
        image = Image.open(io.BytesIO(data))
        probe = index % 2 == 1 and low_resolution_size is not None
        pixels = processor(image, return_tensors="pt", **({"low_resolution_size": low_resolution_size} if probe else {}))
        branch = low_resolution_size if probe else "hr"
        with torch.no_grad():
            both = model(torch.cat([pixels["pixel_values"], pixels["pixel_values"].flip(-1)]), resolution=branch).pooler_output
        embeddings.append((both[0] + both[1]).numpy().astype(np.float64))
    embeddings = np.stack(embeddings)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    dist = np.sum((embeddings[0::2] - embeddings[1::2]) ** 2, axis=1)
    same = np.asarray(ISSAME)
    thresholds = np.arange(0, 4, 0.01)
    accuracies = []
    for test in np.array_split(np.arange(NUM_PAIRS), 10):
        train = np.setdiff1d(np.arange(NUM_PAIRS), test)
        train_accuracy = [np.mean((dist[train] < t) == same[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_accuracy))]
        accuracies.append(np.mean((dist[test] < best) == same[test]))
    return float(np.mean(accuracies))


@pytest.fixture(scope="module")
def branch_model(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-branch-bin")
    torch.manual_seed(3)
    DCRModel(tiny_config(use_branches=True)).save_pretrained(folder)
    DCRImageProcessor(image_size=32).save_pretrained(folder)
    return str(folder)


def test_eval_hf_bin_equals_insightfaces_protocol(branch_model, tmp_path):
    lfw = write_bin(tmp_path / "lfw.bin")
    cfp = write_python2_bin(tmp_path / "cfp_fp.bin")
    output = tmp_path / "out"
    results = run(["--model_name_or_path", branch_model, "--dataset", "bin", "--data_root", f"{lfw},{cfp}",
                   "--threshold_grid", "insightface", "--flip_tta", "--sizes", "8", "--output_dir", str(output)])
    assert set(results) == {"lfw", "cfp_fp"}
    result = results["lfw"][Path(branch_model).name]
    images = _images()
    assert result["by_resolution"]["hr"]["accuracy"] == pytest.approx(_insightface_accuracy(branch_model, images, None))
    # The DCR variant: the second image of each pair down-sampled to 8 x 8 by the processor's LR operator.
    assert result["by_resolution"]["8"]["accuracy"] == pytest.approx(_insightface_accuracy(branch_model, images, 8))
    saved = json.loads((output / "cfp_fp" / "results.json").read_text())
    assert saved["results"][Path(branch_model).name]["by_resolution"]["hr"]["accuracy"] == pytest.approx(
        result["by_resolution"]["hr"]["accuracy"])
    assert "cfp_fp (insightface .bin)" in (output / "cfp_fp" / "results.md").read_text()


def test_a_missing_bin_is_one_line_before_any_model_loads(tmp_path):
    with pytest.raises(DCRInputError, match="missing.bin' does not exist"):
        run(["--model_name_or_path", str(tmp_path / "no-model"), "--dataset", "bin", "--data_root",
             str(tmp_path / "missing.bin")])
