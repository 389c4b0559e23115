"""One run per output folder: an exclusive lock file, `--output_dir/.dcr-run.lock`.

`RunLock(output_dir)` is a context manager held by `run.run_training` from its re-check of the
output folder (`checkpoints.check_output_dir`, first run by the plan) to the end of the run,
released on every exit (an error, Ctrl-C; the kernel releases it when the process is killed). In a
distributed run only the main process (rank 0) takes it. The file holds the PID and host of the
run that holds it; the lock itself is `fcntl.flock` on it, so a lock left by a killed run is free
at once and is taken over with a warning naming the dead run. Where `flock` is not available
(another OS, a file system without locks) the PID and host decide: a lock of a live PID on this
host (or of another host) is held, one of a dead PID on this host is stale. A second run into a
held folder is refused with one line naming the folder, the PID and the host. `check_unlocked`
(called by the plan) refuses it before any data is read; taking the lock at the run start is what
makes two runs that start together exclusive. The lock file is never pushed (`run` adds it to the
push's ignore patterns) and is removed when the run ends.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from transformers.utils import logging

from ..errors_dcr import DCRFileExistsError

try:
    import fcntl
except ImportError:  # not on Windows: the PID and host decide
    fcntl = None

logger = logging.get_logger(__name__)

LOCK_FILE = ".dcr-run.lock"


def lock_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / LOCK_FILE


def _holder(path: Path) -> dict | None:
    """The `{"pid", "host", "started"}` a lock file holds; `None` when there is none or it is unreadable."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _held_by_pid(holder: dict | None) -> bool:
    """Without `flock`: whether the holder in the file is a live run (another host's counts as live)."""
    if holder is None:
        return False
    return holder.get("host") != socket.gethostname() or _alive(holder["pid"])


def _refusal(output_dir: str | Path, holder: dict | None) -> DCRFileExistsError:
    who = f"PID {holder['pid']} on host {holder.get('host')}" if holder else "a run whose lock file is being written"
    return DCRFileExistsError(
        f"--output_dir {output_dir} is in use by another run ({who}, lock file {lock_path(output_dir)}); "
        "wait for it to finish or choose another --output_dir."
    )


def _flock_held(path: Path) -> bool | None:
    """Whether a live process holds `flock` on `path`; `None` where `flock` cannot tell."""
    if fcntl is None:
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(descriptor)  # releases the probe's shared lock
    return False


def check_unlocked(output_dir: str | Path) -> None:
    """Refuse, before any work, an `output_dir` a live run holds (a stale lock passes: the run takes it over)."""
    path = lock_path(output_dir)
    if not path.exists():
        return
    held = _flock_held(path)
    holder = _holder(path)
    if held or (held is None and _held_by_pid(holder)):
        raise _refusal(output_dir, holder)


class RunLock:
    """The exclusive lock of a run's output folder (see the module); `enabled=False`: a no-op (the
    processes of a distributed run other than the main one)."""

    def __init__(self, output_dir: str | Path, enabled: bool = True):
        self.output_dir, self.enabled = Path(output_dir), enabled
        self.path = lock_path(output_dir)
        self._descriptor: int | None = None
        self._created_folder = False

    def acquire(self) -> RunLock:
        if not self.enabled or self._descriptor is not None:
            return self
        self._created_folder = not self.output_dir.exists()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a lock file replaced between our open and our lock: open the new one
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            held = self._lock(descriptor)
            if held:
                holder = _holder(self.path)
                os.close(descriptor)
                raise _refusal(self.output_dir, holder)
            try:
                same = os.path.samestat(os.fstat(descriptor), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)
        else:
            raise _refusal(self.output_dir, _holder(self.path))
        previous = _holder(self.path)
        if previous is not None:
            logger.warning(
                f"Taking over the stale lock {self.path} of PID {previous['pid']} on host {previous.get('host')} "
                "(that run is no longer running)."
            )
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(descriptor)
        self._descriptor = descriptor
        return self

    def _lock(self, descriptor: int) -> bool:
        """Lock `descriptor`; `True` when a live run holds it already."""
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return False
            except BlockingIOError:
                return True
            except OSError:  # a file system without locks: the PID and host decide
                pass
        holder = _holder(self.path)
        return _held_by_pid(holder) and holder["pid"] != os.getpid()

    def release(self) -> None:
        """Remove the lock file (and the output folder when the lock created it and nothing was written)."""
        if self._descriptor is None:
            return
        try:
            # Removed while still locked: a run waiting on this file finds it replaced and opens the new one.
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._descriptor)
            self._descriptor = None
        if self._created_folder:
            try:
                self.output_dir.rmdir()
            except OSError:
                pass  # the run wrote something: it stays

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


__all__ = ["LOCK_FILE", "RunLock", "check_unlocked", "lock_path"]
