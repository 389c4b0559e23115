"""Training on a converted face backbone (`dcr-convert --source arcface_torch`, an r18): the branch
stage (`--stage branch --trunk FOLDER`) and the whole-trunk fine-tuning (`--stage finetune
--init_from FOLDER`), at the trunk's 112x112 input on the synthetic default, a few steps at batch 2."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dcr_hf.convert.face_backbone import convert_face_backbone
from dcr_hf.training.command import train as train_command
from tests import face_sources

SYNTHETIC = ["--synthetic_num_identities", "4", "--synthetic_images_per_identity", "2", "--synthetic_num_pairs", "20",
             "--synthetic_num_verification_identities", "20", "--synthetic_verification_images_per_identity", "2",
             "--validation_dataset", "none"]
RUN = ["--per_device_train_batch_size", "2", "--max_steps", "2", "--report_to", "none", "--dataloader_num_workers", "0",
       "--seed", "0", "--disable_tqdm", "true", "--use_cpu", "true",
       "--evaluate_before_training", "false", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]


@pytest.fixture(scope="module")
def converted_r18(tmp_path_factory):
    folder = tmp_path_factory.mktemp("r18")
    face_sources.save_arcface_torch_model(face_sources.insightface_network("r18"), folder / "model.pt")
    convert_face_backbone("arcface_torch", folder / "model.pt", "r18", folder / "converted")
    return folder / "converted"


@pytest.mark.slow
def test_branches_train_on_a_converted_trunk_at_112(converted_r18, tmp_path):
    train_command(["--stage", "branch", "--trunk", str(converted_r18), "--output_dir", str(tmp_path / "branch"),
                   *SYNTHETIC, *RUN])
    config = json.loads((tmp_path / "branch" / "config.json").read_text())
    assert config["use_branches"] and config["image_size"] == 112 and config["trunk_type"] == "iresnet"
    assert config["low_resolution_sizes"] == [8, 12, 16, 20] and len(config["id2label"]) == 4
    trained, source = load_file(str(tmp_path / "branch" / "model.safetensors")), load_file(str(converted_r18 / "model.safetensors"))
    # The frozen trunk is the converted one, to the bit; the branches are sized to its 512-d embedding.
    for key, value in source.items():
        torch.testing.assert_close(trained[f"dcr.{key}"], value, rtol=0, atol=0)
    assert trained["dcr.branches.1.projection.weight"].shape == (512, 512)
    assert "classifier.weight" in trained and trained["branch_classifiers.2.classifier.weight"].shape == (4, 512)


@pytest.mark.slow
def test_the_whole_converted_trunk_fine_tunes(converted_r18, tmp_path):
    train_command(["--stage", "finetune", "--init_from", str(converted_r18), "--output_dir", str(tmp_path / "tuned"),
                   *SYNTHETIC, *RUN])
    trained, source = load_file(str(tmp_path / "tuned" / "model.safetensors")), load_file(str(converted_r18 / "model.safetensors"))
    key = "trunk.stages.0.layers.0.convolution1.weight"
    assert not torch.equal(trained[f"dcr.{key}"], source[key])  # the trunk itself trained
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["use_branches"] is False
