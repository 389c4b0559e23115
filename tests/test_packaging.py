"""The package as users install it: the wheel's contents and console commands, end to end from a
wheel installed outside the repository."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMMANDS = {"dcr-train", "dcr-eval", "dcr-prepare", "dcr-convert", "dcr-export-onnx", "dcr-index"}
TINY = [
    "--synthetic_num_identities", "8", "--synthetic_images_per_identity", "3", "--synthetic_num_pairs", "40",
    "--image_size", "48", "--low_resolution_sizes", "8", "12", "--depths", "1", "1", "1", "1",
    "--hidden_sizes", "8", "8", "16", "16", "--embedding_size", "16", "--per_device_train_batch_size", "8",
    "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--use_cpu", "true",
]


def test_the_listed_packages_are_the_tree_and_the_card_templates():
    setuptools = PYPROJECT["tool"]["setuptools"]
    on_disk = {str(p.parent.relative_to(ROOT)).replace(os.sep, ".") for p in (ROOT / "dcr_hf").rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"dcr_hf.hub_cards"}
    assert setuptools["package-dir"] == {"dcr_hf.hub_cards": "hub_cards"}
    assert (ROOT / "hub_cards" / "trunk.md").is_file() and (ROOT / "hub_cards" / "branch.md").is_file()
    assert "trackio" in PYPROJECT["project"]["optional-dependencies"]
    assert PYPROJECT["project"]["authors"] and PYPROJECT["project"]["urls"]


def test_console_commands_are_the_scripts_entry_points():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == COMMANDS
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target
    # The scripts of the source tree call the same functions.
    assert "from dcr_hf.training.command import main" in (ROOT / "train_hf.py").read_text()
    assert "from dcr_hf.evaluation.command import main" in (ROOT / "eval_hf.py").read_text()


def _run(command: list[str], cwd: Path, env: dict, transcript: list[str], timeout: int = 600) -> str:
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    transcript.append(f"$ {' '.join(command)}\n{completed.stdout}{completed.stderr}")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
def test_wheel_installed_outside_the_repository_trains_and_evaluates(tmp_path):
    # Build from a copy of the source, so that the build leaves nothing in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("dcr_hf", "hub_cards"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    transcript: list[str] = []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
         tmp_path, env, transcript)
    [wheel] = wheels.glob("dcr_hf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"dcr_hf/hub_cards/trunk.md", "dcr_hf/hub_cards/branch.md", "dcr_hf/pipeline_dcr.py"} <= set(names)
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], tmp_path, env,
         transcript)
    assert {path.name for path in (target / "bin").iterdir()} >= COMMANDS

    work.mkdir()
    env["PYTHONPATH"] = str(target)  # the installed wheel only: no checkout on the path
    located = _run([sys.executable, "-c", "import dcr_hf, dcr_hf.hub as h; print(dcr_hf.__file__); print(h.TEMPLATES_DIR)"],
                   work, env, transcript)
    assert all(line.startswith(str(target)) for line in located.split())
    _run([str(target / "bin" / "dcr-train"), "--output_dir", "trunk", "--max_steps", "2", "--eval_strategy", "steps",
          "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2", *TINY], work, env, transcript)
    folder = work / "trunk"
    assert {"README.md", "model.safetensors", "pipeline_dcr.py", "image_processing_dcr.py", "train_results.json",
            "eval_results.json", "all_results.json"} <= {path.name for path in folder.iterdir()}
    evaluated = _run([str(target / "bin" / "dcr-eval"), "--model_name_or_path", "trunk", "--dataset", "synthetic",
                      "--synthetic_images_per_identity", "3", "--synthetic_num_pairs", "40", "--output_dir", "eval"],
                     work, env, transcript)
    assert "TAR@FAR=1e-3" in evaluated and (work / "eval" / "results.md").is_file()
    (tmp_path / "transcript.txt").write_text("\n".join(transcript))
    print("\n".join(transcript))
