"""The training command line (`train_hf.py`, `dcr-train`): grouped help, refused Trainer flags,
argparse-style usage errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainingArguments

from dcr_hf.training import UNSUPPORTED_TRAINER_OPTIONS
from dcr_hf.training.command import build_parser, main, parse_arguments

ROOT = Path(__file__).resolve().parent.parent


def _help(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _sections(text: str) -> list[str]:
    return [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]


def test_help_lists_dcr_options_first_and_points_to_the_trainers(capsys):
    text = _help("--help", capsys=capsys)
    assert text.startswith("usage: ")
    assert _sections(text) == ["options", "DCR model", "Data", "DCR training options",
                               "Trainer options (transformers.TrainingArguments)"]
    # Not the TrainingArguments list: the DCR options grow with the project, the Trainer's ~100 stay behind
    # --help_all (whose listing is well over twice as long).
    assert len(text.splitlines()) < 300
    assert 2 * len(text.splitlines()) < len(_help("--help_all", capsys=capsys).splitlines())
    for option in ("--stage", "--trunk", "--dataset", "--casia_fold", "--lr_milestones", "--learning_rate", "--output_dir"):
        assert f"\n  {option} " in text, option
    assert "\n  --gradient_accumulation_steps" not in text and "--help_all lists all" in text
    assert "--do_train" not in text


def test_help_all_adds_every_trainer_option(capsys):
    text = _help("--help_all", capsys=capsys)
    trainer = text.split("Trainer options (transformers.TrainingArguments):")[1]
    assert "\n  --gradient_accumulation_steps" in trainer and "\n  --bf16" in trainer
    assert "\n  --learning_rate" not in trainer  # a DCR option, listed in its own group
    assert "--do_train" not in text  # refused, so not offered
    shown = {f.name for f in dataclasses.fields(TrainingArguments)} - set(UNSUPPORTED_TRAINER_OPTIONS)
    assert all(f"--{name}" in text for name in shown)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--do_train"], "--do_train is not supported by DCR training: a run always trains"),
        (["--do_eval", "true"], "--do_eval is not supported by DCR training: validation follows --validation_dataset"),
        (["--do_predict"], "--do_predict is not supported"),
        (["--eval_on_start", "true"], "--eval_on_start is not supported by DCR training: the starting model is validated"),
        (["--remove_unused_columns", "true"], "--remove_unused_columns is not supported"),
        (["--label_names", "labels"], "--label_names is not supported"),
        (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
        (["--stage", "branch"], "--stage branch needs --trunk PATH_OR_HUB_ID"),
        (["--dataset", "casia"], "--dataset casia needs --data_root"),
        (["--fp16", "true", "--use_cpu", "true"], "--fp16 needs a GPU"),
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train_hf.py"])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: train_hf.py [DCR options] [Trainer options]")
    assert error.splitlines()[-1].startswith("train_hf.py: error: ") and message in error.splitlines()[-1]


def test_default_values_of_refused_options_are_accepted():
    _, _, training_args = parse_arguments(["--remove_unused_columns", "false", "--do_train", "false", "--use_cpu", "true"])
    assert training_args.remove_unused_columns is False


@pytest.mark.slow
def test_the_script_reports_usage_errors_without_a_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "train_hf.py"), "--stage", "finetune"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines()[-1] == (
        "train_hf.py: error: --stage finetune needs --init_from PATH_OR_HUB_ID (the model to fine-tune)."
    )
    assert "Traceback" not in completed.stderr
