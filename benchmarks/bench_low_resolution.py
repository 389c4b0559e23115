"""Speed of the LR operator on a training batch (not a test). Prints best-of-N wall times.

    python benchmarks/bench_low_resolution.py [--device cuda]

Workload: 64 normalized 120x120 RGB images, LR copies at 8/12/16/20 px, as the data transforms
and the training step (`--defer_low_resolution`) make them: the batched fast path
(`make_low_resolution_copies`) for the original's 8-bit Lanczos operator and for the bicubic
stand-in, and the processor's own simulation one size at a time for comparison.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_time, set_threads  # noqa: E402

from dcr_hf import DCRImageProcessor, make_low_resolution_copies  # noqa: E402

SIZES = (8, 12, 16, 20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    set_threads(2)
    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    lanczos, bicubic = DCRImageProcessor(), DCRImageProcessor(downsample_interpolation="bicubic")
    levels = torch.randint(0, 256, (args.batch, 3, 120, 120), device=device)
    pixels01 = lanczos.rescale_pixels(levels)
    normalized = lanczos.normalize_pixels(pixels01)

    def timed(step) -> float:
        def run():
            step()
            synchronize()

        return best_time(run, warmup=2, repeats=args.repeats)

    cases = {
        "fast path, lanczos (8-bit, the default)": lambda: make_low_resolution_copies(normalized, SIZES, lanczos, normalized=True),
        "fast path, bicubic": lambda: make_low_resolution_copies(normalized, SIZES, bicubic, normalized=True),
        "processor, lanczos, one size at a time": lambda: [lanczos.simulate_low_resolution(pixels01, s) for s in SIZES],
        "processor, bicubic, one size at a time": lambda: [bicubic.simulate_low_resolution(pixels01, s) for s in SIZES],
    }
    print(f"LR copies of {args.batch} images x {len(SIZES)} sizes on {device}:")
    for name, step in cases.items():
        print(f"  {name:42s} {timed(step) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
