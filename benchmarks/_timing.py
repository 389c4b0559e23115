"""Shared timing helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def best_time(step: Callable[[], object], warmup: int = 1, repeats: int = 3) -> float:
    """Best wall-clock seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set in this process
        pass
