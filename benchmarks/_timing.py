"""Shared timing helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: str | torch.device = "cpu") -> None:
    """Wait for the work queued on `device` (a no-op on a CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def best_time(step: Callable[[], object], warmup: int = 1, repeats: int = 3) -> float:
    """Best wall-clock seconds of `repeats` calls after `warmup` calls (the best of N is what the
    machine can do; the others include interference from other work on a shared machine)."""
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


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A compact fixed-width table: the first column left-aligned, the others right-aligned."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))

    print(title)
    print(line(cells[0]))
    print("  ".join("-" * width for width in widths))
    for row in cells[1:]:
        print(line(row))


def percent(value: float, peak: float) -> str:
    return f"{100 * value / peak:.0f}%"
