"""Which trunk an original checkpoint holds, its `DCRConfig` architecture fields read off the
weight shapes, and the check that `config.json` agrees with them."""

from __future__ import annotations

import re
from typing import Any

import torch

from ..configuration_dcr import RESNET_BODIES
from .arguments import OriginalArguments
from .checkpoint import OriginalCheckpoint
from .errors import ConversionError
from .keys import TRUNK_KINDS, TrunkKind, kind_of_backbone

#: How many unknown keys an error lists.
SHOWN_KEYS = 5


def detect_trunk_kind(checkpoint: OriginalCheckpoint, arguments: OriginalArguments) -> TrunkKind:
    """The one trunk kind whose names cover every key of the checkpoint (and that `backbone`
    names, when config.json gives it)."""
    unknown = {kind.name: [k for k in checkpoint.state_dict if kind.to_ours(k) is None] for kind in TRUNK_KINDS}
    fitting = [kind for kind in TRUNK_KINDS if not unknown[kind.name]]
    if arguments.backbone is not None:
        wanted = kind_of_backbone(arguments.backbone)
        if wanted in fitting:
            return wanted
        if fitting:
            raise ConversionError(
                f"{arguments.path}: backbone={arguments.backbone!r} names a {wanted.name} trunk, but the weights "
                f"in {checkpoint.path} are a {fitting[0].name} trunk."
            )
    elif len(fitting) == 1:
        return fitting[0]
    elif len(fitting) > 1:
        raise ConversionError(
            f"checkpoint {checkpoint.path} fits several trunk kinds ({', '.join(k.name for k in fitting)}): "
            "pass the original's config.json (--config) to say which."
        )
    by_all = [k for k in checkpoint.state_dict if all(k in keys for keys in unknown.values())]
    closest = min(TRUNK_KINDS, key=lambda kind: len(unknown[kind.name]))
    shown = by_all or unknown[closest.name]
    raise ConversionError(
        f"checkpoint {checkpoint.path}: the weights fit no known trunk (tried {', '.join(k.name for k in TRUNK_KINDS)}); "
        f"{'keys none of them knows' if by_all else f'keys unknown to the closest, {closest.name}'} "
        f"({len(shown)}): {shown[:SHOWN_KEYS]}"
    )


def _weight(checkpoint: OriginalCheckpoint, key: str, kind: TrunkKind) -> torch.Tensor:
    if key not in checkpoint.state_dict:
        raise ConversionError(f"checkpoint {checkpoint.path} has no {key}, which a {kind.name} trunk needs.")
    return checkpoint.state_dict[key]


def _blocks_per_stage(checkpoint: OriginalCheckpoint, kind: TrunkKind) -> list[int]:
    """Blocks of each stage, from the indices of the blocks' first convolutions."""
    pattern = re.compile(rf"{re.escape(kind.prefix)}layer(\d+)\.(\d+)\.conv1\.weight")
    last: dict[int, int] = {}
    for key in checkpoint.state_dict:
        match = pattern.fullmatch(key)
        if match:
            stage, block = int(match[1]), int(match[2])
            last[stage] = max(last.get(stage, -1), block)
    if sorted(last) != list(range(1, len(last) + 1)):
        raise ConversionError(
            f"checkpoint {checkpoint.path}: the {kind.name} trunk has blocks in stages {sorted(last)}, "
            "expected stages 1..n without gaps."
        )
    return [last[stage] + 1 - kind.block_offset for stage in sorted(last)]


def trunk_architecture(checkpoint: OriginalCheckpoint, kind: TrunkKind) -> dict[str, Any]:
    """The `DCRConfig` trunk fields of the checkpoint's weights (the trunk kind known)."""
    prefix = kind.prefix
    stem = _weight(checkpoint, f"{prefix}conv1.weight", kind)
    depths = _blocks_per_stage(checkpoint, kind)
    stages = range(1, len(depths) + 1)
    fields: dict[str, Any] = {"trunk_type": kind.trunk_type, "depths": depths,
                              "stem_hidden_size": stem.shape[0], "num_channels": stem.shape[1]}
    if kind.trunk_type == "paper":
        fields["hidden_sizes"] = [_weight(checkpoint, f"trunk.layer{s}.0.weight", kind).shape[0] for s in stages]
        fields["use_batch_norm"] = f"{prefix}bn1.weight" in checkpoint.state_dict
    else:
        bottleneck = f"{prefix}layer1.0.conv3.weight" in checkpoint.state_dict
        last = "conv3" if bottleneck else "conv2"
        fields["layer_type"] = "bottleneck" if bottleneck else "basic"
        fields["hidden_sizes"] = [_weight(checkpoint, f"{prefix}layer{s}.0.{last}.weight", kind).shape[0] for s in stages]
    projection = _weight(checkpoint, "trunk.fc1.weight", kind)
    fields["embedding_size"] = projection.shape[0]
    fields["num_labels"] = _weight(checkpoint, "trunk.fc2.weight", kind).shape[0]
    return fields


def branch_architecture(checkpoint: OriginalCheckpoint) -> tuple[int, int | None]:
    """(number of branches, their embedding size) of the checkpoint; (0, None) without branches."""
    branches = sorted({int(m[1]) for k in checkpoint.state_dict if (m := re.match(r"branches\.(\d+)\.", k))})
    if not branches:
        return 0, None
    if branches != list(range(len(branches))):
        raise ConversionError(f"checkpoint {checkpoint.path}: branches {branches}, expected 0..n without gaps.")
    first = checkpoint.state_dict.get("branches.0.fc1.weight")
    if first is None:
        raise ConversionError(f"checkpoint {checkpoint.path} has no branches.0.fc1.weight, which every branch needs.")
    return len(branches), first.shape[0]


def check_arguments_against_weights(
    arguments: OriginalArguments, checkpoint: OriginalCheckpoint, fields: dict[str, Any], branches: tuple[int, int | None]
) -> None:
    """Raise `ConversionError` naming both sides where `config.json` contradicts the weights."""
    stored = f"the weights in {checkpoint.path}"

    def contradiction(setting: str, weights: str) -> ConversionError:
        return ConversionError(f"{arguments.path}: {setting}, but {stored} {weights}.")

    backbone = arguments.backbone or ""
    if backbone.startswith("ResNet-"):
        body = RESNET_BODIES[backbone.lower().replace("-", "")]
        if (body["layer_type"], body["depths"]) != (fields["layer_type"], fields["depths"]):
            raise contradiction(
                f"backbone={backbone!r} has {body['layer_type']} blocks {body['depths']}",
                f"hold {fields['layer_type']} blocks {fields['depths']}",
            )
    elif arguments.layers is not None and arguments.layers != fields["depths"]:
        # `layers` shapes DCRTrunk / NewDCRTrunk only; the torchvision bodies ignore it.
        raise contradiction(f"layers={arguments.layers}", f"hold {fields['depths']} blocks per stage")
    if fields["trunk_type"] == "paper" and arguments.wobn is not None and arguments.wobn == fields["use_batch_norm"]:
        raise contradiction(
            f"wobn={str(arguments.wobn).lower()}", "have batch norm" if fields["use_batch_norm"] else "have no batch norm"
        )
    if arguments.out_channels is not None and arguments.out_channels != fields["embedding_size"]:
        raise contradiction(f"out_channels={arguments.out_channels}", f"embed to {fields['embedding_size']} (trunk.fc1)")
    count, branch_size = branches
    if count and arguments.mid_channels is not None and arguments.mid_channels != branch_size:
        raise contradiction(f"mid_channels={arguments.mid_channels}", f"have {branch_size}-wide branches (branches.0.fc1)")
    if count and arguments.scale_list is not None and count != len(arguments.scale_list) + 1:
        raise contradiction(
            f"scale_list={arguments.scale_list} means {len(arguments.scale_list) + 1} branches (HR + one per scale)",
            f"hold {count}",
        )


__all__ = ["branch_architecture", "check_arguments_against_weights", "detect_trunk_kind", "trunk_architecture"]
