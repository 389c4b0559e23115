"""`plan_training`: the command line turned into a complete, checked plan before any data is read."""

from __future__ import annotations

import pytest
import torch

import dcr_hf.data.registry as registry
from dcr_hf import DCRForImageClassification, DCRImageProcessor
from dcr_hf.evaluation import CRITERIA
from dcr_hf.training import plan_training
from dcr_hf.training.command import parse_arguments
from tests.models import tiny_config

MEAN, STD = [0.4, 0.45, 0.5], [0.25, 0.3, 0.2]


@pytest.fixture(autouse=True)
def _no_data(monkeypatch):
    """Planning reads no data."""

    def must_not_run(*args, **kwargs):
        raise AssertionError("the plan read data")

    monkeypatch.setattr(registry, "load_training_split", must_not_run)
    monkeypatch.setattr(registry, "load_protocol_data", must_not_run)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A saved tiny trunk (32x32 input, LR sizes 8 and 12, 5 classes) with its processor."""
    folder = tmp_path_factory.mktemp("source")
    torch.manual_seed(0)
    DCRForImageClassification(tiny_config()).save_pretrained(folder)
    DCRImageProcessor(image_size=32, image_mean=MEAN, image_std=STD).save_pretrained(folder)
    return folder


def plan(tmp_path, *argv):
    return plan_training(*parse_arguments(["--output_dir", str(tmp_path / "out"), *argv]))


def test_a_trunk_plan_holds_the_config_data_and_trainer_settings(tmp_path):
    planned = plan(tmp_path, "--image_size", "48", "--low_resolution_sizes", "8", "12", "--degradation", "jpeg",
                   "--center_loss_weight", "0.01", "--head", "cosface")
    config = planned.config
    assert (config.image_size, config.low_resolution_sizes, config.center_loss_weight, config.head) == (48, [8, 12], 0.01, "cosface")
    assert config.degradation["jpeg"]["quality"] == [30, 90] and config.margin == 0.35
    assert planned.processor.image_size == 48
    assert (planned.data.image_size, planned.data.validation_sizes, planned.data.validation_protocol) == (48, [8, 12], "verification")
    assert planned.training_args.metric_for_best_model == CRITERIA["verification"]
    assert planned.source is None and planned.architecture == "small"


def test_no_validation_turns_the_best_model_off(tmp_path):
    planned = plan(tmp_path, "--validation_dataset", "none")
    assert planned.data.validation_name is None
    args = planned.training_args
    assert (args.eval_strategy, args.load_best_model_at_end, args.evaluate_before_training) == ("no", False, False)


def test_a_finetune_plan_takes_the_source_config_and_processor(tmp_path, source):
    planned = plan(tmp_path, "--stage", "finetune", "--init_from", str(source), "--coupling_loss_weight", "0.02")
    assert planned.config.image_size == 32 and planned.config.low_resolution_sizes == [8, 12]
    assert planned.config.coupling_loss_weight == 0.02 and planned.config.num_labels == 5
    assert list(planned.processor.image_mean) == MEAN and planned.data.validation_sizes == [8, 12]


def test_a_branch_plan_is_the_branch_config_of_the_trunk(tmp_path, source):
    planned = plan(tmp_path, "--stage", "branch", "--trunk", str(source), "--unfreeze_trunk", "true")
    assert planned.config.use_branches and not planned.config.freeze_trunk and planned.freeze_trunk is False
    assert planned.config.hidden_sizes == tiny_config().hidden_sizes


def test_validation_sizes_are_checked_against_the_source_models_image_size(tmp_path, source):
    """The source is 32x32: a validation size of 40 is refused (it was checked against the default 120)."""
    with pytest.raises(ValueError, match=r"--validation_sizes holds 40.*below image_size=32"):
        plan(tmp_path, "--stage", "finetune", "--init_from", str(source), "--validation_sizes", "8", "40")


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--image_size", "48"], r"was trained with image_size=32, but --image_size is 48"),
        (["--head", "arcface"], r"was trained with head='softmax', but --head is 'arcface'"),
        (["--image_mean", "0.5", "0.5", "0.5"], r"was trained with image_mean=\[0.4, 0.45, 0.5\], but --image_mean"),
        (["--margin", "0.3"], r"margin=0.3 is only used by"),
    ],
    ids=["image-size", "head", "normalization", "margin-of-a-softmax-head"],
)
def test_a_stage_refuses_settings_its_source_was_not_trained_with(tmp_path, source, extra, match):
    with pytest.raises(ValueError, match=match):
        plan(tmp_path, "--stage", "finetune", "--init_from", str(source), *extra)
