"""ONNX export of the DCR embedder: `dcr-export-onnx --model FOLDER_OR_ID --output DIR`.

Writes `DIR/model.onnx`, the embedder (`DCRModel`) as one graph: input `pixel_values`
`[batch, 3, image_size, image_size]` (float32, preprocessed by the model's `DCRImageProcessor`)
and, for a model with branches, `branch_index` `[batch]` (int64: 0 = HR gallery branch, i = the
i-th LR size), output `embeddings` `[batch, size]`; the batch size is dynamic. `DIR/dcr_onnx.json`
says how to feed it (the branch index of each resolution, the processor's settings), the opset and
the largest onnxruntime / PyTorch difference per branch measured right after the export; the same
description (without the measurement) is in the model's `metadata_props` under `dcr_onnx`.

The export uses `torch.onnx.export`'s default, torch.export-based exporter (the TorchScript one
is deprecated since torch 2.9); it needs `onnxscript`, and the check needs `onnxruntime`:
`pip install "dcr-hf[onnx]"`.

This module is the command line (light: `--help` loads no torch); the export is
`dcr_hf.onnx_embedder`, whose main names are importable from here too.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

#: The export's names importable from here, loaded on first use (the rest are in `dcr_hf.onnx_embedder`).
_EXPORTED = ("METADATA_FILE", "METADATA_KEY", "ONNX_FILE", "OnnxExportError", "export_onnx")


def __getattr__(name: str) -> object:
    if name not in _EXPORTED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import onnx_embedder

    return getattr(onnx_embedder, name)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (`dcr-export-onnx`); errors end with one usage line and exit status 2. Returns
    nothing, so the command exits 0 (a console script passes `main()`'s value to `sys.exit`);
    `export_onnx` returns the description."""
    parser = argparse.ArgumentParser(prog="dcr-export-onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "--model_name_or_path", required=True, metavar="FOLDER_OR_ID",
                        help="a DCR model folder or Hub id (trunk or branch model)")
    parser.add_argument("--output", "--output_dir", required=True, metavar="DIR", help="folder to write model.onnx to")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, recorded)")
    parser.add_argument("--no_check", action="store_true", help="skip the onnxruntime / PyTorch comparison")
    args = parser.parse_args(argv)
    # The work, imported once the arguments parsed (`--help` needs none of it).
    from .onnx_embedder import ONNX_FILE, OnnxExportError, export_onnx

    try:
        description = export_onnx(args.model, args.output, opset_version=args.opset, check=not args.no_check)
    except OnnxExportError as error:
        parser.error(str(error))
    inputs = " + ".join(f"{name} {info['shape']}" for name, info in description["inputs"].items())
    print(f"Exported {args.model} to {Path(args.output) / ONNX_FILE} (opset {description['opset']}; inputs {inputs}).")
    if "max_abs_difference" in description:
        differences = ", ".join(f"{name} {value:.1e}" for name, value in description["max_abs_difference"].items())
        print(f"onnxruntime vs PyTorch, largest embedding difference per branch: {differences}")


__all__ = [*_EXPORTED, "main"]


if __name__ == "__main__":
    main()
