"""DCR on one GPU: the training steps, the device-first loader, the metrics and a real run (not a test).

    python benchmarks/bench_gpu.py                          # one H100/H200: about 6 minutes
    python benchmarks/bench_gpu.py --device cpu --steps 2 --tiny --compile false   # does it run (CPU)

1. Peaks: a large bf16 GEMM (and float32) on the device, the copy bandwidth.
2. The training steps alone, on uint8 batches already on the device: the step's flip,
   normalization and 4 LR copies (`TrainTransform.model_inputs`), forward and backward in bf16
   autocast, channels-last, fused AdamW, with and without `torch.compile`: samples/s (1 HR + 4 LR
   each), TFLOP/s by torch's flop counter, % of the bf16 GEMM peak. Trunk (`--architecture
   dcr`, the resnet-style trunk) and branch (frozen trunk) steps.
3. The device-first loader alone (uint8 HR images, `--workers` processes, pinned memory) from
   JPEG files and from the prepared form (JPEG bytes in Arrow): samples/s, against the step's.
4. The user's path: `run_training` (the code of `train_hf.py`) with `--bf16 --torch_compile`, the
   loader feeding the step from the prepared form with `--workers` workers: samples/s, and
   whether the step or the loader bounds it.
5. Verification (6000 pairs x 4 sizes) and exact kNN / retrieval (5000 x 5000 x 512) on the device.
6. `accelerate launch train_hf.py --bf16 true` for `--run-steps` steps on the synthetic faces,
   validated (wall time and the validation it prints).
7. Checks of the device-first path on this device: the augmentation draws come from the CPU
   generator (the CUDA generator is untouched), and the device's model inputs equal the CPU's.

Every figure is the best of `--steps` timed steps after `--warmup` (compilation included there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _limits import copy_gbytes_per_second, describe_machine, gemm_gflops  # noqa: E402
from _runs import jpeg_faces, timed_run  # noqa: E402
from _timing import best_time, percent, print_table, set_threads, synchronize  # noqa: E402
from bench_data import loader_rate, write_tree  # noqa: E402
from bench_metrics import bench_knn_and_retrieval, bench_verification  # noqa: E402

from dcr_hf import DCRConfig, DCRForImageClassification, DCRImageProcessor, branch_model_from_trunk  # noqa: E402
from dcr_hf.data.transforms import TrainTransform  # noqa: E402

SIZES = list(DCRConfig.low_resolution_sizes)


def flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")


def stage_model(stage: str, args: argparse.Namespace) -> DCRForImageClassification:
    """The stage's model as `train_hf.py` builds it (`dcr` trunk, or `small` with `--tiny`), channels-last."""
    torch.manual_seed(0)
    overrides = {"depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128], "embedding_size": 128,
                 "branch_hidden_size": 128, "stem_hidden_size": 16} if args.tiny else {}
    model = DCRForImageClassification(DCRConfig(num_labels=args.classes, image_size=args.image_size, **overrides))
    if stage == "branch":
        model = branch_model_from_trunk(model)
    return model.to(args.device, memory_format=torch.channels_last).train()


def bench_step(stage: str, compiled: bool, args: argparse.Namespace, peak: float, rows: list) -> float:
    """One stage's training step alone on device-resident uint8 batches; returns samples/s."""
    device = torch.device(args.device)
    model = stage_model(stage, args)
    processor = DCRImageProcessor(image_size=args.image_size)
    transform = TrainTransform(processor, SIZES, augmentation="flip", defer_low_resolution=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, fused=device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    images = torch.randint(0, 256, (args.batch, 3, args.image_size, args.image_size), dtype=torch.uint8, device=device)
    labels = torch.arange(args.batch, device=device) % args.classes
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def step():
        inputs = transform.model_inputs(images)
        with autocast:
            loss = forward(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)

    with FlopCounterMode(display=False) as counter:
        with autocast:
            model(**transform.model_inputs(images), labels=labels).loss.backward()
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warm = time.perf_counter() - start
    seconds = best_time(step, warmup=0, repeats=args.steps)
    syncs = count_syncs(step)
    rate = counter.get_total_flops() / seconds / 1e9
    rows.append([f"{stage} step alone, bf16, channels-last{', torch.compile' if compiled else ', eager'}",
                 f"{args.batch / seconds:,.0f} samples/s", f"{rate / 1e3:.1f} TFLOP/s = {percent(rate, peak)} of bf16 GEMM",
                 f"warm-up {warm:.0f} s" + (f", {syncs} host syncs/step" if syncs is not None else "")])
    return args.batch / seconds


def bench_loaders(args: argparse.Namespace, rows: list, step_rate: float) -> None:
    from datasets import Dataset, Image, load_from_disk

    processor = DCRImageProcessor(image_size=args.image_size)
    transform = TrainTransform(processor, SIZES, defer_low_resolution=True)
    options = argparse.Namespace(batch_size=args.batch, workers=args.workers, repeats=1)
    with tempfile.TemporaryDirectory() as root:
        paths, labels = write_tree(Path(root) / "jpeg", args.loader_images, 20)
        from_files = Dataset.from_dict({"image": paths, "label": labels}).cast_column("image", Image())
        embedded = [{"bytes": Path(path).read_bytes(), "path": None} for path in paths]
        Dataset.from_dict({"image": embedded, "label": labels}).cast_column("image", Image()).save_to_disk(f"{root}/prepared")
        for name, dataset in (("JPEG files", from_files), ("prepared Arrow", load_from_disk(f"{root}/prepared"))):
            rate = loader_rate(dataset, transform, options)
            bound = "the step bounds a run" if rate > step_rate else "the loader bounds a run"
            rows.append([f"device-first loader alone, {name}, {args.workers} workers", f"{rate:,.0f} samples/s",
                         f"{rate / step_rate:.1f}x the trunk step alone", bound])


def bench_user_path(args: argparse.Namespace, rows: list, step_rate: float) -> None:
    options = ["--architecture", "small" if args.tiny else "dcr", "--per_device_train_batch_size", str(args.batch),
               "--dataloader_num_workers", str(args.workers), "--bf16", "true",
               "--torch_compile", "true" if args.compile else "false", "--image_size", str(args.image_size),
               "--optim", "adamw_torch_fused" if args.device != "cpu" else "adamw_torch"]
    data = jpeg_faces(args.loader_images, args.classes, args.image_size)
    with tempfile.TemporaryDirectory() as root:
        times = timed_run(Path(root) / "run", data, args.warmup + args.steps, args.device, options)[args.warmup:]
    rate = args.batch / min(times)
    compiled = " --torch_compile" if args.compile else ""
    rows.append([f"train_hf.py path: --bf16{compiled}, prepared JPEG bytes, {args.workers} workers", f"{rate:,.0f} samples/s",
                 f"{rate / step_rate:.0%} of the step alone", "loader-bound" if rate < 0.8 * step_rate else "step-bound"])


def bench_accelerate_run(args: argparse.Namespace, rows: list) -> None:
    with tempfile.TemporaryDirectory() as root:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "bf16", "--dynamo_backend", "no", str(HERE.parent / "train_hf.py"),
            "--output_dir", f"{root}/run", "--bf16", "true", "--max_steps", str(args.run_steps),
            "--eval_strategy", "steps", "--eval_steps", str(max(args.run_steps // 2, 1)), "--save_strategy", "steps",
            "--save_steps", str(max(args.run_steps // 2, 1)), "--disable_tqdm", "true", "--report_to", "none",
            "--dataloader_num_workers", str(min(args.workers, 8)),
        ]
        if args.tiny:
            command += ["--synthetic_num_identities", "8", "--synthetic_images_per_identity", "3",
                        "--synthetic_num_pairs", "40", "--image_size", str(args.image_size), "--low_resolution_sizes", "8", "12",
                        "--per_device_train_batch_size", "8"]
        if args.device == "cpu":
            command += ["--use_cpu", "true"]
        # The repository first, then the caller's path (gpu.sh's carried wheels in /tmp/site).
        path = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            rows.append([f"accelerate launch train_hf.py --bf16, {args.run_steps} steps", "FAILED", done.stderr[-300:], ""])
            return
        results = json.loads(Path(f"{root}/run/all_results.json").read_text())
        accuracy = results.get("eval_mean_lr_accuracy")
        rows.append([f"accelerate launch train_hf.py --bf16, {args.run_steps} steps + 3 validations", f"{seconds:.0f} s wall",
                     f"train {results.get('train_runtime', 0):.0f} s", f"mean LR accuracy {accuracy:.1%}" if accuracy else ""])


def count_syncs(run) -> int | None:
    """How many times `run()` makes the host wait for the GPU (torch's sync debug mode), None on a CPU."""
    if not torch.cuda.is_available():
        return None
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message).lower() for warning in caught)


def check_device_path(args: argparse.Namespace, rows: list) -> None:
    """The step's draws come from the CPU generator, and the device computes what the CPU does."""
    device = torch.device(args.device)
    transform = TrainTransform(DCRImageProcessor(image_size=args.image_size), SIZES, augmentation="aug_plus",
                               defer_low_resolution=True)
    images = torch.randint(0, 256, (16, 3, args.image_size, args.image_size), dtype=torch.uint8)
    cuda_state = torch.cuda.get_rng_state() if device.type == "cuda" else None
    torch.manual_seed(0)
    on_device = transform.model_inputs(images.to(device))
    untouched = cuda_state is None or torch.equal(cuda_state, torch.cuda.get_rng_state())
    torch.manual_seed(0)
    on_cpu = transform.model_inputs(images)
    difference = max(float((on_device[key].cpu() - on_cpu[key]).abs().max()) for key in on_cpu)
    if device.type == "cuda":
        resident = images.to(device)
        for augmentation in ("flip", "aug_plus"):
            step_side = TrainTransform(DCRImageProcessor(image_size=args.image_size), SIZES, augmentation=augmentation,
                                       defer_low_resolution=True)
            step_side.model_inputs(resident)
            syncs = count_syncs(lambda: step_side.model_inputs(resident))
            rows.append([f"host syncs in the step's {augmentation} + LR copies (sync debug mode)", str(syncs), "", ""])
    rows.append(["check: aug-plus draws from the CPU generator (CUDA generator untouched)", "ok" if untouched else "FAILED", "", ""])
    rows.append(["check: model inputs on the device = on the CPU (aug-plus, LR copies)", "ok" if difference < 2e-2 else "FAILED",
                 f"max difference {difference:.1e}", "(colour jitter in float32 on both)"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256, help="samples per step (each 1 HR + 4 LR images)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=120)
    parser.add_argument("--loader-images", type=int, default=8192)
    parser.add_argument("--run-steps", type=int, default=200)
    parser.add_argument("--compile", type=flag, default=True)
    parser.add_argument("--tiny", action="store_true", help="small trunk, 48x48, batch 8, few images: a CPU test")
    parser.add_argument("--skip", nargs="*", default=[], choices=["steps", "loader", "user", "metrics", "run"])
    args = parser.parse_args()
    if args.tiny:
        args.batch, args.image_size, args.loader_images, args.workers = 8, 48, 64, min(args.workers, 2)
        args.run_steps = min(args.run_steps, args.steps)
    if args.device == "cpu":
        set_threads(2)
    else:
        torch.backends.cudnn.benchmark = True  # as train_hf.py sets it on a GPU
    bf16_peak = gemm_gflops(args.device, torch.bfloat16)
    rows: list[list[str]] = [
        ["bf16 GEMM peak", f"{bf16_peak / 1e3:.1f} TFLOP/s", "", ""],
        ["float32 GEMM peak", f"{gemm_gflops(args.device) / 1e3:.1f} TFLOP/s", "", ""],
        ["copy bandwidth", f"{copy_gbytes_per_second(args.device):.0f} GB/s", "", ""],
    ]
    interrupted = False
    try:
        run_sections(args, rows, bf16_peak)
    except KeyboardInterrupt:
        # SIGINT from a time budget (benchmarks/gpu.sh runs this under `timeout --signal=INT`):
        # the rows measured so far are still worth printing.
        interrupted = True
        rows.append(["INTERRUPTED (time budget): the sections after this row did not run", "", "", ""])
    print_table(f"DCR on {args.device}: {describe_machine(args.device)}", ["workload", "figure", "vs the limit", "note"], rows)
    if interrupted:
        sys.exit(130)


def run_sections(args: argparse.Namespace, rows: list, bf16_peak: float) -> None:
    """The checks and the sections `--skip` leaves, each appending its rows as it ends."""
    check_device_path(args, rows)
    step_rate = float("inf")
    if "steps" not in args.skip:
        step_rate = bench_step("trunk", False, args, bf16_peak, rows)
        if args.compile:
            step_rate = bench_step("trunk", True, args, bf16_peak, rows)
        bench_step("branch", args.compile, args, bf16_peak, rows)
    if "loader" not in args.skip:
        bench_loaders(args, rows, step_rate)
    if "user" not in args.skip:
        bench_user_path(args, rows, step_rate)
    if "metrics" not in args.skip:
        metric_rows: list[list[str]] = []
        metric_args = argparse.Namespace(device=args.device, repeats=3, threads=2)
        bench_verification(metric_args, metric_rows, copy_gbytes_per_second(args.device))
        bench_knn_and_retrieval(metric_args, metric_rows, gemm_gflops(args.device))
        rows += [[*row, ""] for row in metric_rows]
    if "run" not in args.skip:
        bench_accelerate_run(args, rows)


if __name__ == "__main__":
    main()
