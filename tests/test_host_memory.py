"""Freed memory kept for the next step on a CPU (`dcr_hf.host_memory`): a freed large
block comes back without page faults, nothing is changed off glibc, and a CPU run turns it on
unless `--cpu_memory_reuse false`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import dcr_hf.host_memory as host_memory
import dcr_hf.training.run as run
from dcr_hf.training.command import train as train_command

from .models import TINY_TRAINING

# In a fresh process (the setting is process-wide): page faults of the 4th "step" that allocates,
# fills, reduces and frees a 256 MB tensor (glibc's heap settles within the first steps).
REFAULTS = """
import resource, sys, torch
from dcr_hf.host_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
for step in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 * 2**20).sum()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

TINY = [*TINY_TRAINING, "--use_cpu", "true", "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--evaluate_before_training", "false"]


def _refaults(mode: str) -> tuple[str, int]:
    kept, faults = subprocess.run([sys.executable, "-c", REFAULTS, mode], capture_output=True, text=True, check=True,
                                  timeout=120).stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux)")
def test_a_freed_block_comes_back_without_page_faults():
    _, usual = _refaults("usual")
    if usual < 1000:
        pytest.skip(f"this system faults a 256 MB block in {usual} faults (huge pages): nothing to save")
    kept, faults = _refaults("keep")
    assert kept == "True"
    assert faults * 10 < usual, (faults, usual)


def test_nothing_changes_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(host_memory.ctypes, "CDLL", lambda name: pytest.fail("libc loaded off glibc"))
    assert host_memory.keep_freed_memory() is False


@pytest.mark.parametrize("option, expected", [([], 1), (["--cpu_memory_reuse", "false"], 0)], ids=["default", "off"])
def test_a_cpu_run_keeps_freed_memory_unless_turned_off(tmp_path, monkeypatch, option, expected):
    calls = []
    monkeypatch.setattr(run, "keep_freed_memory", lambda: calls.append(True) or True)
    train_command(["--output_dir", str(tmp_path), *TINY, *option])
    assert len(calls) == expected
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 1
