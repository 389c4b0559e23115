"""Speed of an IResNet-50 trunk (insightface arcface_torch `r50`, `trunk_type="iresnet"`) at 112x112,
against this machine's float32 GEMM rate.

    python benchmarks/bench_iresnet.py [--architecture r50] [--batch 32] [--threads 2] [--device cpu|cuda] [--bf16] [--tiny]

- inference: the embedder (`DCRModel`, eval mode, no autograd) on a batch;
- training: a whole-trunk step of the training head (forward + backward, 200 classes, AdamW step),
  as `--stage finetune --init_from <converted r50>` runs it (without the data);

both channels-last. Work is counted by torch's own flop counter; the fraction is of the float32
GEMM rate measured here, or with `--bf16` (bf16 autocast, as `train_hf.py --bf16` runs; the
GPU form, `benchmarks/gpu.sh`) of the bf16 GEMM rate. `--tiny` runs an r18 at batch 2 with one repeat (a check that the script
works, not a measurement).
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
from dcr_hf.configuration_dcr import IRESNET_BODIES  # noqa: E402


def flops_of(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="r50", choices=tuple(IRESNET_BODIES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast; the fraction is of the bf16 GEMM rate")
    parser.add_argument("--tiny", action="store_true", help="r18, batch 2, one repeat: checks the script runs")
    args = parser.parse_args()
    if args.tiny:
        args.architecture, args.batch, args.repeats = "r18", 2, 1
    set_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train_hf.py sets it on a GPU
    precision = torch.bfloat16 if args.bf16 else torch.float32
    precision_name = "bf16" if args.bf16 else "float32"
    # Disabled autocast is a no-op context: the float32 path runs exactly as without it.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    config = DCRConfig(**IRESNET_BODIES[args.architecture], num_labels=200)
    peak = gemm_gflops(args.device, precision, size=512 if args.tiny else None)
    images = torch.randn(args.batch, 3, 112, 112, device=args.device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 200, (args.batch,), device=args.device)
    rows = []

    embedder = DCRModel(config).to(args.device, memory_format=torch.channels_last).eval()

    def infer() -> None:
        with torch.no_grad(), autocast:
            embedder(pixel_values=images)

    model = DCRForImageClassification(config).to(args.device, memory_format=torch.channels_last).train()
    # Fused AdamW on a GPU, as `--optim adamw_torch_fused` runs there; the CPU keeps the default.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **({"fused": True} if device.type == "cuda" else {}))

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = model(pixel_values=images, labels=labels).loss
        loss.backward()
        optimizer.step()

    for name, step in (("inference (embedder, no grad)", infer), ("training step (whole trunk)", train_step)):
        flops = flops_of(step)

        def run(step=step) -> None:
            step()
            synchronize(args.device)

        seconds = best_time(run, warmup=1, repeats=args.repeats)
        rate = flops / seconds / 1e9
        rows.append([name, f"{seconds * 1e3:.0f} ms", f"{args.batch / seconds:.1f}", f"{flops / args.batch / 1e9:.2f}",
                     f"{rate:.0f}", percent(rate, peak)])
    rows.append([f"{precision_name} GEMM peak", "", "", "", f"{peak:.0f}", "100%"])
    in_bf16 = ", bf16 autocast" if args.bf16 else ""
    print_table(
        f"{args.architecture} IResNet trunk at 112x112, batch {args.batch}{in_bf16}, on {args.device}: "
        f"{describe_machine(args.device)}",
        ["step", "time", "images/s", "GFLOP/image", "GFLOP/s", "of GEMM peak"], rows,
    )


if __name__ == "__main__":
    main()
