"""Speed of the two DCR training steps as `train_hf.py` runs them, against this machine's GEMM peak.

    python benchmarks/bench_train.py [--stages trunk branch] [--steps 4] [--device cpu|cuda]
                                     [-- TRAINING OPTIONS, e.g. --torch_compile true --bf16 true]

The settings of the issue: 32 samples x 5 resolutions (HR + 8/12/16/20) of 120x120, 200 classes,
the original's trunk (`--architecture dcr`). The run is `run_training` itself (the code of
`train_hf.py`): the default data path (the loader decodes JPEG bytes to uint8, the step flips,
normalizes and makes the LR copies on the device), channels-last, the Trainer's loop with its
optimizer (AdamW), gradient clipping and scheduler, on 200 in-memory JPEG faces; validation and
checkpoints off. A callback times each optimizer step (the Trainer's step: loader, forward,
backward, optimizer); the best of `--steps` after `--warmup` steps is reported.

Work per step is counted by torch's own flop counter (`torch.utils.flop_counter`) on the stage's
model: about 4.67 GFLOP per image for the trunk step (forward + backward), 1.58 for the branch
step (the frozen trunk's forward dominates it). The fraction is of the float32 GEMM rate measured
here (with `--bf16`, of the bf16 GEMM rate).

Options after `--` go to `train_hf.py`'s parser (e.g. `--torch_compile true`, `--bf16 true`,
`--optim adamw_torch_fused`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import describe_machine, gemm_gflops  # noqa: E402
from _runs import jpeg_faces, timed_run  # noqa: E402
from _timing import percent, print_table, set_threads  # noqa: E402

from dcr_hf import DCRConfig, DCRForImageClassification, branch_model_from_trunk  # noqa: E402

NUM_CLASSES, BATCH, IMAGE_SIZE = 200, 32, 120
SIZES = list(DCRConfig.low_resolution_sizes)


def step_flops(stage_model: DCRForImageClassification, device: str) -> float:
    """Torch's count of one training step's flops (forward + backward) of `stage_model` on a batch."""
    model = stage_model.to(device).train()
    pixel_values = torch.randn(BATCH, 1 + len(SIZES), 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    labels = torch.arange(BATCH, device=device) % NUM_CLASSES
    with FlopCounterMode(display=False) as counter:
        model(pixel_values, labels=labels).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def stage_times(stage: str, output_dir: Path, trunk_dir: Path, args: argparse.Namespace, extra: list[str]) -> list[float]:
    """Step times of `stage` (`--architecture dcr`, batch 32, loader in the main process) after the warm-up."""
    options = ["--stage", stage, "--architecture", "dcr", "--per_device_train_batch_size", str(BATCH),
               "--dataloader_num_workers", "0", *extra]
    if stage == "branch":
        options += ["--trunk", str(trunk_dir)]
    data = jpeg_faces(args.images, NUM_CLASSES, IMAGE_SIZE)
    return timed_run(output_dir, data, args.warmup + args.steps, args.device, options)[args.warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=["trunk", "branch"], choices=["trunk", "branch"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps (best of)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--images", type=int, default=256, help="in-memory training images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args, extra = parser.parse_known_args()
    extra = [item for item in extra if item != "--"]
    set_threads(args.threads)
    bf16 = "--bf16" in extra and extra[extra.index("--bf16") + 1 : extra.index("--bf16") + 2] != ["false"]
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = gemm_gflops(args.device, dtype)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        trunk_dir = Path(root) / "trunk"
        torch.manual_seed(0)
        flops = {"trunk": step_flops(DCRForImageClassification(DCRConfig(num_labels=NUM_CLASSES)), args.device)}
        for stage in args.stages:
            if stage == "branch":
                if not trunk_dir.exists():  # a trunk folder to start from (one step is enough)
                    stage_times("trunk", trunk_dir, trunk_dir, argparse.Namespace(**{**vars(args), "steps": 1, "warmup": 0}), [])
                branch_model = branch_model_from_trunk(DCRForImageClassification.from_pretrained(trunk_dir))
                flops["branch"] = step_flops(branch_model, args.device)
            times = stage_times(stage, trunk_dir if stage == "trunk" else Path(root) / "branch", trunk_dir, args, extra)
            best = min(times)
            images = BATCH * (1 + len(SIZES))
            rate = flops[stage] / best / 1e9
            rows.append([
                f"{stage} step ({' '.join(extra) or 'default options'})", f"{best * 1e3:.0f} ms",
                f"{BATCH / best:.1f}", f"{images / best:.1f}", f"{flops[stage] / images / 1e9:.2f}",
                f"{rate:.0f}", percent(rate, peak),
            ])
        peak = max(peak, gemm_gflops(args.device, dtype))  # again after the runs: the better of the two
    rows = [row[:-1] + [percent(float(row[-2]), peak)] for row in rows]
    print_table(
        f"Training steps as train_hf.py runs them, batch {BATCH} x {1 + len(SIZES)} resolutions, {IMAGE_SIZE}x{IMAGE_SIZE}, "
        f"{NUM_CLASSES} classes, on {args.device}: {describe_machine(args.device)}; "
        f"{'bf16' if bf16 else 'float32'} GEMM peak {peak:.0f} GFLOP/s",
        ["step", "time", "samples/s", "images/s", "GFLOP/image", "GFLOP/s", "of GEMM peak"], rows,
    )


if __name__ == "__main__":
    main()
