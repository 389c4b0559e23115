"""The DCR embedder as one ONNX graph: the export, its description (`dcr_onnx.json` and the
model's `metadata_props`) and the onnxruntime / PyTorch check; the work of `dcr-export-onnx`
(`dcr_hf.export_onnx`, whose docstring describes the graph's inputs and outputs)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.utils import logging

from .errors_dcr import DCRInputError
from .hub import load_model_and_processor
from .image_processing_dcr import DCRImageProcessor
from .modeling_dcr import DCRModel
from .saving import atomic_path, write_text_atomic

logger = logging.get_logger(__name__)

ONNX_FILE = "model.onnx"
METADATA_FILE = "dcr_onnx.json"
#: The `metadata_props` key of the model's description in `model.onnx`.
METADATA_KEY = "dcr_onnx"
INSTALL_HINT = 'pip install "dcr-hf[onnx]" (onnx, onnxruntime, onnxscript)'
#: The oldest opset the torch.export-based exporter writes (asked for less, it writes 18 and warns).
MIN_OPSET = 18


class OnnxExportError(DCRInputError):
    """A model that cannot be exported (not a DCR model, missing export libraries), in one line."""


class DCROnnxEmbedder(nn.Module):
    """The graph that is exported: `DCRModel`'s embedding with the branch chosen per sample by a tensor.

    `DCRModel.forward` routes samples to branches with Python-level indexing; here every branch (a
    small linear layer) embeds every sample and `branch_index` picks one row per sample, which
    torch.export traces into one graph with a dynamic batch size.
    """

    def __init__(self, model: DCRModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, branch_index: torch.Tensor | None = None) -> torch.Tensor:
        """`[batch, C, H, W]` (+ `[batch]` int64 for a model with branches) -> embeddings `[batch, size]`."""
        _, trunk_embeddings, _ = self.model.trunk(pixel_values)
        if self.model.branches is None:
            return trunk_embeddings
        every_branch = torch.stack([branch(trunk_embeddings) for branch in self.model.branches], dim=1)
        index = branch_index.view(-1, 1, 1).expand(-1, 1, every_branch.shape[-1])
        return every_branch.gather(1, index).squeeze(1)


def _branch_names(model: DCRModel) -> list[str]:
    """The resolution of each branch index as the JSON names it: `"hr"`, then the LR sizes."""
    return ["hr", *(str(size) for size in model.config.low_resolution_sizes)]


def load_dcr_model(model_name_or_path: str) -> tuple[DCRModel, DCRImageProcessor]:
    """The embedder and processor of a DCR folder or Hub id; anything else is an `OnnxExportError`."""
    try:
        model, processor = load_model_and_processor(model_name_or_path)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OnnxExportError(f"{model_name_or_path} is not a DCR model folder or Hub id: {reason}") from None
    return model.to(memory_format=torch.contiguous_format).eval(), processor


def export_description(model: DCRModel, processor: DCRImageProcessor, source: str, opset: int) -> dict[str, Any]:
    """What a user of `model.onnx` needs to feed it: inputs, outputs, branch indices, preprocessing."""
    config = model.config
    size = config.branch_hidden_size if model.branches is not None else config.embedding_size
    inputs: dict[str, Any] = {
        "pixel_values": {
            "dtype": "float32", "shape": ["batch", config.num_channels, config.image_size, config.image_size],
            "preprocessing": "DCRImageProcessor(**processor), or by hand: RGB, PIL resize to image_size x image_size "
                             "with filter `resample`, x rescale_factor, (x - image_mean) / image_std per channel, the "
                             "channels then reversed when channel_order is 'bgr'; an LR "
                             "probe is brought back to image_size the same way (its branch_index says its size)",
        },
    }
    if model.branches is not None:
        inputs["branch_index"] = {"dtype": "int64", "shape": ["batch"], "values": "branch_index below, one per sample"}
    return {
        "format": "dcr-hf ONNX embedder",
        "model_file": ONNX_FILE,
        "source": str(source),
        "opset": opset,
        "exporter": f"torch.onnx.export (torch.export-based), torch {torch.__version__}",
        "inputs": inputs,
        "outputs": {"embeddings": {"dtype": "float32", "shape": ["batch", size],
                                   "l2_normalized": bool(config.normalize_embeddings)}},
        "branch_index": {name: i for i, name in enumerate(_branch_names(model))} if model.branches is not None else None,
        "image_size": config.image_size,
        "low_resolution_sizes": list(config.low_resolution_sizes),
        # `auto_map` names code files of the model folder, which the export folder does not hold.
        "processor": {**processor.to_dict(), "rescale_factor": processor.rescale_factor, "auto_map": None},
    }


def _export_program(model: DCRModel, opset_version: int | None):
    """The `torch.onnx.ONNXProgram` of the embedder, batch size dynamic (traced at batch 2: torch.export
    specializes sizes 0 and 1)."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; fail with the install line, not deep inside)
    except ImportError:
        raise OnnxExportError(f"the ONNX export needs onnxscript: {INSTALL_HINT}.") from None
    config = model.config
    pixel_values = torch.zeros(2, config.num_channels, config.image_size, config.image_size)
    batch = torch.export.Dim("batch")
    args: tuple[torch.Tensor, ...] = (pixel_values,)
    names, shapes = ["pixel_values"], {"pixel_values": {0: batch}}
    if model.branches is not None:
        args += (torch.zeros(2, dtype=torch.long),)
        names.append("branch_index")
        shapes["branch_index"] = {0: batch}
    with warnings.catch_warnings():
        # Both inputs share the batch axis on purpose; the exporter says it keeps one name for it.
        warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used", category=UserWarning)
        return torch.onnx.export(
            DCROnnxEmbedder(model).eval(), args, input_names=names, output_names=["embeddings"],
            dynamic_shapes=shapes, opset_version=opset_version, dynamo=True, verbose=False,
        )


def onnx_differences(
    onnx_path: str | Path, model: DCRModel, processor: DCRImageProcessor, batch_size: int = 4, seed: int = 0
) -> dict[str, float]:
    """Largest |onnxruntime - PyTorch| embedding difference per branch (`"trunk"` without branches),
    on CPU, for a batch of random images normalized by the model's processor."""
    try:
        import onnxruntime
    except ImportError:
        raise OnnxExportError(f"checking the export needs onnxruntime: {INSTALL_HINT}.") from None
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    pixels = processor.normalize_pixels(torch.rand(batch_size, model.config.num_channels, size, size, generator=generator))
    names = _branch_names(model) if model.branches is not None else ["trunk"]
    differences = {}
    with torch.no_grad():
        for index, name in enumerate(names):
            feed = {"pixel_values": pixels.numpy()}
            if model.branches is not None:
                feed["branch_index"] = np.full(batch_size, index, dtype=np.int64)
            resolution = model.config.resolutions[index]
            expected = model(pixels, resolution=resolution).pooler_output.numpy()
            differences[name] = float(np.abs(session.run(["embeddings"], feed)[0] - expected).max())
    return differences


def export_onnx(
    model_name_or_path: str, output_dir: str | Path, opset_version: int | None = None, check: bool = True
) -> dict[str, Any]:
    """Export the DCR embedder of a folder or Hub id to `output_dir/model.onnx` (+ `dcr_onnx.json`).

    Returns the description written to `dcr_onnx.json`; with `check`, its `max_abs_difference` holds
    the largest onnxruntime / PyTorch embedding difference per branch. Raises `OnnxExportError` for
    a folder that is not a DCR model or without the export libraries, before anything is written.
    """
    if opset_version is not None and opset_version < MIN_OPSET:
        raise OnnxExportError(f"opset {opset_version} is not available: the exporter writes opset {MIN_OPSET} or later.")
    model, processor = load_dcr_model(model_name_or_path)
    program = _export_program(model, opset_version)
    opset = int(program.model.opset_imports[""])
    if opset_version is not None and opset != opset_version:
        raise OnnxExportError(f"the exporter wrote opset {opset}, not the requested {opset_version}; nothing was saved.")
    description = export_description(model, processor, model_name_or_path, opset)
    program.model.metadata_props[METADATA_KEY] = json.dumps(description)
    program.model.doc_string = f"DCR face embedder exported from {model_name_or_path}; see {METADATA_FILE}."
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = output_dir / ONNX_FILE
    # One file: DCR's largest trunk (ResNet-152 body) is far below protobuf's 2 GB limit.
    with atomic_path(onnx_path) as temporary:
        program.save(temporary, external_data=False)
    if check:
        description["max_abs_difference"] = onnx_differences(onnx_path, model, processor)
    write_text_atomic(output_dir / METADATA_FILE, json.dumps(description, indent=2) + "\n")
    logger.info(f"Exported {model_name_or_path} to {onnx_path} (opset {opset}).")
    return description


__all__ = [
    "DCROnnxEmbedder",
    "INSTALL_HINT",
    "METADATA_FILE",
    "METADATA_KEY",
    "MIN_OPSET",
    "ONNX_FILE",
    "OnnxExportError",
    "export_description",
    "export_onnx",
    "load_dcr_model",
    "onnx_differences",
]
