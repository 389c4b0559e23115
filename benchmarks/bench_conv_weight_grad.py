"""The CPU bf16 trunk step with the GEMM convolution weight gradients (`dcr_hf.training.conv_weight_grad`)
against the stock oneDNN path, in one process, the two alternating step by step.

    python benchmarks/bench_conv_weight_grad.py [--steps 10] [--threads 2] [--tiny]

First, for every convolution shape of the DCR trunk (`--architecture dcr`, 32 samples x 5
resolutions of 120x120 = 160 images a step), the weight gradient alone, best of `--repeats`: oneDNN's
(`aten.convolution_backward`, weight only) against the GEMMs' (`weight_grad_by_offsets`), with
the layers `uses_gemm_weight_grad` routes marked. Then the whole step as `train_hf.py --bf16
--use_cpu` computes it (bf16 autocast, channels-last, the trunk loss, backward, gradient clipping,
fused AdamW; the host-memory reuse of `--cpu_memory_reuse` on), the stock step and the routed one
taken in turns, so that the machine's drift touches both alike: best and median of `--steps` each.

`--tiny` (a narrow trunk, batch 2 at 32x32, 2 steps, every layer's channel count routed) checks that
the script runs; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import describe_machine  # noqa: E402
from _timing import best_time, print_table, set_threads  # noqa: E402

from dcr_hf import DCRConfig, DCRForImageClassification  # noqa: E402
from dcr_hf.host_memory import keep_freed_memory  # noqa: E402
from dcr_hf.training import conv_weight_grad  # noqa: E402
from dcr_hf.training.conv_weight_grad import gemm_weight_grad, uses_gemm_weight_grad, weight_grad_by_offsets  # noqa: E402

NUM_CLASSES = 200


def convolution_shapes(model: DCRForImageClassification, pixels: torch.Tensor) -> list[tuple]:
    """(input shape, weight shape, stride, padding) of every distinct convolution of a forward pass."""
    shapes = []

    def record(module, inputs, output):
        key = (tuple(inputs[0].shape), tuple(module.weight.shape), module.stride, module.padding)
        if key not in shapes:
            shapes.append(key)

    hooks = [module.register_forward_hook(record) for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(pixels)
    for hook in hooks:
        hook.remove()
    return shapes


def weight_grad_times(shape: tuple, repeats: int) -> tuple[float, float]:
    """Seconds of one bf16 channels-last weight gradient of `shape`: oneDNN's, the GEMM's."""
    input_shape, weight_shape, stride, padding = shape
    pixels = torch.randn(input_shape).bfloat16().contiguous(memory_format=torch.channels_last)
    weight = torch.randn(weight_shape).bfloat16().contiguous(memory_format=torch.channels_last)
    grad_output = torch.randn_like(torch.nn.functional.conv2d(pixels, weight, None, stride, padding))
    onednn = best_time(lambda: torch.ops.aten.convolution_backward(
        grad_output, pixels, weight, None, list(stride), list(padding), [1, 1], False, [0, 0], 1, [False, True, False]),
        repeats=repeats)
    gemm = best_time(lambda: weight_grad_by_offsets(grad_output, pixels, weight_shape[2:], stride, padding), repeats=repeats)
    return onednn, gemm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each variant, alternating")
    parser.add_argument("--repeats", type=int, default=7, help="repeats of each per-layer weight gradient (best of)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="batch 2 at 32x32, 2 steps: checks that the script runs")
    args = parser.parse_args()
    set_threads(args.threads)
    keep_freed_memory()
    batch, size, config = 32, 120, DCRConfig(num_labels=NUM_CLASSES)
    if args.tiny:
        batch, size, args.steps, args.repeats = 2, 32, 2, 1
        config = DCRConfig(num_labels=NUM_CLASSES, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 16, 32],
                           stem_hidden_size=8, embedding_size=16, image_size=size)
        conv_weight_grad.MIN_GEMM_IN_CHANNELS = 1  # so that the narrow layers take the routed path too
    print(describe_machine())
    torch.manual_seed(0)
    model = DCRForImageClassification(config).train().to(memory_format=torch.channels_last)
    resolutions = 1 + len(config.low_resolution_sizes)
    pixels = torch.randn(batch, resolutions, 3, size, size)
    labels = torch.arange(batch) % NUM_CLASSES

    rows = []
    for shape in convolution_shapes(model, pixels):
        onednn, gemm = weight_grad_times(shape, args.repeats)
        routed = uses_gemm_weight_grad(*shape)
        rows.append([f"{list(shape[0])} * {list(shape[1])} /{shape[2][0]}", f"{onednn * 1e3:.2f}",
                     f"{gemm * 1e3:.2f}", "yes" if routed else ""])
    print_table("Weight gradient of one convolution, bf16 channels-last (ms, best of repeats)",
                ["input * weight /stride", "oneDNN", "GEMM", "routed"], rows)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)

    def step(routed: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16), (gemm_weight_grad() if routed else contextlib.nullcontext()):
            loss = model(pixels, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    variants = {"stock oneDNN weight gradients": False, "GEMM weight gradients (routed)": True}
    times = {name: [] for name in variants}
    for routed in variants.values():
        step(routed)  # warm-up: oneDNN's primitives, the allocator
    for index in range(args.steps):
        order = list(variants.items()) if index % 2 == 0 else list(variants.items())[::-1]
        for name, routed in order:
            start = time.perf_counter()
            step(routed)
            times[name].append(time.perf_counter() - start)
    stock = min(times["stock oneDNN weight gradients"])
    print_table(f"Trunk step, batch {batch} x {resolutions} resolutions of {size}x{size}, bf16 autocast ({args.steps} steps each)",
                ["variant", "best (ms)", "median (ms)", "samples/s (best)", "speed-up (best)"],
                [[name, f"{min(values) * 1e3:.0f}", f"{statistics.median(values) * 1e3:.0f}",
                  f"{batch / min(values):.2f}", f"{stock / min(values):.3f}x"] for name, values in times.items()])


if __name__ == "__main__":
    main()
