"""CVLface backbones: AdaFace's IR networks (and insightface's IResNets) inside CVLface's wrapper.

CVLface's Hub repos keep the wrapped network as `self.net`, so its `model.safetensors` (or a `.pt`
state dict) names every backbone tensor with a `net.` prefix in front of the names of the network
it wraps (`net.input_layer.0.weight`, ...). Those are read here; the names behind the prefix
follow `adaface` (`ir_*` architectures) or `arcface_torch` (`r*`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .keymap import read_weight_file, strip_prefix, tensor_dict

#: The attribute CVLface's wrapper holds the network in.
WRAPPER_PREFIX = "net."


def read_cvlface(path: Path) -> dict[str, torch.Tensor]:
    """The wrapped network's state dict (without `net.`) of a CVLface `.safetensors` or `.pt` file."""
    content = read_weight_file(path)
    if isinstance(content, dict) and "state_dict" in content:
        content = content["state_dict"]
    return strip_prefix(tensor_dict(content, path, "the state dict"), WRAPPER_PREFIX, path)


__all__ = ["WRAPPER_PREFIX", "read_cvlface"]
