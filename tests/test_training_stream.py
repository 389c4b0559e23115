"""Training from a streamed dataset through `train_hf.py`'s code path (`--dataset <Hub id or folder of
parquet shards> --streaming true`): P x K batches, the refusals of the plan, and an exact resume (the
stream's position and the buffer saved in the checkpoint, the same weights as an uninterrupted run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dcr_hf.data.stream import IdentityBatchStream, check_stream_checkpoint
from dcr_hf.errors_dcr import DCRInputError
from dcr_hf.training import plan_training, run_training
from dcr_hf.training.command import parse_arguments
from dcr_hf.training.command import train as train_command
from tests.layouts import make_hub_dataset
from tests.test_training_recordio import TINY, _one_thread  # noqa: F401 -- its autouse fixture, one torch thread

IDENTITIES, PER_IDENTITY = 5, 4


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory) -> Path:
    return make_hub_dataset(tmp_path_factory.mktemp("hub"), [i for i in range(IDENTITIES) for _ in range(PER_IDENTITY)],
                            num_shards=2, size=32)


def _argv(output_dir: Path, source: Path | str, *extra: str) -> list[str]:
    return ["--output_dir", str(output_dir), "--dataset", str(source), "--streaming", "true", *TINY,
            "--stream_buffer_images", "6", *extra]


def _run(output_dir: Path, source, monkeypatch, *extra: str) -> list[list[int]]:
    """Train, returning the labels of every batch the stream yielded."""
    seen: list[list[int]] = []
    original = IdentityBatchStream._rows

    def recording(self, rows):
        seen.append([label for label, _ in rows])
        return original(self, rows)

    monkeypatch.setattr(IdentityBatchStream, "_rows", recording)
    run_training(plan_training(*parse_arguments(_argv(output_dir, source, *extra))))
    monkeypatch.setattr(IdentityBatchStream, "_rows", original)
    return seen


def test_trains_on_a_streamed_folder_of_parquet_shards(tmp_path, hub_folder, monkeypatch):
    seen = _run(tmp_path / "run", hub_folder, monkeypatch, "--max_steps", "3")
    assert len(seen) == 3 and all(len(b) == 4 and b[0] == b[1] and b[2] == b[3] != b[0] for b in seen)
    assert load_file(str(tmp_path / "run" / "model.safetensors"))["centers"].shape[0] == IDENTITIES
    assert str(hub_folder.name) in (tmp_path / "run" / "README.md").read_text()


def test_resume_continues_the_stream_and_ends_with_the_same_weights(tmp_path, hub_folder, monkeypatch):
    # 20 images, 5 batches a pass: the checkpoint at step 4 has images buffered, the resume crosses into pass 2.
    options = ["--max_steps", "8", "--save_strategy", "steps", "--save_steps", "4", "--augmentation", "flip"]
    uninterrupted = _run(tmp_path / "a", hub_folder, monkeypatch, *options)
    assert len(uninterrupted) == 8
    checkpoint = tmp_path / "a" / "checkpoint-4"
    assert (checkpoint / "stream_state-0.json").is_file() and (checkpoint / "stream_state-0.safetensors").is_file()
    shutil.copytree(checkpoint, tmp_path / "b" / "checkpoint-4")
    resumed = _run(tmp_path / "b", hub_folder, monkeypatch, *options, "--resume_from_checkpoint",
                   str(tmp_path / "b" / "checkpoint-4"))
    assert resumed == uninterrupted[4:]
    expected, got = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    # The checkpoint on another number of processes, or without its stream state, is refused before training.
    resume = ["--max_steps", "8", "--resume_from_checkpoint", str(checkpoint)]
    with pytest.raises(DCRInputError, match="holds the stream states of 1 process; resume it on 1, not 2"):
        check_stream_checkpoint(checkpoint, 2)  # what the plan calls with the launcher's WORLD_SIZE
    for path in checkpoint.glob("stream_state-*"):
        path.unlink()
    with pytest.raises(DCRInputError, match="holds no stream state"):
        plan_training(*parse_arguments(_argv(tmp_path / "a", hub_folder, *resume)))


@pytest.mark.parametrize(("extra", "message"), [
    ([], r"give --max_steps N \(a stream has no length"),
    (["--max_steps", "2", "--dataloader_num_workers", "2"], "--dataloader_num_workers must be 0, got 2"),
    (["--max_steps", "2", "--lr_milestones", "1"], "--lr_milestones are epochs"),
    (["--max_steps", "2", "--stream_buffer_images", "3"], "--stream_buffer_images 3 cannot hold one batch of 4"),
    (["--max_steps", "2", "--num_classes", "1"], "--num_classes must be at least 2"),
])
def test_the_plan_refuses_what_a_stream_cannot_serve(tmp_path, hub_folder, extra, message):
    with pytest.raises(DCRInputError, match=message):
        plan_training(*parse_arguments(_argv(tmp_path / "run", hub_folder, *extra)))


def test_the_plan_refuses_a_stream_without_samples_per_class(tmp_path, hub_folder):
    argv = _argv(tmp_path / "run", hub_folder, "--max_steps", "2")
    at = argv.index("--samples_per_class")
    with pytest.raises(DCRInputError, match="give --samples_per_class K"):
        plan_training(*parse_arguments(argv[:at] + argv[at + 2:]))


def test_num_classes_is_refused_for_a_dataset_that_names_its_classes(tmp_path):
    with pytest.raises(DCRInputError, match="--num_classes 5 applies to a streamed Hub dataset"):
        plan_training(*parse_arguments(["--output_dir", str(tmp_path / "run"), *TINY, "--num_classes", "5"]))


@pytest.mark.slow  # two torchrun launches of 2 gloo processes
def test_two_processes_stream_their_own_parts_and_resume_exactly(tmp_path):
    """Under torchrun each process batches its own shards (`split_dataset_by_node`): the checkpoint holds
    one stream state per process, and a resume on 2 processes ends with the uninterrupted run's weights."""
    import json
    import subprocess
    import sys

    from tests.test_training import WORKER, _env, _free_port

    # 4 shards of 2 identities each: every process streams 2 whole shards (16 images, 4 batches a pass).
    source = make_hub_dataset(tmp_path / "hub", [i for i in range(8) for _ in range(4)], num_shards=4, size=32)
    options = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3"]

    def launch(output_dir: Path, *extra: str) -> None:
        completed = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
             "--master_port", str(_free_port()), str(WORKER), "--", *_argv(output_dir, source, *options, *extra)],
            env=_env(), capture_output=True, text=True, timeout=300,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]

    launch(tmp_path / "a")
    checkpoint = tmp_path / "a" / "checkpoint-3"
    states = [json.loads((checkpoint / f"stream_state-{rank}.json").read_text()) for rank in (0, 1)]
    assert [state["batches"] for state in states] == [3, 3]
    # Rank 0 streams shards 0 and 2 (identities 0, 1, 4, 5), rank 1 shards 1 and 3: their buffers are disjoint.
    assert states[0]["rows"]["label"] and set(states[0]["rows"]["label"]) <= {0, 1, 4, 5}
    assert states[1]["rows"]["label"] and set(states[1]["rows"]["label"]) <= {2, 3, 6, 7}
    assert json.loads((tmp_path / "a" / "training_recipe.json").read_text())["global_batch_size"] == 8
    shutil.copytree(checkpoint, tmp_path / "b" / "checkpoint-3")
    launch(tmp_path / "b", "--resume_from_checkpoint", str(tmp_path / "b" / "checkpoint-3"))
    expected, got = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_trains_on_a_hub_dataset_id_streamed_from_the_hub_standin(tmp_path, monkeypatch, hub_folder):
    """`--dataset org/faces --streaming true` against the local stand-in for the Hub: the parquet shards are
    read over HTTP as the batches need them, nothing is downloaded to the cache."""
    from tests.hub_standin import HubStandIn

    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        import datasets.config
        from huggingface_hub import constants

        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache" / "datasets")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache" / "hub"))
        hub.add_repo("org/faces", private=False, repo_type="dataset")
        repo = hub.repos[("dataset", "org/faces")]
        repo["snapshots"][repo["branches"]["main"]].update(
            {str(path.relative_to(hub_folder)): path.read_bytes() for path in hub_folder.rglob("*.parquet")})
        seen = _run(tmp_path / "run", "org/faces", monkeypatch, "--max_steps", "2")
    assert len(seen) == 2 and all(len(batch) == 4 and batch[0] == batch[1] for batch in seen)
    shards = {request.path.rsplit("/", 1)[1] for request in hub.requests if request.path.endswith(".parquet")}
    assert shards == {"train-00000-of-00002.parquet"}  # 2 batches need the first shard only
    cached = [path.name for path in (tmp_path / "cache").rglob("*") if path.suffix in (".parquet", ".arrow")]
    assert not cached
    card = (tmp_path / "run" / "README.md").read_text()
    assert "org/faces" in card


def test_a_bad_label_column_ends_the_command_in_one_line(tmp_path, hub_folder, capsys):
    from dcr_hf.training.command import main as train_main

    with pytest.raises(SystemExit) as exited:
        train_main(_argv(tmp_path / "run", hub_folder, "--max_steps", "2", "--label_column", "person"))
    error = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in error
    assert error.strip().splitlines()[-1].endswith(
        f"error: --label_column 'person': the streamed dataset {hub_folder} has no such column; it has ['image', 'label'].")
    assert not (tmp_path / "run" / "model.safetensors").exists()
