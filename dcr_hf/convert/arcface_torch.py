"""insightface arcface_torch backbones (`recognition/arcface_torch/backbones/iresnet.py`, `r18`..`r200`).

arcface_torch saves the backbone's plain `state_dict` as `model.pt` (older runs: `backbone.pth`);
with `save_all_states` its training checkpoints `checkpoint_gpu_N.pt` hold it as
`state_dict_backbone`, beside the Partial FC classifier, the optimizer and the scheduler (ignored
here). Its names: `conv1`, `bn1`, `prelu`, `layer{1..4}.K.{bn1, conv1, bn2, prelu, conv2, bn3,
downsample.0, downsample.1}`, `bn2`, `fc`, `features`. Input: RGB, `(x / 255 - 0.5) / 0.5`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..original.errors import ConversionError
from .keymap import read_weight_file, tensor_dict

#: Our module names inside a block -> arcface_torch's (`IBasicBlock`).
BLOCK_NAMES = {
    "input_normalization": "bn1",
    "convolution1": "conv1",
    "normalization1": "bn2",
    "activation": "prelu",
    "convolution2": "conv2",
    "normalization2": "bn3",
    "shortcut.convolution": "downsample.0",
    "shortcut.normalization": "downsample.1",
}
#: Our names outside the blocks -> arcface_torch's (`IResNet`).
OUTER_NAMES = {
    "trunk.embedder.convolution": "conv1",
    "trunk.embedder.normalization": "bn1",
    "trunk.embedder.activation": "prelu",
    "trunk.head.normalization": "bn2",
    "trunk.head.projection": "fc",
    "trunk.head.features": "features",
}
_BLOCK = re.compile(r"^trunk\.stages\.(\d+)\.layers\.(\d+)\.(.+)$")
TRAINING_CHECKPOINT_KEY = "state_dict_backbone"


def arcface_torch_name(ours: str) -> str:
    """arcface_torch's name of one of our `DCRModel` tensors (`trunk.stages.2.layers.4.normalization1.weight`
    -> `layer3.4.bn2.weight`)."""
    module, _, tensor = ours.rpartition(".")
    block = _BLOCK.match(module)
    if block:
        stage, index, inner = block.groups()
        return f"layer{int(stage) + 1}.{index}.{BLOCK_NAMES.get(inner, inner)}.{tensor}"
    return f"{OUTER_NAMES.get(module, module)}.{tensor}"


def read_arcface_torch(path: Path) -> dict[str, torch.Tensor]:
    """The backbone state dict of `model.pt` / `backbone.pth` or of a `checkpoint_gpu_N.pt`."""
    content = read_weight_file(path)
    if isinstance(content, dict) and TRAINING_CHECKPOINT_KEY in content:
        return tensor_dict(content[TRAINING_CHECKPOINT_KEY], path, TRAINING_CHECKPOINT_KEY)
    if isinstance(content, dict) and any(isinstance(value, dict) for value in content.values()):
        raise ConversionError(
            f"checkpoint {path} is neither a backbone state dict (model.pt) nor a training checkpoint with "
            f"'{TRAINING_CHECKPOINT_KEY}' (checkpoint_gpu_N.pt); it holds {sorted(content)[:6]}."
        )
    return tensor_dict(content, path, "the backbone state dict")


__all__ = ["BLOCK_NAMES", "OUTER_NAMES", "TRAINING_CHECKPOINT_KEY", "arcface_torch_name", "read_arcface_torch"]
