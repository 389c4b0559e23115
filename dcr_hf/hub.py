"""DCR folders and the Hub: loading a model with its processor, model cards, pushing a folder.

Cards are rendered from the Jinja templates in `hub_cards/` (`trunk.md`, `branch.md` and their shared
`_*.md` parts) into a `huggingface_hub.ModelCard`. Measured results live in the card's
`model-index` metadata as `EvalResult`s and in a Markdown table between
`<!-- dcr-results:start -->` and `<!-- dcr-results:end -->`; `update_model_card_results` replaces the
results of the same dataset, protocol and resolution instead of appending duplicates.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers.utils import logging

from .configuration_dcr import DCRConfig
from .data.registry import has_real_low_resolution_probes, looks_like_hub_id
from .image_processing_dcr import DCRImageProcessor
from .reports import METRIC_TITLES, column_title, result_columns


logger = logging.get_logger(__name__)


def _templates_dir() -> Path:
    """The card templates: `dcr_hf/hub_cards/` in an installed wheel (pyproject maps the top-level
    `hub_cards/` there), else `hub_cards/` next to the package in a source checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "hub_cards"
    return installed if installed.is_dir() else package.parent / "hub_cards"


#: Folder of the card templates.
TEMPLATES_DIR = _templates_dir()
CARD_KINDS = ("trunk", "branch")
RESULTS_START = "<!-- dcr-results:start -->"
RESULTS_END = "<!-- dcr-results:end -->"
NO_RESULTS = (
    "No results recorded yet: run `dcr-eval --model_name_or_path FOLDER ... --update_card` (or `eval_hf.py`) on this folder."
)
TASK_TYPE = "image-feature-extraction"
TASK_NAME = "Low-resolution face recognition"
DEFAULT_TRAINING_DATA = "not recorded with this model (the published recipe trains on CASIA-WebFace)"
#: Metrics of each protocol written to the card (all in percent).
CARD_METRICS = {
    "verification": ("accuracy", "auc", "eer"),
    "intra-verification": ("accuracy", "auc", "eer"),
    "identification": ("rank_1", "rank_5"),
    "retrieval": ("precision_at_1", "map_at_r", "r_precision", "nmi", "ami"),
    "intra-retrieval": ("precision_at_1", "map_at_r", "r_precision", "nmi", "ami"),
}
_PROTOCOL_TITLES = {
    "verification": "verification, HR gallery vs {probes} LR probe",
    "intra-verification": "verification, both images at the same {probes} resolution",
    "identification": "identification, HR gallery vs {probes} LR probes",
    "retrieval": "retrieval, {probes} LR queries vs HR references",
    "intra-retrieval": "retrieval, queries and references at the same {probes} resolution",
}


def protocol_title(protocol: str, dataset_type: str | None) -> str:
    """A results heading that says whether the LR images were real captures or simulated."""
    probes = "real" if has_real_low_resolution_probes(dataset_type) else "simulated"
    return _PROTOCOL_TITLES.get(protocol, protocol).format(probes=probes)


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


def card_metrics(eval_results: Sequence[EvalResult]) -> list[str]:
    """The metric types a card's results hold, in order of appearance (the card's `metrics:`)."""
    return list(dict.fromkeys(result.metric_type for result in eval_results)) or ["accuracy"]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_image_processor(name_or_path: str, image_size: int, **from_pretrained_kwargs: Any) -> DCRImageProcessor:
    """The `DCRImageProcessor` saved with a model folder or Hub repo.

    A folder saved without a processor gets a default `DCRImageProcessor(image_size=image_size)`,
    with a warning; a processor of another class or image size raises `ValueError`.
    """
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path, **from_pretrained_kwargs)
    except (OSError, ValueError) as error:
        logger.warning(f"No image processor found for '{name_or_path}' ({error}); using DCRImageProcessor's defaults.")
        return DCRImageProcessor(image_size=image_size)
    if not isinstance(processor, DCRImageProcessor):
        raise ValueError(f"'{name_or_path}' saved a {type(processor).__name__}; DCR models need a DCRImageProcessor.")
    if processor.image_size != image_size:
        raise ValueError(
            f"'{name_or_path}' saved a processor for {processor.image_size}x{processor.image_size} images, but its "
            f"model expects image_size={image_size}."
        )
    return processor


def load_model_and_processor(
    name_or_path: str, option: str = "model", **from_pretrained_kwargs: Any
) -> tuple[Any, DCRImageProcessor]:
    """Load a DCR embedder (`DCRModel`) and its image processor from a folder or a Hub id.

    The folder (or id) is checked first (`model_files.check_model_source`: a missing folder, a broken
    config or weight file is named in one line, `option` first), then the config, so that a non-DCR
    checkpoint fails with a `ValueError` before any weights are loaded; weights the folder lacks are
    refused. The model comes back channels-last (faster convolutions on CPU and GPU).
    """
    import torch
    from transformers import AutoConfig, AutoModel

    from .model_files import load_config, load_pretrained

    config = load_config(AutoConfig, name_or_path, option, **from_pretrained_kwargs)
    if config.model_type != DCRConfig.model_type:
        raise ValueError(
            f"'{name_or_path}' holds a {type(config).__name__} (model_type={config.model_type!r}); "
            "dcr_hf evaluates DCR models only (model_type='dcr')."
        )
    model = load_pretrained(AutoModel, name_or_path, option, config=config, **from_pretrained_kwargs)
    processor = load_image_processor(name_or_path, config.image_size, **from_pretrained_kwargs)
    model = getattr(model, "dcr", model)
    return model.to(memory_format=torch.channels_last), processor


# --------------------------------------------------------------------------------------------
# Results <-> EvalResult
# --------------------------------------------------------------------------------------------


def results_to_eval_results(
    results: Mapping[str, Any],
    dataset_name: str,
    dataset_type: str | None = None,
    dataset_split: str | None = None,
    dataset_revision: str | None = None,
) -> list[EvalResult]:
    """One `EvalResult` per metric and column of a runner result (values in percent, 2 decimals).

    The column is recorded as `metric_config = "<protocol>/<column>"` (e.g. `verification/8x8`,
    `identification/d1`), so results of several protocols and resolutions on one dataset coexist.
    """
    protocol = results.get("protocol")
    if protocol not in CARD_METRICS:
        raise ValueError(f"Unknown protocol {protocol!r} in the results; expected one of {sorted(CARD_METRICS)}.")
    dataset_type = dataset_type or dataset_name.lower().replace(" ", "-")
    eval_results = []
    for key, column in result_columns(results).items():
        title = column_title(key)
        for metric in CARD_METRICS[protocol]:
            if column.get(metric) is None:
                continue
            eval_results.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name=TASK_NAME,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=dataset_split,
                    dataset_revision=dataset_revision,
                    metric_type=metric,
                    metric_value=round(100.0 * float(column[metric]), 2),
                    metric_name=f"{dataset_name} {protocol} {title}: {METRIC_TITLES.get(metric, metric)}",
                    metric_config=f"{protocol}/{title}",
                )
            )
    if not eval_results:
        raise ValueError(f"The {protocol} results hold none of the metrics {CARD_METRICS[protocol]}.")
    return eval_results


def _slot(result: EvalResult) -> tuple:
    """What makes a result replace another: same task, dataset (type, config, split, revision) and
    protocol/column (`metric_config`)."""
    return (*result.unique_identifier, result.metric_config)


def merge_eval_results(existing: Sequence[EvalResult], new: Sequence[EvalResult]) -> list[EvalResult]:
    """`existing` without the entries whose dataset and protocol/column `new` measures again, then `new`."""
    replaced = {_slot(result) for result in new}
    return [result for result in existing if _slot(result) not in replaced] + list(new)


def results_markdown(eval_results: Sequence[EvalResult]) -> str:
    """Markdown tables of a card's results: one per dataset and protocol, rows = metrics,
    columns = resolutions / distances."""
    if not eval_results:
        return NO_RESULTS
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for result in eval_results:
        protocol, _, column = (result.metric_config or "/").partition("/")
        heading = (result.dataset_name, result.dataset_split, protocol)
        groups.setdefault(heading, {}).setdefault(result.metric_type, {})[column] = result.metric_value
    blocks = []
    types = {(r.dataset_name, r.dataset_split): r.dataset_type for r in eval_results}
    for (dataset, split, protocol), rows in groups.items():
        columns: list[str] = []
        for values in rows.values():
            columns += [c for c in values if c not in columns]
        where = f"{dataset}" + (f" ({split})" if split else "")
        lines = [
            f"**{where}: {protocol_title(protocol, types[(dataset, split)])}** (%)",
            "",
            "| metric | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for metric, values in rows.items():
            name = METRIC_TITLES.get(metric, metric).replace(" (%)", "")
            cells = [f"{values[c]:.2f}" if c in values else "-" for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _set_results_section(text: str, eval_results: Sequence[EvalResult]) -> str:
    # Blank lines around the tables: a Markdown table ends at the first blank line.
    section = f"{RESULTS_START}\n\n{results_markdown(eval_results)}\n\n{RESULTS_END}"
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start == -1 or end < start:
        # A card written by hand: keep it and add the section at the end.
        return text.rstrip("\n") + f"\n\n## Evaluation results\n\n{section}\n"
    return text[:start] + section + text[end + len(RESULTS_END) :]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _config_dict(config: DCRConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return DCRConfig().to_dict()
    if isinstance(config, DCRConfig):
        return config.to_dict()
    return {**DCRConfig().to_dict(), **dict(config)}


def _architecture_values(config: Mapping[str, Any], processor: DCRImageProcessor) -> dict[str, Any]:
    """The architecture and preprocessing facts the card templates show."""
    trunk_description = (
        "ResNet-style trunk (7x7/2 conv, max-pool, basic residual blocks with batch norm)"
        if config["trunk_type"] == "resnet"
        else "paper-style Face-ResNet trunk (3x3 convs, PReLU" + (", batch norm)" if config["use_batch_norm"] else ")")
    )
    names = ("depths", "hidden_sizes", "embedding_size", "branch_hidden_size", "normalize_embeddings", "image_size",
             "low_resolution_sizes")
    return {
        "trunk_description": trunk_description,
        **{name: config[name] for name in names},
        "image_mean": list(processor.image_mean),
        "image_std": list(processor.image_std),
    }


def render_model_card(
    kind: Literal["trunk", "branch"],
    repo_id: str | None = None,
    training_recipe: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    dataset_name: str | None = None,
    *,
    dataset_type: str | None = None,
    config: DCRConfig | Mapping[str, Any] | None = None,
    image_processor: Any | None = None,
    model_name: str | None = None,
    training_data: str = DEFAULT_TRAINING_DATA,
    datasets: Sequence[str] | None = None,
    base_model: str | None = None,
    specialized_initialization: bool = True,
    eval_results: Sequence[EvalResult] = (),
    template_dir: str | Path | None = None,
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
        config: the model's `DCRConfig` (architecture table); default: `DCRConfig()`.
        image_processor: its processor (mean/std in the table); default 0.5/0.5.
        training_data: one line naming the training data.
        datasets: Hub dataset ids for the metadata.
        base_model: Hub id of the model this one was trained from (the trunk of a branch model,
            the model a fine-tuned one started from): metadata and text.
        eval_results: `EvalResult`s to keep (e.g. from an earlier card), merged before `results`.
        template_dir: another folder of templates with the same file names.
    """
    if kind not in CARD_KINDS:
        raise ValueError(f"kind={kind!r} is not a card kind; expected one of {CARD_KINDS}.")
    import jinja2  # installed with torch

    template_dir = Path(template_dir) if template_dir is not None else TEMPLATES_DIR
    if not (template_dir / f"{kind}.md").is_file():
        raise FileNotFoundError(
            f"No model card template '{template_dir / f'{kind}.md'}'. The templates ship in the dcr-hf wheel "
            "(dcr_hf/hub_cards/) and in the source tree's hub_cards/; pass template_dir= to use another folder."
        )
    values = _config_dict(config)
    model_id = repo_id or "path/to/model"
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else f"dcr-{kind}")
    merged = list(eval_results)
    if results is not None:
        if not dataset_name:
            raise ValueError("results need dataset_name, the dataset they were measured on (e.g. 'LFW').")
        merged = merge_eval_results(merged, results_to_eval_results(results, dataset_name, dataset_type))
    card_data = ModelCardData(
        license="apache-2.0",
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
        **_architecture_values(values, image_processor or DCRImageProcessor()),
    )
    return ModelCard(content)


def _read_config(model_dir: Path) -> DCRConfig:
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"'{model_dir}' has no config.json; expected a DCR model folder (save_pretrained).")
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    if model_type != DCRConfig.model_type:
        raise ValueError(f"'{config_file}' has model_type={model_type!r}; model cards are for DCR models ('dcr').")
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
    card.save(readme)
    return readme


def update_model_card_results(
    model_dir: str | Path,
    results: Mapping[str, Any],
    dataset_name: str,
    dataset_type: str | None = None,
    dataset_split: str | None = None,
    dataset_revision: str | None = None,
    **card_kwargs: Any,
) -> ModelCard:
    """Record a runner result in `model_dir/README.md` (`model-index` and the results table).

    Earlier results for the same dataset (type, split, revision), protocol and resolution are
    replaced, others kept. A folder without a README first gets one from the template
    (`write_model_card(model_dir, **card_kwargs)`). Returns the saved card.
    """
    model_dir = Path(model_dir)
    readme = model_dir / "README.md"
    if not readme.is_file():
        write_model_card(model_dir, **card_kwargs)
    card = ModelCard.load(readme)
    new = results_to_eval_results(results, dataset_name, dataset_type, dataset_split, dataset_revision)
    card.data.eval_results = merge_eval_results(card.data.eval_results or [], new)
    card.data.metrics = card_metrics(card.data.eval_results)
    if card.data.model_name is None:
        card.data.model_name = model_dir.resolve().name
    card.text = _set_results_section(card.text, card.data.eval_results)
    card.save(readme)
    return card


# --------------------------------------------------------------------------------------------
# Pushing
# --------------------------------------------------------------------------------------------

#: What a push never sends: training checkpoints, logs, and pickled training state
#: (`training_args.bin` pickles every training argument, `--hub_token` included).
PUSH_IGNORE_PATTERNS = (
    "checkpoint-*", "checkpoint-*/**", "runs/**", "trackio/**", "*.tmp", "training_args.bin", "*.pt", "*.pth",
)


class HubPushError(RuntimeError):
    """An upload failed after the work was saved locally; the message says where it is and how to push it later."""


def hub_failures() -> tuple[type[BaseException], ...]:
    """What a Hub call raises when the Hub refuses or cannot be reached: huggingface_hub's HTTP errors
    derive from `OSError` and from its HTTP client's base error (which connection errors share)."""
    from huggingface_hub.errors import HfHubHTTPError

    return (OSError, *HfHubHTTPError.__bases__)


def hub_reason(error: BaseException) -> str:
    """A Hub error in one line: the HTTP status and the Hub's own message when it sent one."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    server = getattr(error, "server_message", None)
    if status is not None and server:
        return f"HTTP {status}: {' '.join(server.split())}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def prepare_hub_repo(
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    repo_type: str = "model",
    option: str = "--hub_model_id",
) -> str:
    """Before any work: check the token, create (or find) the repo, check write access, create the branch.

    As the transformers `Trainer` does at start-up (`create_repo(exist_ok=True)`), and more: the
    token is checked (`whoami`), write access to the repo is checked (`auth_check(write=True)`), a
    public repo is refused when `private=True` was asked for (the Hub keeps an existing repo's
    visibility), and `revision` is created as a branch when missing. Returns the full repo id
    (`name` -> `user/name`); raises `ValueError` with one line naming what is wrong.
    """
    from huggingface_hub import constants, get_token

    if constants.is_offline_mode():
        raise ValueError(f"pushing to {repo_id} needs the Hub, but HF_HUB_OFFLINE is set; unset it to push.")
    token = token or get_token()
    if token is None:
        raise ValueError(
            f"pushing to {repo_id} needs a Hub token with write access: pass --hub_token, set HF_TOKEN or log in "
            "with `hf auth login`."
        )
    api = HfApi(token=token)
    failures = hub_failures()
    try:
        user = api.whoami()["name"]
    except failures as error:
        raise ValueError(f"the Hub at {api.endpoint} did not accept the token: {hub_reason(error)}") from error
    try:
        repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
        api.auth_check(repo_id, repo_type=repo_type, write=True)
        info = api.repo_info(repo_id, repo_type=repo_type)
    except failures as error:
        raise ValueError(f"{option} {repo_id}: {user}'s token cannot create or write to it: {hub_reason(error)}") from error
    if private and not info.private:
        raise ValueError(
            f"{option} {repo_id} exists and is public; --hub_private_repo does not change an existing repo: make it "
            "private on the Hub first, or choose another repo."
        )
    if revision is not None:
        try:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        except failures as error:
            raise ValueError(f"--hub_revision {revision}: cannot create that branch of {repo_id}: {hub_reason(error)}") from error
    return repo_id


def _holds(path: Path, secret: bytes, chunk: int = 1 << 22) -> bool:
    """Whether the file at `path` contains `secret` (read in overlapping chunks)."""
    tail = b""
    with path.open("rb") as file:
        while block := file.read(chunk):
            if secret in tail + block:
                return True
            tail = (tail + block)[len(tail) + len(block) - len(secret) + 1 :]
    return False


def files_to_push(
    model_dir: str | Path, token: str | None = None, ignore_patterns: Sequence[str] = PUSH_IGNORE_PATTERNS
) -> list[str]:
    """The files of `model_dir` a push sends (paths relative to it): all but `ignore_patterns`, and
    never a file that holds the token (the given one, else the saved / `HF_TOKEN` one), which is left
    out with a warning naming it."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import filter_repo_objects

    model_dir = Path(model_dir)
    paths = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    paths = list(filter_repo_objects(paths, ignore_patterns=list(ignore_patterns)))
    secret = token or get_token()
    if not secret:
        return paths
    holding = [path for path in paths if _holds(model_dir / path, secret.encode())]
    for path in holding:
        logger.warning(f"Not pushing {model_dir / path}: it contains the Hub token.")
    return [path for path in paths if path not in holding]


def push_folder_to_hub(
    model_dir: str | Path,
    repo_id: str,
    commit_message: str = "Upload DCR model",
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    ignore_patterns: Sequence[str] = PUSH_IGNORE_PATTERNS,
    repo_type: str = "model",
) -> Any:
    """Create `repo_id` if needed (`create_repo(exist_ok=True, private=private)`) and upload `model_dir`
    in one commit to `revision` (default: main), with `token` (default: the saved / `HF_TOKEN` one).

    A folder without `README.md` first gets a card (`write_model_card`, with `repo_id` in the code
    examples). Checkpoints, logs and pickled training state are not sent (`ignore_patterns`), nor any
    file holding the token (`files_to_push`). Returns the commit info (`HfApi.create_commit`).
    """
    from huggingface_hub import CommitOperationAdd

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"'{model_dir}' is not a folder; expected a saved DCR model folder.")
    if repo_type == "model" and not (model_dir / "README.md").is_file():
        write_model_card(model_dir, repo_id=repo_id)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
    operations = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(model_dir / path))
        for path in files_to_push(model_dir, token, ignore_patterns)
    ]
    return api.create_commit(
        repo_id=repo_id, repo_type=repo_type, operations=operations, commit_message=commit_message, revision=revision
    )


def push_later_command(model_dir: str | Path, repo_id: str, private: bool | None = None, revision: str | None = None) -> str:
    """The command that pushes a saved folder later, as a push failure tells the user."""
    options = "".join(f", {name}={value!r}" for name, value in (("private", private), ("revision", revision)) if value)
    return (
        f"python -c \"from dcr_hf.hub import push_folder_to_hub; push_folder_to_hub('{model_dir}', '{repo_id}'{options})\""
    )


def push_or_explain(model_dir: str | Path, repo_id: str, **push_kwargs: Any) -> Any:
    """`push_folder_to_hub`, turning a Hub failure into a `HubPushError` that says the folder is saved
    and how to push it later (no traceback needed)."""
    try:
        return push_folder_to_hub(model_dir, repo_id, **push_kwargs)
    except hub_failures() as error:
        later = push_later_command(model_dir, repo_id, push_kwargs.get("private"), push_kwargs.get("revision"))
        raise HubPushError(
            f"pushing to {repo_id} failed ({hub_reason(error)}); everything is saved in {model_dir}. Push it later with: {later}"
        ) from error


__all__ = [
    "CARD_KINDS",
    "PUSH_IGNORE_PATTERNS",
    "HubPushError",
    "files_to_push",
    "hub_failures",
    "hub_reason",
    "prepare_hub_repo",
    "push_later_command",
    "push_or_explain",
    "load_image_processor",
    "card_metrics",
    "load_model_and_processor",
    "model_hub_id",
    "protocol_title",
    "recipe_value",
    "TEMPLATES_DIR",
    "merge_eval_results",
    "push_folder_to_hub",
    "render_model_card",
    "results_markdown",
    "results_to_eval_results",
    "update_model_card_results",
    "write_model_card",
]
