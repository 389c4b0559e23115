"""Speed of the DCR network itself (no Trainer, no data), against this machine's GEMM peak.

    python benchmarks/bench_model.py [--compile] [--bf16] [--threads 2] [--device cpu|cuda]

The settings of the issue: 32 samples x 5 resolutions (HR + 8/12/16/20) of 120x120, 200 classes,
the original's trunk (ResNet 1/2/5/3, 64..512, 512-d embedding), channels-last:

- the trunk training step (forward + backward of the training head, AdamW step);
- the branch step's frozen forward: the trunk in eval mode without autograd on the 160 images
  of a batch, what dominates the branch step (`--compile` also runs it compiled with inductor's
  freezing, which folds the batch norms into the convolutions);
- inference, batch 128, of the embedder (`DCRModel`).

Work is counted by torch's own flop counter; the fraction is of the float32 GEMM rate measured
here (with `--bf16`: bf16 autocast, of the bf16 GEMM rate). `bench_train.py` times the same
steps as `train_hf.py` runs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import describe_machine, gemm_gflops  # noqa: E402
from _timing import best_time, percent, print_table, set_threads, synchronize  # noqa: E402

from dcr_hf import DCRConfig, DCRForImageClassification, DCRModel  # noqa: E402


def flops_of(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def measure(name: str, step, images: int, args, peak: float, rows: list, flops: float | None = None) -> None:
    flops = flops_of(step) if flops is None else flops

    def run():
        step()
        synchronize(args.device)

    seconds = best_time(run, warmup=2, repeats=args.repeats)
    rate = flops / seconds / 1e9
    rows.append([name, f"{seconds * 1e3:.0f} ms", f"{images / seconds:.1f}", f"{flops / images / 1e9:.2f}",
                 f"{rate:.0f}", percent(rate, peak)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (inductor) each workload")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, against the bf16 GEMM peak")
    args = parser.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    peak = gemm_gflops(args.device, dtype)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    torch.manual_seed(0)
    head = DCRForImageClassification(DCRConfig(num_labels=200)).to(device, memory_format=torch.channels_last).train()
    pixel_values = torch.randn(32, 5, 3, 120, 120, device=device)
    labels = torch.randint(0, 200, (32,), device=device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    frozen = head.dcr.trunk
    flat = pixel_values.flatten(0, 1).contiguous(memory_format=torch.channels_last)
    embedder = DCRModel(DCRConfig()).to(device, memory_format=torch.channels_last).eval()
    batch = torch.randn(128, 3, 120, 120, device=device).contiguous(memory_format=torch.channels_last)
    rows: list[list[str]] = []
    variants = [("eager", lambda module: module)]
    if args.compile:
        variants.append(("torch.compile", torch.compile))
    for label, wrap in variants:
        train_forward = wrap(head)

        def train_step():
            with autocast:
                loss = train_forward(pixel_values, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        frozen.eval()
        frozen_forward = frozen if label == "eager" else torch.compile(frozen, options={"freezing": True})
        embed = wrap(embedder)

        def frozen_step():
            with torch.no_grad(), autocast:
                frozen_forward(flat)

        def inference():
            with torch.inference_mode(), autocast:
                embed(batch)

        head.train()
        measure(f"trunk training step ({label})", train_step, 160, args, peak, rows,
                flops=flops_of(lambda: head(pixel_values, labels=labels).loss.backward()))
        optimizer.zero_grad(set_to_none=True)
        frozen.eval()
        measure(f"branch step's frozen trunk forward ({label}{', freezing' if label != 'eager' else ''})",
                frozen_step, 160, args, peak, rows, flops=flops_of(lambda: frozen(flat)))
        measure(f"inference, batch 128 ({label})", inference, 128, args, peak, rows, flops=flops_of(lambda: embedder(batch)))
        head.train()
    peak = max(peak, gemm_gflops(args.device, dtype))
    rows = [row[:-1] + [percent(float(row[-2]), peak)] for row in rows]
    print_table(f"DCR network on {args.device}{' (bf16 autocast)' if args.bf16 else ''}: {describe_machine(args.device)}; "
                f"{'bf16' if args.bf16 else 'float32'} GEMM peak {peak:.0f} GFLOP/s",
                ["workload", "time", "images/s", "GFLOP/image", "GFLOP/s", "of GEMM peak"], rows)


if __name__ == "__main__":
    main()
