"""What the console commands share: one line for a mistake (a traceback only on request), the push
options, the check of an output folder.

Every command (`dcr-train` / `train_hf.py`, `dcr-eval` / `eval_hf.py`, `dcr-prepare`, `dcr-convert`)
runs its work inside `reported_errors`: a bad value, a missing or broken file (a
`dcr_hf.errors_dcr.DCRInputError`: every check of the package raises one, with a message naming the
value, file or line and what was expected) ends with argparse's usage line and one `PROG: error: ...`
line, exit status 2; any other exception is a bug and shows its traceback; a run that started well and then had to stop (a diverging loss, a push that failed
after the work was saved) ends with one `PROG: error: ...` line, exit status 1; Ctrl-C (a
`KeyboardInterrupt`) with one `PROG: interrupted ...` line, exit status 130 (a training run stopped
by SIGINT / SIGTERM says what it saved and how to resume; 143 for SIGTERM). A bare `--debug`
on the command line, or `DCR_DEBUG=1` in the environment, shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors_dcr import DCRFileExistsError, DCRInputError, DCRPermissionError

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "DCR_DEBUG"
DEBUG_HELP = f"On an error, {DEBUG_FLAG} (or {DEBUG_VARIABLE}=1) shows the traceback instead of the one-line message."

#: Mistakes in what the user gave (values, files, folders, models): usage line + one line, exit
#: status 2. Only the package's own checks raise them; any other exception is a bug and keeps its
#: traceback.
USAGE_ERRORS: tuple[type[BaseException], ...] = (DCRInputError,)

class RunStoppedError(RuntimeError):
    """A run that started well and then had to stop (e.g. `dcr_hf.hub.HubPushError`: a push that failed
    after the work was saved): one line, exit status 1, no usage line."""


#: Runs that had to stop after starting well: a diverging loss, a push that failed after saving.
RUN_ERRORS: tuple[type[BaseException], ...] = (FloatingPointError, RunStoppedError)


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """The push options of the argparse commands, named as in `TrainingArguments`: `--hub_token`,
    `--hub_private_repo` (alias `--private`), `--hub_revision`."""
    parser.add_argument("--hub_token", default=None, help="Hub token to push with (default: HF_TOKEN or the saved login)")
    parser.add_argument("--hub_private_repo", "--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--hub_revision", default=None, metavar="BRANCH", help="push to this branch (created if missing)")


def check_output_path(output_dir: str | Path, option: str, purpose: str) -> None:
    """Refuse, before any work, an output folder that cannot be written: it (or a folder above it)
    is a file, or the nearest existing folder above it is not writable. `purpose` says what goes there."""
    path = Path(output_dir).expanduser()
    for candidate in (path, *path.parents):
        if not candidate.exists():
            continue
        if not candidate.is_dir():
            where = "is a file" if candidate == path else f"is inside {candidate}, which is a file"
            raise DCRFileExistsError(f"{option} {output_dir} {where}; expected a folder for {purpose}.")
        if not os.access(candidate, os.W_OK | os.X_OK):
            raise DCRPermissionError(f"{option} {output_dir}: {candidate} is not writable; {purpose} cannot be saved there.")
        return


def split_debug_flag(argv: Sequence[str] | None = None) -> tuple[list[str], bool]:
    """`argv` (default `sys.argv[1:]`) without a bare `--debug`, and whether tracebacks are wanted.

    Only a bare `--debug` (last, or followed by another option) is taken: `--debug underflow_overflow`
    stays the `TrainingArguments` option of that name.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")
    kept = []
    for index, argument in enumerate(argv):
        if argument == DEBUG_FLAG and (index + 1 == len(argv) or argv[index + 1].startswith("-")):
            debug = True
        else:
            kept.append(argument)
    return kept, debug


@contextmanager
def reported_errors(parser: argparse.ArgumentParser, debug: bool = False) -> Iterator[None]:
    """Turn the errors raised inside into the command's one-line errors (see the module docstring)."""
    try:
        yield
    except KeyboardInterrupt as interruption:
        if debug:
            raise
        # One line, the exit status of a process ended by the signal (130 for SIGINT): a stopped
        # training run (`dcr_hf.training.interrupt.TrainingInterrupted`) says what it kept and how to resume.
        parser.exit(getattr(interruption, "exit_status", 130), f"{parser.prog}: {interruption or 'interrupted (SIGINT).'}\n")
    except RUN_ERRORS as error:
        if debug:
            raise
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except USAGE_ERRORS as error:
        if debug:
            raise
        parser.error(str(error).strip() or type(error).__name__)


__all__ = [
    "DEBUG_FLAG", "DEBUG_HELP", "DEBUG_VARIABLE", "RUN_ERRORS", "USAGE_ERRORS", "RunStoppedError", "add_hub_arguments",
    "check_output_path", "reported_errors", "split_debug_flag",
]
