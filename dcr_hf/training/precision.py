"""Mixed precision on the device at hand: which device trains, and what bf16 costs on a CPU."""

from __future__ import annotations

import torch
from transformers.utils import is_torch_xla_available, logging

from ..errors_dcr import DCRInputError

logger = logging.get_logger(__name__)

#: Where the CPU's instruction-set flags are read (Linux).
CPUINFO = "/proc/cpuinfo"

#: CPU flags of native bf16 arithmetic: x86 AVX512-BF16 / AMX-BF16, Arm's BF16 extension.
NATIVE_BF16_FLAGS = {"flags": {"avx512_bf16", "amx_bf16"}, "Features": {"bf16"}}


#: Said once per process when `--bf16` trains on a CPU without native bf16. The figure is a measurement:
#: `train_hf.py --bf16 --use_cpu` ran 0.22 samples/s against 2.7 in float32 on such a host (issue 21).
EMULATED_BF16_WARNING = (
    "--bf16: this CPU has no native bf16 instructions (no avx512_bf16 / amx_bf16), so bf16 is emulated here and "
    "slower than float32 (about 12x slower in training on one such host); leave --bf16 out on this machine."
)


def has_accelerator() -> bool:
    """Whether torch sees an accelerator (CUDA, XPU, MPS, ...) or an XLA device to train on."""
    return torch.accelerator.is_available() or is_torch_xla_available()


def cpu_flag_sets(cpuinfo: str | None = None) -> dict[str, set[str]] | None:
    """The instruction-set flags of `/proc/cpuinfo` by line name (`"flags"` on x86, `"Features"` on
    Arm); `None` when the file cannot be read (not Linux)."""
    try:
        with open(cpuinfo or CPUINFO, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    found: dict[str, set[str]] = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in NATIVE_BF16_FLAGS:
            found.setdefault(key.strip(), set()).update(value.split())
    return found


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU computes in bf16 natively (`NATIVE_BF16_FLAGS` in `/proc/cpuinfo`);
    `None` when the flags cannot be read (not Linux)."""
    found = cpu_flag_sets(cpuinfo)
    if not found:
        return None
    return any(NATIVE_BF16_FLAGS[key] & flags for key, flags in found.items())


def check_precision(training_args) -> None:
    """Refuse fp16 on a CPU; on a CPU with `--bf16`, say that the CPU trains (when `use_cpu` was
    set for the user) and warn once when bf16 is emulated there."""
    if training_args.device.type != "cpu":
        return
    if training_args.fp16:
        # Accelerate runs fp16 on a CPU in float32 without a word; bf16 autocast works there.
        raise DCRInputError("--fp16 needs a GPU (Accelerate trains fp16 on a CPU in float32); on a CPU use --bf16.")
    if not (training_args.bf16 or training_args.bf16_full_eval):
        return
    if getattr(training_args, "use_cpu_for_bf16", False):
        logger.info("--bf16 without CUDA or another accelerator: use_cpu set, training on the CPU with bf16 autocast.")
    if cpu_has_native_bf16() is False:
        logger.warning_once(EMULATED_BF16_WARNING)


__all__ = [
    "CPUINFO", "EMULATED_BF16_WARNING", "NATIVE_BF16_FLAGS", "check_precision", "cpu_flag_sets", "cpu_has_native_bf16",
    "has_accelerator",
]
