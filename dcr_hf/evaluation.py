"""Embedding extraction and the evaluation protocols of DCR: verification, identification, retrieval.

Every runner takes a DCR model (`DCRModel`, or `DCRForImageClassification` whose `.dcr` is used)
and a raw dataset from `dcr_hf.data` (no transform attached), attaches the matching transform of
`dcr_hf.data.transforms` with the model's preprocessing (image size, mean/std, LR simulation),
embeds every image batch-wise (distributed with Accelerate when an `Accelerator` is given) and
scores the embeddings with the pure functions of `dcr_hf.metrics`.

Which embedding is used:

- trunk model (`config.use_branches=False`): the trunk embedding, whatever the resolution;
- branch model: HR images through the HR branch, an LR image of size s through branch s.

Results are plain dicts (fractions in [0, 1], not percentages) that `dcr_hf.reports` turns into
tables, `results.json` and ROC plots; numpy ROC curves sit under the `"curves"` key, which the
JSON writer leaves out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.utils import logging

from .configuration_dcr import DCRConfig
from .data.transforms import EvalTransform, PairTransform, apply_transform
from .image_processing_dcr import DCRImageProcessor
from .metrics import (
    cosine_similarity_pairs,
    identification_accuracy,
    retrieval_metrics,
    roc_metrics,
    verification_accuracy,
)
from .modeling_dcr import DCRModel


logger = logging.get_logger(__name__)

#: Protocols the runners and `eval_hf.py` know.
PROTOCOLS = ("verification", "intra-verification", "identification", "retrieval")
#: Datasets `load_evaluation_data` knows, and the protocols each one supports.
DATASET_PROTOCOLS = {
    "lfw": ("verification", "intra-verification", "retrieval"),
    "scface": ("identification",),
    "casia": ("retrieval",),
    "folder": ("retrieval",),
    "synthetic": PROTOCOLS,
}
#: Key of the high-resolution column in the results.
HR = "hr"
DEFAULT_SIZES = (8, 12, 16, 20)

Resolution = int | str | None


# --------------------------------------------------------------------------------------------
# Models and preprocessing
# --------------------------------------------------------------------------------------------


def get_dcr_model(model: torch.nn.Module) -> DCRModel:
    """The `DCRModel` inside `model`: itself, `.dcr` of a `DCRForImageClassification`, or either of
    them wrapped by DDP/Accelerate (`.module`). Raises `ValueError` for any other model."""
    inner = model
    # DistributedDataParallel / torch.compile wrappers keep the real model in `.module` / `._orig_mod`.
    for attribute in ("module", "_orig_mod"):
        while hasattr(inner, attribute) and isinstance(getattr(inner, attribute), torch.nn.Module):
            inner = getattr(inner, attribute)
    config = getattr(inner, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type != DCRConfig.model_type:
        raise ValueError(
            f"Expected a DCR model (config.model_type='dcr'), got {type(inner).__name__} with "
            f"model_type={model_type!r}. Only DCR models (DCRModel, DCRForImageClassification) can be evaluated."
        )
    inner = getattr(inner, "dcr", inner)
    if not isinstance(inner, DCRModel):
        raise ValueError(f"Expected a DCRModel or a model with a `.dcr` DCRModel, got {type(inner).__name__}.")
    return inner


def check_sizes(model: torch.nn.Module, sizes: Iterable[int]) -> tuple[int, ...]:
    """Validate LR probe sizes for `model` before any image is decoded; returns them as a tuple.

    A size must be a positive integer below `config.image_size`; a branch model also needs a branch
    for it (its `config.low_resolution_sizes`). Raises `ValueError` listing what is available.
    """
    config = get_dcr_model(model).config
    checked = []
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 < int(size) < config.image_size:
            raise ValueError(
                f"Low-resolution size {size!r} is invalid: sizes must be integers in [1, {config.image_size - 1}] "
                f"(below the model's image_size={config.image_size})."
            )
        if config.use_branches and int(size) not in config.low_resolution_sizes:
            raise ValueError(
                f"This branch model has no branch for {size}x{size} probes; its branches are HR "
                f"({config.image_size}) and the low-resolution sizes {config.low_resolution_sizes}. "
                "Evaluate one of those sizes (e.g. --sizes " + " ".join(map(str, config.low_resolution_sizes)) + ")."
            )
        checked.append(int(size))
    if len(set(checked)) != len(checked):
        raise ValueError(f"sizes has duplicates: {checked}.")
    return tuple(checked)


def _check_resolution(model: DCRModel, resolution: Resolution) -> Resolution:
    if resolution is None or (isinstance(resolution, str) and resolution.lower() == HR):
        return HR
    if resolution == model.config.image_size:
        return HR
    check_sizes(model, [resolution])
    return int(resolution)


def load_model_and_processor(
    name_or_path: str, **from_pretrained_kwargs: Any
) -> tuple[DCRModel, DCRImageProcessor]:
    """Load a DCR embedder and its image processor from a folder or a Hub id.

    The config is read first so that a non-DCR checkpoint fails with a `ValueError` before any
    weights are loaded. A folder without a saved processor gets a default `DCRImageProcessor` at the
    model's `image_size` (mean/std 0.5), with a warning.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    config = AutoConfig.from_pretrained(name_or_path, **from_pretrained_kwargs)
    if config.model_type != DCRConfig.model_type:
        raise ValueError(
            f"'{name_or_path}' holds a {type(config).__name__} (model_type={config.model_type!r}); "
            "dcr_hf evaluates DCR models only (model_type='dcr')."
        )
    model = AutoModel.from_pretrained(name_or_path, config=config, **from_pretrained_kwargs)
    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path, **from_pretrained_kwargs)
    except (OSError, ValueError) as error:
        logger.warning(
            f"No image processor found for '{name_or_path}' ({error}); using DCRImageProcessor("
            f"image_size={config.image_size}) with mean/std 0.5."
        )
        processor = DCRImageProcessor(image_size=config.image_size)
    if not isinstance(processor, DCRImageProcessor):
        raise ValueError(
            f"'{name_or_path}' saved a {type(processor).__name__}; DCR evaluation needs a DCRImageProcessor."
        )
    # Channels-last convolutions are faster for inference on CPU and GPU (benchmarks/bench_model.py).
    return get_dcr_model(model).to(memory_format=torch.channels_last), processor


def transform_options(model: torch.nn.Module, image_processor: DCRImageProcessor | None = None) -> dict[str, Any]:
    """Keyword arguments of the `dcr_hf.data.transforms` classes that reproduce the preprocessing
    of `image_processor` (default: a `DCRImageProcessor` at the model's `image_size`)."""
    config = get_dcr_model(model).config
    processor = image_processor if image_processor is not None else DCRImageProcessor(image_size=config.image_size)
    if processor.image_size != config.image_size:
        raise ValueError(
            f"The image processor makes {processor.image_size}x{processor.image_size} images but the model "
            f"expects image_size={config.image_size}."
        )
    normalize = getattr(processor, "do_normalize", True)
    return {
        "image_size": processor.image_size,
        "image_mean": tuple(processor.image_mean) if normalize else (0.0, 0.0, 0.0),
        "image_std": tuple(processor.image_std) if normalize else (1.0, 1.0, 1.0),
        "downsample_interpolation": processor.downsample_interpolation,
        "upsample_interpolation": processor.upsample_interpolation,
    }


# --------------------------------------------------------------------------------------------
# Embedding extraction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingView:
    """One image tensor of each batch to embed, and through which branch.

    Attributes:
        name: key of the result.
        input_name: batch key of the pixels, `[batch, 3, H, W]` or `[batch, resolutions, 3, H, W]`.
        resolution: `"hr"` or an LR size; picks the branch of a branch model (ignored by a trunk model).
        copy_index: position on the resolutions axis when `input_name` is 5-D.
    """

    name: str
    input_name: str = "pixel_values"
    resolution: int | str = HR
    copy_index: int | None = None


def _select_pixels(batch: Mapping[str, torch.Tensor], view: EmbeddingView) -> torch.Tensor:
    if view.input_name not in batch:
        raise KeyError(f"The batches have no {view.input_name!r} (view {view.name!r}); they have {sorted(batch)}.")
    pixels = batch[view.input_name]
    if view.copy_index is not None:
        if pixels.ndim != 5:
            raise ValueError(
                f"{view.input_name!r} has shape {tuple(pixels.shape)}; copy_index needs [batch, resolutions, 3, H, W]."
            )
        pixels = pixels[:, view.copy_index]
    if pixels.ndim != 4:
        raise ValueError(f"{view.input_name!r} has shape {tuple(pixels.shape)}; expected [batch, 3, H, W].")
    return pixels


def compute_embedding_views(
    model: torch.nn.Module,
    data: DataLoader | Dataset,
    views: Sequence[EmbeddingView],
    accelerator: Any | None = None,
    flip_tta: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "Embedding",
    show_progress: bool = True,
) -> dict[str, np.ndarray]:
    """Embed several views of every batch in one forward pass per batch.

    All views of a batch (e.g. the HR image and its LR copies) are concatenated into one batch, so
    the trunk runs once per batch; a branch model routes each row to its view's branch.

    Args:
        model: a DCR model (see `get_dcr_model`); it is put in eval mode and restored afterwards. The
            inputs go to the model's device.
        data: a `DataLoader`, or a dataset whose transform yields the views' `input_name`s (batched
            with `batch_size`, in order).
        views: what to embed; names must be unique.
        accelerator: an `accelerate.Accelerator`: the DataLoader is prepared (sharded over processes)
            and the embeddings gathered with `gather_for_metrics`, so every sample is counted exactly
            once (also when the dataset size is not a multiple of the number of processes). Every
            process gets all embeddings.
        flip_tta: also embed the horizontally flipped images and average the two embeddings.
        desc / show_progress: tqdm bar (only on the local main process).

    Returns:
        `{view.name: float32 [num_samples, dim]}`.
    """
    dcr = get_dcr_model(model)
    if not views:
        raise ValueError("views is empty; give at least one EmbeddingView.")
    names = [view.name for view in views]
    if len(set(names)) != len(names):
        raise ValueError(f"View names must be unique, got {names}.")
    views = [
        EmbeddingView(v.name, v.input_name, _check_resolution(dcr, v.resolution), v.copy_index) for v in views
    ]
    if isinstance(data, DataLoader):
        dataloader = data
    else:
        # shuffle=False keeps dataset order, which the protocols rely on (pairs, folds, labels).
        dataloader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    if accelerator is not None:
        dataloader = accelerator.prepare(dataloader)
    is_main = accelerator.is_local_main_process if accelerator is not None else True
    autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
    # Inputs follow the model (a model loaded in half precision gets half-precision pixels).
    parameter = next(dcr.parameters())
    device, dtype = parameter.device, parameter.dtype
    uses_branches = dcr.config.use_branches

    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            for batch in tqdm(dataloader, desc=desc, disable=not (show_progress and is_main)):
                pixels = [_select_pixels(batch, view).to(device, dtype, non_blocking=True) for view in views]
                counts = [p.shape[0] for p in pixels]
                stacked = torch.cat(pixels)
                resolution = None
                if uses_branches:
                    per_view = {view.resolution for view in views}
                    resolution = (
                        next(iter(per_view))
                        if len(per_view) == 1
                        else [view.resolution for view, n in zip(views, counts) for _ in range(n)]
                    )
                if flip_tta:
                    stacked = torch.cat([stacked, stacked.flip(-1)])
                    if isinstance(resolution, list):
                        resolution = resolution + resolution
                embeddings = dcr(stacked, resolution=resolution).pooler_output.float()
                if flip_tta:
                    half = embeddings.shape[0] // 2
                    # The mean keeps the embedding's scale; cosine scores are the same as for the sum.
                    embeddings = (embeddings[:half] + embeddings[half:]) / 2
                outputs = dict(zip(names, torch.split(embeddings, counts)))
                if accelerator is not None:
                    outputs = accelerator.gather_for_metrics(outputs)
                for name, value in outputs.items():
                    collected[name].append(value.cpu().numpy())
    finally:
        model.train(was_training)
    if not collected[names[0]]:
        raise ValueError("The data yielded no batch; nothing to embed.")
    return {name: np.concatenate(chunks) for name, chunks in collected.items()}


def _is_raw_image_dataset(data: Any) -> bool:
    return isinstance(data, Dataset) and data.format["type"] is None and "image" in data.column_names


def compute_embeddings(
    model: torch.nn.Module,
    data: DataLoader | Dataset,
    accelerator: Any | None = None,
    resolution: Resolution = None,
    flip_tta: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    input_name: str = "pixel_values",
    show_progress: bool = True,
) -> np.ndarray:
    """Embeddings `[num_samples, dim]` of every image of `data`, in order.

    `data` is either
    - a raw `datasets.Dataset` with an `image` column (no transform attached): images are decoded
      with the model's preprocessing and, when `resolution` is an LR size s, turned into simulated
      s x s probes, then embedded through branch s (a branch model) or the trunk;
    - a DataLoader, or a dataset with a transform, yielding `input_name` `[batch, 3, H, W]`: the
      pixels are embedded as they are, `resolution` only picks the branch (e.g. real LR probes).

    See `compute_embedding_views` for `accelerator` and `flip_tta`.
    """
    dcr = get_dcr_model(model)
    resolution = _check_resolution(dcr, resolution)
    view = EmbeddingView("embeddings", input_name, resolution)
    if _is_raw_image_dataset(data):
        sizes = () if resolution == HR else (resolution,)
        data = apply_transform(
            data.select_columns(["image"]),
            EvalTransform(low_resolution_sizes=sizes, **transform_options(dcr, image_processor)),
        )
        if sizes:
            view = EmbeddingView("embeddings", "low_resolution_pixel_values", resolution, copy_index=0)
    return compute_embedding_views(
        model,
        data,
        [view],
        accelerator=accelerator,
        flip_tta=flip_tta,
        batch_size=batch_size,
        num_workers=num_workers,
        show_progress=show_progress,
    )["embeddings"]


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------


def _column(dataset: Dataset, name: str, what: str) -> np.ndarray:
    if name not in dataset.column_names:
        raise KeyError(f"The {what} dataset has no column {name!r}; it has {dataset.column_names}.")
    return np.asarray(dataset.select_columns([name]).with_format("numpy")[name])


def _check_raw(dataset: Any, what: str) -> None:
    if not isinstance(dataset, Dataset):
        raise TypeError(f"The {what} must be a datasets.Dataset, got {type(dataset).__name__}.")
    if dataset.format["type"] is not None:
        raise ValueError(
            f"The {what} dataset already has a format/transform ({dataset.format['type']!r}); pass the raw "
            "dataset from dcr_hf.data (the evaluation attaches its own transform)."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {what} dataset is empty.")


def _model_kind(model: DCRModel) -> str:
    return "branch" if model.config.use_branches else "trunk"


def evaluate_verification(
    model: torch.nn.Module,
    pairs_dataset: Dataset,
    sizes: Sequence[int] = DEFAULT_SIZES,
    intra: bool = False,
    flip_tta: bool = False,
    batch_size: int = 64,
    accelerator: Any | None = None,
    threshold_grid: Literal["original"] | Sequence[float] | np.ndarray | None = None,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    far_targets: Sequence[float] = (1e-3, 1e-2, 1e-1),
    show_progress: bool = True,
) -> dict[str, Any]:
    """LFW-style verification of HR images against LR probes, one column per probe size plus HR.

    Protocol of the original implementation: the first image of a pair at HR, the second at each LR
    size (simulated from the image); cosine similarity; 10-fold accuracy with the threshold chosen on
    the other 9 folds (the dataset's `fold` column, else 10 contiguous blocks). The `"hr"` column has
    both images at HR. With `intra=True` both images are at the same LR size.

    Each pair is decoded once; its HR image(s) and all LR copies are embedded in one forward pass.

    Args:
        pairs_dataset: raw pairs with `image_a`, `image_b`, `is_same` and optionally `fold`.
        sizes: LR probe sizes (checked against the model before any image is read).
        threshold_grid: `None` = every distinct decision (exact), `"original"` = the original's grid
            -1.0..1.0 step 0.005, or an array (see `dcr_hf.metrics.verification_accuracy`).
        far_targets: false accept rates at which the true accept rate is reported.

    Returns:
        `{"protocol", "model_kind", "num_pairs", "sizes", "flip_tta", "by_resolution": {"8": {...}, ...,
        "hr": {...}}, "mean_lr_accuracy", "curves"}`; a column holds `accuracy`,
        `accuracy_std`, `threshold`, `fold_accuracies`, `auc`, `eer`, `tar_at_far` (`{"0.001": ...}`);
        `curves` holds numpy `fpr`/`tpr` per column (left out of `results.json`).
        `mean_lr_accuracy` (mean accuracy over the LR sizes) is the validation criterion of
        the published recipe.
    """
    dcr = get_dcr_model(model)
    sizes = check_sizes(dcr, sizes)
    _check_raw(pairs_dataset, "pairs")
    is_same = _column(pairs_dataset, "is_same", "pairs").astype(bool)
    folds = _column(pairs_dataset, "fold", "pairs").astype(np.int64) if "fold" in pairs_dataset.column_names else None
    for name in ("image_a", "image_b"):
        if name not in pairs_dataset.column_names:
            raise KeyError(f"The pairs dataset has no column {name!r}; it has {pairs_dataset.column_names}.")

    transform = PairTransform(low_resolution_sizes=sizes, intra_scale=intra, **transform_options(dcr, image_processor))
    data = apply_transform(pairs_dataset.select_columns(["image_a", "image_b", "is_same"]), transform)
    views = [EmbeddingView("a_hr", "pixel_values_a", HR), EmbeddingView("b_hr", "pixel_values_b", HR)]
    for index, size in enumerate(sizes):
        views.append(EmbeddingView(f"b_{size}", "low_resolution_pixel_values_b", size, index))
        if intra:
            views.append(EmbeddingView(f"a_{size}", "low_resolution_pixel_values_a", size, index))
    protocol = "intra-verification" if intra else "verification"
    embeddings = compute_embedding_views(
        model, data, views, accelerator, flip_tta, batch_size, num_workers, desc=protocol.capitalize(),
        show_progress=show_progress,
    )

    by_resolution: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    for key in [*map(str, sizes), HR]:
        first = embeddings[f"a_{key}"] if intra and key != HR else embeddings["a_hr"]
        scores = cosine_similarity_pairs(first, embeddings[f"b_{key}"])
        verification = verification_accuracy(scores, is_same, folds, threshold_grid=threshold_grid)
        roc = roc_metrics(scores, is_same, far_targets)
        by_resolution[key] = {
            "accuracy": verification.accuracy,
            "accuracy_std": verification.accuracy_std,
            "threshold": verification.threshold,
            "fold_accuracies": verification.fold_accuracies.tolist(),
            "auc": roc.auc,
            "eer": roc.eer,
            "tar_at_far": {f"{far:g}": tar for far, tar in roc.tar_at_far.items()},
        }
        curves[key] = {"fpr": roc.fpr, "tpr": roc.tpr}
    low = [by_resolution[str(size)]["accuracy"] for size in sizes]
    return {
        "protocol": protocol,
        "model_kind": _model_kind(dcr),
        "num_pairs": len(is_same),
        "sizes": list(sizes),
        "flip_tta": flip_tta,
        "threshold_grid": threshold_grid if threshold_grid is None or isinstance(threshold_grid, str) else "custom",
        "by_resolution": by_resolution,
        "mean_lr_accuracy": float(np.mean(low)) if low else None,
        "curves": curves,
    }


def default_probe_resolutions(model: torch.nn.Module, distances: Sequence[int]) -> dict[int, int | str]:
    """Default branch for real LR probes of each distance (a branch model only needs one).

    The k-th distance in ascending id order (SCface: d1 = 4.2 m, the farthest and smallest faces)
    goes to the k-th LR branch (`config.low_resolution_sizes[k - 1]`); distances beyond the number of
    branches go to the last one. This is the layout of the SCface fine-tuning samples (HR mugshot,
    then the captures of d1, d2, d3 as resolution copies 1, 2, 3), and, for the default sizes
    8/12/16/20, pairs the farthest probes with the smallest size. A trunk model ignores it.
    """
    config = get_dcr_model(model).config
    if not config.use_branches:
        return {int(d): HR for d in sorted(distances)}
    sizes = config.low_resolution_sizes
    return {int(d): sizes[min(k, len(sizes) - 1)] for k, d in enumerate(sorted(distances))}


def _probe_resolution_map(
    model: DCRModel, distances: Sequence[int], probe_resolution: Mapping[int, Resolution] | Resolution | str | None
) -> dict[int, int | str]:
    if probe_resolution is None:
        mapping = default_probe_resolutions(model, distances)
    elif isinstance(probe_resolution, Mapping):
        given = {int(d): r for d, r in probe_resolution.items()}
        missing = sorted(set(map(int, distances)) - set(given))
        if missing:
            raise ValueError(
                f"probe_resolution {dict(probe_resolution)} names no resolution for distance(s) {missing}; "
                f"the probes have distances {sorted(map(int, distances))}."
            )
        mapping = {int(d): given[int(d)] for d in distances}
    else:
        mapping = {int(d): probe_resolution for d in distances}
    return {d: _check_resolution(model, r) for d, r in sorted(mapping.items())}


def evaluate_identification(
    model: torch.nn.Module,
    gallery: Dataset,
    probe: Dataset,
    probe_resolution: Mapping[int, Resolution] | Resolution = None,
    ranks: Sequence[int] = (1, 5),
    flip_tta: bool = False,
    batch_size: int = 64,
    accelerator: Any | None = None,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    distance_column: str = "distance",
    show_progress: bool = True,
) -> dict[str, Any]:
    """SCface-style closed-set identification: HR gallery vs real low-resolution probes.

    The gallery (`image`, `label`) is embedded at HR (HR branch of a branch model). Probes (`image`,
    `label`, optionally `distance`) are used as they are (real captures, only resized to the model's
    input size) and embedded through the branch `probe_resolution` names for their distance: a
    mapping `{distance: size or "hr"}`, one value for all, or `None` for `default_probe_resolutions`.
    A trunk model uses its trunk embedding for everything. Rank-k accuracy by cosine similarity, per
    distance (`"d1"`, ...) and over all probes (`"all"`). Probes whose subject is not in the gallery
    are counted (`num_unmatched_probes`) and scored as misses in `rank_k_all_probes`.

    Returns:
        `{"protocol", "model_kind", "ranks", "probe_resolution", "num_gallery", "by_distance":
        {"d1": {"rank_1", "rank_5", "rank_1_all_probes", ..., "num_probes", "num_unmatched_probes",
        "probe_resolution"}, ..., "all": {...}}, "mean_rank1"}`; `mean_rank1`, the mean rank-1 accuracy
        over the distances, is the SCface validation criterion.
    """
    dcr = get_dcr_model(model)
    _check_raw(gallery, "gallery")
    _check_raw(probe, "probe")
    probe_labels = _column(probe, "label", "probe")
    gallery_labels = _column(gallery, "label", "gallery")
    distances = (
        _column(probe, distance_column, "probe").astype(np.int64)
        if distance_column in probe.column_names
        else np.zeros(len(probe), dtype=np.int64)
    )
    resolution_of = _probe_resolution_map(dcr, np.unique(distances).tolist(), probe_resolution)
    options = transform_options(dcr, image_processor)
    common = dict(
        accelerator=accelerator, flip_tta=flip_tta, batch_size=batch_size, num_workers=num_workers,
        show_progress=show_progress,
    )

    gallery_embeddings = compute_embedding_views(
        model,
        apply_transform(gallery.select_columns(["image"]), EvalTransform(low_resolution_sizes=(), **options)),
        [EmbeddingView("gallery", resolution=HR)],
        desc="Gallery",
        **common,
    )["gallery"]
    probe_embeddings = None
    for distance, resolution in resolution_of.items():
        rows = np.flatnonzero(distances == distance)
        subset = apply_transform(
            probe.select(rows).select_columns(["image"]), EvalTransform(low_resolution_sizes=(), **options)
        )
        embedded = compute_embedding_views(
            model, subset, [EmbeddingView("probe", resolution=resolution)], desc=f"Probes d{distance}", **common
        )["probe"]
        if probe_embeddings is None:
            probe_embeddings = np.empty((len(probe), embedded.shape[1]), dtype=np.float32)
        probe_embeddings[rows] = embedded

    def score(rows: np.ndarray) -> dict[str, Any]:
        result = identification_accuracy(
            probe_embeddings[rows], probe_labels[rows], gallery_embeddings, gallery_labels, ranks=ranks
        )
        out: dict[str, Any] = {f"rank_{k}": v for k, v in result.accuracy_at_rank.items()}
        out.update({f"rank_{k}_all_probes": v for k, v in result.accuracy_at_rank_all_probes.items()})
        out.update(num_probes=result.num_probes, num_unmatched_probes=result.num_unmatched_probes)
        return out

    by_distance: dict[str, dict[str, Any]] = {}
    if distance_column in probe.column_names:
        for distance, resolution in resolution_of.items():
            rows = np.flatnonzero(distances == distance)
            by_distance[f"d{distance}"] = {**score(rows), "probe_resolution": resolution}
    by_distance["all"] = score(np.arange(len(probe)))
    per_distance = [column["rank_1"] for key, column in by_distance.items() if key != "all"]
    return {
        "protocol": "identification",
        "model_kind": _model_kind(dcr),
        "ranks": sorted(int(k) for k in ranks),
        "probe_resolution": {str(d): r for d, r in resolution_of.items()},
        "flip_tta": flip_tta,
        "num_gallery": len(gallery),
        "by_distance": by_distance,
        "mean_rank1": float(np.mean(per_distance)) if per_distance else by_distance["all"]["rank_1"],
    }


def evaluate_retrieval(
    model: torch.nn.Module,
    dataset: Dataset,
    sizes: Sequence[int] = DEFAULT_SIZES,
    flip_tta: bool = False,
    batch_size: int = 64,
    accelerator: Any | None = None,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    metric: Literal["cosine", "l2"] = "cosine",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Cross-resolution retrieval: LR queries against HR references (precision@1, R-precision, MAP@R).

    Every image of `dataset` (`image`, `label`) is embedded at HR and at each LR size in one pass.
    Column s: queries = the LR-s embeddings, references = the HR embeddings of all images (as the
    original; a query's own HR image is among its references). Column `"hr"`: HR queries against the
    other HR images (the query itself left out).

    Returns:
        `{"protocol", "model_kind", "sizes", "num_images", "by_resolution": {"8": {"precision_at_1",
        "r_precision", "map_at_r", "num_queries", "num_unmatched_queries"}, ..., "hr": {...}},
        "mean_lr_precision_at_1"}`.
    """
    dcr = get_dcr_model(model)
    sizes = check_sizes(dcr, sizes)
    _check_raw(dataset, "retrieval")
    labels = _column(dataset, "label", "retrieval")
    transform = EvalTransform(low_resolution_sizes=sizes, **transform_options(dcr, image_processor))
    data = apply_transform(dataset.select_columns(["image"]), transform)
    views = [EmbeddingView(HR, "pixel_values", HR)] + [
        EmbeddingView(str(size), "low_resolution_pixel_values", size, index) for index, size in enumerate(sizes)
    ]
    embeddings = compute_embedding_views(
        model, data, views, accelerator, flip_tta, batch_size, num_workers, desc="Retrieval",
        show_progress=show_progress,
    )

    def summarize(result) -> dict[str, Any]:
        return {
            "precision_at_1": result.precision_at_1,
            "r_precision": result.r_precision,
            "map_at_r": result.mean_average_precision_at_r,
            "num_queries": result.num_queries,
            "num_unmatched_queries": result.num_unmatched_queries,
        }

    by_resolution = {
        str(size): summarize(retrieval_metrics(embeddings[str(size)], labels, embeddings[HR], labels, metric=metric))
        for size in sizes
    }
    low = [by_resolution[str(size)]["precision_at_1"] for size in sizes]
    by_resolution[HR] = summarize(retrieval_metrics(embeddings[HR], labels, metric=metric))
    return {
        "protocol": "retrieval",
        "model_kind": _model_kind(dcr),
        "sizes": list(sizes),
        "flip_tta": flip_tta,
        "metric": metric,
        "num_images": len(labels),
        "by_resolution": by_resolution,
        "mean_lr_precision_at_1": float(np.mean(low)) if low else None,
    }


#: The criterion of each protocol: one number to select checkpoints on (the original's choices for
#: verification and SCface identification).
CRITERIA = {
    "verification": "mean_lr_accuracy",
    "intra-verification": "mean_lr_accuracy",
    "identification": "mean_rank1",
    "retrieval": "mean_lr_precision_at_1",
}


def summary_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics of a runner result as a flat `{name: float}`, for logging (`Trainer.log`,
    TensorBoard) and checkpoint selection: `"<metric>_<column>"` (`accuracy_8`, `auc_hr`,
    `tar@far=0.001_8`, `rank_1_d1`, `map_at_r_12`) plus the protocol's criterion (`CRITERIA`)."""
    columns = results.get("by_resolution", results.get("by_distance"))
    if columns is None:
        raise KeyError(f"Not a runner result: no 'by_resolution' or 'by_distance' among {sorted(results)}.")
    flat: dict[str, float] = {}
    for key, column in columns.items():
        for name, value in column.items():
            if isinstance(value, Mapping):  # tar_at_far
                flat.update({f"tar@far={far}_{key}": float(tar) for far, tar in value.items()})
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                flat[f"{name}_{key}"] = float(value)
    criterion = CRITERIA.get(results.get("protocol"))
    if criterion is not None and results.get(criterion) is not None:
        flat[criterion] = float(results[criterion])
    return flat


# --------------------------------------------------------------------------------------------
# Data and dispatch for the command line
# --------------------------------------------------------------------------------------------


def check_dataset_protocol(dataset: str, protocol: str, data_root: str | None = None) -> None:
    """Raise `ValueError` when `protocol` does not apply to `dataset` or a needed `data_root` is missing."""
    if dataset not in DATASET_PROTOCOLS:
        raise ValueError(f"dataset={dataset!r} is not supported; expected one of {sorted(DATASET_PROTOCOLS)}.")
    if protocol not in DATASET_PROTOCOLS[dataset]:
        raise ValueError(
            f"protocol={protocol!r} does not apply to dataset={dataset!r}; it supports {DATASET_PROTOCOLS[dataset]}."
        )
    if dataset != "synthetic" and data_root is None:
        raise ValueError(f"dataset={dataset!r} needs data_root (the folder holding its files).")


def load_evaluation_data(
    dataset: str,
    protocol: str,
    data_root: str | None = None,
    *,
    pairs_file: str | None = None,
    casia_fold: int = 0,
    num_finetune_subjects: int = 50,
    synthetic_options: Mapping[str, Any] | None = None,
) -> Dataset | DatasetDict:
    """The raw data a protocol needs: pairs (verification), a `gallery`/`probe` `DatasetDict`
    (identification) or an identity dataset with `image`/`label` (retrieval).

    `dataset` is one of `DATASET_PROTOCOLS`: `lfw` (pairs, or identities for retrieval), `scface`
    (test subjects), `casia` (the validation subjects of `casia_fold`), `folder` (an
    identity-per-folder tree, a saved dataset or a Hub dataset id in `data_root`) or `synthetic`
    (`dcr_hf.data.synthetic.load_synthetic(**synthetic_options)`, no files needed).
    """
    check_dataset_protocol(dataset, protocol, data_root)
    verification = protocol in ("verification", "intra-verification")
    if dataset == "synthetic":
        from .data.synthetic import load_synthetic

        options = dict(synthetic_options or {})
        if protocol == "identification":
            return DatasetDict({split: load_synthetic(split=split, **options) for split in ("gallery", "probe")})
        return load_synthetic(split="pairs" if verification else "retrieval", **options)
    if dataset == "lfw":
        from .data.lfw import load_lfw_identities, load_lfw_pairs

        return load_lfw_pairs(data_root, pairs_file) if verification else load_lfw_identities(data_root)
    if dataset == "scface":
        from .data.scface import load_scface

        return load_scface(data_root, num_finetune_subjects)
    if dataset == "casia":
        from .data.casia import load_casia

        splits = load_casia(data_root, fold=casia_fold)
        if "validation" not in splits:
            raise ValueError(f"casia_fold={casia_fold} holds out no subjects; use a fold in 0..9 for retrieval.")
        return splits["validation"]
    from .data.generic import load_face_dataset

    loaded = load_face_dataset(data_root)
    if isinstance(loaded, DatasetDict):
        if len(loaded) != 1:
            raise ValueError(f"'{data_root}' has the splits {list(loaded)}; save the one to evaluate on its own.")
        loaded = next(iter(loaded.values()))
    return loaded


def run_protocol(
    protocol: str,
    model: torch.nn.Module,
    data: Dataset | DatasetDict,
    sizes: Sequence[int] = DEFAULT_SIZES,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run one of `PROTOCOLS` on data from `load_evaluation_data`; `kwargs` go to the runner
    (`flip_tta`, `batch_size`, `accelerator`, `num_workers`, `image_processor`, and per protocol
    `threshold_grid` or `probe_resolution`)."""
    if protocol in ("verification", "intra-verification"):
        return evaluate_verification(model, data, sizes=sizes, intra=protocol == "intra-verification", **kwargs)
    if protocol == "identification":
        if not isinstance(data, DatasetDict) or {"gallery", "probe"} - set(data):
            raise ValueError("identification needs a DatasetDict with 'gallery' and 'probe' splits.")
        return evaluate_identification(model, data["gallery"], data["probe"], **kwargs)
    if protocol == "retrieval":
        return evaluate_retrieval(model, data, sizes=sizes, **kwargs)
    raise ValueError(f"protocol={protocol!r} is not one of {PROTOCOLS}.")


__all__ = [
    "CRITERIA",
    "DATASET_PROTOCOLS",
    "DEFAULT_SIZES",
    "EmbeddingView",
    "HR",
    "PROTOCOLS",
    "check_dataset_protocol",
    "check_sizes",
    "compute_embedding_views",
    "compute_embeddings",
    "default_probe_resolutions",
    "evaluate_identification",
    "evaluate_retrieval",
    "evaluate_verification",
    "get_dcr_model",
    "load_evaluation_data",
    "load_model_and_processor",
    "run_protocol",
    "summary_metrics",
    "transform_options",
]
