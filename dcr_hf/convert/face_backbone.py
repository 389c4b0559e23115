"""A face-recognition backbone (insightface arcface_torch, AdaFace, CVLface) converted into a DCR
trunk folder: the work of `dcr-convert --source arcface_torch|adaface|cvlface`.

The user names the architecture (`IRESNET_BODIES`); the file's keys and shapes are checked against
it (`keymap.map_weights`, the first mismatch in one line) before anything is written. The folder
holds a `DCRModel` (`config.json` with `auto_map`, `model.safetensors`, the travelling code), a
processor that reproduces the source's preprocessing (112x112, mean/std 0.5, the source's channel
order) and a model card naming the source project, architecture, training set and licence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import hub
from ..configuration_dcr import IRESNET_BODIES
from ..image_processing_dcr import CHANNEL_ORDERS, DCRImageProcessor
from ..model_files import looks_like_hub_id
from ..modeling_dcr import DCRModel
from ..original.conversion import check_output
from ..original.errors import ConversionError
from .adaface import adaface_name, read_adaface
from .arcface_torch import arcface_torch_name, read_arcface_torch
from .cvlface import read_cvlface
from .keymap import architecture_config, map_weights


@dataclass(frozen=True)
class FaceSource:
    """A project whose backbones convert: how its files are read and what its networks expect."""

    project: str  # as the model card names it
    url: str
    trunk_types: tuple[str, ...]  # the `IRESNET_BODIES` families it publishes
    channel_order: str  # of its network's input
    read: Callable[[Path], dict[str, torch.Tensor]]  # the backbone state dict of one of its files
    training_dropout: dict[str, float]  # its dropout before the embedding layer, per trunk type


SOURCES: dict[str, FaceSource] = {
    "arcface_torch": FaceSource(
        "insightface arcface_torch", "https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",
        ("iresnet",), "rgb", read_arcface_torch, {"iresnet": 0.0},
    ),
    "adaface": FaceSource(
        "AdaFace", "https://github.com/mk-minchul/AdaFace", ("ir",), "bgr", read_adaface, {"ir": 0.4},
    ),
    "cvlface": FaceSource(
        "CVLface", "https://github.com/mk-minchul/CVLface", ("ir", "iresnet"), "rgb", read_cvlface,
        {"ir": 0.4, "iresnet": 0.0},
    ),
}
#: The licence name that stands for insightface's terms for its released models.
INSIGHTFACE_LICENSE = "insightface-non-commercial"


@dataclass(frozen=True)
class ConvertedSource:
    """Where a converted trunk came from, as its model card shows it."""

    source: str  # a `SOURCES` key
    architecture: str
    checkpoint: str  # the file's name (not its local path)
    dataset: str | None = None
    license: str | None = None
    base_model: str | None = None  # a Hub id

    def card_values(self) -> dict[str, str | None]:
        """The values of the card's "Converted from" section."""
        project = SOURCES[self.source]
        note = None
        if self.license == INSIGHTFACE_LICENSE:
            note = ("insightface's released pretrained models are available for non-commercial research purposes "
                    "only; these converted weights carry the same terms.")
        return {"project": project.project, "url": project.url, "architecture": self.architecture,
                "checkpoint": self.checkpoint, "dataset": self.dataset, "license": self.license, "license_note": note}


def check_source_options(source: str, architecture: str | None, base_model: str | None, channel_order: str | None) -> None:
    """One line, before any file is read, for an unknown source, an architecture the source does not
    publish, a `--base_model` that is not a Hub id, an unknown channel order."""
    if source not in SOURCES:
        raise ConversionError(f"--source {source!r} is not one of {('original', *SOURCES)}.")
    if architecture is None:
        raise ConversionError(f"--source {source} needs --architecture, one of {tuple(IRESNET_BODIES)}.")
    if architecture not in IRESNET_BODIES:
        raise ConversionError(f"--architecture {architecture!r} is not one of {tuple(IRESNET_BODIES)}.")
    family = IRESNET_BODIES[architecture]["trunk_type"]
    if family not in SOURCES[source].trunk_types:
        names = [name for name, body in IRESNET_BODIES.items() if body["trunk_type"] in SOURCES[source].trunk_types]
        raise ConversionError(f"--architecture {architecture} is not one of the {SOURCES[source].project} networks {names}.")
    if base_model is not None and not looks_like_hub_id(base_model):
        raise ConversionError(
            f"--base_model {base_model!r} is not a Hub model id (org/name); a local path is not recorded as the base model."
        )
    if channel_order is not None and channel_order not in CHANNEL_ORDERS:
        raise ConversionError(f"--channel_order {channel_order!r} is not one of {CHANNEL_ORDERS}.")


def convert_face_backbone(
    source: str,
    checkpoint: str | Path,
    architecture: str,
    output: str | Path,
    *,
    overwrite: bool = False,
    source_dataset: str | None = None,
    source_license: str | None = None,
    base_model: str | None = None,
    channel_order: str | None = None,
    push_to_hub: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> DCRModel:
    """Convert a `source` backbone file into a DCR trunk folder at `output` (see the module) and
    return the model (eval mode). `channel_order` overrides the source's (`SOURCES`); raises
    `ConversionError` in one line, before writing, on anything that would not convert exactly."""
    check_source_options(source, architecture, base_model, channel_order)
    output, checkpoint = Path(output), Path(checkpoint)
    check_output(output, overwrite)
    spec = SOURCES[source]
    family = IRESNET_BODIES[architecture]["trunk_type"]
    config = architecture_config(architecture, trunk_dropout=spec.training_dropout[family], normalize_embeddings=True)
    if family == "iresnet":
        name_of = arcface_torch_name
        description = f"an {architecture} IResNet backbone (insightface arcface_torch layout)"
    else:
        def name_of(ours: str) -> str:
            return adaface_name(ours, config.depths)

        description = f"an {architecture} IR backbone (AdaFace layout)"
    weights = map_weights(spec.read(checkpoint), config, name_of, checkpoint, description)
    model = DCRModel(config)
    model.load_state_dict(weights, strict=False)
    model.eval()
    processor = DCRImageProcessor(image_size=config.image_size, image_mean=0.5, image_std=0.5,
                                  channel_order=channel_order or spec.channel_order)
    processor.write_to_model_config(model.config)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    provenance = ConvertedSource(source, architecture, checkpoint.name, source_dataset, source_license, base_model)
    hub.write_model_card(output, "trunk", repo_id=push_to_hub, base_model=base_model, converted_from=provenance.card_values())
    if push_to_hub:
        hub.push_or_explain(output, push_to_hub, commit_message=f"Convert a {spec.project} {architecture} backbone",
                            token=token, private=private, revision=revision)
    return model


__all__ = ["INSIGHTFACE_LICENSE", "SOURCES", "ConvertedSource", "FaceSource", "check_source_options", "convert_face_backbone"]
