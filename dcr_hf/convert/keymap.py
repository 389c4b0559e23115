"""Shared by the face-backbone readers (`arcface_torch`, `adaface`, `cvlface`): reading a weight
file safely, and loading its tensors into a DCR trunk under a key mapping, refusing the first
missing key, unexpected key or shape mismatch in one line.

A source's mapping is a function from each of our parameter / buffer names (`trunk.stages.0...`)
to the source's name of the same tensor; the names and shapes we expect come from the model
built on the `meta` device (no memory, no initialization), so checking a 200-layer file against
the wrong architecture costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..configuration_dcr import IRESNET_BODIES, DCRConfig
from ..model_files import safetensors_problem
from ..modeling_dcr import DCRModel
from ..original.checkpoint import read_checkpoint_file
from ..original.errors import ConversionError

#: Our names of the tensors a source may leave out: batch-norm step counters (older torch did not save them).
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def read_weight_file(path: str | Path) -> object:
    """What a `.safetensors` file (a `{name: tensor}` dict) or a `torch.save` file holds, read
    without running code (`torch.load(..., weights_only=True)`); `ConversionError` naming the file
    for a directory, a missing, empty, truncated or code-running file."""
    path = Path(path)
    if path.suffix == ".safetensors" and not path.is_dir():
        problem = safetensors_problem(path)
        if problem:
            raise ConversionError(f"checkpoint {problem}.")
        from safetensors.torch import load_file

        return load_file(str(path))
    return read_checkpoint_file(path, expected="the backbone's checkpoint file (.pt, .pth, .ckpt or .safetensors)")


def tensor_dict(entries: object, path: Path, what: str) -> dict[str, torch.Tensor]:
    """`entries` as a `{name: tensor}` dict, or `ConversionError` naming `what` in file `path`."""
    if not isinstance(entries, Mapping) or not entries:
        kind = "an empty dict" if isinstance(entries, Mapping) else f"a {type(entries).__name__}"
        raise ConversionError(f"checkpoint {path}: {what} is {kind}, expected a state dict of tensors.")
    for key, value in entries.items():
        if not torch.is_tensor(value):
            raise ConversionError(f"checkpoint {path}: {what} entry {key!r} is a {type(value).__name__}, not a tensor.")
    return dict(entries)


def architecture_config(architecture: str, **fields) -> DCRConfig:
    """The `DCRConfig` of a named face architecture (`IRESNET_BODIES`) with `fields` on top."""
    if architecture not in IRESNET_BODIES:
        raise ConversionError(f"--architecture {architecture!r} is not one of {tuple(IRESNET_BODIES)}.")
    return DCRConfig(**{**IRESNET_BODIES[architecture], **fields})


def expected_shapes(config: DCRConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a `DCRModel` of `config` and its shape, read off a model on the meta device."""
    with torch.device("meta"):
        model = DCRModel(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def map_weights(
    source: Mapping[str, torch.Tensor],
    config: DCRConfig,
    source_name: Callable[[str], str],
    path: Path,
    description: str,
) -> dict[str, torch.Tensor]:
    """The tensors of `source` under our names for a `DCRModel` of `config`, `source_name` mapping
    each of our names to the source's. Refuses in one line, naming the source's key: the first of
    our tensors the file lacks, then the first file tensor no tensor of ours maps to, then the first
    shape that differs, and any NaN / inf; `description` says what the file should hold
    (e.g. "an arcface_torch r50 backbone")."""
    shapes = expected_shapes(config)
    names = {ours: source_name(ours) for ours in shapes}
    missing = [name for ours, name in names.items() if name not in source and not ours.endswith(OPTIONAL_SUFFIXES)]
    if missing:
        raise ConversionError(
            f"checkpoint {path} is not {description}: missing key {missing[0]}"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}."
        )
    used = set(names.values())
    unexpected = [key for key in source if key not in used]
    if unexpected:
        raise ConversionError(
            f"checkpoint {path} is not {description}: unexpected key {unexpected[0]}"
            f"{f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''}."
        )
    weights = {}
    for ours, name in names.items():
        if name not in source:
            continue
        value = source[name]
        if tuple(value.shape) != shapes[ours]:
            raise ConversionError(
                f"checkpoint {path} is not {description}: {name} has shape {tuple(value.shape)}, expected {shapes[ours]}."
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ConversionError(f"checkpoint {path}: tensor {name} holds NaN/inf values.")
        weights[ours] = value
    return weights


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str, path: Path) -> dict[str, torch.Tensor]:
    """The entries of `state_dict` under `prefix`, without it (the others dropped); a dict with no
    key under `prefix` is refused."""
    inner = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    if not inner:
        first = next(iter(state_dict), None)
        raise ConversionError(f"checkpoint {path}: no key starts with {prefix!r} (the first is {first!r}).")
    return inner


__all__ = [
    "OPTIONAL_SUFFIXES",
    "architecture_config",
    "expected_shapes",
    "map_weights",
    "read_weight_file",
    "strip_prefix",
    "tensor_dict",
]
