"""This machine's own limits, measured by the benchmark scripts themselves (not part of the package).

Each script reports its figures as a fraction of what the hardware does at best on the same
kind of work, measured here and now rather than quoted from elsewhere:

- `gemm_gflops`: a large dense matrix product (float32 on a CPU, bf16 on a GPU): the peak of the
  arithmetic a training or inference step is made of;
- `copy_gbytes_per_second`: a large tensor copy (bytes read + bytes written): the memory bandwidth
  that bounds element-wise work;
- `jpeg_decodes_per_second`: PIL decoding 120x120 JPEG faces on one core: the bound of a loader
  that decodes JPEG files, per worker process.

`describe_machine` names the CPU (`lscpu`'s model name), its cores and the GPU for the tables.
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_time, synchronize  # noqa: E402


def cpu_model_name() -> str:
    """`lscpu`'s "Model name" (the processor as the OS reports it), else `platform.processor()`."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def describe_machine(device: str = "cpu") -> str:
    """One line: CPU model and cores, torch threads, the GPU when `device` is one, torch version."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    line = f"{cpu_model_name()}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.device(device).type == "cuda":
        line += f", {torch.cuda.get_device_name(device)}"
    return line


def gemm_gflops(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
                repeats: int = 5) -> float:
    """Best GFLOP/s of a `size` x `size` matrix product (2 size^3 flops) on `device` in `dtype`.

    Default sizes are large enough to reach the BLAS peak (2048 on a CPU, 8192 on a GPU) and
    small enough to take well under a second.
    """
    size = size or (2048 if torch.device(device).type == "cpu" else 8192)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def product() -> None:
        torch.mm(a, b, out=out)
        synchronize(device)

    return 2 * size**3 / best_time(product, warmup=2, repeats=repeats) / 1e9


def copy_gbytes_per_second(device: str = "cpu", megabytes: int = 256, repeats: int = 5) -> float:
    """Best GB/s (read + written) of copying a `megabytes` float32 tensor into another on `device`."""
    count = megabytes * 2**20 // 4
    source = torch.rand(count, device=device)
    target = torch.empty_like(source)

    def copy() -> None:
        target.copy_(source)
        synchronize(device)

    return 2 * source.numel() * 4 / best_time(copy, warmup=2, repeats=repeats) / 1e9


def smooth_face_jpeg(size: int = 120, seed: int = 0, quality: int = 90) -> bytes:
    """A smooth face-like RGB picture (a few coloured blobs) as JPEG bytes: what a CASIA crop costs to decode."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, size)
    rows, cols = grid[:, None], grid[None, :]
    image = np.broadcast_to(rng.uniform(0.0, 0.5, 3), (size, size, 3)).copy()
    for _ in range(6):
        center, width, colour = rng.random(2), rng.uniform(0.05, 0.3), rng.uniform(-0.6, 0.8, 3)
        weight = np.exp(-((rows - center[0]) ** 2 + (cols - center[1]) ** 2) / (2 * width**2))
        image += weight[..., None] * colour
    buffer = io.BytesIO()
    PIL.Image.fromarray((np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_decodes_per_second(size: int = 120, count: int = 200, repeats: int = 3) -> float:
    """Best JPEG decodes/s on one core: PIL opening and decoding `size` x `size` RGB JPEGs to arrays."""
    data = smooth_face_jpeg(size)

    def decode_all() -> None:
        for _ in range(count):
            np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))

    return count / best_time(decode_all, warmup=1, repeats=repeats)


__all__ = [
    "copy_gbytes_per_second",
    "cpu_model_name",
    "describe_machine",
    "gemm_gflops",
    "jpeg_decodes_per_second",
    "smooth_face_jpeg",
]
