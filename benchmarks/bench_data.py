"""Speed of the training data path: the loader, the step's augmentation, and the two together.

    python benchmarks/bench_data.py [--workers 2] [--device cpu|cuda] [--skip-end-to-end]

Builds a temporary identity-per-folder tree of 120x120 JPEG faces (smooth random blobs) and loads
it two ways: a dataset of file paths, and the prepared form (bytes embedded in Arrow,
`save_to_disk` + `load_from_disk`). Then:

1. the loader alone, through a `DataLoader` with worker processes (batch 64), as samples/s and
   as a fraction of `workers` x this machine's JPEG decodes/s per core (measured here): the
   device-first path (`defer_low_resolution=True`, the default: decoded uint8 images, the
   augmentation left to the step) and the loader doing everything (HR + 4 LR float32 copies,
   flip or aug-plus, in the workers);
2. the step side of the device-first path on `--device`: `TrainTransform.model_inputs` (flip or
   aug-plus, normalization, 4 LR copies) of a batch of 32, as ms and samples/s;
3. end to end on a CPU, the measurement behind the default: the CPU quickstart (`train_hf.py`'s
   `small` trunk, batch 32, `--dataloader_num_workers` workers, JPEG bytes in memory) with the
   augmentation in the step (`--defer_low_resolution true`) and in the loader (`false`), steps/s.

Best of `--repeats` passes (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset, Image, load_from_disk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import describe_machine, jpeg_decodes_per_second, smooth_face_jpeg  # noqa: E402
from _runs import jpeg_faces, timed_run  # noqa: E402
from _timing import best_time, percent, print_table, set_threads, synchronize  # noqa: E402

from dcr_hf import DCRConfig, DCRImageProcessor  # noqa: E402
from dcr_hf.data.transforms import TrainTransform, apply_transform  # noqa: E402


def write_tree(root: Path, num_images: int, images_per_identity: int) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for index in range(num_images):
        identity = index // images_per_identity
        folder = root / f"id_{identity:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:06d}.jpg"
        path.write_bytes(smooth_face_jpeg(seed=index))
        paths.append(str(path))
        labels.append(identity)
    return paths, labels


def loader_rate(dataset: Dataset, transform: TrainTransform, args: argparse.Namespace) -> float:
    """Best samples/s over `args.repeats` full passes, after one warm-up pass (worker start-up)."""
    loader = torch.utils.data.DataLoader(
        apply_transform(dataset, transform), batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
        persistent_workers=args.workers > 0, drop_last=True,
    )
    best = 0.0
    for repeat in range(args.repeats + 1):
        seen, start = 0, time.perf_counter()
        for batch in loader:
            seen += batch["pixel_values"].shape[0]
        if repeat:
            best = max(best, seen / (time.perf_counter() - start))
    return best


def bench_loader(args: argparse.Namespace, rows: list, decode_rate: float) -> None:
    processor = DCRImageProcessor()
    sizes = list(DCRConfig.low_resolution_sizes)
    limit = decode_rate * max(args.workers, 1)
    with tempfile.TemporaryDirectory() as root:
        paths, labels = write_tree(Path(root) / "jpeg", args.num_images, 20)
        from_files = Dataset.from_dict({"image": paths, "label": labels}).cast_column("image", Image())
        embedded = [{"bytes": Path(path).read_bytes(), "path": os.path.relpath(path, root)} for path in paths]
        Dataset.from_dict({"image": embedded, "label": labels}).cast_column("image", Image()).save_to_disk(f"{root}/prepared")
        prepared = load_from_disk(f"{root}/prepared")
        cases = [("device-first: uint8 HR only (the default)", "flip", True),
                 ("loader does it all: HR + 4 LR, flip", "flip", False),
                 ("loader does it all: HR + 4 LR, aug-plus", "aug_plus", False)]
        for source, dataset in (("JPEG files", from_files), ("prepared Arrow", prepared)):
            for name, augmentation, deferred in cases:
                transform = TrainTransform(processor, sizes, augmentation=augmentation, defer_low_resolution=deferred)
                rate = loader_rate(dataset, transform, args)
                rows.append([f"loader, {source}, {name}", f"{rate:.0f} samples/s",
                             f"{percent(rate, limit)} of {max(args.workers, 1)} x JPEG decode"])


def bench_step_side(args: argparse.Namespace, rows: list) -> None:
    device = torch.device(args.device)
    images = torch.randint(0, 256, (32, 3, 120, 120), dtype=torch.uint8, device=device)
    for augmentation in ("flip", "aug_plus"):
        transform = TrainTransform(augmentation=augmentation, defer_low_resolution=True)

        def step():
            transform.model_inputs(images)
            synchronize(device)

        seconds = best_time(step, warmup=2, repeats=args.repeats * 3)
        rows.append([f"step side on {device.type}: {augmentation} + normalize + 4 LR copies, batch 32",
                     f"{seconds * 1e3:.1f} ms", f"{32 / seconds:.0f} samples/s"])


def bench_end_to_end(args: argparse.Namespace, rows: list) -> None:
    data = jpeg_faces(512, 200)
    with tempfile.TemporaryDirectory() as root:
        for augmentation in ("flip", "aug_plus"):
            rates = {}
            for deferred in ("true", "false"):
                options = ["--architecture", "small", "--per_device_train_batch_size", "32", "--augmentation", augmentation,
                           "--defer_low_resolution", deferred, "--dataloader_num_workers", str(args.workers)]
                times = timed_run(Path(root) / f"{augmentation}-{deferred}", data, 3 + args.steps, "cpu", options)[3:]
                rates[deferred] = 32 / (sum(times) / len(times))
            for deferred, label in (("true", "augmentation + LR copies in the step"), ("false", "in the loader workers")):
                rows.append([f"CPU quickstart (small trunk), {augmentation}: {label}", f"{rates[deferred]:.0f} samples/s",
                             "default" if deferred == "true" else f"{rates['false'] / rates['true']:.2f}x the default"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=1280)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each end-to-end run (mean)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    decode_rate = jpeg_decodes_per_second()
    rows: list[list[str]] = [["PIL JPEG decode, 120x120, one core (the limit)", f"{decode_rate:.0f} images/s", ""]]
    bench_loader(args, rows, decode_rate)
    bench_step_side(args, rows)
    if not args.skip_end_to_end:
        bench_end_to_end(args, rows)
    print_table(f"Training data path, {args.workers} workers: {describe_machine(args.device)}",
                ["workload", "rate", "vs this machine's limit"], rows)


if __name__ == "__main__":
    main()
