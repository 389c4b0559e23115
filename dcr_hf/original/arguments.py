"""The original's `config.json`: its whole argparse namespace dumped as JSON, read for conversion.

Only the keys that shape the converted model are read (`stage`, `backbone`, `layers`,
`out_channels`, `mid_channels`, `normalized_embeddings`, `wobn`, `scale_list`, `img_size`,
`rgb_mean`, `rgb_std`); data paths, optimizer settings and the rest are ignored. Values keep the
argparse types: lists stay lists, `img_size` is `[120, 120]` (its tuple default) or, in
hand-edited files, an int.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConversionError
from .keys import TRUNK_KINDS

STAGES = ("trunk", "branch")
BACKBONES = tuple(name for kind in TRUNK_KINDS for name in kind.backbones)


@dataclass(frozen=True)
class OriginalArguments:
    """What a conversion takes from `config.json`; `None` where the file does not say."""

    path: Path | None = None
    stage: str | None = None
    backbone: str | None = None
    layers: list[int] | None = None
    out_channels: int | None = None
    mid_channels: int | None = None
    normalized_embeddings: bool | None = None
    wobn: bool | None = None
    scale_list: list[int] | None = None
    img_size: int | None = None
    rgb_mean: list[float] | None = None
    rgb_std: list[float] | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> int | None:
    return value if _is_int(value) and value > 0 else None


def _positive_ints(value: Any) -> list[int] | None:
    return value if isinstance(value, list) and value and all(_positive_int(v) for v in value) else None


def _boolean(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _three_numbers(value: Any, positive: bool = False) -> list[float] | None:
    numbers = isinstance(value, list) and len(value) == 3
    numbers = numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return [float(v) for v in value] if numbers and not (positive and min(value) <= 0) else None


def _image_size(value: Any) -> int | None:
    """`[s, s]` (the argparse tuple default, a list in JSON) or a hand-edited int -> `s`."""
    if _is_int(value) and value > 1:
        return value
    if isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 1 for v in value) and value[0] == value[1]:
        return value[0]
    return None


# key -> (check returning the value to keep, `None` when it is invalid; what is expected)
_CHECKS = {
    "stage": (lambda v: v if v in STAGES else None, f"one of {STAGES}"),
    "backbone": (lambda v: v if v in BACKBONES else None, f"one of {BACKBONES}"),
    "layers": (_positive_ints, "a list of positive block counts, one per stage"),
    "out_channels": (_positive_int, "a positive integer (the trunk embedding size)"),
    "mid_channels": (_positive_int, "a positive integer (the branch embedding size)"),
    "normalized_embeddings": (_boolean, "true or false"),
    "wobn": (_boolean, "true or false"),
    "scale_list": (_positive_ints, "a list of LR sizes in pixels"),
    "img_size": (_image_size, "a square size: [120, 120] or 120"),
    "rgb_mean": (_three_numbers, "a list of 3 numbers"),
    "rgb_std": (lambda v: _three_numbers(v, positive=True), "a list of 3 positive numbers"),
}


def read_original_arguments(path: str | Path) -> OriginalArguments:
    """Read and check the keys of an original `config.json` that shape the converted model."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"config {path} does not exist.")
    try:
        namespace = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path} line {error.lineno}: not valid JSON ({error.msg}).") from None
    except UnicodeDecodeError:
        raise ConversionError(f"{path} is not a text file (expected the original's config.json).") from None
    if not isinstance(namespace, dict):
        raise ConversionError(f"{path} holds a JSON {type(namespace).__name__}, expected the original's argument object.")
    if "model_type" in namespace:
        raise ConversionError(f"{path} is a Hugging Face config (model_type={namespace['model_type']!r}), not the original's.")
    values = {}
    for key, (check, expected) in _CHECKS.items():
        value = namespace.get(key)
        if value is None:
            continue
        values[key] = check(value)
        if values[key] is None:
            raise ConversionError(f"{path}: {key}={value!r}, expected {expected}.")
    return OriginalArguments(path=path, **values)


__all__ = ["BACKBONES", "STAGES", "OriginalArguments", "read_original_arguments"]
