"""`dcr-export-onnx` / `dcr_hf.export_onnx`: onnxruntime embeddings against PyTorch's, on CPU.

The reference is the folder loaded by `AutoModel` and fed by the folder's own processor (photos,
simulated LR probes), at two batch sizes per branch and with a mixed batch; the model file, its
metadata and the JSON beside it; the command's errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from tests.models import tiny_config
from transformers import AutoModel

from dcr_hf import DCRForImageClassification, DCRImageProcessor, branch_model_from_trunk
from dcr_hf.export_onnx import METADATA_FILE, METADATA_KEY, ONNX_FILE, OnnxExportError, export_onnx, main

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4
MEAN, STD = [0.4, 0.45, 0.5], [0.25, 0.3, 0.2]  # not the defaults: a wrong normalization would show


def _save(folder: Path, model: DCRForImageClassification) -> Path:
    model.save_pretrained(folder)
    DCRImageProcessor(image_size=model.config.image_size, image_mean=MEAN, image_std=STD).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, Path, dict]]:
    """A trunk model and a branch model (random branches), each saved and exported once."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    trunk = DCRForImageClassification(tiny_config())
    branch = branch_model_from_trunk(trunk, specialized_initialization=False)
    result = {}
    for name, model in (("trunk", trunk), ("branch", branch)):
        folder = _save(root / name, model)
        description = export_onnx(str(folder), root / f"{name}-onnx")
        result[name] = (folder, root / f"{name}-onnx", description)
    return result


def _inputs(folder: Path, photos: list[str], size: int | None) -> torch.Tensor:
    processor = DCRImageProcessor.from_pretrained(folder)
    return processor(photos, low_resolution_size=size, return_tensors="pt").pixel_values


def _onnx_embeddings(onnx_dir: Path, pixel_values: torch.Tensor, branch_index: np.ndarray | None) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(onnx_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    feed = {"pixel_values": pixel_values.numpy()}
    if branch_index is not None:
        feed["branch_index"] = branch_index.astype(np.int64)
    return session.run(["embeddings"], feed)[0]


def _photos(face_photos: dict[str, str], batch_size: int) -> list[str]:
    return list(face_photos.values())[:batch_size]


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("size", [None, 8, 12])
def test_trunk_model_onnx_embeddings_equal_pytorch(exported, face_photos, batch_size, size):
    folder, onnx_dir, _ = exported["trunk"]
    pixel_values = _inputs(folder, _photos(face_photos, batch_size), size)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(folder).eval()(pixel_values).pooler_output.numpy()
    got = _onnx_embeddings(onnx_dir, pixel_values, None)
    assert got.shape == expected.shape == (batch_size, 32)
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("resolution", ["hr", 8, 12])
def test_every_branch_onnx_embeddings_equal_pytorch(exported, face_photos, batch_size, resolution):
    folder, onnx_dir, description = exported["branch"]
    size = None if resolution == "hr" else resolution
    pixel_values = _inputs(folder, _photos(face_photos, batch_size), size)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(folder).eval()(pixel_values, resolution=resolution).pooler_output.numpy()
    index = description["branch_index"][str(resolution)]
    got = _onnx_embeddings(onnx_dir, pixel_values, np.full(batch_size, index))
    assert got.shape == expected.shape == (batch_size, 32)
    assert np.abs(got - expected).max() <= TOLERANCE


def test_one_batch_can_mix_branches(exported, face_photos):
    folder, onnx_dir, description = exported["branch"]
    photos = _photos(face_photos, 5)
    resolutions = ["hr", 8, 12, 8, "hr"]
    pixel_values = torch.cat([_inputs(folder, [p], None if r == "hr" else r) for p, r in zip(photos, resolutions)])
    with torch.no_grad():
        expected = AutoModel.from_pretrained(folder).eval()(pixel_values, resolution=resolutions).pooler_output.numpy()
    index = np.array([description["branch_index"][str(r)] for r in resolutions])
    assert np.abs(_onnx_embeddings(onnx_dir, pixel_values, index) - expected).max() <= TOLERANCE
    # The branches really differ (random branches): a wrong index would not pass the check above.
    assert np.abs(_onnx_embeddings(onnx_dir, pixel_values, np.zeros(5)) - expected).max() > 100 * TOLERANCE


def test_the_model_records_its_opset_inputs_and_description(exported):
    for name, (folder, onnx_dir, description) in exported.items():
        model = onnx.load(str(onnx_dir / ONNX_FILE))
        onnx.checker.check_model(model, full_check=True)
        opset = {entry.domain: entry.version for entry in model.opset_import}[""]
        assert opset == description["opset"] >= 18
        inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        expected_inputs = {"pixel_values": ["batch", 3, 32, 32]}
        if name == "branch":
            expected_inputs["branch_index"] = ["batch"]
        assert inputs == expected_inputs
        [output] = model.graph.output
        assert [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim] == ["batch", 32]
        saved = json.loads((onnx_dir / METADATA_FILE).read_text())
        assert saved == description
        in_model = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
        assert in_model == {k: v for k, v in saved.items() if k != "max_abs_difference"}
        assert saved["branch_index"] == ({"hr": 0, "8": 1, "12": 2} if name == "branch" else None)
        assert all(value <= TOLERANCE for value in saved["max_abs_difference"].values())
        assert set(saved["max_abs_difference"]) == ({"hr", "8", "12"} if name == "branch" else {"trunk"})


def test_the_json_holds_the_processor_that_feeds_the_model(exported, face_photos):
    folder, onnx_dir, _ = exported["branch"]
    settings = json.loads((onnx_dir / METADATA_FILE).read_text())["processor"]
    assert settings["image_mean"] == MEAN and settings["image_std"] == STD
    assert settings["rescale_factor"] == pytest.approx(1 / 255)
    from_json = DCRImageProcessor.from_dict(settings)  # as the README feeds the ONNX model
    photos = _photos(face_photos, 5)
    for size in (None, 8):
        torch.testing.assert_close(
            from_json(photos, low_resolution_size=size, return_tensors="pt").pixel_values,
            _inputs(folder, photos, size), rtol=0, atol=0,
        )


@pytest.mark.slow
def test_paper_trunk_with_prelus_exports_exactly(tmp_path, face_photos):
    torch.manual_seed(1)
    trunk = DCRForImageClassification(tiny_config(trunk_type="paper", hidden_sizes=[8, 8, 16, 16]))
    model = branch_model_from_trunk(trunk, specialized_initialization=False)
    with torch.no_grad():
        for parameter in model.dcr.trunk.parameters():
            if parameter.ndim == 1 and parameter.shape[0] > 1:
                parameter.uniform_(0.1, 0.4)  # channel-wise PReLU slopes (and BN affines) that differ by channel
    folder = _save(tmp_path / "paper", model)
    description = export_onnx(str(folder), tmp_path / "onnx")
    pixel_values = _inputs(folder, _photos(face_photos, 3), 8)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(folder).eval()(pixel_values, resolution=8).pooler_output.numpy()
    got = _onnx_embeddings(tmp_path / "onnx", pixel_values, np.full(3, description["branch_index"]["8"]))
    assert np.abs(got - expected).max() <= TOLERANCE


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _not_dcr_folders(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{")
    return {"bert": tmp_path / "bert", "empty": tmp_path / "empty", "broken": tmp_path / "broken"}


@pytest.mark.parametrize("kind", ["bert", "empty", "broken"])
def test_a_folder_that_is_not_a_dcr_model_is_a_one_line_error(tmp_path, capsys, kind):
    folder = _not_dcr_folders(tmp_path)[kind]
    with pytest.raises(OnnxExportError, match=f"^{folder} is not a DCR model folder or Hub id: "):
        export_onnx(str(folder), tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(folder), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"dcr-export-onnx: error: {folder} is not a DCR model folder or Hub id: ")
    assert lines[0].startswith("usage: dcr-export-onnx")
    assert not (tmp_path / "out").exists()


def test_an_opset_the_exporter_cannot_write_is_refused_before_loading(tmp_path):
    with pytest.raises(OnnxExportError, match="^opset 17 is not available: the exporter writes opset 18 or later"):
        export_onnx(str(tmp_path / "does-not-matter"), tmp_path / "out", opset_version=17)


@pytest.mark.slow
def test_the_command_line_exports_in_a_fresh_process(exported, tmp_path):
    folder, _, description = exported["branch"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "dcr_hf.export_onnx", "--model", str(folder), "--output", str(tmp_path / "cli")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"(opset {description['opset']}; inputs pixel_values" in completed.stdout
    assert "largest embedding difference per branch: hr " in completed.stdout
    assert {p.name for p in (tmp_path / "cli").iterdir()} == {ONNX_FILE, METADATA_FILE}


@pytest.mark.parametrize("trunk", [dict(trunk_type="iresnet"), dict(trunk_type="ir", squeeze_excitation_reduction=4)])
def test_iresnet_trunks_with_branches_export_exactly(tmp_path, face_photos, trunk):
    """The face-recognition IResNet trunks (their embedding BatchNorm1d, subsampling shortcuts, SE),
    every tensor random (batch-norm statistics included), through branches, against onnxruntime."""
    from tests.face_sources import randomize

    model = branch_model_from_trunk(
        DCRForImageClassification(tiny_config(hidden_sizes=[8, 8, 16, 16], stem_hidden_size=8, **trunk)), specialized_initialization=False
    )
    randomize(model, seed=2)
    folder = _save(tmp_path / "iresnet", model)
    description = export_onnx(str(folder), tmp_path / "onnx")
    pixel_values = _inputs(folder, _photos(face_photos, 3), 12)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(folder).eval()(pixel_values, resolution=12).pooler_output.numpy()
    got = _onnx_embeddings(tmp_path / "onnx", pixel_values, np.full(3, description["branch_index"]["12"]))
    assert np.abs(got - expected).max() <= TOLERANCE
