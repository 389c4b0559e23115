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


@pytest.mark.slow  # forks 6 processes, 2 of them gloo pairs
def test_bench_partial_fc_runs_with_tiny_sizes():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_partial_fc.py"), "--tiny"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("1,001 ids")]
    assert [(row[2], row[3]) for row in rows] == [("float32", "replicated"), ("float32", "sharded,"),
                                                   ("bf16", "replicated"), ("bf16", "sharded,")], done.stdout
    for row in rows:
        assert float(row[-1]) > 0 and float(row[-2].replace(",", "")) >= 0  # step ms, step peak MB
    # The shard holds about half the rows: its tensors (weight, gradient, centers) about half the replicated ones.
    replicated, sharded = float(rows[0][-3]), float(rows[1][-3])
    assert sharded == pytest.approx(replicated / 2, rel=0.1)
