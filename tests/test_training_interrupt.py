"""A run stopped by SIGINT / SIGTERM (`dcr_hf.training.interrupt`), or killed, and resumed: the
weights of an uninterrupted run, bit for bit.

The signals are sent from outside to a `train_hf.py` run (`tests/training_worker.py`, which holds
the run at the end of a step until the test has signalled it, so that the stop step does not
depend on the machine's speed); the in-process tests signal their own process from a callback.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from dcr_hf.training.checkpoints import checkpoint_problem
from dcr_hf.training.command import resume_command
from dcr_hf.training.command import train as train_command
from dcr_hf.training.interrupt import REPEAT_WINDOW, TrainingInterrupted
from dcr_hf.training.lock import LOCK_FILE
# `_one_thread` (autouse): one thread, as the subprocesses (OMP_NUM_THREADS=1), so the kernels and the
# weights are the same bit for bit.
from tests.test_training import (  # noqa: F401
    NO_VALIDATION, ROOT, TINY, WORKER, _argv, _env, _free_port, _one_thread, _weights,
)

OPTIONS = [*NO_VALIDATION, "--max_steps", "8", "--save_strategy", "steps", "--save_steps", "4", "--logging_steps", "1"]
FINAL_FILES = ("model.safetensors", "README.md", "training_recipe.json", "train_results.json")


def _assert_same_weights(folder: Path, expected_folder: Path) -> None:
    expected, got = _weights(expected_folder), _weights(folder)
    assert set(got) == set(expected) and "centers" in expected
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def _assert_nothing_final(folder: Path) -> None:
    assert not [name for name in FINAL_FILES if (folder / name).exists()]
    assert not (folder / LOCK_FILE).exists()  # released on the way out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    train_command(_argv(folder, *OPTIONS))
    return folder


class _Run:
    """A `train_hf.py` run in a subprocess (`tests/training_worker.py`), its output read as it comes."""

    def __init__(self, *worker_options: str, argv: list[str], launcher: tuple[str, ...] = ()):
        self.process = subprocess.Popen(
            [sys.executable, *launcher, str(WORKER), *worker_options, "--", *argv], cwd=ROOT, env=_env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,  # its own group
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, condition, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self._reader.join(timeout=10)
                pytest.fail(f"the run ended or timed out before {what}:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.02)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def paused(self, folder: Path, step: int) -> Path:
        marker = folder / f"paused-at-{step}"
        self.wait_for(marker.exists, f"step {step}")
        return marker


def _expected_command(argv: list[str]) -> str:
    return shlex.join(["python", "train_hf.py", *argv, "--resume_from_checkpoint", "last"])


def _one_line(run: _Run) -> str:
    """The command's own line: the only one it printed, the last, and no traceback."""
    assert not run.said("Traceback"), "\n".join(run.lines)
    [line] = [text for text in run.lines if text.startswith("train_hf.py:")]
    assert run.lines[-1] == line
    return line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("number", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["SIGINT-to-the-process-group-with-loader-workers", "SIGTERM-to-the-main-process"],
)
def test_a_signal_saves_the_step_and_the_printed_command_resumes_to_the_uninterrupted_weights(
        uninterrupted, tmp_path, number, group):
    # `group`: as a terminal's Ctrl-C, the signal reaches the loader's worker processes too; they
    # leave the decision to the main process (the loader only decodes: its workers change no draw).
    # SIGTERM as a job scheduler sends it, to the main process.
    folder, name = tmp_path / "run", signal.Signals(number).name
    argv = _argv(folder, *OPTIONS, *(["--dataloader_num_workers", "2"] if group else []))
    run = _Run("--pause_at_step", "5", argv=argv)
    marker = run.paused(folder, 5)  # checkpoint-4 saved, step 5 done
    if group:
        os.killpg(run.process.pid, number)
    else:
        os.kill(run.process.pid, number)
    run.wait_for(lambda: run.said(f"{name} received: saving a checkpoint, then stopping at the end of this step"),
                 "the signal was received")
    marker.unlink()
    assert run.finish() == 128 + number  # 130 / 143
    assert len([line for line in run.lines if f"{name} received" in line]) == 1
    command = _expected_command(argv)
    assert _one_line(run) == f"train_hf.py: interrupted at step 5 ({name}); saved {folder / 'checkpoint-5'}; resume with: {command}"
    assert checkpoint_problem(folder / "checkpoint-5") is None and not (folder / "checkpoint-6").exists()
    _assert_nothing_final(folder)

    if group:  # the printed command, as the user would paste it
        resumed = subprocess.run(shlex.split(command), cwd=ROOT, env=_env(), capture_output=True, text=True,
                                 timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"Resuming from {folder / 'checkpoint-5'}" in resumed.stdout + resumed.stderr
    else:  # the same command line, in this process (faster)
        train_command(shlex.split(command)[2:])
    _assert_same_weights(folder, uninterrupted)
    # Steps 6..8 did change the model: the comparison is not between two copies of checkpoint-5.
    assert not torch.equal(_weights(folder / "checkpoint-5")["centers"], _weights(folder)["centers"])


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [[], ["--samples_per_class", "2", "--augmentation", "aug_plus"]],
                         ids=["default", "m-per-class-aug-plus"])
def test_sigkill_then_resume_last_gives_the_uninterrupted_weights(uninterrupted, tmp_path, sampling):
    # The M-per-class sampler's order and aug-plus's draws are restored exactly too.
    options = [*OPTIONS, *sampling]
    if sampling:
        uninterrupted = tmp_path / "uninterrupted"
        train_command(_argv(uninterrupted, *options))
    folder = tmp_path / "run"
    killed = _Run("--kill_at_step", "6", argv=_argv(folder, *options))
    assert killed.finish() == -signal.SIGKILL
    assert (folder / "checkpoint-4").is_dir() and not (folder / "checkpoint-6").exists()
    train_command(_argv(folder, *options, "--resume_from_checkpoint", "last"))  # the last periodic checkpoint, 4
    _assert_same_weights(folder, uninterrupted)


@pytest.mark.slow
def test_a_second_signal_stops_at_once(tmp_path):
    folder = tmp_path / "run"
    argv = _argv(folder, *OPTIONS)
    run = _Run("--pause_at_step", "5", argv=argv)
    run.paused(folder, 5)
    os.kill(run.process.pid, signal.SIGINT)
    run.wait_for(lambda: run.said("SIGINT received"), "the first signal was received")
    time.sleep(REPEAT_WINDOW)  # a repeat within it is the same Ctrl-C (forwarded by a launcher)
    os.kill(run.process.pid, signal.SIGINT)  # while still in step 5
    assert run.finish() == 130
    assert _one_line(run) == (
        "train_hf.py: interrupted again (SIGINT) during step 5: stopped at once, nothing more saved; the last "
        f"checkpoint is {folder / 'checkpoint-4'}; resume with: {_expected_command(argv)}"
    )
    assert not (folder / "checkpoint-5").exists()
    _assert_nothing_final(folder)


class _SignalAt(TrainerCallback):
    """Send this process `number` at the end of optimizer step `step` (as a user's Ctrl-C would arrive)."""

    def __init__(self, step: int, number: int = signal.SIGINT):
        self.step, self.number = step, number

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.number)


@pytest.mark.slow
def test_without_save_on_interrupt_the_run_stops_at_the_step_and_names_the_last_checkpoint(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as stopped:
        train_command(_argv(folder, *OPTIONS, "--save_on_interrupt", "false"), callbacks=[_SignalAt(5)])
    assert stopped.value.exit_status == 130 and stopped.value.step == 5
    assert str(stopped.value).startswith(
        f"interrupted at step 5 (SIGINT); the last checkpoint is {folder / 'checkpoint-4'} (--save_on_interrupt false); "
        "resume with: "
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are restored
    assert [path.name for path in folder.glob("checkpoint-*")] == ["checkpoint-4"]
    _assert_nothing_final(folder)


# Validated and saved every epoch (3 steps), the best model loaded at the end: the resumed run must
# also validate, and choose the best checkpoint, as the uninterrupted one.
EPOCHS = ["--max_steps", "6", "--eval_strategy", "epoch", "--save_strategy", "epoch", "--evaluate_before_training",
          "false", "--logging_steps", "1", "--save_total_limit", "3"]


@pytest.fixture(scope="module")
def uninterrupted_epochs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted-epochs")
    train_command(_argv(folder, *EPOCHS))
    return folder


def _validations(folder: Path) -> list[tuple[int, float]]:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return [(entry["step"], entry["eval_mean_lr_accuracy"]) for entry in history if "eval_mean_lr_accuracy" in entry]


@pytest.mark.slow
@pytest.mark.parametrize("step", [3, 4], ids=["at-an-epoch-end", "inside-an-epoch"])
def test_a_run_validated_every_epoch_resumes_to_the_uninterrupted_weights(uninterrupted_epochs, tmp_path, step):
    folder = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=f"interrupted at step {step} .SIGINT.; saved {folder / f'checkpoint-{step}'}"):
        train_command(_argv(folder, *EPOCHS), callbacks=[_SignalAt(step)])
    # At an epoch end, the epoch's validation runs before the save (as in the uninterrupted run);
    # inside one, the Trainer's validation on leaving the epoch early does not.
    assert _validations(folder / f"checkpoint-{step}") == _validations(uninterrupted_epochs)[:1]
    train_command(_argv(folder, *EPOCHS, "--resume_from_checkpoint", "last"))
    assert _validations(folder) == _validations(uninterrupted_epochs)
    _assert_same_weights(folder, uninterrupted_epochs)


def test_the_resume_command_repeats_the_options_with_resume_last():
    argv = ["--output_dir", "out dir", "--resume_from_checkpoint", "out dir/checkpoint-4", "--max_steps", "8"]
    assert resume_command(argv, "train_hf.py") == (
        "python train_hf.py --output_dir 'out dir' --max_steps 8 --resume_from_checkpoint last"
    )
    assert resume_command(["--resume_from_checkpoint=last", "--seed", "1"], "dcr-train") == (
        "dcr-train --seed 1 --resume_from_checkpoint last"
    )


def test_ctrl_c_outside_training_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the data is built (before any checkpoint): no traceback, nothing to resume."""
    import dcr_hf.training.run as training_run
    from dcr_hf.training.command import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "run_training", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path / "out"), "--use_cpu", "true"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 130 and "Traceback" not in error
    assert error.strip().splitlines()[-1].endswith(
        f": interrupted (SIGINT); no checkpoint was saved in {tmp_path / 'out'}, so there is nothing to resume."
    )


def _torchrun() -> tuple[str, ...]:
    return ("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
            str(_free_port()))


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step_on_a_signal_to_either(tmp_path):
    """A SIGTERM to the second process only: both stop after the same step (they agree at each step
    boundary) and the checkpoint of that step is saved once, resumable."""
    folder = tmp_path / "run"
    run = _Run("--pause_at_step", "5", argv=_argv(folder, *OPTIONS, "--per_device_train_batch_size", "4"),
               launcher=_torchrun())
    markers = [folder / "paused-at-5-rank0", folder / "paused-at-5-rank1"]
    run.wait_for(lambda: all(marker.exists() for marker in markers), "both processes reached step 5")
    os.kill(int(markers[1].read_text()), signal.SIGTERM)
    run.wait_for(lambda: run.said("SIGTERM received"), "the signal was received")
    for marker in markers:
        marker.unlink()
    assert run.finish() != 0  # torchrun reports its workers' exit status 143 as a failure
    stopped = [line for line in run.lines if "interrupted at step 5 (SIGTERM)" in line]
    assert len(stopped) == 2 and all(f"saved {folder / 'checkpoint-5'}" in line for line in stopped)
    assert checkpoint_problem(folder / "checkpoint-5") is None and not (folder / "checkpoint-6").exists()
    assert json.loads((folder / "checkpoint-5" / "trainer_state.json").read_text())["global_step"] == 5
    _assert_nothing_final(folder)


def test_a_run_in_another_thread_keeps_the_process_handlers(tmp_path):
    """Signal handlers can only be installed from the main thread: elsewhere the stop is not armed."""
    from dcr_hf.training.interrupt import StopOnSignal

    outcome = []

    def enter():
        with StopOnSignal(tmp_path):
            outcome.append(signal.getsignal(signal.SIGINT))

    worker = threading.Thread(target=enter)
    worker.start()
    worker.join()
    assert outcome == [signal.default_int_handler]
    with StopOnSignal(tmp_path):
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
