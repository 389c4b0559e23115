"""Pushing a DCR folder to the Hub: the repo checked before any work, the files a push sends,
and a failed push turned into one line that says the folder is saved and how to push it later."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from transformers.utils import logging

from ..errors_dcr import DCRFileNotFoundError, DCRInputError
from ..cli import RunStoppedError
from ..model_files import hub_failures, hub_reason
from .cards import write_model_card

logger = logging.get_logger(__name__)

#: What a push never sends: training checkpoints, logs, pickled training state
#: (`training_args.bin` pickles every training argument, `--hub_token` included) and the temporary
#: files and folders of a save in progress (`dcr_hf.saving`).
PUSH_IGNORE_PATTERNS = (
    "checkpoint-*", "checkpoint-*/**", "runs/**", "trackio/**", "*.tmp", "training_args.bin", "*.pt", "*.pth",
    ".*.tmp.*", ".*.saving.*/**",
)


class HubPushError(RunStoppedError):
    """An upload failed after the work was saved locally; the message says where it is and how to push it later."""


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
        raise DCRInputError(f"pushing to {repo_id} needs the Hub, but HF_HUB_OFFLINE is set; unset it to push.")
    token = token or get_token()
    if token is None:
        raise DCRInputError(
            f"pushing to {repo_id} needs a Hub token with write access: pass --hub_token, set HF_TOKEN or log in "
            "with `hf auth login`."
        )
    api = HfApi(token=token)
    failures = hub_failures()
    try:
        user = api.whoami()["name"]
    except failures as error:
        raise DCRInputError(f"the Hub at {api.endpoint} did not accept the token: {hub_reason(error)}") from error
    try:
        repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
        api.auth_check(repo_id, repo_type=repo_type, write=True)
        info = api.repo_info(repo_id, repo_type=repo_type)
    except failures as error:
        raise DCRInputError(f"{option} {repo_id}: {user}'s token cannot create or write to it: {hub_reason(error)}") from error
    if private and not info.private:
        raise DCRInputError(
            f"{option} {repo_id} exists and is public; --hub_private_repo does not change an existing repo: make it "
            "private on the Hub first, or choose another repo."
        )
    if revision is not None:
        try:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        except failures as error:
            raise DCRInputError(f"--hub_revision {revision}: cannot create that branch of {repo_id}: {hub_reason(error)}") from error
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
        raise DCRFileNotFoundError(f"'{model_dir}' is not a folder; expected a saved DCR model folder.")
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
    "PUSH_IGNORE_PATTERNS",
    "HubPushError",
    "files_to_push",
    "hub_failures",
    "hub_reason",
    "prepare_hub_repo",
    "push_folder_to_hub",
    "push_later_command",
    "push_or_explain",
]
