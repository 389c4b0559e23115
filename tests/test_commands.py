"""The installed console commands of pyproject.toml's [project.scripts], run as a user runs them:
each exits 0 on a real tiny case (a console script passes `main()`'s value to `sys.exit`, so a
`main` that returns an object would exit 1), and `--help` answers without importing torch or
datasets (the parsers are built from light modules; the work is imported after parsing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "DCR_DEBUG": "1"}
# transformers itself may load (HfArgumentParser, logging): without torch it is light.
HEAVY = ("torch", "datasets")

TINY_TRAIN = [
    "--synthetic_num_identities", "4", "--synthetic_images_per_identity", "2", "--synthetic_num_pairs", "20",
    "--image_size", "48", "--low_resolution_sizes", "8", "--architecture", "small", "--depths", "1", "1", "1", "1",
    "--hidden_sizes", "4", "4", "8", "8", "--embedding_size", "8", "--per_device_train_batch_size", "4",
    "--report_to", "none", "--dataloader_num_workers", "0", "--seed", "0", "--disable_tqdm", "true", "--use_cpu", "true",
    "--validation_dataset", "none", "--eval_strategy", "no", "--load_best_model_at_end", "false", "--max_steps", "1",
]
TINY_EVAL = [
    "--dataset", "synthetic", "--synthetic_num_verification_identities", "20", "--synthetic_images_per_identity", "2",
    "--synthetic_num_pairs", "20", "--synthetic_image_size", "48", "--per_device_eval_batch_size", "8",
]


def _command(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e .)")
    return path


def _run(name: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_command(name), *argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def _succeeded(completed: subprocess.CompletedProcess) -> None:
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_every_command_of_the_project_is_covered():
    assert set(SCRIPTS) == {"dcr-train", "dcr-eval", "dcr-prepare", "dcr-convert", "dcr-export-onnx", "dcr-index"}


@pytest.mark.slow
def test_every_installed_command_exits_0_on_a_real_case(tmp_path, lfw_root):
    from tests.test_convert_original_checkpoint import make_original

    _succeeded(_run("dcr-train", "--output_dir", str(tmp_path / "trunk"), *TINY_TRAIN, cwd=tmp_path))
    assert (tmp_path / "trunk" / "model.safetensors").is_file()

    evaluated = _run("dcr-eval", "--model_name_or_path", str(tmp_path / "trunk"), *TINY_EVAL,
                     "--output_dir", str(tmp_path / "eval"), cwd=tmp_path)
    _succeeded(evaluated)
    assert json.loads((tmp_path / "eval" / "results.json").read_text())

    _succeeded(_run("dcr-prepare", "--dataset", "lfw", "--data_root", str(lfw_root),
                    "--output_dir", str(tmp_path / "lfw-prepared"), cwd=tmp_path))
    assert (tmp_path / "lfw-prepared").is_dir()

    _, checkpoint, config = make_original(tmp_path / "original", "ResNet-18", "trunk")
    converted = _run("dcr-convert", "--checkpoint", str(checkpoint), "--config", str(config),
                     "--output_dir", str(tmp_path / "converted"), cwd=tmp_path)
    _succeeded(converted)
    assert "DCRForImageClassification(" not in converted.stderr  # the model's repr is not the exit message
    assert (tmp_path / "converted" / "config.json").is_file()

    from tests.layouts import make_identity_folder

    make_identity_folder(tmp_path / "gallery", {"ada": 2, "bob": 2})
    _succeeded(_run("dcr-index", "build", "--gallery", str(tmp_path / "gallery"), "--model_name_or_path",
                    str(tmp_path / "trunk"), "--index_dir", str(tmp_path / "index"), cwd=tmp_path))
    searched = _run("dcr-index", "search", "--index_dir", str(tmp_path / "index"), "-k", "1",
                    str(tmp_path / "gallery" / "bob" / "bob_1.jpg"), cwd=tmp_path)
    _succeeded(searched)
    assert json.loads(searched.stdout)["probes"][0]["results"][0]["identity"] == "bob"  # an enrolled face finds itself

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    exported = _run("dcr-export-onnx", "--model", str(tmp_path / "trunk"), "--output", str(tmp_path / "onnx"), cwd=tmp_path)
    _succeeded(exported)
    assert "'inputs'" not in exported.stderr  # the description dict is not the exit message
    assert (tmp_path / "onnx" / "model.onnx").is_file()


_HELP_PROBE = """
import runpy, sys
from importlib.metadata import entry_points
script = entry_points(group="console_scripts")[sys.argv[1]]
module, _, function = script.value.partition(":")
main = getattr(__import__(module, fromlist=[function]), function)
try:
    main(["--help"])
except SystemExit as exit_info:
    code = exit_info.code
else:
    code = "no exit"
print(code, " ".join(name for name in {heavy} if name in sys.modules))
"""


@pytest.mark.parametrize("name", ["dcr-eval", "dcr-prepare", "dcr-convert", "dcr-export-onnx"])
def test_help_answers_without_the_heavy_libraries(name, tmp_path):
    probe = _HELP_PROBE.format(heavy=HEAVY)
    completed = subprocess.run([sys.executable, "-c", probe, name], cwd=tmp_path, env=ENV, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    last = completed.stdout.strip().splitlines()[-1]
    assert last == "0", f"{name} --help: exit status and heavy modules imported: {last!r}"
    assert "usage:" in completed.stdout


def test_eval_hf_help_answers_without_the_heavy_libraries(tmp_path):
    probe = (f"import runpy, sys\nsys.argv = ['eval_hf.py', '--help']\ntry:\n    runpy.run_path({str(ROOT / 'eval_hf.py')!r}, "
             f"run_name='__main__')\nexcept SystemExit as e:\n    print(e.code, ' '.join(n for n in {HEAVY} if n in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1] == "0"
