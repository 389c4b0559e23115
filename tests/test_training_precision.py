"""`--bf16` on a machine without an accelerator: the CPU trains with bf16 autocast, `use_cpu` set for
the user and said in one log line; a warning once where the CPU has no native bf16 instructions."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import dcr_hf.training.precision as precision
from dcr_hf.training import plan_training
from dcr_hf.training.command import parse_arguments
from dcr_hf.training.command import train as train_command

from .models import TINY_TRAINING

needs_no_accelerator = pytest.mark.skipif(
    precision.has_accelerator(), reason="this machine has an accelerator: --bf16 trains there"
)

TINY = TINY_TRAINING
NOTE = "--bf16 without CUDA or another accelerator: use_cpu set, training on the CPU with bf16 autocast."
EMULATED = "bf16 is emulated here and slower than float32"


def _cpuinfo(tmp_path, text: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "native"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n", False),
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", True),
        ("processor\t: 0\nFeatures\t: fp asimd\n", False),
        ("processor\t: 0\nmodel name\t: something\n", None),
    ],
    ids=["avx512_bf16", "amx_bf16", "x86-without", "arm-bf16", "arm-without", "no-flags"],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, native):
    assert precision.cpu_has_native_bf16(_cpuinfo(tmp_path, text)) is native


def test_unreadable_cpu_flags_are_unknown(tmp_path):
    assert precision.cpu_has_native_bf16(str(tmp_path / "missing")) is None


@needs_no_accelerator
def test_bf16_without_an_accelerator_plans_a_cpu_run_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(precision, "CPUINFO", _cpuinfo(tmp_path, "flags\t: fpu avx512f avx512_bf16\n"))
    caplog.set_level(logging.INFO, logger="dcr_hf")
    _, _, training_args = arguments = parse_arguments(["--output_dir", str(tmp_path / "out"), "--bf16", "true"])
    assert training_args.use_cpu and training_args.bf16 and training_args.device.type == "cpu"
    plan_training(*arguments)
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count(NOTE) == 1
    assert not [m for m in messages if EMULATED in m]  # native bf16 here


@needs_no_accelerator
def test_bf16_on_a_cpu_without_native_bf16_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(precision, "CPUINFO", _cpuinfo(tmp_path, "flags\t: fpu sse2 avx2\n"))
    caplog.set_level(logging.INFO, logger="dcr_hf")
    for run in ("a", "b"):
        plan_training(*parse_arguments(["--output_dir", str(tmp_path / run), "--bf16", "true"]))
    emulated = [r for r in caplog.records if EMULATED in r.getMessage()]
    assert len(emulated) == 1 and emulated[0].levelno == logging.WARNING
    assert "no avx512_bf16 / amx_bf16" in emulated[0].getMessage()
    assert "about 12x slower" in emulated[0].getMessage()


@needs_no_accelerator
@pytest.mark.parametrize("native, warned", [(False, 1), (True, 0), (None, 0)], ids=["emulated", "native", "unknown"])
def test_the_emulated_bf16_warning_follows_the_flag_reader(tmp_path, monkeypatch, caplog, native, warned):
    # The flag reader itself replaced: this machine's own flags (this VM has avx512_bf16) do not matter.
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: native)
    # warning_once remembers its message per process; each case starts from a fresh memory.
    precision.logger.warning_once.cache_clear()
    caplog.set_level(logging.INFO, logger="dcr_hf")
    for run in ("a", "b"):
        plan_training(*parse_arguments(["--output_dir", str(tmp_path / run), "--bf16", "true", "--use_cpu", "true"]))
    emulated = [r.getMessage() for r in caplog.records if EMULATED in r.getMessage()]
    assert emulated == [precision.EMULATED_BF16_WARNING] * warned


def test_use_cpu_given_is_not_announced(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dcr_hf")
    _, _, training_args = arguments = parse_arguments(
        ["--output_dir", str(tmp_path / "out"), "--bf16", "true", "--use_cpu", "true"]
    )
    assert training_args.use_cpu and not training_args.use_cpu_for_bf16
    plan_training(*arguments)
    assert NOTE not in [record.getMessage() for record in caplog.records]


@pytest.mark.slow
@needs_no_accelerator
def test_train_hf_bf16_trains_on_the_cpu_under_bf16_autocast(tmp_path, caplog):
    """`train_hf.py --bf16 true` with tiny quickstart settings, no `--use_cpu`: it trains and validates."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    caplog.set_level(logging.INFO, logger="dcr_hf")
    try:
        result = train_command(["--output_dir", str(tmp_path), *TINY, "--bf16", "true", "--max_steps", "2",
                                "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                                "--evaluate_before_training", "false"])
    finally:
        torch.set_num_threads(previous)
    assert NOTE in [record.getMessage() for record in caplog.records]
    assert json.loads((tmp_path / "training_recipe.json").read_text())["mixed_precision"] == "bf16"
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 2
    for figures in result["after"]["by_resolution"].values():
        assert 0.0 <= figures["accuracy"] <= 1.0
