"""The sharded classifier (`dcr_hf.training.partial_fc`) against the unsharded model: one process,
and two gloo processes on 127.0.0.1, where the loss, the trunk's gradients, the classifier's
gradients and the center updates equal those of one process training on the whole batch."""

from __future__ import annotations

import copy
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from dcr_hf.losses_dcr import trunk_stage_loss
from dcr_hf.modeling_dcr import DCRForImageClassification, initial_centers
from dcr_hf.training.partial_fc import ShardedClassifier, shard_rows

from .models import tiny_config

BATCH, IMAGE = 8, 32  # the global batch: 4 samples on each of the 2 processes


def _model(num_labels: int, head: str) -> DCRForImageClassification:
    torch.manual_seed(0)
    # Eval mode: batch norm by its running statistics, so half a batch goes through the trunk as in the whole one.
    return DCRForImageClassification(tiny_config(num_labels=num_labels, head=head, image_size=IMAGE)).eval()


def _batch(num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(BATCH, 3, 3, IMAGE, IMAGE, generator=generator)  # HR and two LR copies
    labels = torch.tensor([0, 1, num_labels - 1, 1, 2, num_labels - 1, 0, num_labels // 2])
    return pixels, labels


def _reference(model: DCRForImageClassification, pixels: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The unsharded model's trunk-stage loss on the whole batch (centers moved first), its trunk
    and classifier gradients and moved centers."""
    model = copy.deepcopy(model)
    embeddings = model.dcr(pixels).trunk_embeddings
    centers = model.centers.clone()
    terms = trunk_stage_loss(model.config, centers, embeddings, model.classifier(embeddings), labels)
    (terms["cross_entropy_loss"] + terms["center_loss"]).backward()
    return {
        "cross_entropy_loss": terms["cross_entropy_loss"].detach(), "center_loss": terms["center_loss"].detach(),
        "trunk": [p.grad.clone() for p in model.dcr.parameters()], "classifier": model.classifier.weight.grad.clone(),
        "centers": centers,
    }


def _sharded_step(model: DCRForImageClassification, pixels: torch.Tensor, labels: torch.Tensor, rank: int,
                  world_size: int, sample_rate: float = 1.0) -> dict[str, torch.Tensor]:
    """One process's step with the classifier sharded: its share of the batch, the trunk's
    gradients averaged over the processes as DistributedDataParallel does."""
    model = copy.deepcopy(model)
    shard = ShardedClassifier(model.config, model.config.embedding_size, sample_rate=sample_rate, rank=rank,
                              world_size=world_size)
    classifier = model.classifier
    shard.load_full(classifier.weight.detach(), model.centers, getattr(classifier, "bias", None))
    share = slice(rank * BATCH // world_size, (rank + 1) * BATCH // world_size)
    embeddings = model.dcr(pixels[share]).trunk_embeddings
    terms = shard.loss_terms(embeddings, labels[share])
    (terms["cross_entropy_loss"] + terms["center_loss"]).backward()
    trunk = [p.grad.clone() for p in model.dcr.parameters()]
    if world_size > 1:
        for grad in trunk:
            torch.distributed.all_reduce(grad)
            grad.div_(world_size)
    return {
        "cross_entropy_loss": terms["cross_entropy_loss"].detach(), "center_loss": terms["center_loss"].detach(),
        "trunk": trunk, "classifier": shard.weight.grad.clone(), "centers": shard.centers.clone(),
        "rows": (shard.class_start, shard.num_local),
    }


CASES = [(7, "softmax"), (7, "arcface"), (6, "cosface"), (5, "softmax")]


def _assert_equal(sharded: list[dict], reference: dict) -> None:
    for result in sharded:
        for term in ("cross_entropy_loss", "center_loss"):
            torch.testing.assert_close(result[term], reference[term], rtol=1e-5, atol=1e-5)
        for got, expected in zip(result["trunk"], reference["trunk"]):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for part in ("classifier", "centers"):
        whole = torch.cat([result[part] for result in sharded])
        torch.testing.assert_close(whole, reference[part], rtol=1e-5, atol=1e-5)


def test_shard_rows_cover_every_class_once_with_the_remainder_spread():
    assert [shard_rows(7, 2, r) for r in range(2)] == [(0, 4), (4, 3)]
    assert [shard_rows(10, 4, r) for r in range(4)] == [(0, 3), (3, 3), (6, 2), (8, 2)]
    for classes, world in ((1000, 8), (5, 5), (9, 4)):
        rows = [shard_rows(classes, world, r) for r in range(world)]
        assert sum(count for _, count in rows) == classes
        assert all(start + count == following for (start, count), (following, _) in zip(rows, rows[1:]))


def test_the_shards_start_as_one_classifier_and_the_models_centers():
    config = tiny_config(num_labels=7, head="arcface")
    whole = ShardedClassifier(config, 32, rank=0, world_size=1, seed=3)
    halves = [ShardedClassifier(config, 32, rank=r, world_size=2, seed=3) for r in range(2)]
    torch.testing.assert_close(torch.cat([h.weight for h in halves]), whole.weight, rtol=0, atol=0)
    torch.testing.assert_close(whole.centers, initial_centers(config, 7, 32), rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([h.centers for h in halves]), whole.centers, rtol=0, atol=0)


@pytest.mark.parametrize("num_labels, head", CASES)
def test_one_process_equals_the_unsharded_trunk_stage_loss(num_labels, head):
    model = _model(num_labels, head)
    pixels, labels = _batch(num_labels)
    _assert_equal([_sharded_step(model, pixels, labels, 0, 1)], _reference(model, pixels, labels))


def _worker(rank: int, port: int, out: str) -> None:
    try:
        torch.set_num_threads(1)  # no OpenMP pool in a forked child
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
        results = {}
        for num_labels, head in CASES:
            pixels, labels = _batch(num_labels)
            results[(num_labels, head)] = _sharded_step(_model(num_labels, head), pixels, labels, rank, 2)
        # Sampling: 40 classes, 20 a shard, rate 0.1 -> 2 rows a shard, fewer than the batch's identities.
        pixels, labels = _batch(40)
        model = _model(40, "arcface")
        shard = ShardedClassifier(model.config, 32, sample_rate=0.1, rank=rank, world_size=2)
        sampled, positives = [], []
        for step in range(3):
            labels = torch.randint(0, 40, (BATCH,), generator=torch.Generator().manual_seed(step))
            gathered = torch.cat([labels] * 3)
            rows = shard.sample_classes(gathered)
            local = gathered - shard.class_start
            positives.append(torch.unique(local[(local >= 0) & (local < shard.num_local)]))
            sampled.append(rows)
        embeddings = model.dcr(pixels[rank * 4:(rank + 1) * 4]).trunk_embeddings
        few = torch.zeros(4, dtype=torch.long) + rank * 20  # one identity per shard: one row left to draw
        terms = shard.loss_terms(embeddings, few)
        (terms["cross_entropy_loss"] + terms["center_loss"]).backward()
        results["sampling"] = {"sampled": sampled, "positives": positives, "loss": terms["cross_entropy_loss"].detach(),
                               "touched": (shard.weight.grad.abs().sum(1) > 0).nonzero().flatten(), "start": shard.class_start}
        # Process 1's batch had no decodable image: it joins the gathers with no rows, process 0 trains alone.
        model = _model(7, "arcface")
        shard = ShardedClassifier(model.config, 32, rank=rank, world_size=2)
        shard.load_full(model.classifier.weight.detach(), model.centers)
        pixels, labels = _batch(7)
        embeddings = model.dcr(pixels[:4]).trunk_embeddings if rank == 0 else torch.zeros(0, 3, 32, requires_grad=True)
        terms = shard.loss_terms(embeddings, labels[:4] if rank == 0 else labels[:0])
        (terms["cross_entropy_loss"] + terms["center_loss"]).backward()
        results["one_empty"] = {name: value.detach() for name, value in terms.items()}
        torch.save(results, f"{out}_{rank}.pt")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("partial_fc") / "rank"
    port = _free_port()
    context = multiprocessing.get_context("fork")  # the children reuse the imported modules
    workers = [context.Process(target=_worker, args=(rank, port, str(out))) for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
        if worker.is_alive():
            worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0]
    return [torch.load(f"{out}_{rank}.pt", weights_only=False) for rank in range(2)]


@pytest.mark.parametrize("num_labels, head", CASES)
def test_two_processes_equal_one_on_the_whole_batch(two_processes, num_labels, head):
    """Loss, trunk gradients (averaged as DDP does), classifier gradients and moved centers of the
    2-process sharded step equal the unsharded model's on the same global batch, from the same
    start; 7 and 5 classes leave a remainder row on the first process."""
    sharded = [result[(num_labels, head)] for result in two_processes]
    assert [r["rows"] for r in sharded] == [shard_rows(num_labels, 2, rank) for rank in range(2)]
    pixels, labels = _batch(num_labels)
    _assert_equal(sharded, _reference(_model(num_labels, head), pixels, labels))


def test_sampling_keeps_the_batch_identities_and_trains_only_the_drawn_rows(two_processes):
    for result in two_processes:
        sampling = result["sampling"]
        for rows, positives in zip(sampling["sampled"], sampling["positives"]):
            assert set(positives.tolist()) <= set(rows.tolist())
            assert len(rows) == max(2, len(positives))  # int(0.1 * 20) rows unless the batch holds more identities
            assert rows.tolist() == sorted(set(rows.tolist()))
        assert torch.isfinite(sampling["loss"]) and sampling["loss"] > 0
        touched = set(sampling["touched"].tolist())
        assert 0 in touched and len(touched) == 2  # the batch's identity and one drawn negative
    torch.testing.assert_close(two_processes[0]["sampling"]["loss"], two_processes[1]["sampling"]["loss"])


# ----------------------------------------------------------------------------- two machines, one killed

ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = [
    "--synthetic_num_identities", "7", "--synthetic_images_per_identity", "4", "--synthetic_num_pairs", "20",
    "--image_size", "48", "--low_resolution_sizes", "8", "--architecture", "small", "--depths", "1", "1", "1", "1",
    "--hidden_sizes", "8", "8", "16", "16", "--embedding_size", "16", "--per_device_train_batch_size", "2",
    "--report_to", "none", "--dataloader_num_workers", "0", "--seed", "0", "--disable_tqdm", "true",
    "--use_cpu", "true", "--validation_dataset", "none", "--eval_strategy", "no", "--load_best_model_at_end", "false",
    "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2", "--partial_fc", "true",
    "--partial_fc_rate", "0.5", "--head", "arcface",
]


def _launch(machine_rank: int, port: int, script: list[str], output_dir: Path, *extra: str) -> subprocess.Popen:
    """One machine of a 2-machine `accelerate launch` on 127.0.0.1 (one CPU process, gloo)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
        "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
        "--rdzv_backend", "static", "--same_network", "--mixed_precision", "no", "--dynamo_backend", "no",
        *script, "--output_dir", str(output_dir), *TINY_RUN, *extra,
    ]
    # A session of its own: the whole machine (launcher and worker) can be killed at once.
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_machines(output_dir: Path, *extra: str, kill_machine_1_at: int | None = None) -> tuple[int, int]:
    """Train on 2 machines; with `kill_machine_1_at`, machine 1 SIGKILLs itself after that step and
    machine 0 (then stuck waiting for it) is killed too. The exit codes of the two launchers."""
    port = _free_port()
    worker = [str(ROOT / "tests" / "training_worker.py"), "--kill_at_step", str(kill_machine_1_at), "--"]
    second = _launch(1, port, worker if kill_machine_1_at else [str(ROOT / "train_hf.py")], output_dir, *extra)
    first = _launch(0, port, [str(ROOT / "train_hf.py")], output_dir, *extra)
    try:
        second_log, _ = second.communicate(timeout=600)
        if kill_machine_1_at:
            os.killpg(first.pid, signal.SIGKILL)
        first_log, _ = first.communicate(timeout=600)
    finally:
        for launcher in (first, second):
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
    if kill_machine_1_at is None:
        assert (first.returncode, second.returncode) == (0, 0), (first_log or "")[-3000:] + (second_log or "")[-3000:]
    return first.returncode, second.returncode


def _shards(checkpoint: Path) -> list[dict]:
    return [torch.load(checkpoint / f"partial_fc_rank{rank}_of_2.pt", weights_only=True) for rank in range(2)]


@pytest.mark.slow  # three 2-machine accelerate launches of train_hf.py (about a minute each on 2 loaded cores)
def test_two_machines_killed_and_resumed_equal_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    _two_machines(uninterrupted)
    first, second = _two_machines(interrupted, kill_machine_1_at=5)
    assert second != 0 and first == -signal.SIGKILL
    assert (interrupted / "checkpoint-4" / "partial_fc_rank1_of_2.pt").is_file()
    assert not (interrupted / "checkpoint-6").exists()
    _two_machines(interrupted, "--resume_from_checkpoint", "last")

    expected, resumed = load_file(uninterrupted / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert set(expected) == set(resumed) and not any(key.startswith(("classifier", "centers")) for key in expected)
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=1e-6, msg=key)
    for got, want in zip(_shards(interrupted / "checkpoint-6"), _shards(uninterrupted / "checkpoint-6")):
        for name in ("weight", "centers"):
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
        torch.testing.assert_close(got["optimizer"]["weight"]["exp_avg"], want["optimizer"]["weight"]["exp_avg"],
                                   rtol=0, atol=1e-6)
    # The shards differ by process: machine 1's rows are not machine 0's (7 classes: 4 and 3 rows).
    assert [shard["weight"].shape[0] for shard in _shards(interrupted / "checkpoint-6")] == [4, 3]


# ----------------------------------------------------------------------------- one process through train_hf.py


def test_a_partial_fc_run_saves_the_trunk_and_refuses_another_world_size_on_resume(tmp_path):
    from dcr_hf.modeling_dcr import DCRModel
    from dcr_hf.training.command import train as train_command

    run = tmp_path / "run"
    argv = ["--output_dir", str(run), *TINY_RUN, "--max_steps", "2", "--save_steps", "2"]
    train_command(argv)
    checkpoint = run / "checkpoint-2"
    shard = torch.load(checkpoint / "partial_fc_rank0_of_1.pt", weights_only=True)
    assert shard["weight"].shape == shard["centers"].shape == (7, 16)
    assert set(shard["optimizer"]["weight"]) == {"step", "exp_avg", "exp_avg_sq"}
    # The released folder is the trunk: it loads as the embedder and as the training head (classifier new).
    embedder = DCRModel.from_pretrained(run)
    head = DCRForImageClassification.from_pretrained(run)
    for key, value in embedder.state_dict().items():
        assert torch.equal(head.dcr.state_dict()[key], value), key

    (checkpoint / "partial_fc_rank0_of_1.pt").rename(checkpoint / "partial_fc_rank0_of_2.pt")
    with pytest.raises(ValueError, match=re.escape(f"--resume_from_checkpoint {checkpoint}: its classifier is sharded "
                                                   "over 2 processes, this run has 1; resume with 2 processes.")):
        train_command([*argv, "--resume_from_checkpoint", "last", "--max_steps", "4"])
    (checkpoint / "partial_fc_rank0_of_2.pt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"--resume_from_checkpoint {checkpoint}: no sharded classifier")):
        train_command([*argv, "--resume_from_checkpoint", "last", "--max_steps", "4"])


@pytest.mark.slow  # three short runs through train_hf.py's code
def test_one_process_resumed_equals_an_uninterrupted_run(tmp_path):
    """The shard's rows, centers and optimizer state come back from the checkpoint, and its
    gradients start clear after every step (as the model's), so a resume repeats the run."""
    from safetensors.torch import load_file

    from dcr_hf.training.command import train as train_command

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    options = [*TINY_RUN, "--max_steps", "4", "--save_steps", "2"]
    train_command(["--output_dir", str(whole), *options])
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-2", resumed / "checkpoint-2")
    train_command(["--output_dir", str(resumed), *options, "--resume_from_checkpoint", "last"])
    expected, got = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
    [want], [have] = ([torch.load(folder / "checkpoint-4" / "partial_fc_rank0_of_1.pt", weights_only=True)]
                      for folder in (whole, resumed))
    for name in ("weight", "centers"):
        torch.testing.assert_close(have[name], want[name], rtol=0, atol=1e-6, msg=name)
    for name, value in want["optimizer"]["weight"].items():
        torch.testing.assert_close(have["optimizer"]["weight"][name], value, rtol=0, atol=1e-6, msg=name)


def test_a_process_without_samples_joins_the_step_and_the_others_train_alone(two_processes):
    pixels, labels = _batch(7)
    reference = _reference(_model(7, "arcface"), pixels[:4], labels[:4])
    for result in two_processes:
        for term in ("cross_entropy_loss", "center_loss"):
            torch.testing.assert_close(result["one_empty"][term], reference[term], rtol=1e-5, atol=1e-5)
