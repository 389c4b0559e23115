"""The dataset registry: one spec per dataset, used by training, evaluation, `prepare` and the cards.

A `DatasetSpec` says what a dataset is called on a model card, whether it needs a data root,
how its training set is loaded, which evaluation protocols it supports and how their data is
loaded, and which dataset (and protocol) validates a training run on it. Every option a loader
reads is a field of `DatasetOptions`, the one vocabulary of `train_hf.py`, `eval_hf.py` and the
Python API (`--data_root`, `--casia_fold`, `--synthetic_num_pairs`, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors_dcr import DCRFileNotFoundError, DCRInputError
from ..model_files import looks_like_hub_id

if TYPE_CHECKING:  # imported where used: the command lines' `--help` reads this module without `datasets`
    from datasets import Dataset, DatasetDict

#: Evaluation protocols, and the ones that score verification pairs.
PROTOCOLS = (
    "verification", "intra-verification", "identification", "retrieval", "intra-retrieval",
    "closed-set-identification", "native-verification", "open-set-identification",
)
PAIR_PROTOCOLS = ("verification", "intra-verification")
RETRIEVAL_PROTOCOLS = ("retrieval", "intra-retrieval")
#: Protocols on native low-resolution faces (TinyFace, QMUL-SurvFace): images used as they are, no simulated sizes.
NATIVE_PROTOCOLS = ("closed-set-identification", "native-verification", "open-set-identification")


@dataclass
class DatasetOptions:
    """Where the faces come from: the options every dataset loader reads (one name each)."""

    data_root: str | None = field(
        default=None,
        metadata={"help": "Folder holding Casia/, LFW/, SCface/ (or a prepared dataset folder); for 'folder' an "
                  "identity-per-folder tree, a saved dataset or a Hub dataset id; for 'recordio' the folder holding "
                  "train.rec, train.idx and property; for 'tinyface' the folder holding Testing_Set/, for 'survface' "
                  "the one holding Face_*_Test_Set/; for 'bin' one or more insightface .bin files, comma-separated."},
    )
    casia_fold: int | None = field(
        default=None, metadata={"help": "CASIA subject fold 0..9 held out for validation/retrieval; >= 10: none."}
    )
    pairs_file: str | None = field(
        default=None, metadata={"help": "LFW pairs file (default: LFW/lfw_test_pair.txt, else LFW/pairs.txt)."}
    )
    num_finetune_subjects: int = field(default=50, metadata={"help": "SCface subjects kept for fine-tuning (not tested)."})
    tinyface_aligned_dir: str | None = field(
        default=None,
        metadata={"help": "TinyFace: read the images from this aligned copy (relative to --data_root, e.g. "
                  "aligned_pad_0.1_pad_high) holding Probe/, Gallery_Match/, Gallery_Distractor/; the .mat lists "
                  "and native probe sizes still come from Testing_Set/."},
    )
    tinyface_no_distractors: bool = field(
        default=False, metadata={"help": "TinyFace: search the match gallery only (a variant, named so in the results)."}
    )
    strict_data: bool = field(default=False, metadata={"help": "Raise on missing or unreadable images instead of skipping them."})
    follow_symlinks_outside_root: bool = field(
        default=False, metadata={"help": "Read files whose symlinks point outside --data_root (refused by default)."}
    )
    image_column: str = field(default="image", metadata={"help": "Image column of a generic dataset."})
    label_column: str = field(default="label", metadata={"help": "Label column of a generic dataset."})
    synthetic_num_identities: int = field(default=200, metadata={"help": "Synthetic: training identities."})
    synthetic_images_per_identity: int = field(default=10, metadata={"help": "Synthetic: views per training identity."})
    synthetic_num_pairs: int = field(default=600, metadata={"help": "Synthetic: verification pairs (a multiple of 20)."})
    synthetic_num_verification_identities: int = field(
        default=50, metadata={"help": "Synthetic: held-out identities of the pairs and retrieval splits (>= 20)."}
    )
    synthetic_verification_images_per_identity: int = field(
        default=10, metadata={"help": "Synthetic: views per held-out identity of the pairs and retrieval splits (>= 2)."}
    )
    synthetic_num_subjects: int = field(default=40, metadata={"help": "Synthetic: SCface-style gallery/probe subjects."})
    synthetic_seed: int = field(default=0, metadata={"help": "Synthetic: the seed of the faces."})
    synthetic_image_size: int | None = field(
        default=None, metadata={"help": "Synthetic: side of the rendered faces (> 40; default: the model's image_size)."}
    )


@dataclass(frozen=True)
class TrainingSplit:
    """A training set as loaded, before any transform."""

    dataset: Dataset
    real_low_resolution: bool  # rows carry real LR images (the SCface fine-tuning form)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything dcr_hf knows about one dataset."""

    name: str
    card_name: str
    needs_data_root: bool
    protocols: tuple[str, ...]
    load_protocol: Callable[[DatasetOptions, str, int], Dataset | DatasetDict]
    load_train: Callable[[DatasetOptions, int], TrainingSplit] | None = None
    validation_protocol: str | None = None  # the protocol when this dataset validates a training run
    validated_by: str | None = None  # the dataset that validates a training run on this one
    preparable: bool = False  # `python -m dcr_hf.data prepare` can write it with embedded bytes
    real_low_resolution_probes: bool = False  # its LR probes are real captures (SCface), not simulated


def _root(options: DatasetOptions, name: str) -> str:
    if options.data_root is None:
        raise DCRInputError(f"--dataset {name} needs --data_root (the folder holding its files).")
    if not Path(options.data_root).exists():
        raise DCRFileNotFoundError(f"data root '{options.data_root}' does not exist (given for --dataset {name}).")
    return options.data_root


def _links(options: DatasetOptions) -> dict[str, bool]:
    return {"follow_symlinks_outside_root": options.follow_symlinks_outside_root}


def _synthetic(options: DatasetOptions, split: str, image_size: int) -> Dataset:
    from .synthetic import load_synthetic

    return load_synthetic(
        split,
        num_identities=options.synthetic_num_identities,
        images_per_identity=options.synthetic_images_per_identity,
        image_size=options.synthetic_image_size or image_size,
        seed=options.synthetic_seed,
        num_pairs=options.synthetic_num_pairs,
        num_verification_identities=options.synthetic_num_verification_identities,
        num_surveillance_subjects=options.synthetic_num_subjects,
        verification_images_per_identity=options.synthetic_verification_images_per_identity,
    )


def _synthetic_protocol(options: DatasetOptions, protocol: str, image_size: int) -> Dataset | DatasetDict:
    if protocol == "identification":
        from datasets import DatasetDict

        return DatasetDict({split: _synthetic(options, split, image_size) for split in ("gallery", "probe")})
    return _synthetic(options, "pairs" if protocol in PAIR_PROTOCOLS else "retrieval", image_size)


def _lfw_protocol(options: DatasetOptions, protocol: str, image_size: int) -> Dataset:
    from .lfw import load_lfw_identities, load_lfw_pairs

    root = _root(options, "lfw")
    if protocol in PAIR_PROTOCOLS:
        return load_lfw_pairs(root, options.pairs_file, strict=options.strict_data, **_links(options))
    return load_lfw_identities(root, **_links(options))


def _scface_protocol(options: DatasetOptions, protocol: str, image_size: int) -> DatasetDict:
    from .scface import load_scface

    return load_scface(
        _root(options, "scface"), options.num_finetune_subjects, strict=options.strict_data, **_links(options)
    )


def _casia_protocol(options: DatasetOptions, protocol: str, image_size: int) -> Dataset:
    from .casia import load_casia

    fold = 0 if options.casia_fold is None else options.casia_fold
    splits = load_casia(_root(options, "casia"), fold=fold, strict=options.strict_data, **_links(options))
    if "validation" not in splits:
        raise DCRInputError(f"--casia_fold {fold} holds out no subjects; use a fold in 0..9 for retrieval.")
    return splits["validation"]


def _folder_protocol(options: DatasetOptions, protocol: str, image_size: int) -> Dataset:
    from datasets import DatasetDict

    loaded = _generic(options, _root(options, "folder"))
    if isinstance(loaded, DatasetDict):
        if len(loaded) != 1:
            raise DCRInputError(f"'{options.data_root}' has the splits {list(loaded)}; save the one to evaluate on its own.")
        loaded = next(iter(loaded.values()))
    return loaded


def _generic(options: DatasetOptions, source: str) -> Dataset | DatasetDict:
    from .generic import load_face_dataset

    return load_face_dataset(
        source, image_column=options.image_column, label_column=options.label_column, **_links(options)
    )


def _tinyface_protocol(options: DatasetOptions, protocol: str, image_size: int) -> DatasetDict:
    from .tinyface import load_tinyface

    return load_tinyface(_root(options, "tinyface"), options.tinyface_aligned_dir,
                         distractors=not options.tinyface_no_distractors, **_links(options))


def _survface_protocol(options: DatasetOptions, protocol: str, image_size: int) -> DatasetDict:
    from .survface import load_survface_identification, load_survface_verification

    root = _root(options, "survface")
    if protocol == "native-verification":
        return load_survface_verification(root, **_links(options))
    return load_survface_identification(root, **_links(options))


def bin_paths(options: DatasetOptions) -> list[str]:
    """The `.bin` files of `--dataset bin --data_root a.bin,b.bin` (comma-separated), each checked to exist."""
    if options.data_root is None:
        raise DCRInputError("--dataset bin needs --data_root (one or more insightface .bin files, comma-separated).")
    paths = [part.strip() for part in options.data_root.split(",") if part.strip()]
    for path in paths:
        if not Path(path).is_file():
            raise DCRFileNotFoundError(f"insightface .bin file '{path}' does not exist (given in --data_root).")
    if len(set(paths)) != len(paths):
        raise DCRInputError(f"--data_root names a .bin file twice: {paths}.")
    return paths


def _bin_protocol(options: DatasetOptions, protocol: str, image_size: int) -> Dataset:
    from .bin import load_bin

    paths = bin_paths(options)
    if len(paths) != 1:
        raise DCRInputError(f"--dataset bin loads one .bin at a time here; got {paths} (eval_hf.py runs each in turn).")
    return load_bin(paths[0])


def _synthetic_train(options: DatasetOptions, image_size: int) -> TrainingSplit:
    return TrainingSplit(_synthetic(options, "train", image_size), real_low_resolution=False)


def _casia_train(options: DatasetOptions, image_size: int) -> TrainingSplit:
    from .casia import load_casia

    fold = 11 if options.casia_fold is None else options.casia_fold
    casia = load_casia(_root(options, "casia"), fold=fold, strict=options.strict_data, **_links(options))
    return TrainingSplit(casia["train"], False)


def _scface_train(options: DatasetOptions, image_size: int) -> TrainingSplit:
    from .scface import load_scface_finetune

    root = _root(options, "scface")
    finetune = load_scface_finetune(root, options.num_finetune_subjects, strict=options.strict_data, **_links(options))
    return TrainingSplit(finetune, True)


def _recordio_train(options: DatasetOptions, image_size: int) -> TrainingSplit:
    from .recordio import load_recordio

    root = _root(options, "recordio")
    return TrainingSplit(load_recordio(root, **_links(options)), False)


def _recordio_protocol(options: DatasetOptions, protocol: str, image_size: int) -> Dataset:
    raise DCRInputError("a RecordIO pack is a training set; evaluate on lfw, scface, casia or a folder.")


def _streaming(options: DatasetOptions) -> bool:
    # A training option (`train_hf.py --streaming`, the training `DataArguments`): evaluation reads its sets whole.
    return bool(getattr(options, "streaming", False))


def _folder_train(options: DatasetOptions, image_size: int) -> TrainingSplit:
    return _generic_train(_root(options, "folder"), options)


def streams_from_hub(name: str, options: DatasetOptions) -> bool:
    """Whether `--dataset name --streaming` streams a Hub dataset id, or a folder in the Hub's layout
    (parquet shards), through `load_dataset(..., streaming=True)` (`generic.load_face_stream`)."""
    if not (_streaming(options) and is_generic_source(name)):
        return False
    from .generic import holds_data_files

    return looks_like_hub_id(name) or holds_data_files(name)


def _generic_train(source: str, options: DatasetOptions, stream: bool = False) -> TrainingSplit:
    """The training split of a tree, a saved dataset or a Hub id; with `--streaming` a tree is
    served from its compact file index (`generic.index_image_folder`) instead of an Arrow table,
    and with `stream` (`streams_from_hub`) a Hub id or a folder of parquet shards is streamed
    (`generic.load_face_stream`)."""
    from ._layout import is_saved_dataset

    if stream:
        from .generic import load_face_stream

        loaded = load_face_stream(source, options.image_column, options.label_column, getattr(options, "num_classes", None))
        return TrainingSplit(loaded, False)

    if _streaming(options) and Path(source).is_dir() and not is_saved_dataset(source):
        from .generic import index_image_folder
        from .indexed import IndexedImageDataset

        return TrainingSplit(IndexedImageDataset(index_image_folder(source, **_links(options))), False)
    return TrainingSplit(_train_split_of(_generic(options, source), source), False)


def _train_split_of(loaded: Dataset | DatasetDict, source: str) -> Dataset:
    from datasets import Dataset

    if isinstance(loaded, Dataset):
        return loaded
    if "train" not in loaded:
        raise DCRInputError(f"dataset {source} has no 'train' split; it has {list(loaded)}.")
    return loaded["train"]


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("synthetic", "dcr-hf synthetic faces", False, PROTOCOLS, _synthetic_protocol, _synthetic_train,
                    validation_protocol="verification", validated_by="synthetic"),
        DatasetSpec("casia", "CASIA-WebFace", True, RETRIEVAL_PROTOCOLS, _casia_protocol, _casia_train, validated_by="lfw",
                    preparable=True),
        DatasetSpec("lfw", "LFW", True, (*PAIR_PROTOCOLS, *RETRIEVAL_PROTOCOLS), _lfw_protocol,
                    validation_protocol="verification", preparable=True),
        DatasetSpec("scface", "SCface", True, ("identification",), _scface_protocol, _scface_train,
                    validation_protocol="identification", validated_by="scface", preparable=True,
                    real_low_resolution_probes=True),
        DatasetSpec("tinyface", "TinyFace", True, ("closed-set-identification",), _tinyface_protocol,
                    real_low_resolution_probes=True),
        DatasetSpec("survface", "QMUL-SurvFace", True, ("native-verification", "open-set-identification"),
                    _survface_protocol, real_low_resolution_probes=True),
        DatasetSpec("bin", "insightface .bin", True, PAIR_PROTOCOLS, _bin_protocol),
        DatasetSpec("folder", "Face folder", True, RETRIEVAL_PROTOCOLS, _folder_protocol, _folder_train, preparable=True),
        DatasetSpec("recordio", "RecordIO pack", True, (), _recordio_protocol, _recordio_train, preparable=True),
    )
}
TRAIN_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.load_train is not None)
VALIDATION_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.validation_protocol is not None)
PREPARABLE_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.preparable)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset; `ValueError` listing the known ones otherwise."""
    if name not in DATASETS:
        raise DCRInputError(f"dataset {name!r} is not one of {sorted(DATASETS)}.")
    return DATASETS[name]


#: Datasets a card names by their data root's folder (a RecordIO pack is MS1MV2, Glint360K, ...).
_NAMED_BY_ROOT = ("folder", "recordio")


def _generic_source(name: str, options: DatasetOptions | None) -> str:
    """The folder or Hub id a generic dataset comes from (`--dataset folder --data_root X`, or `--dataset X`)."""
    return str(options.data_root if name in _NAMED_BY_ROOT and options is not None and options.data_root else name)


def card_name(name: str | None, options: DatasetOptions | None = None) -> str | None:
    """What model cards call a dataset: the registry's name, or for a generic source its folder / Hub id."""
    if name is None:
        return None
    if name == "tinyface" and options is not None and options.tinyface_no_distractors:
        return "TinyFace (no distractors)"
    if name == "bin" and options is not None and options.data_root and "," not in options.data_root:
        return f"{Path(options.data_root).stem} (insightface .bin)"
    if name in DATASETS and name not in _NAMED_BY_ROOT:
        return DATASETS[name].card_name
    source = _generic_source(name, options)
    return Path(source.rstrip("/")).name or source


def card_dataset_type(name: str, options: DatasetOptions | None = None) -> str:
    """The `model-index` dataset type of a dataset, the same for training and `eval_hf.py --update_card`:
    the registry name (`lfw`, `synthetic`, ...), or for a generic source its Hub id or folder name."""
    if name == "bin" and options is not None and options.data_root and "," not in options.data_root:
        return f"insightface-bin-{Path(options.data_root).stem}"
    if name in DATASETS and name != "folder":
        return name
    source = _generic_source(name, options)
    return source if looks_like_hub_id(source) else card_name(name, options)


def hub_dataset_id(name: str | None, options: DatasetOptions | None = None) -> str | None:
    """The Hub dataset id a dataset was loaded from (a model card's `datasets:`), `None` for local data."""
    if name is None or (name in DATASETS and name != "folder"):
        return None
    source = _generic_source(name, options)
    return source if looks_like_hub_id(source) else None


def describe_training_data(name: str, options: DatasetOptions) -> str:
    """One line naming a run's training data for its model card (registry name and what of it was used)."""
    described = card_name(name, options)
    if name == "synthetic":
        described += (f" ({options.synthetic_num_identities} identities x {options.synthetic_images_per_identity} "
                      "views rendered by dcr_hf; low-resolution copies simulated)")
    elif name == "casia":
        fold = 11 if options.casia_fold is None else options.casia_fold
        described += " (all subjects)" if fold >= 10 else f" (subjects outside validation fold {fold})"
    elif name == "scface":
        described += f" (the {options.num_finetune_subjects} fine-tuning subjects, real low-resolution captures)"
    elif name == "recordio":
        described += " (RecordIO pack)"
    return described


def has_real_low_resolution_probes(dataset_type: str | None) -> bool:
    """Whether a dataset's LR probes are real captures (SCface) rather than simulated by downsampling."""
    spec = DATASETS.get(dataset_type or "")
    return bool(spec and spec.real_low_resolution_probes)


def check_dataset_protocol(name: str, protocol: str, options: DatasetOptions) -> None:
    """Raise before any file is read when `protocol` does not apply to `name` or a data root is missing."""
    spec = get_spec(name)
    if protocol not in PROTOCOLS:
        raise DCRInputError(f"protocol {protocol!r} is not one of {PROTOCOLS}.")
    if protocol not in spec.protocols:
        raise DCRInputError(f"protocol {protocol!r} does not apply to dataset {name!r}; it supports {spec.protocols}.")
    if name == "bin":
        bin_paths(options)
    elif spec.needs_data_root:
        _root(options, name)
    if name != "tinyface" and (options.tinyface_aligned_dir is not None or options.tinyface_no_distractors):
        given = "--tinyface_aligned_dir" if options.tinyface_aligned_dir is not None else "--tinyface_no_distractors"
        raise DCRInputError(f"{given} applies to --dataset tinyface, not {name!r}.")
    if options.tinyface_aligned_dir is not None and Path(options.tinyface_aligned_dir).is_absolute():
        raise DCRInputError(f"--tinyface_aligned_dir {options.tinyface_aligned_dir}: expected a folder relative to --data_root.")


def default_protocol(name: str) -> str:
    """The protocol `eval_hf.py` runs on `name` when none is given: its first."""
    return get_spec(name).protocols[0]


def load_protocol_data(name: str, protocol: str, options: DatasetOptions, image_size: int) -> Dataset | DatasetDict:
    """The raw data `protocol` needs from dataset `name`: pairs (verification), a `gallery`/`probe`
    `DatasetDict` (identification) or an identity dataset (retrieval). `image_size` sizes the
    synthetic faces (real images are resized by the model's processor)."""
    check_dataset_protocol(name, protocol, options)
    return get_spec(name).load_protocol(options, protocol, image_size)


def is_generic_source(name: str) -> bool:
    """Whether a training `--dataset` value names a prepared folder or a Hub dataset id, not a registered dataset."""
    return name not in DATASETS


def check_training_dataset(name: str, options: DatasetOptions) -> None:
    """Raise before any file is read when `name` cannot be trained on."""
    if is_generic_source(name):
        if not Path(name).exists() and not looks_like_hub_id(name):
            raise DCRInputError(
                f"unknown dataset {name!r}: expected one of {TRAIN_DATASETS}, a prepared dataset folder or a Hub "
                "dataset id (org/name)."
            )
        if _streaming(options) and Path(name).exists() and not Path(name).is_dir():
            raise DCRInputError(f"--streaming reads a folder or a Hub dataset id; {name} is a file.")
        return
    spec = get_spec(name)
    if spec.load_train is None:
        raise DCRInputError(f"dataset {name!r} is for evaluation only; train on one of {TRAIN_DATASETS}.")
    if _streaming(options) and name not in _NAMED_BY_ROOT:
        raise DCRInputError(f"--streaming reads identity folders (--dataset folder) lazily, as RecordIO packs always are, "
                            f"and streams Hub datasets (--dataset org/name); --dataset {name} is loaded whole: drop --streaming.")
    if spec.needs_data_root:
        _root(options, name)


def load_training_split(name: str, options: DatasetOptions, image_size: int) -> TrainingSplit:
    """The training set of `name` (a registered dataset, a prepared folder or a Hub dataset id)."""
    check_training_dataset(name, options)
    if is_generic_source(name):
        return _generic_train(name, options, stream=streams_from_hub(name, options))
    return get_spec(name).load_train(options, image_size)


def validation_for(train_name: str, requested: str = "auto") -> tuple[str | None, str | None]:
    """`(dataset, protocol)` validating a training run on `train_name`; `requested` is `"auto"`
    (the registry's choice), `"none"` or a dataset name. `(None, None)` when nothing validates."""
    if requested == "none":
        return None, None
    if requested == "auto":
        spec = DATASETS.get(train_name)
        requested = spec.validated_by if spec is not None else None
        if requested is None:
            return None, None
    spec = get_spec(requested)
    if spec.validation_protocol is None:
        raise DCRInputError(f"--validation_dataset {requested!r} cannot validate training; expected one of {VALIDATION_DATASETS}.")
    return requested, spec.validation_protocol


def options_dict(options: DatasetOptions) -> dict[str, Any]:
    """The options as a plain dict (for `results.json` and the training recipe)."""
    return {name: getattr(options, name) for name in DatasetOptions.__dataclass_fields__}


__all__ = [
    "DATASETS",
    "DatasetOptions",
    "DatasetSpec",
    "PAIR_PROTOCOLS",
    "PREPARABLE_DATASETS",
    "PROTOCOLS",
    "NATIVE_PROTOCOLS",
    "RETRIEVAL_PROTOCOLS",
    "TRAIN_DATASETS",
    "TrainingSplit",
    "VALIDATION_DATASETS",
    "bin_paths",
    "card_dataset_type",
    "card_name",
    "describe_training_data",
    "has_real_low_resolution_probes",
    "hub_dataset_id",
    "looks_like_hub_id",
    "check_dataset_protocol",
    "check_training_dataset",
    "default_protocol",
    "get_spec",
    "is_generic_source",
    "load_protocol_data",
    "load_training_split",
    "options_dict",
    "streams_from_hub",
    "validation_for",
]
