"""The evaluation command line (`eval_hf.py`, `dcr-eval`): arguments, model loading, runs, reports, cards.

`run` evaluates and returns the results (bad arguments raise `ValueError`); `main` is the console
entry point, which turns those errors into an argparse-style one-line error with exit status 2
(`dcr_hf.cli`; `--debug` shows the traceback).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

# Light imports only (HfArgumentParser and logging load no torch): `--help` answers at once; the
# models, data and metrics are imported by `run`, after the arguments are parsed.
from transformers import HfArgumentParser
from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ..cli import DEBUG_HELP, check_output_path, reported_errors, split_debug_flag
from ..data import registry

if TYPE_CHECKING:
    import numpy as np

    from ..degradation import Degradation
    from ..image_processing_dcr import DCRImageProcessor

logger = logging.get_logger(__name__)


@dataclass
class ModelArguments:
    _argument_group_name = "Models"

    model_name_or_path: str = field(metadata={"help": "A DCR model folder or Hub id.", "aliases": ["--model"]})
    compare: list[str] = field(
        default_factory=list, metadata={"help": "More DCR models (folders or Hub ids) to evaluate into the same table."}
    )


@dataclass
class DataArguments(registry.DatasetOptions):
    _argument_group_name = "Data"

    dataset: str = field(
        default="lfw", metadata={"help": "Which data to evaluate on; 'synthetic' needs no files.", "choices": tuple(registry.DATASETS)}
    )
    protocol: Literal[
        "verification", "intra-verification", "identification", "retrieval", "intra-retrieval",
        "closed-set-identification", "native-verification", "open-set-identification",
    ] | None = field(
        default=None,
        metadata={"help": "Default: the dataset's first protocol. verification: HR vs LR pairs; intra-verification: "
                  "both at one size; identification: SCface gallery vs probes; retrieval: LR queries vs HR "
                  "references; intra-retrieval: queries and references at one LR size; closed-set-identification: "
                  "TinyFace probes vs match + distractor gallery; native-verification: SurvFace pairs as they are; "
                  "open-set-identification: SurvFace mated and unmated probes, TPIR at FPIR."},
    )


@dataclass
class EvaluationArguments:
    _argument_group_name = "Evaluation"

    sizes: list[int] | None = field(default=None, metadata={"help": "Low-resolution probe sizes (default: the model's)."})
    flip_tta: bool = field(default=False, metadata={"help": "Average the embeddings of each image and its mirror image."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Pairs or images per batch and process."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader workers (decoding)."})
    threshold_grid: Literal["exact", "original", "insightface"] = field(
        default="exact",
        metadata={"help": "Verification thresholds: 'exact' (every distinct decision), 'original' (-1..1 step 0.005) "
                  "or 'insightface' (squared L2 of normalized embeddings 0..4 step 0.01, insightface's .bin protocol)."},
    )
    native_routing: bool = field(
        default=True,
        metadata={"help": "TinyFace, SurvFace, branch models: each native LR image through the branch nearest its "
                  "shorter side (--native_routing false: every image through the HR branch)."},
    )
    retrieval_rule: Literal["exclude_own", "original"] = field(
        default="exclude_own",
        metadata={"help": "Retrieval: how each query's own image is kept out of its references: 'exclude_own' "
                  "(that very image) or 'original' (drop the first neighbour, whoever it is)."},
    )
    retrieval_metric: Literal["cosine", "l2"] = field(
        default="cosine", metadata={"help": "Retrieval: rank by cosine similarity, or by L2 distance of raw embeddings (the original)."}
    )
    retrieval_clustering: bool = field(
        default=True, metadata={"help": "Retrieval: also NMI/AMI of faiss k-means clusters of the queries."}
    )
    downsample_interpolation: str | None = field(
        default=None,
        metadata={"help": "Override the LR operator of every model's processor for this run: 'lanczos' (the "
                  "original's, PIL in 8 bits) or a torch mode ('bicubic', 'bilinear', 'area', 'nearest')."},
    )
    upsample_interpolation: str | None = field(
        default=None, metadata={"help": "Override the upsample filter of the LR operator for this run."},
    )
    reproduce_original: bool = field(
        default=False,
        metadata={"help": "Evaluate as the original did: its LR operator (PIL Lanczos + bilinear, 8 bits), threshold "
                  "grid, retrieval rule and L2 ranking; overrides those options."},
    )
    probe_resolution: list[str] = field(
        default_factory=list,
        metadata={"help": "Identification, branch models: the branch for each probe distance, e.g. '1=8 2=12 3=hr', "
                  "or one value for all ('hr', '8'). Default: distance k -> k-th LR branch."},
    )
    probe_degradation: str = field(
        default="none",
        metadata={"help": "Degrade the simulated LR probes (blur, noise, JPEG after the downsampling; the HR images "
                  "stay clean): 'none', 'model' (each model's own training degradation), a preset ('surveillance', "
                  "'blur', 'noise', 'jpeg') or a JSON file of settings."},
    )
    degradation_seed: int = field(
        default=0, metadata={"help": "Seed of the probe degradation: with the image's pixels it fixes each probe's draw."}
    )
    show_probes: str | None = field(
        default=None,
        metadata={"help": "Write a PNG of one face at every size, resized only and degraded (the --probe_degradation, "
                  "or 'surveillance' without one), as the model sees them."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where to write results.json, results.md and ROC PNGs."})
    update_card: bool = field(
        default=False, metadata={"help": "Record the results in each local model folder's README.md (model-index)."}
    )
    dataset_split: str | None = field(default=None, metadata={"help": "Split name recorded in the model card."})


def _resolution(text: str) -> int | str:
    text = text.strip()
    return "hr" if text.lower() == "hr" else int(text)


def parse_probe_resolution(values: Sequence[str]) -> dict[int, int | str] | int | str | None:
    """`[]` -> None (the default mapping), `["hr"]` / `["8"]` -> one value, `["1=8", "2=hr"]` -> a mapping."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return _resolution(values[0])
    mapping = {}
    for value in values:
        distance, separator, resolution = value.partition("=")
        if not separator or not distance.strip().isdigit():
            raise DCRInputError(f"--probe_resolution {value!r}: expected DISTANCE=SIZE (e.g. 1=8 or 3=hr).")
        mapping[int(distance)] = _resolution(resolution)
    return mapping


def display_names(models: Sequence[str]) -> list[str]:
    """Short row names: a folder's or Hub repo's last path part, unless two models share it."""
    short = [Path(model.rstrip("/")).name or model for model in models]
    return short if len(set(short)) == len(short) else list(models)


#: What `--reproduce_original` sets: the original implementation's evaluation settings (its LR operator,
#: threshold grid, retrieval rule and L2 ranking).
ORIGINAL_PROTOCOL = {
    "downsample_interpolation": "lanczos",
    "upsample_interpolation": "bilinear",
    "threshold_grid": "original",
    "retrieval_rule": "original",
    "retrieval_metric": "l2",
}


def apply_original_protocol(eval_args: EvaluationArguments) -> list[str]:
    """With `--reproduce_original`, set `ORIGINAL_PROTOCOL` on `eval_args` and return the lines that say
    what it changed (for the console and results.md); otherwise `[]`. A value given on the command
    line that contradicts the original's is refused."""
    if not eval_args.reproduce_original:
        return []
    defaults = EvaluationArguments()
    changed = []
    for name, value in ORIGINAL_PROTOCOL.items():
        given = getattr(eval_args, name)
        if given not in (value, getattr(defaults, name)):
            raise DCRInputError(f"--reproduce_original uses --{name} {value}; --{name} {given} contradicts it.")
        if getattr(defaults, name) != value:
            changed.append(f"--{name} {value}")
        setattr(eval_args, name, value)
    return [
        "protocol: the original's (--reproduce_original): " + ", ".join(changed) + "; LR operator: PIL Lanczos "
        "to s x s, then PIL bilinear back, 8 bits each; pairs: first image HR, second LR (as by default)"
    ]


def _override_operator(processor: DCRImageProcessor, eval_args: EvaluationArguments) -> DCRImageProcessor:
    """The processor with `--downsample_interpolation` / `--upsample_interpolation` applied (this run only)."""
    downsample = eval_args.downsample_interpolation or processor.downsample_interpolation
    upsample = eval_args.upsample_interpolation or processor.upsample_interpolation
    return processor.with_low_resolution_operator(downsample, upsample)


def _operator_notes(names: Sequence[str], before: Sequence[DCRImageProcessor], after: Sequence[DCRImageProcessor]) -> list[str]:
    """One line per model whose saved LR operator this run replaced."""
    return [
        f"{name}: LR operator {old.downsample_interpolation}/{old.upsample_interpolation} (saved with the model) "
        f"replaced by {new.downsample_interpolation}/{new.upsample_interpolation} for this run"
        for name, old, new in zip(names, before, after)
        if (old.downsample_interpolation, old.upsample_interpolation) != (new.downsample_interpolation, new.upsample_interpolation)
    ]


def check_operator_options(eval_args: EvaluationArguments) -> None:
    """`--downsample_interpolation` / `--upsample_interpolation` checked before any model loads: each a
    mode the LR operator knows (the pair is checked against each model's processor when applied)."""
    from ..image_processing_dcr import INTERPOLATION_MODES

    for name in ("downsample_interpolation", "upsample_interpolation"):
        value = getattr(eval_args, name)
        if value is not None and value not in INTERPOLATION_MODES:
            raise DCRInputError(f"--{name} {value!r} is not an interpolation mode; expected one of {INTERPOLATION_MODES}.")


def check_figure_path(path: str) -> None:
    """`--show_probes PATH`: a .png file name in a writable folder, checked before any work."""
    if not path.lower().endswith(".png") or Path(path).is_dir():
        raise DCRInputError(f"--show_probes {path}: expected the name of a .png file to write.")
    check_output_path(Path(path).expanduser().parent, "--show_probes", "the probe figure")


def check_probe_degradation(data_args: DataArguments, eval_args: EvaluationArguments) -> dict | None:
    """`--probe_degradation` checked before any model or data is loaded: the settings of a preset or
    file (`None` for 'none' and 'model', which is read from each model)."""
    value = eval_args.probe_degradation
    if value != "none" and data_args.protocol in registry.NATIVE_PROTOCOLS:
        raise DCRInputError(f"--probe_degradation {value}: {data_args.protocol} uses native LR images, which are not "
                            "simulated; the degradation model applies to simulated probes (verification, retrieval).")
    if value != "none" and data_args.protocol == "identification":
        raise DCRInputError(f"--probe_degradation {value}: identification uses real LR probes (SCface), which are not "
                            "simulated; the degradation model applies to simulated probes (verification, retrieval).")
    if value != "none" and eval_args.update_card:
        raise DCRInputError(f"--update_card with --probe_degradation {value}: a model card records the dataset's own "
                            "protocol, and degraded probes are not it; evaluate without one to update the card.")
    from ..degradation import resolve_degradation

    return None if value in ("none", "model") else resolve_degradation(value, "--probe_degradation")


def probe_degradations(names: Sequence[str], models: Sequence, settings: dict | None,
                       eval_args: EvaluationArguments) -> tuple[list[Degradation | None], list[str]]:
    """The `Degradation` of each model's probes and the notes that say so."""
    from ..degradation import degradation_for

    value, seed = eval_args.probe_degradation, eval_args.degradation_seed
    if value == "none":
        return [None] * len(models), []
    if value != "model":
        note = f"LR probes of {'every model' if len(models) > 1 else names[0]} degraded by {value} (seed {seed}): {json.dumps(settings)}"
        return [degradation_for(settings, seed) for _ in models], [note]
    degradations, notes = [], []
    for name, model in zip(names, models):
        own = model.config.degradation
        degradations.append(degradation_for(own, seed))
        if own is None:
            notes.append(f"{name}: --probe_degradation model, but the model was trained without one: its probes are resized only")
        else:
            notes.append(f"{name}: LR probes degraded by its own training degradation (seed {seed}): {json.dumps(own)}")
    return degradations, notes


def threshold_grid_option(name: str) -> str | np.ndarray | None:
    """`--threshold_grid` as the runners take it: `None` (exact), `"original"` or insightface's grid as cosines."""
    if name == "exact":
        return None
    if name == "insightface":
        from .verification import INSIGHTFACE_THRESHOLD_GRID

        return INSIGHTFACE_THRESHOLD_GRID
    return name


def _protocol_options(data_args: DataArguments, eval_args: EvaluationArguments, accelerator) -> dict:
    options = dict(
        flip_tta=eval_args.flip_tta, batch_size=eval_args.per_device_eval_batch_size,
        num_workers=eval_args.dataloader_num_workers, accelerator=accelerator,
    )
    if data_args.protocol in (*registry.PAIR_PROTOCOLS, "native-verification"):
        options["threshold_grid"] = threshold_grid_option(eval_args.threshold_grid)
    if data_args.protocol == "native-verification":
        options["route_images"] = eval_args.native_routing
    if data_args.protocol in ("closed-set-identification", "open-set-identification"):
        options["route_probes"] = eval_args.native_routing
    if data_args.protocol == "identification":
        options["probe_resolution"] = parse_probe_resolution(eval_args.probe_resolution)
    if data_args.protocol in registry.RETRIEVAL_PROTOCOLS:
        options.update(
            rule=eval_args.retrieval_rule, metric=eval_args.retrieval_metric, clustering=eval_args.retrieval_clustering
        )
    return options


def _write_outputs(
    results: dict, models: list[str], data_args: DataArguments, eval_args: EvaluationArguments, notes: list[str]
) -> None:
    from ..hub import update_model_card_results
    from ..reports import format_results_report, write_reports

    dataset_name = registry.card_name(data_args.dataset, data_args)
    print(format_results_report(results, dataset_name=dataset_name, notes=notes))
    if eval_args.output_dir is not None:
        metadata = {"models": dict(zip(results, models)), **asdict(data_args), **asdict(eval_args), "notes": notes}
        written = write_reports(results, eval_args.output_dir, metadata, dataset_name=dataset_name, notes=notes)
        print("Wrote " + ", ".join(str(path) for path in written.values()))
    else:
        print("Nothing was saved: pass --output_dir DIR to write results.json, results.md (and roc.png for verification).")
    if eval_args.update_card:
        for name, path in zip(results, models):
            if not Path(path).is_dir():
                logger.warning(f"--update_card: '{path}' is not a local folder; its card is not updated.")
                continue
            update_model_card_results(
                path, results[name], dataset_name, dataset_type=registry.card_dataset_type(data_args.dataset, data_args),
                dataset_split=eval_args.dataset_split,
                real_low_resolution_probes=registry.has_real_low_resolution_probes(data_args.dataset),
            )
            print(f"Updated the model card of {path}")


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (ModelArguments, DataArguments, EvaluationArguments),
        usage="%(prog)s --model_name_or_path MODEL [--compare MODEL ...] [--dataset NAME] [--protocol NAME] [options]",
        description="Evaluate DCR models: verification, identification, retrieval, on real or synthetic data.",
        epilog=DEBUG_HELP,
    )



def _evaluation_accelerator():
    """The evaluation's `Accelerator`, with the precision its launch asks for (`accelerate launch
    --mixed_precision`, i.e. `ACCELERATE_MIXED_PRECISION`; float32 by default).

    accelerate keeps one `AcceleratorState` per process: after a bf16 training in the same process
    (a notebook, a script that trains then evaluates) `Accelerator()` would inherit its bf16 and
    embed every image under bf16 autocast without a word. That state is cleared first then (the
    process group, accelerate's `PartialState`, stays), as accelerate's own tests do between runs.
    """
    import os

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, is_initialized

    asked = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if is_initialized() and AcceleratorState().mixed_precision != asked:
        logger.info(f"Evaluating in {asked}, not the {AcceleratorState().mixed_precision} an earlier run in this process set up.")
        AcceleratorState._reset_state()
    return Accelerator()


def run(argv: Sequence[str] | None = None, parser: HfArgumentParser | None = None) -> dict[str, dict]:
    """Parse a command line, evaluate every model, print and write the reports; `{model name: result}`
    (several `.bin` files: `{file stem: {model name: result}}`, each set's reports in `--output_dir/<stem>/`)."""
    parser = parser or build_parser()
    model_args, data_args, eval_args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # The work, imported once the arguments parsed (`--help` needs none of it).
    from ..configuration_dcr import DEGRADATION_PRESETS
    from ..degradation import degradation_for
    from ..host_memory import keep_freed_memory
    from ..hub import load_model_and_processor
    from .embeddings import check_sizes
    from .probes import first_face, write_probe_figure
    from .protocols import run_protocol

    models = [model_args.model_name_or_path, *model_args.compare]
    if len(set(models)) != len(models):
        raise DCRInputError(f"A model is listed twice: {models}.")
    if data_args.protocol is None:
        data_args.protocol = registry.default_protocol(data_args.dataset)
    # Everything that can be checked is checked before the (possibly long) data loading.
    if eval_args.output_dir is not None:
        check_output_path(eval_args.output_dir, "--output_dir", "results.json, results.md and roc.png")
    if eval_args.show_probes is not None:
        check_figure_path(eval_args.show_probes)
    check_operator_options(eval_args)
    registry.check_dataset_protocol(data_args.dataset, data_args.protocol, data_args)
    native = data_args.protocol in registry.NATIVE_PROTOCOLS
    if native and eval_args.sizes:
        raise DCRInputError(f"--sizes: {data_args.protocol} uses native LR images at their own sizes; drop --sizes.")
    degradation_settings = check_probe_degradation(data_args, eval_args)
    notes = apply_original_protocol(eval_args)
    if eval_args.threshold_grid == "insightface":
        notes.append("thresholds: insightface's (squared L2 of normalized embeddings, 0..4 step 0.01, same when below)")
    accelerator = _evaluation_accelerator()
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # each batch's activations reused, not faulted in again (`host_memory`)
    options = _protocol_options(data_args, eval_args, accelerator)
    loaded = [load_model_and_processor(path, "--model_name_or_path" if index == 0 else "--compare")
              for index, path in enumerate(models)]
    if data_args.protocol != "identification" and not native:
        for model, _ in loaded:
            check_sizes(model, eval_args.sizes)
    names = display_names(models)
    processors = [_override_operator(processor, eval_args) for _, processor in loaded]
    notes += _operator_notes(names, [processor for _, processor in loaded], processors)
    degradations, degradation_notes = probe_degradations(names, [model for model, _ in loaded], degradation_settings, eval_args)
    notes += degradation_notes
    if accelerator.is_main_process:
        for note in notes:
            logger.warning(note)
    image_size = loaded[0][0].config.image_size
    # `--dataset bin --data_root a.bin,b.bin`: each set in turn, with its own reports and card entries.
    roots = registry.bin_paths(data_args) if data_args.dataset == "bin" else [data_args.data_root]
    every: dict[str, dict[str, dict]] = {}
    for root in roots:
        set_args = replace(data_args, data_root=root)
        set_eval = eval_args
        if len(roots) > 1:
            label = Path(root).stem
            if eval_args.output_dir is not None:
                set_eval = replace(eval_args, output_dir=str(Path(eval_args.output_dir) / label))
        data = registry.load_protocol_data(set_args.dataset, set_args.protocol, set_args, image_size)
        if eval_args.show_probes is not None and accelerator.is_main_process and root == roots[0]:
            shown = degradations[0] or degradation_for(degradation_settings or DEGRADATION_PRESETS["surveillance"], eval_args.degradation_seed)
            sizes = eval_args.sizes or loaded[0][0].config.low_resolution_sizes
            write_probe_figure(first_face(data), processors[0], sizes, shown, eval_args.show_probes,
                               label=eval_args.probe_degradation if degradations[0] else "surveillance")
            print(f"Wrote {eval_args.show_probes}")
        results: dict[str, dict] = {}
        for name, (model, _), processor, degradation in zip(names, loaded, processors, degradations):
            model.to(accelerator.device)
            extra = {"degradation": degradation} if degradation is not None else {}
            sizes = {} if native else {"sizes": eval_args.sizes}
            results[name] = run_protocol(set_args.protocol, model, data, image_processor=processor, **sizes, **options, **extra)
        if accelerator.is_main_process:
            _write_outputs(results, models, set_args, set_eval, notes)
        accelerator.wait_for_everyone()
        every[str(root)] = results
    return every[str(roots[0])] if len(roots) == 1 else {Path(root).stem: result for root, result in every.items()}


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (`dcr-eval`, `eval_hf.py`)."""
    argv, debug = split_debug_flag(argv)
    parser = build_parser()
    with reported_errors(parser, debug):
        run(argv, parser)


__all__ = [
    "ORIGINAL_PROTOCOL",
    "DataArguments",
    "EvaluationArguments",
    "ModelArguments",
    "apply_original_protocol",
    "build_parser",
    "check_operator_options",
    "check_probe_degradation",
    "display_names",
    "main",
    "parse_probe_resolution",
    "probe_degradations",
    "run",
]
