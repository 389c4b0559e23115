"""Mixed precision on the device at hand: which device trains, and what bf16 costs on a CPU."""

from __future__ import annotations

import torch
from transformers.utils import is_torch_xla_available, logging

from ..cpu_flags import CPUINFO, cpu_has_native_bf16
from ..errors_dcr import DCRInputError

logger = logging.get_logger(__name__)

#: Said once per process when `--bf16` trains on a CPU without native bf16. The figure is a measurement:
#: `train_hf.py --bf16 --use_cpu` ran 0.22 samples/s against 2.7 in float32 on such a host (issue 21).
EMULATED_BF16_WARNING = (
    "--bf16: this CPU has no native bf16 instructions (no avx512_bf16 / amx_bf16), so bf16 is emulated here and "
    "slower than float32 (about 12x slower in training on one such host); leave --bf16 out on this machine."
)


def has_accelerator() -> bool:
    """Whether torch sees an accelerator (CUDA, XPU, MPS, ...) or an XLA device to train on."""
    return torch.accelerator.is_available() or is_torch_xla_available()


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
    if cpu_has_native_bf16(CPUINFO) is False:
        logger.warning_once(EMULATED_BF16_WARNING)


__all__ = ["CPUINFO", "EMULATED_BF16_WARNING", "check_precision", "cpu_has_native_bf16", "has_accelerator"]
