"""Convert a checkpoint of the original (unofficial) DCR implementation into a Hugging Face folder.

    python -m dcr_hf.convert_original_checkpoint --checkpoint model_best.pth.tar \
        [--config config.json] --output DIR [--push_to_hub org/dcr-trunk]

The original saves a pickled dict (`epoch`, `state_dict`, `criterion`, `optimizer`, `monitor`);
its `state_dict` keys may carry DDP's `module.` prefix. The architecture is read from the weight
shapes; `config.json` (the original's training arguments) supplies what shapes cannot tell: the
LR scales of the branches, embedding normalization, image size and mean/std.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from transformers.utils import logging

from .configuration_dcr import DCRConfig
from .image_processing_dcr import DCRImageProcessor
from .modeling_dcr import DCRForImageClassification

logger = logging.get_logger(__name__)

# (original key pattern, our key template) for each trunk type; `{s}` is the 0-based stage.
_RESNET_RULES = [
    (r"trunk\.conv1\.weight", "dcr.trunk.embedder.embedder.convolution.weight"),
    (r"trunk\.bn1\.(\w+)", "dcr.trunk.embedder.embedder.normalization.{0}"),
    (r"trunk\.layer(\d+)\.(\d+)\.conv1\.weight", "dcr.trunk.stages.{s}.layers.{1}.layer.0.convolution.weight"),
    (r"trunk\.layer(\d+)\.(\d+)\.bn1\.(\w+)", "dcr.trunk.stages.{s}.layers.{1}.layer.0.normalization.{2}"),
    (r"trunk\.layer(\d+)\.(\d+)\.conv2\.weight", "dcr.trunk.stages.{s}.layers.{1}.layer.1.convolution.weight"),
    (r"trunk\.layer(\d+)\.(\d+)\.bn2\.(\w+)", "dcr.trunk.stages.{s}.layers.{1}.layer.1.normalization.{2}"),
    (r"trunk\.layer(\d+)\.(\d+)\.downsample\.0\.weight", "dcr.trunk.stages.{s}.layers.{1}.shortcut.convolution.weight"),
    (r"trunk\.layer(\d+)\.(\d+)\.downsample\.1\.(\w+)", "dcr.trunk.stages.{s}.layers.{1}.shortcut.normalization.{2}"),
]
_PAPER_RULES = [
    (r"trunk\.conv1\.weight", "dcr.trunk.embedder.embedder.convolution.weight"),
    (r"trunk\.bn1\.(\w+)", "dcr.trunk.embedder.embedder.normalization.{0}"),
    (r"trunk\.relu\.weight", "dcr.trunk.embedder.embedder.activation.weight"),
    (r"trunk\.layer(\d+)\.0\.weight", "dcr.trunk.stages.{s}.downsample.0.weight"),
    (r"trunk\.layer(\d+)\.(\d+)\.conv1\.weight", "dcr.trunk.stages.{s}.layers.{b}.layer.0.convolution.weight"),
    (r"trunk\.layer(\d+)\.(\d+)\.bn1\.(\w+)", "dcr.trunk.stages.{s}.layers.{b}.layer.0.normalization.{2}"),
    (r"trunk\.layer(\d+)\.(\d+)\.relu1\.weight", "dcr.trunk.stages.{s}.layers.{b}.layer.0.activation.weight"),
    (r"trunk\.layer(\d+)\.(\d+)\.conv2\.weight", "dcr.trunk.stages.{s}.layers.{b}.layer.1.convolution.weight"),
    (r"trunk\.layer(\d+)\.(\d+)\.bn2\.(\w+)", "dcr.trunk.stages.{s}.layers.{b}.layer.1.normalization.{2}"),
    (r"trunk\.layer(\d+)\.(\d+)\.relu2\.weight", "dcr.trunk.stages.{s}.layers.{b}.activation.weight"),
]
_COMMON_RULES = [
    (r"trunk\.fc1\.(weight|bias)", "dcr.trunk.projection.{0}"),
    (r"trunk\.fc2\.(weight|bias)", "classifier.{0}"),
    (r"branches\.(\d+)\.fc1\.(weight|bias)", "dcr.branches.{0}.projection.{1}"),
    (r"branches\.(\d+)\.fc2\.(weight|bias)", "branch_classifiers.{0}.classifier.{1}"),
    (r"branches\.(\d+)\.relu\.weight", "branch_classifiers.{0}.activation.weight"),
]
# The paper trunk's stage is Sequential(conv, maxpool, block, block, ...): blocks start at index 2.
_PAPER_FIRST_BLOCK = 2


def load_original_checkpoint(path: str | Path) -> dict:
    """Read an original `*.pth.tar` safely (`weights_only=True`) and return its state dict with
    any `module.` prefix removed, plus the raw `criterion` entry under `"__criterion__"`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f"{path} holds no state dict (expected a dict with a 'state_dict' entry).")
    state_dict = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    criterion = checkpoint.get("criterion") if isinstance(checkpoint, dict) else None
    return {"state_dict": state_dict, "criterion": criterion}


def _detect_trunk_type(state_dict: dict) -> str:
    if "trunk.relu.weight" in state_dict or any(re.fullmatch(r"trunk\.layer\d+\.0\.weight", k) for k in state_dict):
        return "paper"
    return "resnet"


def infer_config(state_dict: dict, original_args: dict | None = None) -> DCRConfig:
    """Read the architecture from weight shapes and the rest from the original training arguments."""
    args = original_args or {}
    trunk_type = _detect_trunk_type(state_dict)
    stages = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"trunk\.layer(\d+)\.", k))})
    if not stages or "trunk.fc1.weight" not in state_dict:
        raise ValueError("not a DCR checkpoint: no 'trunk.layer*' or 'trunk.fc1.weight' keys found.")
    depths, hidden_sizes = [], []
    for s in stages:
        blocks = {int(m.group(1)) for k in state_dict if (m := re.match(rf"trunk\.layer{s}\.(\d+)\.conv1\.weight", k))}
        depths.append(len(blocks))
        last = max(blocks)
        hidden_sizes.append(state_dict[f"trunk.layer{s}.{last}.conv2.weight"].shape[0])
    embedding_size, last_width = state_dict["trunk.fc1.weight"].shape
    branch_ids = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"branches\.(\d+)\.", k))})
    sizes = args.get("scale_list", list(DCRConfig.low_resolution_sizes))
    if branch_ids and len(branch_ids) != len(sizes) + 1:
        raise ValueError(
            f"the checkpoint has {len(branch_ids)} branches but the LR scales are {sizes}: pass the "
            "original config.json (its 'scale_list') with --config."
        )
    num_labels = (
        state_dict["trunk.fc2.weight"].shape[0]
        if "trunk.fc2.weight" in state_dict
        else state_dict["branches.0.fc2.weight"].shape[0]
    )
    return DCRConfig(
        trunk_type=trunk_type,
        depths=depths,
        hidden_sizes=hidden_sizes,
        stem_hidden_size=state_dict["trunk.conv1.weight"].shape[0],
        use_batch_norm=trunk_type == "resnet" or "trunk.bn1.weight" in state_dict,
        embedding_size=embedding_size,
        normalize_embeddings=bool(args.get("normalized_embeddings", True)),
        use_branches=bool(branch_ids),
        branch_hidden_size=state_dict[f"branches.{branch_ids[0]}.fc1.weight"].shape[0] if branch_ids else embedding_size,
        image_size=int(args.get("img_size", DCRConfig.image_size)),
        num_channels=state_dict["trunk.conv1.weight"].shape[1],
        low_resolution_sizes=[int(s) for s in sizes],
        num_labels=num_labels,
    )


def convert_state_dict(state_dict: dict, trunk_type: str) -> dict:
    """Rename the original keys to ours; raise `KeyError` listing every key no rule knows."""
    rules = (_PAPER_RULES if trunk_type == "paper" else _RESNET_RULES) + _COMMON_RULES
    converted, unknown = {}, []
    for key, value in state_dict.items():
        for pattern, template in rules:
            match = re.fullmatch(pattern, key)
            if match:
                groups = match.groups()
                fields = {}
                if template.find("{s}") >= 0:
                    fields["s"] = int(groups[0]) - 1
                if template.find("{b}") >= 0:
                    fields["b"] = int(groups[1]) - _PAPER_FIRST_BLOCK
                converted[template.format(*groups, **fields)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"unknown keys in the original checkpoint ({len(unknown)}): {sorted(unknown)}")
    return converted


def _find_centers(criterion, num_labels: int, size: int) -> torch.Tensor | None:
    """The original's criterion state may carry the class centers; take a `[num_labels, size]` tensor."""
    if not isinstance(criterion, dict):
        return None
    for key, value in criterion.items():
        if torch.is_tensor(value) and tuple(value.shape) == (num_labels, size) and "center" in str(key).lower():
            return value
    return None


def convert_original_checkpoint(
    checkpoint: str | Path, output: str | Path, config: str | Path | None = None, push_to_hub: str | None = None
) -> DCRForImageClassification:
    """Convert an original trunk or trunk+branches checkpoint into a complete HF folder at `output`
    (config with `auto_map`, `model.safetensors`, both model files, `preprocessor_config.json`)."""
    original_args = {}
    if config is not None:
        config_path = Path(config)
        if not config_path.is_file():
            raise FileNotFoundError(f"original config {config_path} does not exist.")
        original_args = json.loads(config_path.read_text())
    loaded = load_original_checkpoint(checkpoint)
    state_dict = loaded["state_dict"]
    dcr_config = infer_config(state_dict, original_args)
    converted = convert_state_dict(state_dict, dcr_config.trunk_type)
    model = DCRForImageClassification(dcr_config)
    centers = _find_centers(loaded["criterion"], dcr_config.num_labels, dcr_config.embedding_size)
    if centers is not None:
        converted["centers"] = centers
    own = model.state_dict()
    # Centers and num_batches_tracked are training state that old checkpoints may lack.
    optional = {"centers", "branch_centers"}
    missing = sorted(k for k in own if k not in converted and k not in optional and not k.endswith("num_batches_tracked"))
    if missing:
        raise KeyError(f"the original checkpoint lacks weights the model needs ({len(missing)}): {missing}")
    for key, value in converted.items():
        if own[key].shape != value.shape:
            raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)} != model shape {tuple(own[key].shape)}.")
    model.load_state_dict(converted, strict=False)
    if centers is None:
        logger.warning("No class centers found in the checkpoint's criterion; centers keep their fresh initialization.")
    model.eval()

    processor = DCRImageProcessor(
        image_size=dcr_config.image_size,
        image_mean=original_args.get("rgb_mean", DCRImageProcessor.image_mean),
        image_std=original_args.get("rgb_std", DCRImageProcessor.image_std),
    )
    output = Path(output)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    if push_to_hub:
        model.push_to_hub(push_to_hub)
        processor.push_to_hub(push_to_hub)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="original model_best.pth.tar / checkpoint.pth.tar")
    parser.add_argument("--config", default=None, help="the original's config.json (training arguments)")
    parser.add_argument("--output_dir", "--output", required=True, help="folder to write the Hugging Face model to")
    parser.add_argument("--push_to_hub", action="store_true", help="also push the folder to --hub_model_id")
    parser.add_argument("--hub_model_id", default=None, metavar="REPO_ID", help="the Hub model repo (org/name)")
    args = parser.parse_args(argv)
    if args.push_to_hub != bool(args.hub_model_id):
        parser.error("--push_to_hub and --hub_model_id org/name go together.")
    try:
        model = convert_original_checkpoint(args.checkpoint, args.output_dir, args.config, args.hub_model_id)
    except (FileNotFoundError, KeyError, ValueError) as error:
        parser.error(str(error))
    kind = "trunk + branches" if model.config.use_branches else "trunk"
    print(f"Converted a {model.config.trunk_type} {kind} checkpoint ({model.config.num_labels} classes) to {args.output_dir}")


if __name__ == "__main__":
    main()
