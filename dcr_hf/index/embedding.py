"""Faces to embeddings for the gallery index: the enrolled faces at HR, the probes through the
branch nearest their native size, and the identity of the model that embeds them.

- `load_gallery`: an identity-per-folder tree (`ROOT/<identity>/<image>`, links confined to the
  root as every loader does) or a prepared dataset folder (`dcr-prepare`, `save_to_disk`), with
  `image` and `label` columns; empty sources and unreadable files are refused before any model runs.
- `embed_gallery`: HR embeddings (the HR branch of a branch model, the trunk otherwise), as
  `dcr_hf.evaluation.embeddings.compute_embeddings` makes them for every protocol.
- `read_probes` / `embed_probes`: probe files, each preprocessed as it is and embedded through
  `dcr_hf.pipeline_dcr.nearest_resolution` of its shorter side (the pipeline's routing).
- `model_identity`: name, revision and a sha256 of the weights, saved with an index and compared
  when it is searched.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from datasets import Dataset, DatasetDict, Image

from ..data.decode import DECODE_ERRORS
from ..data.generic import load_face_dataset
from ..errors_dcr import DCRFileError, DCRFileNotFoundError, DCRInputError
from ..evaluation.embeddings import HR, compute_embeddings, get_dcr_model
from ..pipeline_dcr import nearest_resolution


def load_gallery(source: str | os.PathLike, *, follow_symlinks_outside_root: bool = False) -> Dataset:
    """The enrolled faces of `source` (`image`, `label`), every image file checked to open."""
    path = Path(source).expanduser()
    if not path.is_dir():
        raise DCRFileNotFoundError(f"Gallery {source} is not a folder; expected ROOT/<identity>/<image> or a prepared dataset folder.")
    loaded = load_face_dataset(path, follow_symlinks_outside_root=follow_symlinks_outside_root)
    if isinstance(loaded, DatasetDict):
        if len(loaded) != 1 and "train" not in loaded:
            raise DCRInputError(f"Gallery {source} holds the splits {sorted(loaded)}; expected one split (or 'train').")
        loaded = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
    if len(loaded) == 0:
        raise DCRInputError(f"Gallery {source} holds no image; expected ROOT/<identity>/<image>.")
    for value in loaded.cast_column("image", Image(decode=False))["image"]:
        if value.get("bytes") is None and value.get("path"):
            _check_opens(value["path"])
    return loaded


def _check_opens(path: str) -> None:
    """PIL can read the file's header (a cheap check; decoding errors are still named later)."""
    try:
        with PIL.Image.open(path) as image:
            image.verify()
    except DECODE_ERRORS as error:
        raise DCRFileError(f"Cannot read image {path}: {error}") from None


def embed_gallery(model: torch.nn.Module, processor: Any, gallery: Dataset, batch_size: int = 64,
                  ) -> tuple[np.ndarray, list[str], list[str]]:
    """HR embeddings `[n, dim]`, identity names `[n]` and source files `[n]` ("" for embedded bytes)."""
    embeddings = compute_embeddings(model, gallery.select_columns(["image"]), image_processor=processor,
                                    batch_size=batch_size, show_progress=False)
    labels = gallery.features["label"]
    identities = [labels.int2str(int(label)) for label in gallery["label"]]
    sources = [value.get("path") or "" for value in gallery.cast_column("image", Image(decode=False))["image"]]
    return embeddings, identities, sources


def read_probes(images: Sequence[str | os.PathLike]) -> list[tuple[str, PIL.Image.Image]]:
    """`(path, RGB image)` of every probe file; a missing or unreadable one is one line."""
    if not images:
        raise DCRInputError("No probe image given; pass one or more image files.")
    probes = []
    for path in images:
        if not Path(path).is_file():
            raise DCRFileNotFoundError(f"Probe image {path} not found.")
        try:
            with PIL.Image.open(path) as image:
                probes.append((str(path), image.convert("RGB")))
        except DECODE_ERRORS as error:
            raise DCRFileError(f"Cannot read probe image {path}: {error}") from None
    return probes


def probe_resolution(model: torch.nn.Module, width: int, height: int) -> int | str:
    """The branch for a `width` x `height` probe: `nearest_resolution` of its shorter side (branch
    models), `"hr"` for a trunk model."""
    config = get_dcr_model(model).config
    if not config.use_branches:
        return HR
    return nearest_resolution(min(width, height), list(config.low_resolution_sizes), config.image_size)


def embed_probes(model: torch.nn.Module, processor: Any, probes: Sequence[tuple[str, PIL.Image.Image]],
                 batch_size: int = 64) -> tuple[np.ndarray, list[int | str]]:
    """Embeddings `[num_probes, dim]` of the probes, each through its branch, and the branch of each."""
    dcr = get_dcr_model(model)
    parameter = next(dcr.parameters())
    routes = [probe_resolution(dcr, image.width, image.height) for _, image in probes]
    embeddings = np.empty((len(probes), dcr.config.embedding_size), dtype=np.float32)
    was_training = dcr.training
    dcr.eval()
    try:
        with torch.inference_mode():
            for route in dict.fromkeys(routes):
                rows = [i for i, r in enumerate(routes) if r == route]
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start : start + batch_size]
                    pixels = processor([probes[i][1] for i in chunk], return_tensors="pt").pixel_values
                    output = dcr(pixels.to(parameter.device, parameter.dtype), resolution=route).pooler_output
                    embeddings[chunk] = output.float().cpu().numpy()
    finally:
        dcr.train(was_training)
    return embeddings, routes


def model_identity(model: torch.nn.Module, name_or_path: str) -> dict[str, Any]:
    """`{"name_or_path", "revision", "weights_sha256"}`: the Hub commit when the model came from the
    Hub (`config._commit_hash`), and a sha256 of every weight (names, dtypes, shapes, bytes) in order."""
    dcr = get_dcr_model(model)
    digest = hashlib.sha256()
    for name, tensor in dcr.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"name_or_path": str(name_or_path), "revision": getattr(dcr.config, "_commit_hash", None),
            "weights_sha256": digest.hexdigest()}


__all__ = ["embed_gallery", "embed_probes", "load_gallery", "model_identity", "probe_resolution", "read_probes"]
