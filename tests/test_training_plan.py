"""`plan_training`: the command line turned into a complete, checked plan before any data is read."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (["--max_steps", "0"], "--max_steps must be a positive number of optimizer steps (or -1: use --num_train_epochs), got 0."),
        (["--max_steps", "-5"], "--max_steps must be a positive number of optimizer steps (or -1: use --num_train_epochs), got -5."),
        (["--num_train_epochs", "0"], "--num_train_epochs must be a positive number of epochs (or give --max_steps), got 0."),
        (["--num_train_epochs", "-1"], "--num_train_epochs must be a positive number of epochs (or give --max_steps), got -1."),
        (["--learning_rate", "nan"], "--learning_rate must be a finite number >= 0, got nan."),
        (["--learning_rate", "-1"], "--learning_rate must be a finite number >= 0, got -1."),
        (["--learning_rate", "inf"], "--learning_rate must be a finite number >= 0, got inf."),
        (["--weight_decay", "nan"], "--weight_decay must be a finite number >= 0, got nan."),
        (["--weight_decay", "-0.1"], "--weight_decay must be a finite number >= 0, got -0.1."),
        (["--adam_beta1", "1"], "--adam_beta1 must be a number in [0, 1), got 1."),
        (["--adam_beta2", "nan"], "--adam_beta2 must be a number in [0, 1), got nan."),
        (["--adam_epsilon", "nan"], "--adam_epsilon must be a finite number >= 0, got nan."),
        (["--adam_epsilon=-1e-8"], "--adam_epsilon must be a finite number >= 0, got -1e-08."),
        (["--warmup_steps", "nan"], "--warmup_steps must be a finite number >= 0, got nan."),
        (["--max_grad_norm", "nan"], "--max_grad_norm must be a number >= 0 (0: no clipping), got nan."),
        (["--max_grad_norm", "-1"], "--max_grad_norm must be a number >= 0 (0: no clipping), got -1."),
        (["--samples_per_class", "32"], "--per_device_train_batch_size 32 with --samples_per_class 32 holds 1 identity "
         "per batch; the M-per-class sampler needs at least 2 (a batch of at least 64)."),
        (["--label_smoothing_factor", "0.1"], "--label_smoothing_factor is not supported by DCR training: the DCR model "
         "computes its own losses (softmax or margin head, center terms); the Trainer's label smoother would never apply."),
    ],
    ids=["max-steps-0", "max-steps-negative", "epochs-0", "epochs-negative", "lr-nan", "lr-negative", "lr-inf",
         "decay-nan", "decay-negative", "beta1-1", "beta2-nan", "epsilon-nan", "epsilon-negative", "warmup-nan",
         "grad-norm-nan", "grad-norm-negative", "one-identity-per-batch", "label-smoothing"],
)
def test_degenerate_schedules_are_one_usage_line_before_any_data(tmp_path, capsys, monkeypatch, extra, line):
    """The command: exit status 2 and one line; nothing is read (the fixture) and no folder is written."""
    from dcr_hf.training.command import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path / "out"), "--use_cpu", "true", *extra])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in error
    [reported] = [text for text in error.splitlines() if "error:" in text]
    assert reported.endswith(f": error: {line}") and error.strip().endswith(reported)
    assert not (tmp_path / "out").exists()


def test_max_steps_overrides_zero_epochs_and_a_high_rate_is_only_warned(tmp_path, caplog):
    planned = plan(tmp_path, "--max_steps", "2", "--num_train_epochs", "0", "--learning_rate", "1e6")
    assert planned.training_args.max_steps == 2
    assert "--learning_rate 1e+06 is above 10: expect the run to diverge" in caplog.text


@pytest.mark.parametrize("labels", [[0, 0, 0], []], ids=["one-identity", "no-image"])
def test_a_training_set_of_fewer_than_2_identities_is_refused_before_the_model(tmp_path, monkeypatch, labels):
    from datasets import Dataset

    import dcr_hf.training.run as training_run

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was built")

    data = training_run.TrainingData(
        train=Dataset.from_dict({"label": labels}), num_labels=1, id2label={0: "0"}, real_low_resolution=False,
        validation=None, validation_protocol=None, validation_name=None,
    )
    monkeypatch.setattr(training_run, "build_model", must_not_run)
    planned = plan(tmp_path, "--validation_dataset", "none", "--max_steps", "1", "--use_cpu", "true")
    count = len(set(labels))
    with pytest.raises(ValueError, match=re.escape(f"the training set has {count} identit") + r".*needs at least 2 identities"):
        training_run.run_training(planned, data=data)


def _labels_split(labels):
    """A training split of `labels` (no images: the checks read the label column only)."""
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"image": Value("string"), "label": ClassLabel(num_classes=max(labels) + 1)})
    return registry.TrainingSplit(Dataset.from_dict({"image": [""] * len(labels), "label": labels}, features=features),
                                  real_low_resolution=False)


@pytest.mark.parametrize(
    ("labels", "extra", "line"),
    [
        ([0, 0, 0], [], "the training set has 1 identity (3 images); DCR training needs at least 2 identities to tell apart."),
        ([0, 0, 1, 1, 2, 3], ["--samples_per_class", "2", "--per_device_train_batch_size", "6"],
         "--samples_per_class 2 with --per_device_train_batch_size 6 needs 3 identities of at least 2 images for one "
         "batch; the training set has 2 (of 4 identities, 6 images)."),
        ([0, 1, 2, 3], ["--samples_per_class", "1", "--per_device_train_batch_size", "8"],
         "--samples_per_class 1 with --per_device_train_batch_size 8 needs 8 identities of at least 1 image for one "
         "batch; the training set has 4 (of 4 identities, 4 images)."),
    ],
    ids=["one-identity", "too-few-full-identities", "fewer-identities-than-a-batch"],
)
def test_training_labels_are_refused_before_the_validation_data_and_the_model(tmp_path, capsys, monkeypatch, labels,
                                                                           extra, line):
    """Read with the training split, before the validation data (the fixture refuses to load it)
    and the model: one usage line, exit status 2."""
    import dcr_hf.training.run as training_run
    from dcr_hf.training.command import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(registry, "load_training_split", lambda *args, **kwargs: _labels_split(labels))
    monkeypatch.setattr(training_run, "build_model", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--max_steps", "1", *extra])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in error
    assert error.strip().splitlines()[-1].endswith(f": error: {line}")


def test_identities_with_fewer_images_than_samples_per_class_are_warned_about(tmp_path, monkeypatch, caplog):
    import dcr_hf.training.run as training_run

    monkeypatch.setattr(registry, "load_training_split", lambda *args, **kwargs: _labels_split([0, 0, 1, 1, 2]))
    planned = plan(tmp_path, "--validation_dataset", "none", "--samples_per_class", "2", "--per_device_train_batch_size",
                   "4", "--max_steps", "1", "--use_cpu", "true")
    data = training_run.load_training_data(planned.data)
    assert data.num_labels == 3
    assert ("1 of the 3 training identities have fewer than 2 images (--samples_per_class): the M-per-class sampler "
            "repeats their images to fill a batch.") in caplog.text
