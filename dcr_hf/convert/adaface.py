"""AdaFace IR backbones (`net.py`: `ir_18`, `ir_34`, `ir_50`, `ir_101`, `ir_se_50`).

AdaFace trains with PyTorch Lightning: its `.ckpt` is a dict whose `state_dict` holds the backbone
under `model.` (the `Trainer` module's `self.model`) beside the margin head's `head.kernel`, with
the optimizer and scheduler states, loops, callbacks and `hyper_parameters` around it (all ignored
here). A plain backbone state dict (no prefix) is read too. Its names: `input_layer.{0, 1, 2}`,
`body.K.res_layer.{0..5}` (`.se_block.fc1` / `.fc2`: the squeeze-excitation `ir_se` adds by name),
`body.K.shortcut_layer.{0, 1}` (only where a block changes width), `output_layer.{0, 3, 4}`; `K`
counts blocks over all stages. Input: **BGR**, `(x / 255 - 0.5) / 0.5`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..original.errors import ConversionError
from .keymap import read_weight_file, strip_prefix, tensor_dict

#: Our module names inside a block -> AdaFace's (`BasicBlockIR`, `BasicBlockIRSE`).
BLOCK_NAMES = {
    "input_normalization": "res_layer.0",
    "convolution1": "res_layer.1",
    "normalization1": "res_layer.2",
    "activation": "res_layer.3",
    "convolution2": "res_layer.4",
    "normalization2": "res_layer.5",
    "squeeze_excitation.reduce": "res_layer.se_block.fc1",
    "squeeze_excitation.expand": "res_layer.se_block.fc2",
    "shortcut.convolution": "shortcut_layer.0",
    "shortcut.normalization": "shortcut_layer.1",
}
#: Our names outside the blocks -> AdaFace's (`Backbone`).
OUTER_NAMES = {
    "trunk.embedder.convolution": "input_layer.0",
    "trunk.embedder.normalization": "input_layer.1",
    "trunk.embedder.activation": "input_layer.2",
    "trunk.head.normalization": "output_layer.0",
    "trunk.head.projection": "output_layer.3",
    "trunk.head.features": "output_layer.4",
}
_BLOCK = re.compile(r"^trunk\.stages\.(\d+)\.layers\.(\d+)\.(.+)$")
#: Where the Lightning module keeps the backbone in `state_dict`.
LIGHTNING_PREFIX = "model."


def adaface_name(ours: str, depths: Sequence[int]) -> str:
    """AdaFace's name of one of our `DCRModel` tensors (`trunk.stages.1.layers.0.shortcut.convolution.weight`
    -> `body.3.shortcut_layer.0.weight` for `ir_34`); `depths` numbers the blocks across stages."""
    module, _, tensor = ours.rpartition(".")
    block = _BLOCK.match(module)
    if block:
        stage, index, inner = block.groups()
        number = sum(depths[: int(stage)]) + int(index)
        return f"body.{number}.{BLOCK_NAMES.get(inner, inner)}.{tensor}"
    return f"{OUTER_NAMES.get(module, module)}.{tensor}"


def read_adaface(path: Path) -> dict[str, torch.Tensor]:
    """The backbone state dict of an AdaFace Lightning `.ckpt` (`state_dict`, `model.` prefix, the head
    dropped) or of a plain backbone state dict."""
    content = read_weight_file(path)
    if isinstance(content, dict) and "state_dict" in content:
        state_dict = tensor_dict(content["state_dict"], path, "state_dict")
        return strip_prefix(state_dict, LIGHTNING_PREFIX, path)
    if isinstance(content, dict) and any(isinstance(value, dict) for value in content.values()):
        raise ConversionError(
            f"checkpoint {path} is neither an AdaFace Lightning checkpoint (a 'state_dict' with the backbone under "
            f"'{LIGHTNING_PREFIX}') nor a backbone state dict; it holds {sorted(content)[:6]}."
        )
    return tensor_dict(content, path, "the backbone state dict")


__all__ = ["BLOCK_NAMES", "LIGHTNING_PREFIX", "OUTER_NAMES", "adaface_name", "read_adaface"]
