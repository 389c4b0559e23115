"""Model cards of DCR folders, rendered from the Jinja templates in `hub_cards/`.

`trunk.md` and `branch.md` (with their shared `_*.md` parts) render into a
`huggingface_hub.ModelCard` whose `model-index` metadata and results table hold this model's
measured results only (`dcr_hf.hub.results`); `update_model_card_results` replaces the results of
the same dataset, protocol and resolution instead of appending duplicates.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..errors_dcr import DCRFileNotFoundError, DCRInputError
from ..configuration_dcr import DCRConfig
from ..image_processing_dcr import DCRImageProcessor
from ..model_files import looks_like_hub_id
from ..saving import atomic_path
from .results import TASK_TYPE, card_metrics, merge_eval_results, results_markdown, results_to_eval_results, set_results_section


def _templates_dir() -> Path:
    """The card templates: `dcr_hf/hub_cards/` in an installed wheel (pyproject maps the top-level
    `hub_cards/` there), else `hub_cards/` next to the package in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "hub_cards"
    return installed if installed.is_dir() else package.parent / "hub_cards"


#: Folder of the card templates.
TEMPLATES_DIR = _templates_dir()
CARD_KINDS = ("trunk", "branch")
DEFAULT_TRAINING_DATA = "not recorded with this model (the published recipe trains on CASIA-WebFace)"


def model_hub_id(name_or_path: str | None) -> str | None:
    """The Hub id of a model: `name_or_path` itself when it is one; for a local folder the
    `hub_model_id` its `training_recipe.json` records, or the id in a Hub cache path
    (`.../models--org--name/snapshots/<sha>`); `None` when only a local path is known."""
    if not name_or_path:
        return None
    if looks_like_hub_id(name_or_path):
        return name_or_path
    folder = Path(name_or_path).resolve()
    recipe = folder / "training_recipe.json"
    if recipe.is_file():
        recorded = json.loads(recipe.read_text(encoding="utf-8")).get("hub_model_id")
        if recorded:
            return recorded
    cached = re.search(r"models--([^/]+?)--([^/]+)/snapshots/[^/]+$", folder.as_posix())
    return f"{cached.group(1)}/{cached.group(2)}" if cached else None


def recipe_value(value: Any) -> str:
    """A recipe setting as a card shows it: enum values, lists joined, floats without a trailing `.0`."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        return ", ".join(recipe_value(item) for item in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)



def _config_dict(config: DCRConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return DCRConfig().to_dict()
    if isinstance(config, DCRConfig):
        return config.to_dict()
    return {**DCRConfig().to_dict(), **dict(config)}


def _architecture_values(config: Mapping[str, Any], processor: DCRImageProcessor) -> dict[str, Any]:
    """The architecture and preprocessing facts the card templates show."""
    descriptions = {
        "resnet": "ResNet-style trunk (7x7/2 conv, max-pool, basic residual blocks with batch norm)",
        "paper": "paper-style Face-ResNet trunk (3x3 convs, PReLU" + (", batch norm)" if config["use_batch_norm"] else ")"),
        "iresnet": "insightface IResNet trunk (improved residual blocks, PReLU, projected shortcuts, linear embedding)",
        "ir": "AdaFace IR trunk (improved residual blocks, PReLU, linear embedding"
              + (", squeeze-excitation)" if config.get("squeeze_excitation_reduction") else ")"),
    }
    trunk_description = descriptions[config["trunk_type"]]
    names = ("depths", "hidden_sizes", "embedding_size", "branch_hidden_size", "normalize_embeddings", "image_size",
             "low_resolution_sizes")
    return {
        "trunk_description": trunk_description,
        **{name: config[name] for name in names},
        "image_mean": list(processor.image_mean),
        "image_std": list(processor.image_std),
        "channel_order": processor.channel_order.upper(),
    }


def _card_license(converted_from: Mapping[str, Any] | None) -> dict[str, str]:
    """The card's licence metadata: this repository's Apache-2.0, or for converted weights the
    source's terms (`other` with their name; `unknown` when the user did not give them)."""
    if converted_from is None:
        return {"license": "apache-2.0"}
    name = converted_from.get("license")
    if not name:
        return {"license": "unknown"}
    return {"license": "other", "license_name": re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-") or "other"}


def render_model_card(
    kind: Literal["trunk", "branch"],
    repo_id: str | None = None,
    training_recipe: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    dataset_name: str | None = None,
    *,
    dataset_type: str | None = None,
    real_low_resolution_probes: bool | None = None,
    config: DCRConfig | Mapping[str, Any] | None = None,
    image_processor: Any | None = None,
    model_name: str | None = None,
    training_data: str = DEFAULT_TRAINING_DATA,
    datasets: Sequence[str] | None = None,
    base_model: str | None = None,
    specialized_initialization: bool = True,
    eval_results: Sequence[EvalResult] = (),
    template_dir: str | Path | None = None,
    converted_from: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Render the trunk or branch model card.

    Args:
        kind: `"trunk"` or `"branch"` (a model with `use_branches=True`).
        repo_id: Hub id used in the code examples and as the default model name.
        training_recipe: settings to list in the "Training data and recipe" table (e.g. the
            training arguments; `None` values are left out, others shown by `recipe_value`);
            `None` describes the published recipe instead.
        results: a runner result (e.g. `evaluate_verification(...)`) to record as `model-index`
            results, measured on `dataset_name` (e.g. `"LFW"`), of `model-index` type `dataset_type`
            (`dcr_hf.data.registry.card_dataset_type`); more results are added with
            `update_model_card_results`.
        real_low_resolution_probes: whether the LR probes of `results` were real captures
            (`dcr_hf.data.registry.has_real_low_resolution_probes`) or simulated; the results
            heading says so (and says neither when `None`).
        config: the model's `DCRConfig` (architecture table); default: `DCRConfig()`.
        image_processor: its processor (mean/std in the table); default 0.5/0.5.
        training_data: one line naming the training data.
        datasets: Hub dataset ids for the metadata.
        base_model: Hub id of the model this one was trained from (the trunk of a branch model,
            the model a fine-tuned one started from): metadata and text.
        eval_results: `EvalResult`s to keep (e.g. from an earlier card), merged before `results`.
        template_dir: another folder of templates with the same file names.
        converted_from: for a trunk converted from another project (`dcr_hf.convert.face_backbone`):
            `project`, `url`, `architecture`, `checkpoint`, `dataset`, `license` (`None` when not
            given) and `license_note`; the card names them and its licence metadata is the source's.
    """
    if kind not in CARD_KINDS:
        raise DCRInputError(f"kind={kind!r} is not a card kind; expected one of {CARD_KINDS}.")
    import jinja2  # installed with torch

    template_dir = Path(template_dir) if template_dir is not None else TEMPLATES_DIR
    if not (template_dir / f"{kind}.md").is_file():
        raise DCRFileNotFoundError(
            f"No model card template '{template_dir / f'{kind}.md'}'. The templates ship in the dcr-hf wheel "
            "(dcr_hf/hub_cards/) and in the source tree's hub_cards/; pass template_dir= to use another folder."
        )
    values = _config_dict(config)
    model_id = repo_id or "path/to/model"
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else f"dcr-{kind}")
    merged = list(eval_results)
    if results is not None:
        if not dataset_name:
            raise DCRInputError("results need dataset_name, the dataset they were measured on (e.g. 'LFW').")
        merged = merge_eval_results(merged, results_to_eval_results(
            results, dataset_name, dataset_type, real_low_resolution_probes=real_low_resolution_probes))
    card_data = ModelCardData(
        **_card_license(converted_from),
        library_name="transformers",
        pipeline_tag=TASK_TYPE,
        tags=["face-recognition", "low-resolution", "dcr", "image-feature-extraction", "custom_code"],
        datasets=list(datasets) if datasets else None,
        base_model=base_model,
        metrics=card_metrics(merged),
        model_name=model_name,
        eval_results=merged or None,
    )
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    content = environment.get_template(f"{kind}.md").render(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        model_id=model_id,
        use_branches=kind == "branch",
        training_data=training_data,
        training_recipe={k: recipe_value(v) for k, v in training_recipe.items() if v is not None} if training_recipe else None,
        results_section=results_markdown(merged),
        base_model=base_model,
        specialized_initialization=specialized_initialization,
        converted_from=dict(converted_from) if converted_from else None,
        **_architecture_values(values, image_processor or DCRImageProcessor()),
    )
    return ModelCard(content)


def _read_config(model_dir: Path) -> DCRConfig:
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise DCRFileNotFoundError(f"'{model_dir}' has no config.json; expected a DCR model folder (save_pretrained).")
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    if model_type != DCRConfig.model_type:
        raise DCRInputError(f"'{config_file}' has model_type={model_type!r}; model cards are for DCR models ('dcr').")
    return DCRConfig.from_pretrained(model_dir)


def _read_processor(model_dir: Path) -> Any | None:
    if not (model_dir / "preprocessor_config.json").is_file():
        return None
    return DCRImageProcessor.from_pretrained(model_dir)


def write_model_card(
    model_dir: str | Path,
    kind: Literal["trunk", "branch"] | None = None,
    repo_id: str | None = None,
    training_recipe: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    dataset_name: str | None = None,
    **kwargs: Any,
) -> Path:
    """Render the card of a saved DCR folder into its `README.md` and return the path.

    `kind` defaults to the folder's `config.use_branches`; the architecture comes from its
    `config.json` and the normalization from its processor. Results already in an existing
    `README.md` are kept (those measured again in `results` are replaced). Other keyword arguments
    go to `render_model_card`.
    """
    model_dir = Path(model_dir)
    config = _read_config(model_dir)
    kind = kind or ("branch" if config.use_branches else "trunk")
    readme = model_dir / "README.md"
    kept: list[EvalResult] = []
    existing_name = None
    if readme.is_file():
        existing = ModelCard.load(readme)
        kept = list(existing.data.eval_results or [])
        existing_name = existing.data.model_name
    if kwargs.get("model_name") is None:
        kwargs["model_name"] = existing_name or (repo_id.split("/")[-1] if repo_id else model_dir.resolve().name)
    card = render_model_card(
        kind,
        repo_id=repo_id,
        training_recipe=training_recipe,
        results=results,
        dataset_name=dataset_name,
        config=config,
        image_processor=kwargs.pop("image_processor", None) or _read_processor(model_dir),
        eval_results=kept,
        **kwargs,
    )
    with atomic_path(readme) as temporary:
        card.save(temporary)
    return readme


def update_model_card_results(
    model_dir: str | Path,
    results: Mapping[str, Any],
    dataset_name: str,
    dataset_type: str | None = None,
    dataset_split: str | None = None,
    dataset_revision: str | None = None,
    real_low_resolution_probes: bool | None = None,
    **card_kwargs: Any,
) -> ModelCard:
    """Record a runner result in `model_dir/README.md` (`model-index` and the results table).

    Earlier results for the same dataset (type, split, revision), protocol and resolution are
    replaced, others kept; `real_low_resolution_probes` says whether the LR probes were real captures
    or simulated, as in `render_model_card`. A folder without a README first gets one from the
    template (`write_model_card(model_dir, **card_kwargs)`). Returns the saved card.
    """
    model_dir = Path(model_dir)
    readme = model_dir / "README.md"
    if not readme.is_file():
        write_model_card(model_dir, **card_kwargs)
    card = ModelCard.load(readme)
    new = results_to_eval_results(
        results, dataset_name, dataset_type, dataset_split, dataset_revision, real_low_resolution_probes
    )
    card.data.eval_results = merge_eval_results(card.data.eval_results or [], new)
    card.data.metrics = card_metrics(card.data.eval_results)
    if card.data.model_name is None:
        card.data.model_name = model_dir.resolve().name
    card.text = set_results_section(card.text, card.data.eval_results)
    with atomic_path(readme) as temporary:
        card.save(temporary)
    return card


__all__ = [
    "CARD_KINDS",
    "DEFAULT_TRAINING_DATA",
    "TEMPLATES_DIR",
    "model_hub_id",
    "recipe_value",
    "render_model_card",
    "update_model_card_results",
    "write_model_card",
]
