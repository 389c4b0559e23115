"""Speed of the two DCR training steps as `train_hf.py` runs them (channels-last, AdamW).

    python benchmarks/bench_train.py [--threads 2] [--repeats 3] [--device cpu|cuda] [--bf16]

Settings of the issue: 32 samples x 5 resolutions (HR + 8/12/16/20) of 120x120, 200 classes,
the original's default trunk (`--architecture dcr`). The branch step trains the per-resolution
branches on a frozen trunk (kept in eval mode, run without autograd). The original
implementation does about 16 images/s (trunk) and 47 images/s (branch) on this machine kind.
Images/s counts every resolution copy. With `--device cuda` the LR copies are made on the GPU
from the HR batch (`--defer_low_resolution` in `train_hf.py`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_time, set_threads  # noqa: E402

from dcr_hf import DCRConfig, DCRForImageClassification, DCRImageProcessor, make_low_resolution_copies  # noqa: E402

SIZES = list(DCRConfig.low_resolution_sizes)
PROCESSOR = DCRImageProcessor()


def step_images_per_second(model, device: str, bf16: bool, repeats: int) -> float:
    model = model.to(device=device, memory_format=torch.channels_last).train()
    hr = torch.randn(32, 3, PROCESSOR.image_size, PROCESSOR.image_size, device=device).clamp(-1, 1)
    labels = torch.randint(0, 200, (32,), device=device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)

    # On the CPU the data loader makes the LR copies (in its workers); on a GPU the trainer makes
    # them in the step (`--defer_low_resolution`), so they are timed there.
    prepared = make_low_resolution_copies(hr, SIZES, PROCESSOR, normalized=True) if device == "cpu" else None

    def step():
        low = prepared if prepared is not None else make_low_resolution_copies(hr, SIZES, PROCESSOR, normalized=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(hr, labels=labels, low_resolution_pixel_values=low).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return 32 * (1 + len(SIZES)) / best_time(step, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    config = DCRConfig(num_labels=200)
    trunk = DCRForImageClassification(config)
    branch = DCRForImageClassification.from_trunk(trunk)
    trunk_rate = step_images_per_second(trunk, args.device, args.bf16, args.repeats)
    branch_rate = step_images_per_second(branch, args.device, args.bf16, args.repeats)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, bf16={args.bf16}")
    print(f"trunk step : {trunk_rate:7.1f} images/s (original ~16)")
    print(f"branch step: {branch_rate:7.1f} images/s (original ~47)")


if __name__ == "__main__":
    main()
