"""Speed of the DCR model: one trunk training step and batched inference, on this machine's CPU.

    python benchmarks/bench_model.py [--threads 2] [--repeats 3]

Settings of the issue: 32 samples x 5 resolutions (HR + 8/12/16/20) of 120x120, 200 classes,
the default trunk (ResNet 1/2/5/3, 64..512, 512-d embedding), Adam; inference at batch 128.
The original implementation does about 16 images/s (train step) and 49 embeddings/s
(inference) on this machine kind with the same settings. Images/s counts every resolution copy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_time, set_threads  # noqa: E402

from dcr_hf import DCRConfig, DCRForImageClassification, DCRModel  # noqa: E402


def train_step_images_per_second(channels_last: bool, repeats: int) -> float:
    torch.manual_seed(0)
    model = DCRForImageClassification(DCRConfig(num_labels=200)).train()
    pixel_values = torch.randn(32, 5, 3, 120, 120)
    labels = torch.randint(0, 200, (32,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        loss = model(pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return pixel_values.shape[0] * pixel_values.shape[1] / best_time(step, repeats=repeats)


def inference_embeddings_per_second(channels_last: bool, repeats: int) -> float:
    torch.manual_seed(0)
    model = DCRModel(DCRConfig()).eval()
    pixel_values = torch.randn(128, 3, 120, 120)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode():
            model(pixel_values)

    return pixel_values.shape[0] / best_time(step, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    set_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for channels_last in (False, True):
        layout = "channels_last" if channels_last else "contiguous"
        train = train_step_images_per_second(channels_last, args.repeats)
        infer = inference_embeddings_per_second(channels_last, args.repeats)
        print(f"{layout:>14}: train step {train:6.1f} images/s (original ~16)   "
              f"inference {infer:6.1f} embeddings/s (original ~49)")


if __name__ == "__main__":
    main()
