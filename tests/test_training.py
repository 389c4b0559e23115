"""`train_hf.py` / `dcr_hf.training` end to end on tiny synthetic faces (CPU, offline).

The three stages, an interrupted and resumed run against an uninterrupted one, early stopping,
a 2-process run, the Hub push, argument errors, the NaN guard, the scheduling options, mixed
precision, what a run logs and saves, and the card it writes.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import TrainerCallback

import dcr_hf.training.run as training_run
from dcr_hf.data.sampler import MPerClassSampler
from dcr_hf.data.synthetic import load_synthetic
from dcr_hf.evaluation import evaluate_verification
from dcr_hf.evaluation.command import run as eval_run
from dcr_hf.image_processing_dcr import DCRImageProcessor
from dcr_hf.modeling_dcr import DCRForImageClassification
from dcr_hf.training import NonFiniteLossError, TrainingPlan, plan_training, run_training
from dcr_hf.training.guard import LossDivergedError, NonFiniteWeightsError
from dcr_hf.training.command import parse_arguments
from dcr_hf.training.command import main as train_main
from dcr_hf.training.command import train as train_command
from dcr_hf.training.lock import LOCK_FILE
from tests.hub_standin import HubStandIn
from tests.layouts import make_identity_folder

pytestmark = pytest.mark.slow  # end-to-end runs and subprocesses


ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().with_name("training_worker.py")

NUM_IDENTITIES, IMAGES_PER_IDENTITY, NUM_PAIRS, IMAGE_SIZE, BATCH = 8, 3, 40, 48, 8
STEPS_PER_EPOCH = NUM_IDENTITIES * IMAGES_PER_IDENTITY // BATCH  # 3
TINY = [
    "--synthetic_num_identities", str(NUM_IDENTITIES), "--synthetic_images_per_identity", str(IMAGES_PER_IDENTITY),
    "--synthetic_num_pairs", str(NUM_PAIRS), "--image_size", str(IMAGE_SIZE), "--low_resolution_sizes", "8", "12",
    "--architecture", "small", "--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "8", "16", "16",
    "--embedding_size", "16", "--per_device_train_batch_size", str(BATCH), "--report_to", "none",
    "--dataloader_num_workers", "0", "--seed", "0", "--disable_tqdm", "true", "--use_cpu", "true",
]
NO_VALIDATION = ["--validation_dataset", "none", "--eval_strategy", "no", "--load_best_model_at_end", "false"]
VALIDATE_AT_END = ["--evaluate_before_training", "false", "--eval_strategy", "steps", "--save_strategy", "steps"]
FOLDER_FILES = {
    "config.json", "model.safetensors", "modeling_dcr.py", "configuration_dcr.py", "preprocessor_config.json",
    "README.md",
}
TRUNK_KEYS = ("dcr.trunk.", "classifier.", "centers")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny convolutions on 2 shared cores: a 2-thread OpenMP pool is ~30x slower than one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _argv(output_dir: Path, *extra: str) -> list[str]:
    return ["--output_dir", str(output_dir), *TINY, *extra]


def train(output_dir: Path, *extra: str) -> dict:
    """One run through the command line (`train_hf.py`, `dcr-train`)."""
    return train_command(_argv(output_dir, *extra))


def plan(output_dir: Path, *extra: str) -> TrainingPlan:
    """The checked plan of a command line (what `train_hf.py` runs)."""
    return plan_training(*parse_arguments(_argv(output_dir, *extra)))


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _state(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _assert_complete_folder(folder: Path, result: dict) -> None:
    assert FOLDER_FILES <= {path.name for path in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_dcr.DCRConfig",
        "AutoModel": "modeling_dcr.DCRModel",
        "AutoModelForImageClassification": "modeling_dcr.DCRForImageClassification",
    }
    # The card carries the final validation: one accuracy per column, in percent.
    after = result["after"]
    card_accuracy = {
        r.metric_config: r.metric_value for r in ModelCard.load(folder / "README.md").data.eval_results
        if r.metric_type == "accuracy"
    }
    expected = {f"verification/{k}x{k}": v["accuracy"] for k, v in after["by_resolution"].items() if k != "hr"}
    expected["verification/HR"] = after["by_resolution"]["hr"]["accuracy"]
    assert set(card_accuracy) == set(expected)
    for column, accuracy in expected.items():
        assert card_accuracy[column] == pytest.approx(100 * accuracy, abs=0.01)


class _Recorder(TrainerCallback):
    """Keeps what the Trainer hands to callbacks at the start, and the labels of every training batch."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.optimizer = self.train_dataloader = self.model = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        self.model, self.optimizer, self.train_dataloader = model, optimizer, train_dataloader

        def record(module, positional, keyword):
            if module.training:
                self.batches.append(keyword["labels"].tolist())

        model.register_forward_pre_hook(record, with_kwargs=True)


# --------------------------------------------------------------------------------------------
# The three stages
# --------------------------------------------------------------------------------------------


# A normalization other than the default, so that a stage or a validation that ignores the
# model's processor gives other numbers.
MEAN, STD = [0.4, 0.45, 0.5], [0.25, 0.3, 0.2]


@pytest.fixture(scope="module")
def trunk(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("trunk")
    result = train(folder, "--max_steps", "3", "--eval_strategy", "steps", "--eval_steps", "3",
                   "--save_strategy", "steps", "--save_steps", "3",
                   "--image_mean", *map(str, MEAN), "--image_std", *map(str, STD))
    return folder, result


def test_validation_equals_eval_hf_on_the_saved_folder(trunk):
    """What training reports for its validation set is what `eval_hf.py` reports for the saved folder."""
    folder, result = trunk
    processor = DCRImageProcessor.from_pretrained(folder)
    assert processor.image_mean == MEAN and processor.image_std == STD
    evaluated = eval_run([
        "--model_name_or_path", str(folder), "--dataset", "synthetic", "--protocol", "verification",
        "--synthetic_images_per_identity", str(IMAGES_PER_IDENTITY), "--synthetic_num_pairs", str(NUM_PAIRS),
    ])[folder.name]
    validated = result["after"]
    assert evaluated["sizes"] == validated["sizes"] == [8, 12]
    assert evaluated["num_pairs"] == validated["num_pairs"] == NUM_PAIRS
    for column, figures in validated["by_resolution"].items():
        for name in ("accuracy", "accuracy_std", "fold_accuracies", "eer"):
            assert evaluated["by_resolution"][column][name] == figures[name], (column, name)
        for name in ("threshold", "auc"):
            assert evaluated["by_resolution"][column][name] == pytest.approx(figures[name], abs=1e-6), (column, name)


def test_trunk_stage_writes_a_complete_validated_folder(trunk):
    folder, result = trunk
    assert result["output_dir"] == str(folder) and result["protocol"] == "verification"
    assert result["before"]["num_pairs"] == result["after"]["num_pairs"] == NUM_PAIRS
    _assert_complete_folder(folder, result)
    assert _state(folder)["global_step"] == 3
    model = DCRForImageClassification.from_pretrained(folder)
    assert not model.config.use_branches and model.config.num_labels == NUM_IDENTITIES
    assert model.config.low_resolution_sizes == [8, 12] and model.config.image_size == IMAGE_SIZE
    # Trained: the centers moved away from their zero start.
    assert model.centers.abs().sum() > 0


def test_branch_stage_keeps_the_frozen_trunk(trunk, tmp_path):
    trunk_folder, _ = trunk
    folder = tmp_path / "branch"
    result = train(folder, "--stage", "branch", "--trunk", str(trunk_folder), "--max_steps", "2",
                   *VALIDATE_AT_END, "--eval_steps", "2", "--save_steps", "2")
    _assert_complete_folder(folder, result)
    assert result["after"]["model_kind"] == "branch"
    before, after = _weights(trunk_folder), _weights(folder)
    trunk_keys = [key for key in before if key.startswith(TRUNK_KEYS)]
    assert any(key.startswith("dcr.trunk.") and "running_mean" in key for key in trunk_keys)
    for key in trunk_keys:  # weights, centers and batch-norm statistics alike
        assert torch.equal(before[key], after[key]), key
    # ... while the branches did train away from the specialized (identity) start.
    projection = after["dcr.branches.0.projection.weight"]
    assert not torch.equal(projection, torch.eye(projection.shape[0]))
    assert DCRForImageClassification.from_pretrained(folder).config.use_branches
    # The stage preprocesses (and saves) with the trunk's processor, not command-line defaults.
    processor = DCRImageProcessor.from_pretrained(folder)
    assert processor.image_mean == MEAN and processor.image_std == STD


def test_branch_stage_refuses_another_normalization_than_the_trunks(trunk, tmp_path):
    trunk_folder, _ = trunk
    with pytest.raises(ValueError, match=r"image_mean=\[0.4, 0.45, 0.5\], but --image_mean is \[0.5, 0.5, 0.5\]"):
        train(tmp_path, "--stage", "branch", "--trunk", str(trunk_folder), "--image_mean", "0.5", "0.5", "0.5",
              "--max_steps", "1", *NO_VALIDATION)


def test_finetune_with_more_classes_recreates_classifier_and_centers(trunk, tmp_path, caplog):
    trunk_folder, _ = trunk
    folder = tmp_path / "finetune"
    caplog.set_level(logging.WARNING, logger="dcr_hf.training")
    # Learning rate 0: the loaded trunk must come out unchanged, the new head with the new shape.
    train(folder, "--stage", "finetune", "--init_from", str(trunk_folder), "--synthetic_num_identities", "12",
          "--learning_rate", "0", "--max_steps", "2", *VALIDATE_AT_END, "--eval_steps", "2", "--save_steps", "2")
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("dcr_hf.training")]
    assert any("8 classes" in m and "12" in m and "re-created" in m for m in messages), messages
    model = DCRForImageClassification.from_pretrained(folder)
    assert model.config.num_labels == 12
    assert model.classifier.weight.shape == (12, 16) and model.centers.shape == (12, 16)
    source = DCRForImageClassification.from_pretrained(trunk_folder)
    for name, parameter in source.dcr.trunk.named_parameters():
        assert torch.equal(parameter, model.dcr.trunk.get_parameter(name)), name


# --------------------------------------------------------------------------------------------
# Resume, early stopping, several processes, the Hub
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sampling",
    [[], ["--samples_per_class", "2"], ["--augmentation", "aug_plus"], ["--augmentation", "aug_plus", "--dataloader_num_workers", "2"]],
    ids=["random", "m_per_class", "aug_plus", "aug_plus_workers"],
)
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, sampling):
    # 3 steps per epoch: checkpoint-4 sits inside epoch 2, so the resume skips a batch and then
    # crosses into epoch 3. The default flip augmentation is on, or aug-plus (drawn in the step
    # from the generator the checkpoint restores, as the flip; with loader workers too).
    options = [*NO_VALIDATION, *sampling, "--max_steps", "8", "--save_strategy", "steps", "--save_steps", "4",
               "--logging_steps", "1"]
    uninterrupted, interrupted = tmp_path / "a", tmp_path / "b"
    train(uninterrupted, *options)

    killed = subprocess.run(
        [sys.executable, str(WORKER), "--kill_at_step", "5", "--", *_argv(interrupted, *options)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (interrupted / "checkpoint-4").is_dir()
    assert not (interrupted / "checkpoint-8").exists() and not (interrupted / "model.safetensors").exists()
    assert json.loads((interrupted / LOCK_FILE).read_text())["pid"] != os.getpid()  # the killed run's, now stale

    train(interrupted, *options, "--resume_from_checkpoint", str(interrupted / "checkpoint-4"))
    assert not (interrupted / LOCK_FILE).exists()  # taken over, then released
    expected, resumed = _weights(uninterrupted), _weights(interrupted)
    assert set(expected) == set(resumed) and "centers" in expected
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=1e-6, msg=key)
    # Steps 5..8 did change the model: the comparison is not between two copies of checkpoint-4.
    assert not torch.equal(_weights(interrupted / "checkpoint-4")["centers"], resumed["centers"])
    losses = [[h["loss"] for h in _state(folder)["log_history"] if "loss" in h and h["step"] > 4]
              for folder in (uninterrupted, interrupted)]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], abs=1e-6)


RESUMABLE = [*NO_VALIDATION, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit",
             "3", "--logging_steps", "1"]


class _RunsCode:
    """Unpickling it calls `os.system`: what a crafted checkpoint file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _break(folder: Path, breakage: str) -> Path:
    """Damage a checkpoint as a crash or a full disk would, or replace one of its files by a crafted
    pickle (`crafted-*`: loading it would run code, creating `folder/ran`); returns the file."""
    name = {"truncated-weights": "model.safetensors", "no-trainer-state": "trainer_state.json",
            "truncated-optimizer": "optimizer.pt", "zero-byte-weights": "model.safetensors",
            "crafted-optimizer": "optimizer.pt", "crafted-scheduler": "scheduler.pt",
            "crafted-rng-state": "rng_state.pth"}[breakage]
    path = folder / name
    if breakage.startswith("crafted"):
        torch.save({"state": _RunsCode(folder / "ran")}, path)
    elif breakage == "no-trainer-state":
        path.unlink()
    else:
        data = path.read_bytes()
        path.write_bytes(b"" if breakage.startswith("zero") else data[: len(data) // 2])
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A 6-step run with checkpoints at steps 2, 4, 6, and the bytes of every file it wrote."""
    folder = tmp_path_factory.mktemp("finished")
    train(folder, *RESUMABLE)
    return folder, {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _copy_run(finished_run, destination: Path) -> Path:
    shutil.copytree(finished_run[0], destination)
    return destination


@pytest.mark.parametrize(("breakage", "value"), [("truncated-weights", "last"), ("no-trainer-state", "True"),
                                                 ("truncated-optimizer", "true"), ("zero-byte-weights", "last"),
                                                 ("crafted-optimizer", "last"), ("crafted-scheduler", "last"),
                                                 ("crafted-rng-state", "last")])
def test_resume_last_skips_broken_checkpoints_and_resumes_exactly(finished_run, tmp_path, caplog, breakage, value):
    # The newest checkpoint of an interrupted run is damaged and its final model never written.
    run = _copy_run(finished_run, tmp_path / "run")
    for name in ("model.safetensors", "trainer_state.json"):
        (run / name).unlink()
    damaged = _break(run / "checkpoint-6", breakage)
    with caplog.at_level(logging.INFO, logger="dcr_hf"):
        train(run, *RESUMABLE, "--resume_from_checkpoint", value)
    assert f"Skipping {run / 'checkpoint-6'}: {damaged}" in caplog.text
    if breakage.startswith("crafted"):
        assert (f"Skipping {run / 'checkpoint-6'}: {damaged} is a pickle that would import posix.system (to run code or "
                "build objects other than tensors): torch.load with weights_only=True refused it, and nothing in it was "
                "run.") in caplog.text
    assert not (run / "checkpoint-6" / "ran").exists()
    assert f"Resuming from {run / 'checkpoint-4'}" in caplog.text
    # Steps 5 and 6 again, from checkpoint-4: the model of the uninterrupted run.
    assert _weights(run).keys() == load_file(str(finished_run[0] / "model.safetensors")).keys()
    for key, value in load_file(str(finished_run[0] / "model.safetensors")).items():
        torch.testing.assert_close(_weights(run)[key], value, rtol=0, atol=1e-6, msg=key)


def test_a_broken_named_checkpoint_names_the_file_and_the_previous_valid_one(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    damaged = _break(run / "checkpoint-6", "truncated-weights")
    _break(run / "checkpoint-4", "no-trainer-state")
    expected = (f"--resume_from_checkpoint {run / 'checkpoint-6'}: {damaged} is truncated or corrupt (Error while "
                f"deserializing header: incomplete metadata, file not fully covered); the previous valid checkpoint is "
                f"{run / 'checkpoint-2'}.")
    with pytest.raises(ValueError, match=re.escape(expected)):
        train(run, *RESUMABLE, "--resume_from_checkpoint", str(run / "checkpoint-6"))
    with pytest.raises(FileNotFoundError, match=f"--resume_from_checkpoint last: {tmp_path / 'empty'} holds no valid"):
        train(tmp_path / "empty", *RESUMABLE, "--resume_from_checkpoint", "last")
    damaged = _break(run / "checkpoint-2", "crafted-optimizer")
    expected = (f"--resume_from_checkpoint {run / 'checkpoint-2'}: {damaged} is a pickle that would import posix.system "
                "(to run code or build objects other than tensors): torch.load with weights_only=True refused it, and "
                f"nothing in it was run; no earlier valid checkpoint in {run}.")
    with pytest.raises(ValueError, match=re.escape(expected)):
        train(run, *RESUMABLE, "--resume_from_checkpoint", str(run / "checkpoint-2"))
    assert not (run / "checkpoint-2" / "ran").exists()


def _full_disk_at(monkeypatch, where: str, number: int = errno.ENOSPC) -> None:
    """Writes of `where` ("checkpoint-4/optimizer.pt", "checkpoint-4/model.safetensors", or
    "model.safetensors" of the final model) fail as on a full disk (`number`: or a folder made read-only)."""
    import transformers.modeling_utils
    import transformers.trainer

    def failing(write):
        def wrapped(value, path, *args, **kwargs):
            if Path(path).as_posix().endswith(where) and (where.startswith("checkpoint-") or "checkpoint-" not in str(path)):
                Path(path).write_bytes(b"\0" * 10)  # what a full disk leaves: the first bytes
                raise OSError(number, os.strerror(number), str(path))
            return write(value, path, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(transformers.trainer.torch, "save", failing(torch.save))
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", failing(transformers.modeling_utils.safe_save_file))


@pytest.mark.parametrize("where", ["checkpoint-4/optimizer.pt", "checkpoint-4/model.safetensors"])
def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one_and_the_resume_completes_the_run(
        finished_run, tmp_path, monkeypatch, capsys, where):
    _full_disk_at(monkeypatch, where)
    with pytest.raises(SystemExit) as exit_info:
        train_main(_argv(tmp_path, *RESUMABLE))
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in error
    assert error.splitlines()[-1].split(": error: ", 1)[1] == (
        f"no space left on device while saving {tmp_path / 'checkpoint-4'}; kept {tmp_path / 'checkpoint-2'} (the newest "
        "complete checkpoint).")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]  # the partial checkpoint-4 removed
    monkeypatch.undo()
    train(tmp_path, *RESUMABLE, "--resume_from_checkpoint", "last")
    for key, value in load_file(str(finished_run[0] / "model.safetensors")).items():
        torch.testing.assert_close(_weights(tmp_path)[key], value, rtol=0, atol=1e-6, msg=key)


def test_a_read_only_folder_at_the_final_save_keeps_the_checkpoints_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    _full_disk_at(monkeypatch, "model.safetensors", errno.EACCES)
    with pytest.raises(SystemExit) as exit_info:
        train_main(_argv(tmp_path, *RESUMABLE))
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in error
    assert error.splitlines()[-1].split(": error: ", 1)[1] == (
        f"permission denied while saving the model to {tmp_path}; kept {tmp_path / 'checkpoint-6'} (the newest complete "
        "checkpoint).")
    # Nothing of the final model was moved in (the metrics saved before it are there); no temporary file or folder is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all_results.json", "checkpoint-2", "checkpoint-4", "checkpoint-6",
                                                          "train_results.json"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_file_a_run_saves_gets_the_users_umask(tmp_path, mask):
    previous = os.umask(mask)
    try:
        train(tmp_path, *NO_VALIDATION, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1",
              "--save_total_limit", "1")
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    assert "checkpoint-2/model.safetensors" in modes and "model.safetensors" in modes and "README.md" in modes
    assert modes == {name: (0o777 if (tmp_path / name).is_dir() else 0o666) & ~mask for name in modes}


def test_resuming_a_finished_run_changes_nothing_and_says_so(finished_run, tmp_path, caplog):
    run = _copy_run(finished_run, tmp_path / "run")
    for value in ("last", str(run / "checkpoint-6")):
        with caplog.at_level(logging.INFO, logger="dcr_hf"):
            result = train(run, *RESUMABLE, "--resume_from_checkpoint", value)
        assert result["finished"].startswith(f"The run resumed from {run / 'checkpoint-6'} is finished (step 6 of 6); "
                                             f"its model is {run}. Nothing was trained or written")
        assert result["finished"] in caplog.text
        now = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
        assert now == finished_run[1]  # every file byte-identical, none added


def test_an_output_dir_holding_a_previous_run_is_refused_unless_overwritten_or_resumed(finished_run, tmp_path, monkeypatch):
    run = _copy_run(finished_run, tmp_path / "run")
    loads = []
    monkeypatch.setattr(training_run, "load_training_data", lambda *a, **k: loads.append(1) or (_ for _ in ()).throw(
        AssertionError("reached before the output folder was checked")))
    expected = (f"--output_dir {run} holds a previous run (config.json, model.safetensors, trainer_state.json, training_args.bin, "
                "checkpoint-6, checkpoint-4, checkpoint-2); pass --resume_from_checkpoint last to continue it, "
                "--overwrite_output_dir to replace it, or choose another --output_dir.")
    with pytest.raises(FileExistsError, match=re.escape(expected)):
        train(run, *RESUMABLE)
    only_checkpoints = tmp_path / "killed"
    (only_checkpoints / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="holds a previous run \\(checkpoint-2\\)"):
        train(only_checkpoints, *RESUMABLE)
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(FileExistsError, match="is a file; expected a folder"):
        train(tmp_path / "a_file", *RESUMABLE)
    assert not loads and (tmp_path / "a_file").read_text() == "mine"
    monkeypatch.undo()
    # --overwrite_output_dir replaces the run: the old checkpoints go, the new run's come.
    train(run, *NO_VALIDATION, "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "3",
          "--overwrite_output_dir", "true")
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-3"] and _state(run)["global_step"] == 3


@pytest.mark.parametrize("where", ["same", "inside", "containing"])
def test_an_output_dir_at_the_model_a_stage_starts_from_is_refused(trunk, tmp_path, where):
    trunk_folder, _ = trunk
    before = {p.relative_to(trunk_folder).as_posix(): p.read_bytes() for p in trunk_folder.rglob("*") if p.is_file()}
    output = {"same": trunk_folder, "inside": trunk_folder / "branch", "containing": trunk_folder.parent}[where]
    relation = {"same": "is", "inside": "is inside", "containing": "contains"}[where]
    for stage, option in (("branch", "--trunk"), ("finetune", "--init_from")):
        with pytest.raises(ValueError, match=re.escape(f"--output_dir {output} {relation} the {option} folder {trunk_folder}")):
            train(output, "--stage", stage, option, str(trunk_folder), *NO_VALIDATION, "--max_steps", "1",
                  "--overwrite_output_dir", "true")
    assert before == {p.relative_to(trunk_folder).as_posix(): p.read_bytes() for p in trunk_folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_stops_when_validation_does_not_improve(tmp_path, patience):
    # No learning and fixed batch-norm statistics: every validation scores the same.
    train(tmp_path, "--learning_rate", "0", "--freeze_batch_norm", "true", "--max_steps", "20",
          "--early_stopping_patience", str(patience), *VALIDATE_AT_END, "--eval_steps", "1", "--save_steps", "1")
    state = _state(tmp_path)
    scores = [h["eval_mean_lr_accuracy"] for h in state["log_history"] if "eval_mean_lr_accuracy" in h]
    # The first validation sets the best score; `patience` equal ones after it stop the run.
    assert state["global_step"] == 1 + patience
    assert len(scores) == 1 + patience and len(set(scores)) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_agree_and_count_every_pair_once(tmp_path):
    output_dir = tmp_path / "ddp"
    # 40 pairs in batches of 16 are 3 batches: the 2 processes get uneven shares, padded by Accelerate.
    options = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "16", "--max_steps", "3",
               *VALIDATE_AT_END, "--eval_steps", "3", "--save_steps", "3"]
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), str(WORKER), "--save_rank_state_to", str(tmp_path), "--",
         *_argv(output_dir, *options)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    first, second = ranks[0]["state_dict"], ranks[1]["state_dict"]
    assert set(first) == set(second) and "centers" in first
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert json.loads((output_dir / "training_recipe.json").read_text())["global_batch_size"] == 8
    history = _state(output_dir)["log_history"]
    counts = [h[key] for h in history for key in ("eval_num_pairs", "final_num_pairs") if key in h]
    assert counts == [NUM_PAIRS, NUM_PAIRS]
    assert [r["results"]["num_pairs"] for r in ranks] == [NUM_PAIRS, NUM_PAIRS]

    # Oracle: one process validating the saved model over the same pairs.
    model = DCRForImageClassification.from_pretrained(output_dir)
    for key, value in first.items():
        assert torch.equal(model.state_dict()[key], value), key
    pairs = load_synthetic("pairs", image_size=IMAGE_SIZE, images_per_identity=IMAGES_PER_IDENTITY,
                           num_pairs=NUM_PAIRS, seed=0)
    single = evaluate_verification(model.eval(), pairs, sizes=[8, 12], batch_size=64, show_progress=False)
    for column, scores in single["by_resolution"].items():
        distributed = ranks[0]["results"]["by_resolution"][column]
        assert distributed["auc"] == pytest.approx(scores["auc"], abs=1e-6), column
        assert distributed["accuracy"] == pytest.approx(scores["accuracy"], abs=1e-6), column


PUSH = ["--push_to_hub", "true", "--hub_model_id", "org/dcr-trunk", "--max_steps", "2", *VALIDATE_AT_END,
        "--eval_steps", "1", "--save_steps", "1"]


def test_push_sends_the_complete_folder_privately_with_the_token_and_no_secret(tmp_path, monkeypatch):
    """Against a local stand-in for the Hub's HTTP API: what the real client sends."""
    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        train(tmp_path, *PUSH, "--hub_private_repo", "true", "--hub_token", hub.token, "--hub_revision", "v1")
    sent = hub.api_requests()
    # Token, repo (private), write access and branch checked before training; every call with the token.
    assert [r.path for r in sent[:5]] == ["/api/whoami-v2", "/api/repos/create", "/api/models/org/dcr-trunk/auth-check/write",
                                          "/api/models/org/dcr-trunk", "/api/models/org/dcr-trunk/branch/v1"]
    assert sent[1].json() == {"name": "dcr-trunk", "organization": "org", "visibility": "private", "type": "model"}
    assert {r.headers.get("authorization") for r in sent} == {f"Bearer {hub.token}"}
    assert not [r for r in hub.storage_requests() if "authorization" in r.headers]
    assert hub.repos[("model", "org/dcr-trunk")]["private"] is True
    [commit] = hub.commits
    assert (commit.repo_id, commit.revision) == ("org/dcr-trunk", "v1")
    # The complete folder, as saved, in one commit: no checkpoint, no pickled arguments, nothing holding the token.
    assert FOLDER_FILES | {"training_recipe.json", "trainer_state.json", "pipeline_dcr.py"} <= set(commit.files)
    assert not [name for name in commit.files if name.startswith(("checkpoint-", "runs/", LOCK_FILE)) or name.endswith((".bin", ".pt"))]
    assert not [name for name, content in commit.files.items() if hub.token.encode() in content]
    for name, content in commit.files.items():
        assert (tmp_path / name).read_bytes() == content, name
    assert "org/dcr-trunk" in commit.files["README.md"].decode()  # the card's code examples name the repository
    # The token is in no file the run wrote (training_args.bin in the checkpoints included).
    assert (tmp_path / "checkpoint-2" / "training_args.bin").is_file()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and hub.token.encode() in p.read_bytes()]


def test_two_concurrent_runs_into_one_folder_one_is_refused_and_the_other_finishes(tmp_path, capsys):
    folder = tmp_path / "out"
    options = [*NO_VALIDATION, "--max_steps", "30", "--save_strategy", "steps", "--save_steps", "1",
               "--save_total_limit", "2"]
    first = subprocess.Popen([sys.executable, str(WORKER), "--", *_argv(folder, *options)], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(folder.glob("checkpoint-*")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second started"
        with pytest.raises(SystemExit) as exit_info:
            train_main(_argv(folder, *options))
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in error
    [line] = [text for text in error.splitlines() if "error:" in text]
    assert f"error: --output_dir {folder} is in use by another run (PID {first.pid} on host {socket.gethostname()}" in line
    assert first.returncode == 0, stderr[-3000:]
    assert _state(folder)["global_step"] == 30 and (folder / "model.safetensors").is_file()
    assert _weights(folder).keys() == _weights(folder / "checkpoint-30").keys()
    assert not (folder / LOCK_FILE).exists()


@pytest.mark.parametrize("problem", ["bad-token", "read-only", "public-repo"])
def test_push_problems_stop_the_run_before_training(tmp_path, monkeypatch, problem):
    def must_not_run(*args, **kwargs):
        raise AssertionError("reached before the Hub was checked")

    monkeypatch.setattr(training_run, "load_training_data", must_not_run)
    with HubStandIn(writable=problem != "read-only") as hub:
        hub.patch(monkeypatch)
        hub.add_repo("org/dcr-trunk", private=False)
        token = "hf_wrong" if problem == "bad-token" else hub.token
        match = {"bad-token": "did not accept the token: Invalid user token",
                 "read-only": "org/dcr-trunk: tester's token cannot create or write to it: HTTP 403",
                 "public-repo": "org/dcr-trunk exists and is public"}[problem]
        with pytest.raises(ValueError, match=match):
            train(tmp_path, *PUSH, "--hub_token", token, "--hub_private_repo", "true")
    assert not hub.commits and not (tmp_path.exists() and list(tmp_path.iterdir()))


def test_a_failed_push_says_the_folder_is_saved_and_how_to_push_it(tmp_path, monkeypatch, capsys):
    with HubStandIn(fail_commits=True) as hub:
        hub.patch(monkeypatch)
        with pytest.raises(SystemExit) as exit_info:
            train_main(_argv(tmp_path, *PUSH, "--hub_token", hub.token, "--hub_private_repo", "true"))
        error = capsys.readouterr().err
        assert exit_info.value.code == 1 and "Traceback" not in error
        [line] = [line for line in error.splitlines() if "error:" in line]
        assert "pushing to org/dcr-trunk failed (HTTP 500" in line and f"everything is saved in {tmp_path}" in line
        assert f"push_folder_to_hub('{tmp_path}', 'org/dcr-trunk', private=True)" in line
        assert FOLDER_FILES <= {path.name for path in tmp_path.iterdir()}
        # The command it prints pushes the saved folder once the Hub is back.
        hub.fail_commits = False
        command = line.split("Push it later with: ")[1]
        code = command.removeprefix('python -c "').removesuffix('"')
        exec(code.replace("private=True", f"private=True, token={hub.token!r}"), {})
    [commit] = hub.commits
    assert FOLDER_FILES <= set(commit.files) and "training_args.bin" not in commit.files


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "error", "match"),
    [
        (["--dataset", "no_such_dataset"], ValueError, "unknown dataset 'no_such_dataset'"),
        (["--dataset", "casia"], ValueError, "--data_root"),
        (["--dataset", "casia", "--data_root", "{missing}"], FileNotFoundError, "does not exist"),
        (["--stage", "branch"], ValueError, "--trunk"),
        (["--stage", "finetune"], ValueError, "--init_from"),
        (["--low_resolution_sizes", "8", "48"], ValueError, r"low_resolution_sizes holds 48.*below image_size=48"),
        (["--samples_per_class", "3"], ValueError, "multiple of --samples_per_class 3"),
        (["--trunk_mining_reference", "embedding"], ValueError, "trunk_mining_reference='embedding' needs trunk_miner"),
    ],
    ids=["unknown-dataset", "no-data-root", "missing-data-root", "branch-without-trunk", "finetune-without-model",
         "lr-size-too-large", "samples-per-class", "mining-reference-without-miner"],
)
def test_bad_arguments_fail_before_data_or_model(tmp_path, monkeypatch, extra, error, match):
    def must_not_run(*args, **kwargs):
        raise AssertionError("reached before the arguments were checked")

    monkeypatch.setattr(training_run, "build_model", must_not_run)
    monkeypatch.setattr(training_run, "load_training_data", must_not_run)
    extra = [value.format(missing=tmp_path / "missing") for value in extra]
    with pytest.raises(error, match=match):
        train(tmp_path / "out", *extra)


@pytest.mark.parametrize("bad", [-1, 3])
def test_training_labels_out_of_range_are_refused_before_training(tmp_path, monkeypatch, bad):
    """The labels are checked once, before the model is built (per batch only on a CPU)."""
    from datasets import Dataset

    def must_not_run(*args, **kwargs):
        raise AssertionError("reached before the labels were checked")

    images = load_synthetic("train", num_identities=3, images_per_identity=2, image_size=IMAGE_SIZE)["image"][:3]
    data = training_run.TrainingData(
        train=Dataset.from_dict({"image": images, "label": [0, bad, 1]}), num_labels=3, id2label={0: "0", 1: "1", 2: "2"},
        real_low_resolution=False, validation=None, validation_protocol=None, validation_name=None,
    )
    monkeypatch.setattr(training_run, "build_model", must_not_run)
    with pytest.raises(ValueError, match=f"label {bad}, outside 0..2"):
        run_training(plan(tmp_path, *NO_VALIDATION, "--max_steps", "1"), data=data)


def test_trunk_with_other_low_resolution_sizes_is_refused(trunk, tmp_path):
    trunk_folder, _ = trunk
    with pytest.raises(ValueError, match=r"low_resolution_sizes=\[8, 12\], but --low_resolution_sizes is \[8, 16\]"):
        train(tmp_path, "--stage", "branch", "--trunk", str(trunk_folder), "--low_resolution_sizes", "8", "16",
              "--max_steps", "1", *NO_VALIDATION)


class _PoisonAt(TrainerCallback):
    """Make the classifier infinite at optimizer step `step` (1-based): before its forward pass (the
    loss of that step is then inf), or right after its update (`after_update`: the loss that made the
    update was finite, the weights the update left are not, as when a learning rate overflows them)."""

    def __init__(self, step: int, after_update: bool = False):
        self.step, self.after_update = step, after_update

    def _poison(self, state, model):
        if state.global_step + 1 == self.step:
            with torch.no_grad():
                model.classifier.weight.fill_(float("inf"))

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if not self.after_update:
            self._poison(state, model)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.after_update:
            self._poison(state, model)


def _assert_finite_checkpoint(folder: Path) -> None:
    model = DCRForImageClassification.from_pretrained(folder)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    arguments = plan(tmp_path, *NO_VALIDATION, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "1")
    with pytest.raises(NonFiniteLossError, match="loss was nan at step 3; training stopped at step 3") as raised:
        run_training(arguments, callbacks=[_PoisonAt(3)])
    assert f"The last good checkpoint is {tmp_path / 'checkpoint-2'} (its weights verified" in str(raised.value)
    assert not (tmp_path / "checkpoint-3").exists() and not (tmp_path / "model.safetensors").exists()
    _assert_finite_checkpoint(tmp_path / "checkpoint-2")


def test_weights_broken_by_an_update_are_never_saved(tmp_path):
    """Before: step 3's loss was finite, so checkpoint-3 was saved with the infinite weights its update
    left, and step 4's NaN loss then named checkpoint-3 as the last good one."""
    arguments = plan(tmp_path, *NO_VALIDATION, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "1")
    with pytest.raises(NonFiniteWeightsError, match="classifier.weight holds NaN/inf after step 3") as raised:
        run_training(arguments, callbacks=[_PoisonAt(3, after_update=True)])
    assert f"The last good checkpoint is {tmp_path / 'checkpoint-2'}" in str(raised.value)
    assert not (tmp_path / "checkpoint-3").exists() and not (tmp_path / "model.safetensors").exists()
    _assert_finite_checkpoint(tmp_path / "checkpoint-2")


def test_a_diverging_loss_stops_the_run_with_exit_status_1_and_writes_no_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(_argv(tmp_path, *NO_VALIDATION, "--learning_rate", "1e6", "--logging_steps", "1", "--max_steps", "9",
                         "--save_strategy", "steps", "--save_steps", "1"))
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in error
    [line] = [line for line in error.splitlines() if "error:" in line]
    assert re.search(r"error: the training loss grew to [\d.e+]+ at step \d, more than --divergence_factor 100 times its "
                     r"first logged value [\d.]+ \(step 1\): training diverged \(is --learning_rate 1e\+06 too high\?\)", line)
    assert not {"model.safetensors", "README.md", "config.json"} & {p.name for p in tmp_path.iterdir()}
    for folder in tmp_path.glob("checkpoint-*"):
        _assert_finite_checkpoint(folder)


def test_divergence_factor_0_turns_the_loss_bound_off(tmp_path):
    # The run above, with the bound off: its loss explodes but stays finite, so it finishes.
    options = [*NO_VALIDATION, "--learning_rate", "1e6", "--logging_steps", "1", "--max_steps", "2", "--save_strategy", "no"]
    with pytest.raises(LossDivergedError, match=re.escape("more than --divergence_factor 100 times")):
        train(tmp_path / "on", *options)
    train(tmp_path / "off", *options, "--divergence_factor", "0")
    losses = [h["loss"] for h in _state(tmp_path / "off")["log_history"] if "loss" in h]
    assert losses[1] > 100 * losses[0] and (tmp_path / "off" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="--divergence_factor must be >= 0"):
        train(tmp_path / "negative", *options, "--divergence_factor", "-1")


def test_a_batch_of_only_corrupt_images_is_skipped_and_training_goes_on(tmp_path, caplog):
    faces = tmp_path / "faces"
    make_identity_folder(faces, {"ann": 2, "bob": 2})
    (faces / "ann" / "broken.jpg").write_bytes(b"not a JPEG")  # one batch of 1 is this file alone
    with caplog.at_level(logging.WARNING, logger="dcr_hf"):
        train(tmp_path / "out", "--dataset", "folder", "--data_root", str(faces), *NO_VALIDATION,
              "--per_device_train_batch_size", "1", "--num_train_epochs", "1", "--save_strategy", "no",
              "--logging_steps", "1")
    assert f"Cannot decode image {faces / 'ann' / 'broken.jpg'}" in caplog.text
    assert "no image of this batch could be decoded; the batch is skipped" in caplog.text
    state = _state(tmp_path / "out")
    assert state["global_step"] == 5 and len([h for h in state["log_history"] if "loss" in h]) == 5
    _assert_finite_checkpoint(tmp_path / "out")


# --------------------------------------------------------------------------------------------
# Sampling, schedule, deferred LR copies, weight decay
# --------------------------------------------------------------------------------------------


def _find_sampler(dataloader) -> object:
    """The index sampler under Accelerate's and torch's batch-sampler wrappers."""
    sampler = dataloader.batch_sampler
    while not isinstance(sampler, MPerClassSampler) and hasattr(sampler, "sampler"):
        sampler = sampler.sampler
    return sampler


def test_samples_per_class_batches_hold_m_images_of_each_class(tmp_path):
    recorder = _Recorder()
    arguments = plan(tmp_path, *NO_VALIDATION, "--samples_per_class", "2", "--max_steps", "4",
                      "--save_strategy", "no")
    run_training(arguments, callbacks=[recorder])
    assert isinstance(_find_sampler(recorder.train_dataloader), MPerClassSampler)
    assert len(recorder.batches) == 4
    for labels in recorder.batches:
        assert len(labels) == BATCH
        assert sorted(labels.count(label) for label in set(labels)) == [2] * (BATCH // 2)


@pytest.mark.parametrize("length", [["--max_steps", "8"], ["--num_train_epochs", "3"]], ids=["max_steps", "epochs"])
def test_lr_milestones_divide_the_learning_rate_by_ten_at_epoch_boundaries(tmp_path, length):
    train(tmp_path, *NO_VALIDATION, *length, "--learning_rate", "0.1", "--lr_milestones", "1", "2",
          "--logging_steps", "1", "--save_strategy", "no")
    logged = {h["step"]: h["learning_rate"] for h in _state(tmp_path)["log_history"] if "learning_rate" in h}
    # The logged rate is the one of that step's update: epoch 1 (steps 1-3) at 0.1, epoch 2 at 0.01, ...
    expected = {step: 0.1 * 0.1 ** ((step - 1) // STEPS_PER_EPOCH) for step in logged}
    assert len(logged) == (8 if "--max_steps" in length else 9)
    assert logged == pytest.approx(expected, rel=1e-6)


def test_deferred_low_resolution_copies_train_the_same_model(tmp_path):
    options = [*NO_VALIDATION, "--augmentation", "none", "--max_steps", "3", "--save_strategy", "no"]
    recorder = _Recorder()
    run_training(plan(tmp_path / "deferred", *options, "--defer_low_resolution", "true"), callbacks=[recorder])
    # The loader really leaves the LR copies to the training step.
    assert "low_resolution_pixel_values" not in recorder.train_dataloader.dataset[:2]
    train(tmp_path / "loader", *options, "--defer_low_resolution", "false")
    deferred, loader = _weights(tmp_path / "deferred"), _weights(tmp_path / "loader")
    for key in loader:
        torch.testing.assert_close(deferred[key], loader[key], rtol=0, atol=1e-6, msg=key)


def test_weight_decay_reaches_the_optimizer(tmp_path):
    recorder = _Recorder()
    run_training(plan(tmp_path, *NO_VALIDATION, "--weight_decay", "0.05", "--max_steps", "1",
                        "--save_strategy", "no"), callbacks=[recorder])
    decay_of = {id(p): group["weight_decay"] for group in recorder.optimizer.param_groups for p in group["params"]}
    model = recorder.model
    assert decay_of[id(model.dcr.trunk.embedder.embedder.convolution.weight)] == 0.05
    assert decay_of[id(model.classifier.weight)] == 0.05
    # The Trainer's own grouping: no decay on biases.
    assert decay_of[id(model.classifier.bias)] == 0.0
    assert decay_of[id(model.dcr.trunk.projection.bias)] == 0.0
    # Every trainable parameter is in the optimizer, once.
    assert sorted(decay_of) == sorted(id(p) for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# ResNet-N presets and the batch-hard center terms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture, layer_type", [("resnet18", "basic"), ("resnet50", "bottleneck")])
def test_resnet_presets_train(tmp_path, architecture, layer_type):
    # The preset's block type with the tiny depths and widths of TINY (given after it on the command line).
    argv = _argv(tmp_path, *NO_VALIDATION, "--max_steps", "2", "--save_strategy", "no")
    argv[argv.index("--architecture") + 1] = architecture
    train_command(argv)
    model = DCRForImageClassification.from_pretrained(tmp_path)
    assert model.config.layer_type == layer_type and model.config.depths == [1, 1, 1, 1]
    assert ("dcr.trunk.stages.0.layers.0.layer.2.convolution.weight" in _weights(tmp_path)) == (layer_type == "bottleneck")
    assert _state(tmp_path)["global_step"] == 2


class _MinerRecorder(TrainerCallback):
    """Records the `miner` each training forward pass receives."""

    def __init__(self):
        self.miners = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.register_forward_pre_hook(lambda m, a, kw: self.miners.append(kw.get("miner")), with_kwargs=True)


def _logged_terms(folder: Path) -> list[dict]:
    return [h for h in _state(folder)["log_history"] if "loss" in h]


@pytest.mark.parametrize("reference", ["center", "embedding", "none"])
def test_trunk_stage_trains_with_the_batch_hard_miner(tmp_path, reference):
    recorder = _MinerRecorder()
    arguments = plan(tmp_path, *NO_VALIDATION, "--max_steps", "2", "--logging_steps", "1", "--save_strategy", "no",
                      "--trunk_miner", "batch_hard", "--trunk_mining_reference", reference)
    run_training(arguments, callbacks=[recorder])
    config = DCRForImageClassification.from_pretrained(tmp_path).config
    assert (config.trunk_miner, config.trunk_mining_reference) == ("batch_hard", reference)
    logged = _logged_terms(tmp_path)
    assert len(logged) == 2 and all(math.isfinite(h["loss"]) for h in logged)
    if reference == "none":  # no center term: no miner either
        assert recorder.miners == [None, None] and all("center_loss" not in h for h in logged)
    else:
        assert len(recorder.miners) == 2 and all(type(m).__name__ == "BatchHardMiner" for m in recorder.miners)
        assert all(h["center_loss"] >= 0 for h in logged)


def test_branch_stage_trains_with_the_batch_hard_miner(trunk, tmp_path):
    trunk_folder, _ = trunk
    recorder = _MinerRecorder()
    arguments = plan(tmp_path, "--stage", "branch", "--trunk", str(trunk_folder), "--branch_miner", "batch_hard",
                      *NO_VALIDATION, "--max_steps", "2", "--logging_steps", "1", "--save_strategy", "no")
    run_training(arguments, callbacks=[recorder])
    model = DCRForImageClassification.from_pretrained(tmp_path)
    assert model.config.branch_miner == "batch_hard" and model.config.trunk_miner is None
    assert all(type(m).__name__ == "BatchHardMiner" for m in recorder.miners) and len(recorder.miners) == 2
    # The mined difference MSE(a, p) - MSE(a, n) may be negative; it is logged and finite.
    assert all(math.isfinite(h["center_loss"]) for h in _logged_terms(tmp_path))


# Mixed precision, what a run writes and prints, the card it leaves
# --------------------------------------------------------------------------------------------


def _cpu_supports(dtype: torch.dtype) -> bool:
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.nn.functional.conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)).sum().item()
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize(
    ("flag", "dtype", "extra"),
    [("--bf16", torch.bfloat16, ["--defer_low_resolution", "true"]), ("--bf16", torch.bfloat16, []),
     ("--fp16", torch.float16, [])],
    ids=["bf16-deferred", "bf16", "fp16"],
)
def test_mixed_precision_trains_and_validates(tmp_path, flag, dtype, extra):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if flag == "--fp16" and device == "cpu":
        pytest.skip("fp16 needs a GPU: Accelerate trains fp16 on a CPU in float32 (refused, see the next test)")
    if not _cpu_supports(dtype) and device == "cpu":
        pytest.skip(f"this CPU's torch build has no {dtype} autocast for convolutions")
    seen: dict[str, set] = {"training": set(), "validation": set()}
    recorder = _Recorder()
    argv = [flag, "true", *extra, "--max_steps", "3", *VALIDATE_AT_END, "--eval_steps", "3", "--save_steps", "3",
            "--evaluate_before_training", "true"]
    # On a GPU machine the run goes to the GPU (the last --use_cpu wins).
    arguments = plan(tmp_path, *argv, "--use_cpu", "true" if device == "cpu" else "false")

    class Autocast(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            def record(module, inputs, output):
                kind = "training" if module.training else "validation"
                where = output.pooler_output.device.type
                seen[kind].add((torch.is_autocast_enabled(where), torch.get_autocast_dtype(where), output.pooler_output.dtype))
            model.dcr.register_forward_hook(record)

    result = run_training(arguments, callbacks=[recorder, Autocast()])
    # The training steps and the validations ran under autocast in that precision, and finished.
    assert seen["training"] == {(True, dtype, dtype)}
    assert seen["validation"] == {(True, dtype, dtype)}
    for figures in result["after"]["by_resolution"].values():
        assert 0.0 <= figures["accuracy"] <= 1.0 and np.isfinite(figures["auc"])
    assert json.loads((tmp_path / "training_recipe.json").read_text())["mixed_precision"] == flag[2:]


def test_fp16_on_a_cpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--fp16 needs a GPU .* on a CPU use --bf16"):
        train(tmp_path, "--fp16", "true", "--max_steps", "1", *NO_VALIDATION)


def test_a_run_logs_and_saves_like_a_transformers_example(tmp_path, monkeypatch, capsys):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    output = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(output, "--max_steps", "6", "--eval_strategy", "steps", "--eval_steps", "3", "--save_strategy",
                       "steps", "--save_steps", "3", "--report_to", "tensorboard", "--disable_tqdm", "true")
    printed = capsys.readouterr().out
    # TensorBoard under --output_dir, the validation before training included; nothing in the working directory.
    events = list((output / "runs").glob("*/events.out.tfevents.*"))
    # (The final validation, after on_train_end closed the writer, opens a second file in the same folder.)
    assert events and len({path.parent for path in events}) == 1
    assert not (work / "runs").exists() and not list(work.iterdir())
    # The examples' results files: train metrics, the final validation under eval_ names, both combined.
    train_results = json.loads((output / "train_results.json").read_text())
    eval_results = json.loads((output / "eval_results.json").read_text())
    assert {"train_loss", "train_runtime", "epoch"} <= set(train_results)
    assert eval_results["eval_mean_lr_accuracy"] == pytest.approx(result["after"]["mean_lr_accuracy"])
    assert eval_results["eval_accuracy_8"] == pytest.approx(result["after"]["by_resolution"]["8"]["accuracy"])
    assert json.loads((output / "all_results.json").read_text()) == {**train_results, **eval_results}
    # The console: one line per validation (before, steps 3 and 6, final), no metric dicts, the summary block.
    lines = printed.splitlines()
    validations = [line for line in lines if " - validation (" in line]
    assert [line.split(" - validation (")[1].split(")")[0] for line in validations] == [
        "before training", "epoch 1.00, step 3", "epoch 2.00, step 6", "final model"]
    assert all("mean LR accuracy" in line and "8x8" in line and "12x12" in line for line in validations)
    assert "eval_accuracy_8" not in printed and "'eval_auc_hr'" not in printed
    assert "***** train metrics *****" in printed and "train_loss" in printed
    best = state_best = _state(output)["best_model_checkpoint"]
    assert any(f"Loaded the best checkpoint, {best}" in line for line in lines), state_best
    assert any(f"Saved the model to {output}" in line for line in lines)
    # The full validation dicts are still in the logs.
    assert any("eval_tar@far=0.001_8" in entry for entry in _state(output)["log_history"])
    assert not [w for w in caught if "pin_memory" in str(w.message)]


def test_the_card_records_the_run(trunk, tmp_path):
    from tests.test_hub import assert_tables_well_formed

    folder, _ = trunk
    card = ModelCard.load(folder / "README.md")
    assert f"Training data: dcr-hf synthetic faces ({NUM_IDENTITIES} identities x {IMAGES_PER_IDENTITY} views" in card.text
    assert "| dataset | dcr-hf synthetic faces |" in card.text and "| optimizer | adamw_torch" in card.text
    assert "OptimizerNames" not in card.content and "| None |" not in card.content and "\n| trunk |" not in card.text
    assert card.data.base_model is None  # a new trunk
    assert card.data.metrics == ["accuracy", "auc", "eer"]
    assert "simulated LR probe" in card.text
    assert assert_tables_well_formed(card.text) == 3
    # eval_hf.py --update_card names the same data the same way: its results replace the run's.
    copy = tmp_path / "trunk"
    shutil.copytree(folder, copy)
    eval_run(["--model_name_or_path", str(copy), "--dataset", "synthetic", "--synthetic_images_per_identity",
              str(IMAGES_PER_IDENTITY), "--synthetic_num_pairs", str(NUM_PAIRS), "--update_card"])
    updated = ModelCard.load(copy / "README.md")
    assert len(updated.data.eval_results) == len(card.data.eval_results) == 9
    assert {(r.dataset_name, r.dataset_type) for r in updated.data.eval_results} == {("dcr-hf synthetic faces", "synthetic")}


def test_branch_card_names_the_trunk_by_its_hub_id_only(trunk, tmp_path):
    trunk_folder, _ = trunk
    local = tmp_path / "local-trunk"
    shutil.copytree(trunk_folder, local)
    options = ["--stage", "branch", "--max_steps", "1", *NO_VALIDATION, "--save_strategy", "no"]
    train(tmp_path / "a", "--trunk", str(local), *options)
    assert ModelCard.load(tmp_path / "a" / "README.md").data.base_model is None  # only a local path is known
    recipe = json.loads((local / "training_recipe.json").read_text())
    (local / "training_recipe.json").write_text(json.dumps({**recipe, "hub_model_id": "org/dcr-trunk"}))
    train(tmp_path / "b", "--trunk", str(local), *options)
    card = ModelCard.load(tmp_path / "b" / "README.md")
    assert card.data.base_model == "org/dcr-trunk" and "(https://huggingface.co/org/dcr-trunk)" in card.text


def test_trackio_logs_go_under_the_output_dir(tmp_path):
    pytest.importorskip("trackio", reason="trackio is an extra: pip install 'dcr-hf[trackio]'")
    output = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "train_hf.py"), *_argv(output, "--max_steps", "2", *NO_VALIDATION,
                                                          "--save_strategy", "no", "--report_to", "trackio")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**_env(), "HF_HOME": str(tmp_path / "hf-home")},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert list((output / "trackio").glob("*.db"))
    assert not (tmp_path / "hf-home" / "trackio").exists()
