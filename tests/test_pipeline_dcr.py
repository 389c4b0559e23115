"""The DCR feature-extraction pipeline: branch routing of native LR crops, forced and simulated
probes, equality with the model's own branch output, and what a folder records for it.

The remote-code load (a process without dcr_hf) is in `test_hub_loading.py`.
"""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from tests.layouts import smooth_photo
from tests.models import tiny_config
from transformers import pipeline

from dcr_hf import DCRForImageClassification, DCRImageProcessor, DCRModel
from dcr_hf.modeling_dcr import CUSTOM_PIPELINES
from dcr_hf.pipeline_dcr import DCRFeatureExtractionPipeline, nearest_resolution


def _photo(height: int, width: int, seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(smooth_photo(np.random.default_rng(seed), height, width))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    models = {}
    for name, use_branches in (("trunk", False), ("branch", True)):
        torch.manual_seed(0)
        model = DCRModel(tiny_config(use_branches=use_branches)).eval()
        model.save_pretrained(root / name)
        DCRImageProcessor(image_size=32).save_pretrained(root / name)
        # The oracle is the model as the pipeline loads it: a freshly built model and its reloaded
        # copy (same weights to the bit, in other memory) can differ in the last bit of a result.
        models[name] = (root / name, DCRModel.from_pretrained(root / name).eval())
    return models


def _pipe(folder) -> DCRFeatureExtractionPipeline:
    # With dcr_hf installed the class can be named; the folder's own copy is the remote-code path.
    return pipeline("image-feature-extraction", model=str(folder), pipeline_class=DCRFeatureExtractionPipeline)


def _expected(model: DCRModel, image, resolution, low_resolution_size=None) -> torch.Tensor:
    processor = DCRImageProcessor(image_size=model.config.image_size)  # the folders' processor
    with torch.no_grad():
        pixels = processor(image, low_resolution_size=low_resolution_size).pixel_values
        return model(pixels, resolution=resolution).pooler_output


@pytest.mark.parametrize(
    ("side", "expected"),
    [(8, 8), (6, 8), (10, 8), (11, 12), (12, 12), (20, 12), (22, 12), (23, "hr"), (31, "hr"), (32, "hr"), (250, "hr")],
)
def test_nearest_resolution_by_the_shorter_side(side, expected):
    # Branches 8 and 12 of a 32x32 model: 10 is a tie (goes to 8), 22 is 10 from 12 and from 32 (goes to 12).
    assert nearest_resolution(side, [12, 8], 32) == expected


@pytest.mark.parametrize(("size", "branch"), [((8, 8), 8), ((11, 13), 12), ((13, 11), 12), ((40, 64), "hr")])
def test_native_crops_go_to_the_branch_nearest_their_size(folders, size, branch):
    folder, model = folders["branch"]
    pipe = _pipe(folder)
    image = _photo(*size)
    assert pipe.resolution_for(image) == branch
    got = pipe(image, return_tensors=True)
    assert got.shape == (1, model.config.branch_hidden_size)
    assert torch.equal(got, _expected(model, image, branch))
    # The default output is the same embedding as a nested list, like transformers' pooled features.
    assert pipe(image) == got.tolist()


def test_forced_branch_and_simulated_probe(folders):
    folder, model = folders["branch"]
    pipe = _pipe(folder)
    image = _photo(64, 64)
    assert torch.equal(pipe(image, resolution=8, return_tensors=True), _expected(model, image, 8))
    assert torch.equal(pipe(image, resolution="hr", return_tensors=True), _expected(model, image, None))
    simulated = pipe(image, low_resolution_size=8, return_tensors=True)
    assert pipe.resolution_for(image, low_resolution_size=8) == 8
    assert torch.equal(simulated, _expected(model, image, 8, low_resolution_size=8))
    # A forced branch wins over the routing of the simulated size; branches differ from each other.
    forced = pipe(image, low_resolution_size=8, resolution=12, return_tensors=True)
    assert torch.equal(forced, _expected(model, image, 12, low_resolution_size=8))
    assert not torch.equal(forced, simulated)
    with pytest.raises(ValueError, match="resolution 16 has no branch"):
        pipe(image, resolution=16)


def test_a_trunk_model_ignores_the_resolution(folders):
    folder, model = folders["trunk"]
    pipe = _pipe(folder)
    crop = _photo(8, 8)
    expected = _expected(model, crop, None)
    for kwargs in ({}, {"resolution": 12}, {"resolution": "hr"}):
        assert torch.equal(pipe(crop, return_tensors=True, **kwargs), expected)


def test_batches_route_every_image_on_its_own(folders):
    folder, model = folders["branch"]
    pipe = _pipe(folder)
    images = [_photo(8, 8, 1), _photo(64, 64, 2), _photo(12, 12, 3)]
    batched = pipe(images, batch_size=3, return_tensors=True)
    for image, got, branch in zip(images, batched, (8, "hr", 12)):
        torch.testing.assert_close(got, _expected(model, image, branch), rtol=1e-5, atol=1e-6)


def test_paths_training_heads_and_bad_inputs(folders, tmp_path):
    folder, model = folders["branch"]
    path = tmp_path / "crop.png"
    _photo(8, 8).save(path)
    pipe = _pipe(folder)
    assert torch.equal(pipe(str(path), return_tensors=True), _expected(model, PIL.Image.open(path), 8))
    # A training head embeds through its DCRModel.
    head = DCRForImageClassification(tiny_config(use_branches=True)).eval()
    head.dcr.load_state_dict(model.state_dict())
    from_head = DCRFeatureExtractionPipeline(model=head, image_processor=DCRImageProcessor(image_size=32))
    assert torch.equal(from_head(str(path), return_tensors=True), _expected(head.dcr, PIL.Image.open(path), 8))
    with pytest.raises(ValueError, match="PIL images, paths, URLs or encoded bytes"):
        pipe(np.zeros((8, 8, 3), dtype=np.uint8))


def test_the_folder_records_the_pipeline_as_transformers_does(folders, tmp_path, monkeypatch):
    folder, _ = folders["branch"]
    assert (folder / "pipeline_dcr.py").is_file()
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"] == CUSTOM_PIPELINES
    # What `Pipeline.save_pretrained` derives from the class's registration, caught before DCR's own
    # save_pretrained writes the entry: the two agree.
    recorded = {}
    original = DCRModel.save_pretrained

    def record(self, *args, **kwargs):
        recorded.update(json.loads(json.dumps(self.config.custom_pipelines)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DCRModel, "save_pretrained", record)
    _pipe(folder).save_pretrained(tmp_path / "saved")
    assert recorded == CUSTOM_PIPELINES
    assert (tmp_path / "saved" / "pipeline_dcr.py").read_text() == (folder / "pipeline_dcr.py").read_text()
