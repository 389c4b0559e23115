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


def convolution_ceiling(trunk: torch.nn.Module, images: torch.Tensor, args, training: bool) -> float:
    """Seconds the trunk's convolutions alone take (oneDNN / cuDNN): each distinct convolution timed
    on its own input shape, times the number of layers that have it. Forward only, or with
    `training` forward + the backward the step needs (input and weight gradients; weight only for
    the stem, whose input needs none). What the step would take if everything else were free."""
    shapes: dict[torch.nn.Conv2d, torch.Size] = {}

    def record(module, inputs, output) -> None:
        shapes.setdefault(module, inputs[0].shape)

    hooks = [module.register_forward_hook(record) for module in trunk.modules() if isinstance(module, torch.nn.Conv2d)]
    with torch.no_grad():
        trunk(images)
    for hook in hooks:
        hook.remove()
    counts: dict[tuple, int] = {}
    for module, shape in shapes.items():
        key = (tuple(shape), module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
               module.padding[0], module is next(iter(shapes)))
        counts[key] = counts.get(key, 0) + 1
    total = 0.0
    for (shape, cin, cout, kernel, stride, padding, is_stem), count in counts.items():
        conv = torch.nn.Conv2d(cin, cout, kernel, stride, padding, bias=False).to(args.device, memory_format=torch.channels_last)
        x = torch.randn(shape, device=args.device).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(training and not is_stem)

        def run():
            if training:
                out = conv(x)
                grads = torch.autograd.grad(out, [conv.weight] + ([x] if x.requires_grad else []), torch.ones_like(out))
                del grads
            else:
                with torch.no_grad():
                    conv(x)
            synchronize(args.device)

        total += count * best_time(run, warmup=1, repeats=args.repeats)
    return total


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
    if not args.bf16:  # the ceiling rows: the convolutions alone, in float32 as the layers run
        for training, images, name in ((True, 160, "trunk step's convolutions alone (forward + backward)"),
                                       (False, 160, "frozen forward's convolutions alone")):
            seconds = convolution_ceiling(head.dcr.trunk, flat, args, training)
            flops = flops_of(lambda: head(pixel_values, labels=labels).loss.backward()) if training else flops_of(lambda: frozen(flat))
            rate = flops / seconds / 1e9
            rows.append([name, f"{seconds * 1e3:.0f} ms", f"{images / seconds:.1f}", f"{flops / images / 1e9:.2f}",
                         f"{rate:.0f}", percent(rate, peak)])
        head.zero_grad(set_to_none=True)
    peak = max(peak, gemm_gflops(args.device, dtype))
    rows = [row[:-1] + [percent(float(row[-2]), peak)] for row in rows]
    print_table(f"DCR network on {args.device}{' (bf16 autocast)' if args.bf16 else ''}: {describe_machine(args.device)}; "
                f"{'bf16' if args.bf16 else 'float32'} GEMM peak {peak:.0f} GFLOP/s",
                ["workload", "time", "images/s", "GFLOP/image", "GFLOP/s", "of GEMM peak"], rows)


if __name__ == "__main__":
    main()
