"""Speed of the LR operator on a training batch (not a test), against this machine's limits.

    python benchmarks/bench_low_resolution.py [--device cuda]

Workload: 64 normalized 120x120 RGB images, LR copies at 8/12/16/20 px, as the data transforms
and the training step make them: the batched fast path (`make_low_resolution_copies`) for the
original's 8-bit Lanczos operator (float64 products, exact) and for the bicubic stand-in
(float32), and the processor's own simulation one size at a time for comparison. Best of N wall
times, as a fraction of the GEMM peak of the products' precision and of the copy bandwidth
(the 4 float32 copies written once), both measured here.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import copy_gbytes_per_second, describe_machine, gemm_gflops  # noqa: E402
from _timing import best_time, percent, print_table, set_threads  # noqa: E402

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

    def matrix_flops(processor: DCRImageProcessor) -> float:
        """Flops of the fast path's products: width down (all sizes), height down, width up, height up."""
        length, planes = 120, args.batch * 3
        total = 2 * length * length * sum(SIZES)  # the width pass of every downsample at once
        total += sum(2 * size * length * size + 2 * size * size * length + 2 * length * size * length for size in SIZES)
        return planes * total

    written = args.batch * len(SIZES) * 3 * 120 * 120 * 4
    peaks = {"float64": gemm_gflops(args.device, torch.float64), "float32": gemm_gflops(args.device)}
    bandwidth = copy_gbytes_per_second(args.device)
    cases = [
        ("fast path, lanczos (8-bit, the default)", "float64",
         lambda: make_low_resolution_copies(normalized, SIZES, lanczos, normalized=True)),
        ("fast path, bicubic", "float32", lambda: make_low_resolution_copies(normalized, SIZES, bicubic, normalized=True)),
        ("processor, lanczos, one size at a time", "float64", lambda: [lanczos.simulate_low_resolution(pixels01, s) for s in SIZES]),
        ("processor, bicubic, one size at a time", "float32", lambda: [bicubic.simulate_low_resolution(pixels01, s) for s in SIZES]),
    ]
    rows = []
    for name, precision, step in cases:
        seconds = timed(step)
        rate = matrix_flops(lanczos) / seconds / 1e9
        rows.append([name, f"{seconds * 1e3:.1f} ms", f"{args.batch / seconds:.0f}",
                     f"{percent(rate, peaks[precision])} of {precision} GEMM", f"{percent(written / seconds / 1e9, bandwidth)}"])
    print_table(
        f"LR copies of {args.batch} images x {len(SIZES)} sizes on {device}: {describe_machine(args.device)}; "
        f"GEMM float64 {peaks['float64']:.0f} / float32 {peaks['float32']:.0f} GFLOP/s, copy {bandwidth:.1f} GB/s",
        ["operator", "time", "images/s", "products", "of copy bandwidth"], rows,
    )


if __name__ == "__main__":
    main()
