"""Reading `torch.save` files with `weights_only=True`, and saying why one does not load.

`load_weights_only(path)` is `torch.load(path, map_location="cpu", weights_only=True)` (the way
transformers' `Trainer` reads `optimizer.pt`, `scheduler.pt`, `scaler.pt`, `rng_state*.pth`, and
the way the converter reads an original checkpoint); when it fails, `UnloadableFile` says why, in
words that tell the cases apart: a folder, an empty file, bytes that are neither a `torch.save`
archive nor a pickle, a pickle that would import a Python object (to run code, or to build
something other than tensors: torch refuses it), a truncated or damaged archive.

The pickle's imports are named by reading its opcodes (`pickletools`), never by unpickling it:
no code in a file runs. Written by hand: torch's refusal of a legacy (non-zip) pickle names only
an opcode number, not the object the pickle asked for.
"""

from __future__ import annotations

import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

#: Modules a `torch.save` of tensors and plain containers imports from; any other is named.
_TENSOR_MODULES = ("torch", "collections", "_codecs")
#: Pickles of a legacy (non-zip) `torch.save` file: magic number, protocol, system info, data.
_LEGACY_PICKLES = 4


class UnloadableFile(ValueError):
    """A file `torch.load(..., weights_only=True)` cannot read; the message says why, without the path."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _scan(stream: Any) -> list[str] | None:
    """The globals one pickle in `stream` imports (`module.name`), or `None` when the bytes are not
    a complete pickle. Opcodes are only parsed, never executed."""
    imports, strings = [], []
    try:
        for opcode, argument, _ in pickletools.genops(stream):
            if opcode.name == "GLOBAL":
                imports.append(".".join(str(argument).split(" ", 1)))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                imports.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(argument, str) and "UNICODE" in opcode.name:
                strings.append(argument)
            if opcode.name == "STOP":
                return imports
    except (ValueError, EOFError, UnicodeDecodeError, pickle.UnpicklingError):
        return None
    return None


def pickle_imports(path: str | Path) -> list[str] | None:
    """Every global the pickles of a `torch.save` file import (a zip archive's `data.pkl`, or the
    pickles of a legacy file), or `None` when the file is neither an archive nor a pickle."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith("data.pkl")]
            if not names:
                return None
            with archive.open(names[0]) as stream:
                return _scan(stream)
    with path.open("rb") as stream:
        found = _scan(stream)
        if found is None:
            return None
        for _ in range(_LEGACY_PICKLES - 1):
            more = _scan(stream)
            if more is None:
                break
            found += more
    return found


def _refusal(path: Path, error: BaseException) -> str:
    imports = pickle_imports(path)
    if imports is None:
        head = " ".join(f"{byte:02x}" for byte in path.read_bytes()[:8])
        return f"is neither a torch.save archive nor a pickle (it starts with bytes {head})"
    foreign = [name for name in dict.fromkeys(imports) if name.split(".", 1)[0] not in _TENSOR_MODULES]
    if foreign:
        return (
            f"is a pickle that would import {', '.join(foreign[:3])} (to run code or build objects other than "
            "tensors): torch.load with weights_only=True refused it, and nothing in it was run"
        )
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if "global" in line.lower() or "unsupported" in line.lower()), lines[0])
    return f"holds objects torch.load with weights_only=True does not read ({detail})"


def load_weights_only(path: str | Path) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)` (inside a caller's
    `torch.serialization.safe_globals`, the objects it allows too); raises `UnloadableFile` saying
    why the file does not load (see the module docstring)."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise UnloadableFile("is a folder, not a file")
    if not path.is_file():
        raise UnloadableFile("does not exist")
    if path.stat().st_size == 0:
        raise UnloadableFile("is empty (0 bytes)")
    if zipfile.is_zipfile(path):
        # torch reads the records it needs; the CRC check also catches damage in the others.
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise UnloadableFile(f"is truncated or corrupt ({error})") from None
        if damaged:
            raise UnloadableFile(f"is corrupt (entry {damaged})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnloadableFile(_refusal(path, error)) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise UnloadableFile(f"is truncated or corrupt ({_first_line(error)})") from None


__all__ = ["UnloadableFile", "load_weights_only", "pickle_imports"]
