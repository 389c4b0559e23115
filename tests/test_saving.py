"""`dcr_hf.saving`: a failed save leaves nothing half-written, says so in one line, and every file
gets the user's umask."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from dcr_hf import DCRForImageClassification, DCRImageProcessor
from dcr_hf.hub import write_model_card
from dcr_hf.reports import write_reports
from dcr_hf.saving import SaveFailedError, atomic_path, disk_error, staged_folder, write_text_atomic
from tests.models import tiny_config


@pytest.fixture(params=[0o022, 0o077], ids=["umask-022", "umask-077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_an_atomic_write_replaces_the_file_only_when_complete(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("previous")
    with pytest.raises(SaveFailedError) as raised:
        with atomic_path(path) as temporary:
            temporary.write_text("half")
            _full_disk()
    assert str(raised.value) == f"no space left on device while saving {path}; {path} is as it was."
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # the temporary file is gone
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_refused_write_of_a_new_file_writes_nothing_and_a_bug_keeps_its_exception(tmp_path):
    with pytest.raises(SaveFailedError, match=f"^permission denied while saving {tmp_path / 'a.md'}; nothing was written "
                                              f"to {tmp_path}.$"):
        with atomic_path(tmp_path / "a.md"):
            raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "a.md"):
            raise KeyError("a bug")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("message", [
    "Error while serializing: I/O error: No space left on device (os error 28)",  # safetensors
    "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: No space left on device",
])
def test_writers_that_do_not_raise_oserror_are_read_by_their_message(message):
    assert disk_error(RuntimeError(message)) == errno.ENOSPC
    assert disk_error(RuntimeError("size mismatch")) is None


def test_torchs_write_failure_without_a_reason_is_a_full_disk_when_no_space_is_left(tmp_path, monkeypatch):
    """What `torch.save` raises on a full disk (/dev/full): no errno, only its stream's position."""
    import shutil

    import torch

    failure = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    failure.__context__ = RuntimeError("basic_ios::clear: iostream error")
    monkeypatch.setattr(torch, "save", lambda *args, **kwargs: (_ for _ in ()).throw(failure))
    path = tmp_path / "optimizer.pt"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda where: usage._replace(free=4096))
    with pytest.raises(SaveFailedError, match=f"^no space left on device while saving {path}; nothing was written"):
        with atomic_path(path) as temporary:
            torch.save({}, temporary)
    monkeypatch.setattr(shutil, "disk_usage", lambda where: usage._replace(free=2**40))
    with pytest.raises(SaveFailedError, match=r"^a write failed \(input/output error\) while saving"):
        with atomic_path(path) as temporary:
            torch.save({}, temporary)
    assert list(tmp_path.iterdir()) == []


def test_a_staged_folder_appears_complete_or_not_at_all(tmp_path, umask):
    model = DCRForImageClassification(tiny_config())
    target = tmp_path / "model"
    with pytest.raises(SaveFailedError, match=f"no space left on device while saving {target}; nothing was written"):
        with staged_folder(target) as staging:
            model.save_pretrained(staging)
            _full_disk()
    assert list(tmp_path.iterdir()) == []
    with staged_folder(target) as staging:
        model.save_pretrained(staging)
    assert (target / "model.safetensors").is_file() and _mode(target) == 0o777 & ~umask
    # Into an existing folder: its files replaced one by one, the others (checkpoints) left alone.
    (target / "checkpoint-2").mkdir()
    before = (target / "config.json").read_bytes()
    with pytest.raises(SaveFailedError):
        with staged_folder(target) as staging:
            (staging / "config.json").write_text("{}")
            _full_disk()
    assert (target / "config.json").read_bytes() == before
    with staged_folder(target) as staging:
        DCRImageProcessor(image_size=32).save_pretrained(staging)
    assert sorted(p.name for p in target.iterdir() if p.name.startswith(".")) == []
    assert (target / "preprocessor_config.json").is_file() and (target / "checkpoint-2").is_dir()


def test_saved_files_get_the_users_umask(tmp_path, umask):
    expected = 0o666 & ~umask
    write_text_atomic(tmp_path / "a.json", "{}")
    folder = tmp_path / "model"
    with staged_folder(folder) as staging:
        DCRForImageClassification(tiny_config()).save_pretrained(staging)
        DCRImageProcessor(image_size=32).save_pretrained(staging)
    write_model_card(folder)
    result = {"protocol": "verification", "by_resolution": {"hr": {"accuracy": 0.9, "auc": 0.95, "eer": 0.1}}}
    written = write_reports({"m": result}, tmp_path / "eval")
    files = [tmp_path / "a.json", *folder.iterdir(), *written.values()]
    assert {path.name: _mode(path) for path in files} == {path.name: expected for path in files}
