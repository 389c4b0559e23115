"""One run per output folder (`dcr_hf.training.lock`): a live run's folder is refused in one line,
its files untouched; a stale lock (its run killed) is taken over; the lock goes with the run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dcr_hf.data.registry as registry
import dcr_hf.training.run as training_run
from dcr_hf.training import plan_training
from dcr_hf.training.command import main, parse_arguments
from dcr_hf.training.lock import LOCK_FILE, RunLock

ROOT = Path(__file__).resolve().parent.parent
HOLD = """
import sys, time
from pathlib import Path
from dcr_hf.training.lock import RunLock
folder = Path(sys.argv[1])
with RunLock(folder):
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "model.safetensors").write_bytes(b"first run")
    print("locked", flush=True)
    sys.stdin.read()  # held until the test closes stdin
"""


@pytest.fixture
def first_run(tmp_path):
    """A live process holding `tmp_path / "out"` (as a first run does) and having written a checkpoint."""
    folder = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout.readline().strip() == "locked"
    yield folder, process
    process.stdin.close()
    process.wait(timeout=60)


def _must_not_run(*args, **kwargs):
    raise AssertionError("the refused run read data")


def test_a_second_run_into_a_live_runs_folder_is_one_line_and_leaves_its_files(first_run, capsys, monkeypatch):
    folder, process = first_run
    monkeypatch.setattr(registry, "load_training_split", _must_not_run)
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(folder), "--use_cpu", "true", "--max_steps", "1"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in error
    [line] = [text for text in error.splitlines() if "error:" in text]
    assert line.endswith(
        f"error: --output_dir {folder} is in use by another run (PID {process.pid} on host {socket.gethostname()}, "
        f"lock file {folder / LOCK_FILE}); wait for it to finish or choose another --output_dir."
    )
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before
    # The run itself takes the lock (two runs that planned together): the second one is refused there too.
    with pytest.raises(FileExistsError, match=f"is in use by another run \\(PID {process.pid}"):
        RunLock(folder).acquire()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == process.pid
    # Once the first run ends, its lock is gone and the folder is free.
    process.stdin.close()
    process.wait(timeout=60)
    assert not (folder / LOCK_FILE).exists()
    with RunLock(folder):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_stale_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    planned = plan_training(*parse_arguments(["--output_dir", str(folder), "--use_cpu", "true"]))  # not refused
    with RunLock(planned.training_args.output_dir):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
        # The same process planning again into its own running folder is refused too.
        with pytest.raises(FileExistsError, match=f"PID {os.getpid()} on host"):
            plan_training(*parse_arguments(["--output_dir", str(folder), "--use_cpu", "true"]))
    assert f"Taking over the stale lock {folder / LOCK_FILE} of PID {dead.pid}" in caplog.text
    assert not (folder / LOCK_FILE).exists() and folder.is_dir()


def test_the_lock_is_released_when_the_run_fails(tmp_path, monkeypatch):
    """A run refused after it took the lock (one identity) leaves no lock, and no folder it created."""
    from datasets import Dataset

    monkeypatch.setattr(training_run, "build_model", _must_not_run)
    data = training_run.TrainingData(
        train=Dataset.from_dict({"label": [0, 0]}), num_labels=1, id2label={0: "0"}, real_low_resolution=False,
        validation=None, validation_protocol=None, validation_name=None,
    )
    folder = tmp_path / "out"
    planned = plan_training(*parse_arguments(["--output_dir", str(folder), "--use_cpu", "true",
                                              "--validation_dataset", "none", "--max_steps", "1"]))
    with pytest.raises(ValueError, match="at least 2 identities"):
        training_run.run_training(planned, data=data)
    assert not folder.exists()
    with pytest.raises(ValueError, match="at least 2 identities"):  # and a second try is not refused as locked
        training_run.run_training(planned, data=data)
