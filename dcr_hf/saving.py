"""Saving files so that a failed save never leaves a half-written one: temporary name, then rename.

Every file dcr-hf writes (results, reports, cards, JSON records, model folders) goes through here:

- `atomic_path(path)`: a temporary file in the same folder (`.STEM.XXXX.tmp.SUFFIX`: a
  writer that goes by the suffix still sees it) that the caller
  writes, renamed over `path` with `os.replace` only when complete; on any error the temporary
  file is removed and `path` keeps its previous content (or stays absent);
- `staged_folder(folder)`: a temporary folder beside (or inside) `folder` that a `save_pretrained`
  writes, its files moved into `folder` (each by `os.replace`) only when all were written; on an
  error it is removed and `folder` holds what it held before;
- both give the files the mode every other file of the user gets (`0o666 & ~umask`; folders
  `0o777 & ~umask`): `tempfile` creates them private (0600 / 0700), and so does safetensors'
  `save_file` (`apply_umask` fixes a folder another writer filled, e.g. a Trainer checkpoint);
- both turn a write the disk refused (full, not writable: `save_failure`) into one line, a
  `SaveFailedError` (exit status 1 on the command lines) naming what was being saved and what was
  kept: "no space left on device while saving DIR/results.json; DIR/results.json is as it was.".

Written by hand: the standard library has the pieces (`tempfile`, `os.replace`) but no
atomic-write helper, and the ones on PyPI would be a dependency for twenty lines.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .cli import RunStoppedError

#: What a failed write's errno means, in the words of the one-line error.
DISK_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EIO: "a write failed (input/output error)",
}
#: The same, as the Rust (safetensors) and C++ (torch.save) writers put them in their messages.
_DISK_ERROR_TEXTS = (
    ("no space left on device", errno.ENOSPC),
    ("storagefull", errno.ENOSPC),
    ("os error 28", errno.ENOSPC),
    ("quota exceeded", errno.EDQUOT),
    ("permission denied", errno.EACCES),
    ("os error 13", errno.EACCES),
    ("read-only file system", errno.EROFS),
)
#: What torch's C++ writer (`torch.save`) says when a write fails, without the reason: on a full
#: disk, "unexpected pos 704 vs 598" (its stream's `iostream error`). Read with the free space left.
_UNEXPLAINED_WRITE_FAILURES = ("unexpected pos", "file write failed", "iostream error")
#: Free bytes below which an unexplained write failure is taken for a full disk.
LOW_SPACE = 16 * 2**20


class SaveFailedError(RunStoppedError):
    """A save that the disk refused (full, not writable): nothing half-written was left; the
    message names what was being saved and what was kept. Exit status 1 on the command lines."""


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back: there is no getter before Python 3.13's)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from `open()` under the current umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode a new folder gets from `mkdir` under the current umask."""
    return 0o777 & ~current_umask()


@contextmanager
def atomic_path(path: str | Path, kept: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; once the block wrote it, give it the user's file mode
    and rename it over `path`. On an error the temporary file is removed; a disk error becomes one
    `SaveFailedError` line (`kept`: what it says was kept; by default that `path` is unchanged)."""
    path = Path(path)
    if kept is None:
        kept = f"{path} is as it was" if path.exists() else f"nothing was written to {path.parent}"
    temporary = None
    try:
        descriptor, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(descriptor)
        temporary = Path(name)
        yield temporary
        os.chmod(temporary, file_mode())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        failure = save_failure(error, path, kept, path.parent) if isinstance(error, Exception) else None
        if failure is None:
            raise
        raise failure from error


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through `atomic_path`; returns `path`."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def apply_umask(folder: str | Path) -> None:
    """Give every file and folder under `folder` (and it) the modes of the user's umask: writers
    that create files private (safetensors' `save_file` makes them 0600) are brought in line."""
    folder = Path(folder)
    files, folders = file_mode(), folder_mode()
    os.chmod(folder, folders)
    for root, names, filenames in os.walk(folder):
        for name in names:
            os.chmod(Path(root) / name, folders)
        for name in filenames:
            os.chmod(Path(root) / name, files)


def _replace_into(source: Path, target: Path) -> None:
    """Move `source` (a file or folder) to `target` by rename, replacing what is there."""
    if source.is_dir() and not source.is_symlink():
        if target.is_dir() and not target.is_symlink():
            # A folder inside a model folder (rare): moved entry by entry, so nothing is lost on the way.
            for entry in source.iterdir():
                _replace_into(entry, target / entry.name)
            source.rmdir()
            return
    os.replace(source, target)


@contextmanager
def staged_folder(folder: str | Path, what: str | None = None, kept: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder next to (or, when it exists, inside) `folder` for a save to write;
    when the block completes, move every file into `folder` (each by `os.replace`); on an error,
    remove the temporary folder; a disk error becomes one `SaveFailedError` line naming `what`
    (default: `folder`) and `kept` (default: that `folder` is as it was). The files keep the user's
    umask modes."""
    folder = Path(folder)
    what = what or str(folder)
    if kept is None:
        kept = f"{folder} is as it was" if folder.exists() else f"nothing was written to {folder.parent}"
    staging = None
    try:
        parent = folder if folder.is_dir() else folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.saving.", dir=parent))
        yield staging
        apply_umask(staging)
        if not folder.exists():
            os.replace(staging, folder)
            return
        for entry in sorted(staging.iterdir()):
            _replace_into(entry, folder / entry.name)
        staging.rmdir()
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        failure = save_failure(error, what, kept, folder) if isinstance(error, Exception) else None
        if failure is None:
            raise
        raise failure from error


def disk_error(error: BaseException, where: str | Path | None = None) -> int | None:
    """The errno of a write the disk refused (`DISK_ERRORS`) behind `error` or its causes, or
    `None` for any other error. Writers that do not raise `OSError` (safetensors' `SafetensorError`,
    torch's `RuntimeError`) are read by their message; one that gives no reason (torch's) is a full
    disk when the file system of `where` has less than `LOW_SPACE` left, an I/O error otherwise."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for link in chain:
        if isinstance(link, OSError) and link.errno in DISK_ERRORS:
            return link.errno
        text = str(link).lower()
        for phrase, number in _DISK_ERROR_TEXTS:
            if phrase in text:
                return number
    unexplained = any(phrase in str(link).lower() for link in chain for phrase in _UNEXPLAINED_WRITE_FAILURES)
    if unexplained and where is not None:
        existing = next((path for path in (Path(where), *Path(where).parents) if path.exists()), None)
        free = shutil.disk_usage(existing).free if existing is not None else LOW_SPACE
        return errno.ENOSPC if free < LOW_SPACE else errno.EIO
    return None


def save_failure(
    error: BaseException, what: str | Path, kept: str, where: str | Path | None = None
) -> SaveFailedError | None:
    """The one-line `SaveFailedError` of a save of `what` (into the folder `where`) the disk refused
    ("no space left on device while saving WHAT; KEPT."), or `None` when `error` is not a disk error
    (a bug keeps its traceback)."""
    if isinstance(error, SaveFailedError):
        return None  # already the one line, from an inner save
    number = disk_error(error, where)
    if number is None:
        return None
    return SaveFailedError(f"{DISK_ERRORS[number]} while saving {what}; {kept}.")


__all__ = [
    "DISK_ERRORS",
    "LOW_SPACE",
    "SaveFailedError",
    "apply_umask",
    "atomic_path",
    "current_umask",
    "disk_error",
    "file_mode",
    "folder_mode",
    "save_failure",
    "staged_folder",
    "write_text_atomic",
]
