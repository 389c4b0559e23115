"""Reading an original checkpoint (`model_best.pth.tar`, `checkpoint.pth.tar`) safely.

The original saves `{"epoch", "state_dict", "criterion", "optimizer", "monitor"}` with
`torch.save`; `state_dict` keys carry DDP's `module.` prefix when it trained on several GPUs, and
`criterion` is the loss module's state dict (the class centers). Only `torch.load(...,
weights_only=True)` reads it (`dcr_hf.pickles`): a pickle that needs any other Python object is
refused without running it, and a folder, random bytes and such a pickle are each named as what
they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..pickles import UnloadableFile, load_weights_only
from .errors import ConversionError

DDP_PREFIX = "module."


@dataclass(frozen=True)
class OriginalCheckpoint:
    """An original checkpoint's tensors: `state_dict` without the DDP prefix, and the `criterion`
    entry (`{}` when absent)."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    criterion: dict[str, torch.Tensor]


def read_checkpoint_file(
    path: Path, expected: str = "the original's checkpoint file (model_best.pth.tar or checkpoint.pth.tar)"
) -> object:
    """What a `torch.save` file holds, read with `weights_only=True`; `ConversionError` in one line
    naming the file for a directory (saying it expected `expected`), a missing, empty, truncated,
    random-bytes or code-running one."""
    try:
        return load_weights_only(path)
    except UnloadableFile as error:
        hint = f"; expected {expected}" if path.is_dir() else ""
        raise ConversionError(f"checkpoint {path} {error}{hint}.") from None


def _tensors(entries: object, path: Path, what: str) -> dict[str, torch.Tensor]:
    """A `{name: tensor}` dict, every floating tensor finite; `what` names the entry in errors."""
    if not isinstance(entries, dict):
        raise ConversionError(f"checkpoint {path}: '{what}' is a {type(entries).__name__}, expected a dict of tensors.")
    for key, value in entries.items():
        if not torch.is_tensor(value):
            raise ConversionError(f"checkpoint {path}: {what} entry {key!r} is a {type(value).__name__}, not a tensor.")
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise ConversionError(
                f"checkpoint {path}: tensor {key} ({what}) holds {bad} NaN/inf value(s) of {value.numel()}."
            )
    return entries


def load_original_checkpoint(path: str | Path) -> OriginalCheckpoint:
    """Read an original checkpoint; raise `ConversionError` naming the file for a missing, empty,
    truncated or unsafe one, and naming the tensor for NaN/inf weights or centers."""
    path = Path(path)
    checkpoint = read_checkpoint_file(path)
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"checkpoint {path} holds a {type(checkpoint).__name__}, expected the original's dict.")
    # A bare state dict (all tensors) is accepted too.
    raw = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint
    if not raw:
        raise ConversionError(f"checkpoint {path} holds no weights (expected a 'state_dict' entry).")
    state_dict = _tensors(raw, path, "state_dict")
    state_dict = {(k[len(DDP_PREFIX):] if k.startswith(DDP_PREFIX) else k): v for k, v in state_dict.items()}
    criterion = checkpoint.get("criterion") if "state_dict" in checkpoint else None
    criterion = _tensors(criterion, path, "criterion") if criterion else {}
    return OriginalCheckpoint(path=path, state_dict=state_dict, criterion=criterion)


__all__ = ["DDP_PREFIX", "OriginalCheckpoint", "load_original_checkpoint", "read_checkpoint_file"]
