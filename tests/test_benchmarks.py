"""The GPU benchmark runs end to end (on the CPU, tiny sizes): it is known to work before a GPU
machine runs it once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # trains a tiny model three ways and launches train_hf.py through accelerate
def test_bench_gpu_runs_on_a_cpu_with_tiny_sizes():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--steps", "2", "--warmup", "1",
         "--tiny", "--compile", "false", "--skip", "metrics"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    for row in ("bf16 GEMM peak", "trunk step alone", "branch step alone", "device-first loader alone, JPEG files",
                "device-first loader alone, prepared Arrow", "train_hf.py path", "accelerate launch train_hf.py"):
        assert row in table, table
    assert "FAILED" not in table, table
    assert table.count(" ok ") == 2, table


@pytest.mark.slow  # an r18 at 112x112 forward and backward, in a subprocess
def test_bench_iresnet_runs_tiny():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_iresnet.py"), "--tiny"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("inference (embedder, no grad)", "training step (whole trunk)", "float32 GEMM peak", "r18 IResNet trunk at 112x112"):
        assert row in done.stdout, done.stdout
