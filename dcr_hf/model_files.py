"""Model arguments checked before anything loads: one-line errors naming the folder or file.

A model argument (`--trunk`, `--init_from`, `--model_name_or_path`, ...) names a local folder or a
Hub repo. `check_model_source` tells them apart the way a user means them: an existing path is a
folder to check (`check_model_folder`: its `config.json` must hold a `model_type`, its weight
files must be complete, every tensor finite and of the shape the model its config describes has:
the one place every folder a command reads is checked), a path that does not exist
and cannot be a Hub id (`./x`, `/abs/x`, `a/b/c`) is a missing folder, not a "bad repo id"; with
`HF_HUB_OFFLINE` set, a missing `org/name` folder is reported as missing too. `load_pretrained` /
`load_config` then load with transformers and refuse weights a folder lacks (transformers would
initialize them randomly, with a warning only).

A missing path that can be a Hub id (`outputs/dcr-trunkk` reads as `org/name`) is asked of the Hub
once, with a short timeout and no retries, before anything loads: when the Hub does not know it
(or cannot be reached), the error names both readings, "no folder outputs/dcr-trunkk here; as a
Hub id: <the Hub's answer>", instead of transformers' retried download of a repo that is not there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors_dcr import DCRFileError, DCRFileNotFoundError, DCRInputError, DCRNotADirectoryError

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
#: Seconds the one Hub look-up of a missing local path waits (no retries): an answer, or a short failure.
HUB_PROBE_TIMEOUT = 5.0


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def looks_like_hub_id(source: str) -> bool:
    """Whether `source` reads as a Hub repo id (`org/name`) rather than a local path that exists."""
    source = str(source)
    return source.count("/") == 1 and not source.startswith((".", "/", "~")) and not Path(source).exists()


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
    return _first_line(error)


def safetensors_problem(path: str | Path, complete: bool = False) -> str | None:
    """Why `path` is not a readable safetensors file, or `None`. The header is always checked (it
    covers truncation: the header names every tensor's byte range); `complete=True` also reads every
    tensor (one at a time) and checks the floating ones are finite, naming the first that is not."""
    import torch
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        return f"{path} is missing"
    if path.stat().st_size == 0:
        return f"{path} is empty (0 bytes)"
    try:
        with safe_open(str(path), "pt") as weights:
            for name in weights.keys() if complete else ():
                tensor = weights.get_tensor(name)
                if tensor.is_floating_point():
                    bad = int((~torch.isfinite(tensor)).sum())
                    if bad:
                        return f"{path} holds {bad} NaN/inf value(s) of {tensor.numel()} in tensor {name}"
    except (SafetensorError, OSError) as error:
        return f"{path} is truncated or corrupt ({_first_line(error)})"
    return None


def tensor_shapes(path: str | Path) -> dict[str, list[int]]:
    """`{name: shape}` of a safetensors file, from its header (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as weights:
        return {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}


def expected_shapes(config: dict[str, Any]) -> dict[str, list[int]] | None:
    """`{name: shape}` of every weight of the DCR model a `config.json` builds (both the embedder's
    and the training head's names), or `None` for a config of another model type. The model is
    built on the meta device: no memory, no initialization."""
    import torch

    from .configuration_dcr import DCRConfig
    from .modeling_dcr import DCRForImageClassification

    if config.get("model_type") != DCRConfig.model_type:
        return None
    with torch.device("meta"):
        model = DCRForImageClassification(DCRConfig.from_dict(config))
    shapes = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    # A folder saved from `DCRModel` names the embedder's weights without the `dcr.` prefix.
    prefix = f"{model.base_model_prefix}."
    shapes.update({name[len(prefix):]: shape for name, shape in shapes.items() if name.startswith(prefix)})
    return shapes


def shape_problem(folder: Path, config: dict[str, Any]) -> str | None:
    """The first saved tensor whose shape is not the one the model of `config` has (found vs
    expected), or `None`. Names the model does not have are left to the loader."""
    expected = expected_shapes(config)
    if expected is None:
        return None
    for path in weight_files(folder):
        for name, shape in tensor_shapes(path).items():
            if name in expected and shape != expected[name]:
                return (
                    f"{path} holds tensor {name} of shape {shape}; the model its config.json describes "
                    f"expects {expected[name]}"
                )
    return None


def json_problem(path: str | Path) -> str | None:
    """Why `path` is not a JSON file, or `None`."""
    path = Path(path)
    if not path.is_file():
        return f"{path} is missing"
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        return f"{path} is not UTF-8 text ({error.reason} at byte {error.start})"
    except ValueError as error:
        return f"{path} is not valid JSON ({error})" if path.stat().st_size else f"{path} is empty (0 bytes)"
    return None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files a saved folder's weights are in (one file, or the shards of its index)."""
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file() and json_problem(index) is None:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        return [folder / shard for shard in shards]
    return [folder / WEIGHTS_NAME]


def saved_tensor_names(name_or_path: str) -> set[str]:
    """The tensor names a saved folder's (or a Hub repo's) safetensors weights hold, read from the
    file headers only (a Hub repo's files are downloaded, as loading would)."""
    from safetensors import safe_open

    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        files = weight_files(folder)
    else:
        from huggingface_hub import hf_hub_download

        files = [Path(hf_hub_download(str(name_or_path), WEIGHTS_NAME))]
    names: set[str] = set()
    for path in files:
        with safe_open(str(path), "pt") as weights:
            names.update(weights.keys())
    return names


def config_problem(path: Path) -> str | None:
    """Why `path` is not a model's `config.json` (JSON with a `model_type`), or `None`."""
    problem = json_problem(path)
    if problem:
        return problem
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        return (
            f"{path} has no model_type; expected the config.json that save_pretrained writes "
            '(with "model_type": "dcr" for a DCR model)'
        )
    return None


def check_model_folder(
    folder: str | Path, option: str = "model", weights: bool = True, name: str | None = None
) -> None:
    """Raise one line when a local model folder lacks, or holds a broken, `config.json` (JSON with a
    `model_type`) or (with `weights`) weight file: truncated, a tensor holding NaN/inf, or a tensor
    whose shape is not the one the model its config describes has. The one check of every folder a
    command reads (`--trunk`, `--init_from`, `--model_name_or_path`, `--compare`; a Hub id's
    downloaded files too, `name` then being the id the message names)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise DCRFileNotFoundError(
            f"{option} {folder} has no config.json; expected a folder saved by save_pretrained or train_hf.py "
            "(config.json, model.safetensors)."
        )
    problems = [config_problem(folder / "config.json")]
    if weights and problems[0] is None:
        problems += [safetensors_problem(path, complete=True) for path in weight_files(folder)]
        if not any(problems):
            problems.append(shape_problem(folder, json.loads((folder / "config.json").read_text(encoding="utf-8"))))
    problem = next((p for p in problems if p), None)
    if problem:
        raise DCRInputError(f"{option} {name or folder}: {problem}.")


def hub_model_folder(repo_id: str, option: str = "model", **kwargs: Any) -> Path:
    """The local folder (in the Hub cache) of a Hub model's config and weight files, downloaded now
    (what `from_pretrained` would download; it then reads them from the cache), so that they are
    checked as a local folder's are. `kwargs`: `from_pretrained`'s `revision`, `token`, `cache_dir`."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(
            repo_id, revision=kwargs.get("revision"), token=kwargs.get("token"), cache_dir=kwargs.get("cache_dir"),
            allow_patterns=["config.json", WEIGHTS_INDEX_NAME, "*.safetensors"],
        ))
    except hub_failures() as error:
        raise DCRFileError(f"{option} {repo_id}: {hub_reason(error)}") from error


def hub_answer(repo_id: str) -> str | None:
    """What the Hub says about model repo `repo_id`, in one line, or `None` when it is there (or when
    it cannot be asked now but its files are in the local cache). One request, `HUB_PROBE_TIMEOUT`
    seconds at most, no retries: this only tells a mistyped folder from a Hub id."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    if constants.is_offline_mode():
        return "not looked up (HF_HUB_OFFLINE is set)"
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.model_info(repo_id, timeout=HUB_PROBE_TIMEOUT)
    except hub_failures() as error:
        if isinstance(error, HfHubHTTPError):
            return hub_reason(error)
        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return None  # unreachable now, but downloaded before: transformers loads the cached copy
        return f"the Hub at {api.endpoint} could not be reached ({_first_line(error)})"
    return None


def check_model_source(name_or_path: str, option: str = "model", weights: bool = True) -> None:
    """Raise one line when `name_or_path` names neither a usable local folder (its weight files
    checked too with `weights`) nor a Hub repo (`hub_answer`: one short look-up, none offline)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DCRNotADirectoryError(f"{option} {name_or_path} is a file; expected a model folder or a Hub repo id.")
        check_model_folder(path, option, weights)
        return
    if not looks_like_hub_id(name_or_path):
        raise DCRFileNotFoundError(f"{option} {name_or_path}: no such folder.")
    answer = hub_answer(name_or_path)
    if answer is not None:
        raise DCRFileNotFoundError(f"{option} {name_or_path}: no folder {name_or_path} here; as a Hub id: {answer}.")


def load_config(config_class: Any, name_or_path: str, option: str = "model", **kwargs: Any) -> Any:
    """`config_class.from_pretrained` after `check_model_source` (of the config only: the caller can
    check the model type before the weights), its errors in one line. Remote code is never trusted
    unless the caller says so: transformers would otherwise ask on the terminal (`input()`)."""
    check_model_source(name_or_path, option, weights=False)
    kwargs.setdefault("trust_remote_code", False)
    try:
        return config_class.from_pretrained(name_or_path, **kwargs)
    except DCRInputError:
        raise
    except (OSError, ValueError) as error:  # an id that does not resolve, a failed download, another model's code
        raise DCRFileError(f"{option} {name_or_path}: {_first_line(error)}") from error


def load_pretrained(model_class: Any, name_or_path: str, option: str = "model", **kwargs: Any) -> Any:
    """`model_class.from_pretrained` after `check_model_source`; weights the model has but the
    folder lacks are refused (naming them) instead of being initialized randomly. Remote code is
    never trusted unless the caller says so (no prompt)."""
    check_model_source(name_or_path, option)
    if not Path(name_or_path).expanduser().is_dir():  # a Hub id: its files checked where they are downloaded to
        check_model_folder(hub_model_folder(name_or_path, option, **kwargs), option, name=name_or_path)
    kwargs.setdefault("trust_remote_code", False)
    try:
        model, info = model_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    except DCRInputError:
        raise
    except (OSError, ValueError) as error:
        raise DCRFileError(f"{option} {name_or_path}: {_first_line(error)}") from error
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise DCRInputError(
            f"{option} {name_or_path}: the saved weights lack {len(missing)} the model needs ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); they would start random."
        )
    return model


__all__ = [
    "check_model_folder",
    "check_model_source",
    "config_problem",
    "expected_shapes",
    "hub_answer",
    "hub_model_folder",
    "hub_failures",
    "hub_reason",
    "json_problem",
    "looks_like_hub_id",
    "load_config",
    "load_pretrained",
    "safetensors_problem",
    "saved_tensor_names",
    "shape_problem",
    "tensor_shapes",
    "weight_files",
]
