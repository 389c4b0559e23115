"""The CPU's instruction-set flags (Linux `/proc/cpuinfo`): whether it computes in bf16 natively.

Below `training` and `metrics`, which both ask: bf16 training on a CPU (`training.precision`,
`training.conv_weight_grad`) and the bf16-screened exact search (`metrics.screening`).
"""

from __future__ import annotations

#: Where the CPU's instruction-set flags are read (Linux).
CPUINFO = "/proc/cpuinfo"

#: CPU flags of native bf16 arithmetic: x86 AVX512-BF16 / AMX-BF16, Arm's BF16 extension.
NATIVE_BF16_FLAGS = {"flags": {"avx512_bf16", "amx_bf16"}, "Features": {"bf16"}}


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


__all__ = ["CPUINFO", "NATIVE_BF16_FLAGS", "cpu_flag_sets", "cpu_has_native_bf16"]
