"""Training from RecordIO packs through `train_hf.py`'s code path: both header conventions, a split
record and multi-float labels; `prepare` to a datasets folder and training from it; an exact resume
(the same remaining batches, the same weights) on a pack read by offset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Image, load_from_disk
from safetensors.torch import load_file

from dcr_hf.data.command import main as data_main
from dcr_hf.data.indexed import IndexedImageDataset
from dcr_hf.data.recordio import load_recordio
from dcr_hf.training import plan_training, run_training
from dcr_hf.training.command import parse_arguments
from dcr_hf.training.command import train as train_command
from tests.layouts import smooth_photo
from tests.recordio_pack import encode_image, png_with_magic, write_pack

SIZE, IDENTITIES, PER_IDENTITY = 32, 4, 4
TINY = [
    "--image_size", str(SIZE), "--low_resolution_sizes", "8", "12", "--architecture", "small", "--depths", "1", "1",
    "1", "1", "--hidden_sizes", "8", "8", "16", "16", "--embedding_size", "16", "--per_device_train_batch_size", "4",
    "--samples_per_class", "2", "--report_to", "none", "--dataloader_num_workers", "0", "--seed", "0",
    "--disable_tqdm", "true", "--use_cpu", "true", "--validation_dataset", "none", "--eval_strategy", "no",
    "--load_best_model_at_end", "false", "--logging_steps", "1",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _pack(root: Path, convention: str, extra_labels: int = 0) -> Path:
    rng = np.random.default_rng(3)
    labels = [identity for identity in range(IDENTITIES) for _ in range(PER_IDENTITY)]
    images = [encode_image(smooth_photo(rng, SIZE, SIZE), "JPEG") for _ in labels]
    images[5] = png_with_magic(smooth_photo(rng, SIZE, SIZE))  # one record split in parts
    write_pack(root, images, labels, convention=convention, extra_labels=extra_labels, size=SIZE)
    return root


def _argv(output_dir: Path, data: list[str], *extra: str) -> list[str]:
    return ["--output_dir", str(output_dir), *data, *TINY, *extra]


@pytest.mark.parametrize(("convention", "extra_labels", "workers"), [("insightface", 0, "0"), ("im2rec", 2, "2")])
def test_trains_on_a_pack(tmp_path, convention, extra_labels, workers):
    # With loader workers, each forked worker opens the .rec for itself (the main process opened it to index the pack).
    pack = _pack(tmp_path / "pack", convention, extra_labels)
    result = train_command(_argv(tmp_path / "run", ["--dataset", "recordio", "--data_root", str(pack)], "--max_steps", "2",
                                 "--dataloader_num_workers", workers))
    assert result["output_dir"] == str(tmp_path / "run")
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert weights["centers"].shape[0] == IDENTITIES
    assert (tmp_path / "run" / "README.md").read_text().count("pack") >= 1


def test_trains_on_a_folder_with_streaming(tmp_path):
    from tests.layouts import make_identity_folder

    make_identity_folder(tmp_path / "faces", {f"id{i}": PER_IDENTITY for i in range(IDENTITIES)})
    train_command(_argv(tmp_path / "run", ["--dataset", "folder", "--data_root", str(tmp_path / "faces"), "--streaming",
                                           "true"], "--max_steps", "2"))
    assert load_file(str(tmp_path / "run" / "model.safetensors"))["centers"].shape[0] == IDENTITIES


def test_prepare_writes_a_datasets_folder_that_trains(tmp_path, capsys):
    pack = _pack(tmp_path / "pack", "insightface")
    assert data_main(["prepare", "--dataset", "recordio", "--data_root", str(pack), "--output_dir", str(tmp_path / "out")]) == 0
    assert "train: 16 rows" in capsys.readouterr().out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "pack"]  # the scratch copy is gone
    prepared = load_from_disk(str(tmp_path / "out"))["train"]
    assert prepared["label"] == [i for i in range(IDENTITIES) for _ in range(PER_IDENTITY)]
    embedded = prepared.cast_column("image", Image(decode=False))["image"]
    assert [row["bytes"] for row in embedded] == [row["image"]["bytes"] for row in load_recordio(pack).__getitems__(list(range(16)))]
    for data in (["--dataset", "recordio", "--data_root", str(tmp_path / "out")], ["--dataset", str(tmp_path / "out")]):
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        train_command(_argv(tmp_path / "run", data, "--max_steps", "2"))
        assert load_file(str(tmp_path / "run" / "model.safetensors"))["centers"].shape[0] == IDENTITIES


def test_prepare_names_an_undecodable_record(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_pack(tmp_path / "pack", [encode_image(smooth_photo(rng, SIZE, SIZE)), b"not an image"], [0, 1],
               convention="im2rec", size=SIZE)
    with pytest.raises(SystemExit) as exited:
        data_main(["prepare", "--dataset", "recordio", "--data_root", str(tmp_path / "pack"),
                   "--output_dir", str(tmp_path / "out")])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert "train.rec[key 1]: the image bytes cannot be decoded" in error[-1]
    assert not (tmp_path / "out").exists()


def _run(output_dir: Path, data: list[str], monkeypatch, *extra: str) -> list[list[int]]:
    """Train, returning the pack positions of every batch the loader fetched."""
    fetched: list[list[int]] = []
    original = IndexedImageDataset.__getitems__

    def recording(self, indices):
        fetched.append([int(i) for i in indices])
        return original(self, indices)

    monkeypatch.setattr(IndexedImageDataset, "__getitems__", recording)
    run_training(plan_training(*parse_arguments(_argv(output_dir, data, *extra))))
    monkeypatch.setattr(IndexedImageDataset, "__getitems__", original)
    return fetched


@pytest.mark.parametrize("source", ["recordio", "streamed folder"])
def test_resume_sees_the_same_remaining_batches_and_ends_with_the_same_weights(tmp_path, monkeypatch, source):
    if source == "recordio":
        data = ["--dataset", "recordio", "--data_root", str(_pack(tmp_path / "pack", "insightface"))]
    else:
        from tests.layouts import make_identity_folder

        make_identity_folder(tmp_path / "faces", {f"id{i}": PER_IDENTITY for i in range(IDENTITIES)})
        data = ["--dataset", "folder", "--data_root", str(tmp_path / "faces"), "--streaming", "true"]
    options = ["--max_steps", "7", "--save_strategy", "steps", "--save_steps", "5", "--augmentation", "flip"]
    uninterrupted = _run(tmp_path / "a", data, monkeypatch, *options)
    # 4 batches an epoch: the resume crosses into epoch 2 (the loader fetches one batch ahead, in both runs).
    assert len(uninterrupted) == 8 and sorted(sum(uninterrupted[:4], [])) == list(range(16))
    shutil.copytree(tmp_path / "a" / "checkpoint-5", tmp_path / "b" / "checkpoint-5")
    resumed = _run(tmp_path / "b", data, monkeypatch, *options, "--resume_from_checkpoint",
                   str(tmp_path / "b" / "checkpoint-5"))
    assert resumed == uninterrupted[5:]
    expected, got = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
