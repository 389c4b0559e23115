"""`dcr_hf.cli`: every command ends a user's mistake with one line (exit status 2) and no traceback.

Each case is a row of the reliability table (docs/reliability.md): the bad input, and the exact line the user sees.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.layouts import lfw_name, make_lfw, write_original_pairs
from tests.models import tiny_config

from dcr_hf import DCRForImageClassification, DCRImageProcessor
from dcr_hf.cli import reported_errors, split_debug_flag
from dcr_hf.convert_original_checkpoint import main as convert_main
from dcr_hf.errors_dcr import DCRFileNotFoundError, DCRInputError
from dcr_hf.data.command import prepare_main
from dcr_hf.evaluation.command import main as eval_main
from dcr_hf.training.command import main as train_main

ROOT = Path(__file__).resolve().parent.parent


def _model(folder: Path) -> Path:
    DCRForImageClassification(tiny_config(num_labels=4, image_size=48)).save_pretrained(folder)
    DCRImageProcessor(image_size=48).save_pretrained(folder)
    return folder


def _weights_without(folder: Path, prefix: str) -> Path:
    weights = load_file(str(folder / "model.safetensors"))
    save_file({key: value for key, value in weights.items() if not key.startswith(prefix)}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return folder


def _change_weight(folder: Path, name: str, change) -> None:
    weights = load_file(str(folder / "model.safetensors"))
    weights[name] = change(weights[name])
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _change_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def broken(tmp_path) -> dict[str, Path]:
    """Model folders and files, each broken in one way."""
    names = ("good", "zero", "truncated", "no_conv", "bad_json", "misshapen", "nan", "no_model_type", "remote_code")
    folders = {name: _model(tmp_path / name) for name in names}
    (folders["zero"] / "model.safetensors").write_bytes(b"")
    _truncate(folders["truncated"] / "model.safetensors")
    _weights_without(folders["no_conv"], "dcr.trunk.embedder.embedder.convolution")
    (folders["bad_json"] / "config.json").write_text('{"model_type": "dcr",')
    _change_weight(folders["misshapen"], "classifier.weight", lambda weight: torch.zeros(7, weight.shape[1]))
    _change_weight(folders["nan"], "dcr.trunk.embedder.embedder.convolution.weight",
                   lambda weight: weight.flatten().index_fill(0, torch.tensor([0, 5]), float("nan")).view_as(weight))
    _change_config(folders["no_model_type"], lambda config: config.pop("model_type"))
    # Another model's config whose code is in the folder: transformers would ask on the terminal to run it.
    _change_config(folders["remote_code"], lambda config: config.update(
        model_type="other-net", auto_map={"AutoConfig": "configuration_other.OtherConfig"}))
    (folders["remote_code"] / "configuration_other.py").write_text("raise SystemExit('the code ran')\n")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "a_file.txt").write_text("mine")
    (tmp_path / "zero.pth.tar").write_bytes(b"")
    make_lfw(tmp_path / "lfw", {"Ann": 2, "Bob": 2})
    write_original_pairs(tmp_path / "lfw", [(lfw_name("Ann", 1), "../../secret.jpg", 1)])
    (tmp_path / "lfw" / "LFW" / "pairs_latin1.txt").write_bytes(b"Ann/Ann_0001.jpg Bj\xf6rn/x.jpg 1\n")
    return {"root": tmp_path, **folders}


def _run(main, argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, err


TINY_DATA = "--synthetic_num_identities 4 --synthetic_images_per_identity 2 --validation_dataset none"
NOT_LOOKED_UP = "no folder outputs/nope here; as a Hub id: not looked up (HF_HUB_OFFLINE is set)."
TRUNCATED = "is truncated or corrupt (Error while deserializing header: incomplete metadata, file not fully covered)"
RESULTS = "expected a folder for results.json, results.md and roc.png."
# (command, its arguments with {placeholders}, the exact error line after "PROG: error: ")
CASES = [
    ("train", "--stage branch --trunk outputs/nope", f"--trunk outputs/nope: {NOT_LOOKED_UP}"),
    ("train", "--stage branch --trunk ./nope", "--trunk ./nope: no such folder."),
    ("train", "--stage branch --trunk {empty_dir}", "--trunk {empty_dir} has no config.json; expected a folder saved by "
     "save_pretrained or train_hf.py (config.json, model.safetensors)."),
    ("train", "--stage branch --trunk {zero}", "--trunk {zero}: {zero}/model.safetensors is empty (0 bytes)."),
    ("train", "--stage branch --trunk {truncated}", f"--trunk {{truncated}}: {{truncated}}/model.safetensors {TRUNCATED}."),
    ("train", "--stage finetune --init_from {bad_json}", "--init_from {bad_json}: {bad_json}/config.json is not valid "
     "JSON (Expecting property name enclosed in double quotes: line 1 column 22 (char 21))."),
    ("train", f"--stage branch --trunk {{no_conv}} --output_dir {{root}}/out {TINY_DATA}", "--trunk {no_conv}: the saved "
     "weights lack 1 the model needs (dcr.trunk.embedder.embedder.convolution.weight); they would start random."),
    ("train", "--stage branch --trunk {misshapen}", "--trunk {misshapen}: {misshapen}/model.safetensors holds tensor "
     "classifier.weight of shape [7, 32]; the model its config.json describes expects [4, 32]."),
    ("train", "--stage finetune --init_from {nan}", "--init_from {nan}: {nan}/model.safetensors holds 2 NaN/inf value(s) "
     "of 9408 in tensor dcr.trunk.embedder.embedder.convolution.weight."),
    ("train", "--stage branch --trunk {no_model_type}", '--trunk {no_model_type}: {no_model_type}/config.json has no '
     'model_type; expected the config.json that save_pretrained writes (with "model_type": "dcr" for a DCR model).'),
    ("train", "--stage branch --trunk {good} --output_dir {good}", "--output_dir {good} is the --trunk folder {good}: "
     "training would write into (or replace) the model it starts from; choose another --output_dir."),
    ("train", "--output_dir {a_file.txt}",
     "--output_dir {a_file.txt} is a file; expected a folder for the run (checkpoints, the model, its card)."),
    ("train", "--samples_per_class 0", "--samples_per_class must be a positive number of images per identity, got 0."),
    ("train", "--push_to_hub true --hub_model_id org/dcr --output_dir {root}/out",
     "pushing to org/dcr needs the Hub, but HF_HUB_OFFLINE is set; unset it to push."),
    ("train", "--resume_from_checkpoint last --output_dir {root}/out",
     "--resume_from_checkpoint last: {root}/out holds no valid checkpoint-N folder."),
    ("train", "--partial_fc_rate 0.1 --output_dir {root}/out",
     "--partial_fc_rate 0.1 needs --partial_fc true (the sharded classifier samples classes)."),
    ("train", "--partial_fc true --partial_fc_rate 0 --output_dir {root}/out",
     "--partial_fc_rate must be in (0, 1] (the fraction of each shard's classes a step uses), got 0."),
    ("train", "--partial_fc true --stage finetune --init_from {good} --output_dir {root}/out",
     "--partial_fc shards the trunk stage's classifier; --stage finetune trains its own classifiers unsharded."),
    ("train", "--partial_fc true --head adaface --output_dir {root}/out",
     "--partial_fc does not support --head adaface (its norm-adaptive margin is not sharded); "
     "use --head arcface or cosface with --partial_fc, or adaface unsharded."),
    ("train", "--partial_fc true --trunk_miner batch_hard --output_dir {root}/out", "--partial_fc uses the center loss; "
     "--trunk_miner batch_hard mines against every class center, which no process holds."),
    ("eval", "--model_name_or_path outputs/nope --dataset synthetic", f"--model_name_or_path outputs/nope: {NOT_LOOKED_UP}"),
    ("eval", "--model_name_or_path {good} --compare {zero} --dataset synthetic",
     "--compare {zero}: {zero}/model.safetensors is empty (0 bytes)."),
    ("eval", "--model_name_or_path {misshapen} --dataset synthetic", "--model_name_or_path {misshapen}: "
     "{misshapen}/model.safetensors holds tensor classifier.weight of shape [7, 32]; the model its config.json "
     "describes expects [4, 32]."),
    ("eval", "--model_name_or_path {good} --compare {nan} --dataset synthetic", "--compare {nan}: {nan}/model.safetensors "
     "holds 2 NaN/inf value(s) of 9408 in tensor dcr.trunk.embedder.embedder.convolution.weight."),
    ("eval", "--model_name_or_path {no_model_type} --dataset synthetic", '--model_name_or_path {no_model_type}: '
     '{no_model_type}/config.json has no model_type; expected the config.json that save_pretrained writes (with '
     '"model_type": "dcr" for a DCR model).'),
    ("eval", "--model_name_or_path {remote_code} --dataset synthetic", "--model_name_or_path {remote_code} holds a model "
     "of type 'other-net' ({remote_code}/config.json); dcr_hf evaluates DCR models only (model_type='dcr') and never "
     "runs a folder's own code."),
    ("eval", "--model_name_or_path {good} --dataset synthetic --output_dir {a_file.txt}",
     f"--output_dir {{a_file.txt}} is a file; {RESULTS}"),
    ("eval", "--model_name_or_path {good} --dataset synthetic --output_dir {a_file.txt}/results",
     f"--output_dir {{a_file.txt}}/results is inside {{a_file.txt}}, which is a file; {RESULTS}"),
    ("eval", "--model_name_or_path {good} --dataset lfw --data_root {root}/lfw", "{root}/lfw/LFW/lfw_test_pair.txt:1: "
     "image path '../../secret.jpg' leaves the image folder '{root}/lfw/LFW/LFW_120x120_120'; expected a path relative "
     "to it (no absolute path, no '..')."),
    ("prepare", "--dataset lfw --data_root {root}/lfw --output_dir {root}/o --pairs_file {root}/lfw/LFW/pairs_latin1.txt",
     "{root}/lfw/LFW/pairs_latin1.txt:1: byte 0xf6 at column 20 is not UTF-8; list and pairs files must be UTF-8 text."),
    ("prepare", "--dataset lfw --data_root {root}/lfw --output_dir {a_file.txt}",
     "Output '{a_file.txt}' is a file; expected a directory to write the dataset to."),
    ("convert", "--checkpoint {zero.pth.tar} --output_dir {root}/converted", "checkpoint {zero.pth.tar} is empty (0 bytes)."),
    ("convert", "--checkpoint {empty_dir} --output_dir {root}/converted", "checkpoint {empty_dir} is a folder, not a file; "
     "expected the original's checkpoint file (model_best.pth.tar or checkpoint.pth.tar)."),
    ("convert", "--checkpoint {zero.pth.tar} --output_dir {good}", "--output_dir {good} already holds a model "
     "(config.json, model.safetensors); pass --overwrite_output_dir to replace it."),
]
MAINS = {"train": train_main, "eval": eval_main, "prepare": prepare_main, "convert": convert_main}


def _fill(text: str, paths: dict[str, Path]) -> str:
    for name in sorted(paths, key=len, reverse=True):
        text = text.replace(f"{{{name}}}", str(paths[name]))
    for path in paths["root"].iterdir():
        text = text.replace(f"{{{path.name}}}", str(path))
    return text


@pytest.mark.parametrize(("command", "argv", "message"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_mistake_is_one_line_with_exit_status_2(broken, capsys, monkeypatch, command, argv, message):
    monkeypatch.chdir(broken["root"])
    code, err = _run(MAINS[command], [_fill(value, broken) for value in shlex.split(argv)], capsys)
    assert code == 2
    assert "\nusage: " in "\n" + err  # (after any progress bar of a model that did load)
    assert err.splitlines()[-1].split(": error: ", 1)[1] == _fill(message, broken)


def test_only_the_packages_own_checks_are_usage_errors_a_bug_keeps_its_traceback(capsys):
    parser = argparse.ArgumentParser(prog="dcr-x")
    for mistake in (DCRInputError("--size -1 is negative; expected a positive integer."),
                    DCRFileNotFoundError("--model ./nope: no such folder.")):
        with pytest.raises(SystemExit) as exit_info, reported_errors(parser):
            raise mistake
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"dcr-x: error: {mistake}"
    # The same built-in types raised anywhere else are bugs: they reach the caller as they are.
    for bug in (ValueError("an internal invariant"), FileNotFoundError("a file the program wrote"), KeyError("x")):
        with pytest.raises(type(bug)) as raised, reported_errors(parser):
            raise bug
        assert raised.value is bug
    assert capsys.readouterr().err == ""


def test_a_bare_debug_flag_or_DCR_DEBUG_asks_for_the_traceback(monkeypatch):
    monkeypatch.delenv("DCR_DEBUG", raising=False)
    assert split_debug_flag(["--x", "1", "--debug"]) == (["--x", "1"], True)
    assert split_debug_flag(["--debug", "--x", "1"]) == (["--x", "1"], True)
    # `--debug underflow_overflow` is the TrainingArguments option of that name, not ours.
    assert split_debug_flag(["--debug", "underflow_overflow"]) == (["--debug", "underflow_overflow"], False)
    monkeypatch.setenv("DCR_DEBUG", "1")
    assert split_debug_flag(["--x"]) == (["--x"], True)
    monkeypatch.setenv("DCR_DEBUG", "0")
    assert split_debug_flag([]) == ([], False)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_hf.py", "eval_hf.py"])
def test_the_scripts_show_the_traceback_only_when_asked(tmp_path, script):
    argv = ["--stage", "branch", "--trunk", "./nope"] if script == "train_hf.py" else ["--model", "./nope", "--dataset",
                                                                                         "synthetic"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("DCR_DEBUG", None)
    runs = {
        "plain": subprocess.run([sys.executable, str(ROOT / script), *argv], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=300),
        "flag": subprocess.run([sys.executable, str(ROOT / script), *argv, "--debug"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=300),
        "env": subprocess.run([sys.executable, str(ROOT / script), *argv], env={**env, "DCR_DEBUG": "1"}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300),
    }
    assert runs["plain"].returncode == 2 and "Traceback" not in runs["plain"].stderr
    assert runs["plain"].stderr.splitlines()[-1].endswith("./nope: no such folder.")
    for name in ("flag", "env"):
        assert runs[name].returncode == 1, name
        assert "Traceback (most recent call last)" in runs[name].stderr
        assert runs[name].stderr.splitlines()[-1] == "dcr_hf.errors_dcr.DCRFileNotFoundError: " + ("--trunk" if script == "train_hf.py" else
                                                                            "--model_name_or_path") + " ./nope: no such folder."


def test_a_missing_folder_that_could_be_a_hub_id_is_looked_up_online(tmp_path, monkeypatch, capsys):
    from tests.hub_standin import HubStandIn

    monkeypatch.chdir(tmp_path)
    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        code, err = _run(train_main, ["--stage", "branch", "--trunk", "outputs/nope"], capsys)
    # One look-up of the id, answered by the Hub; nothing downloaded.
    assert code == 2 and [r.path for r in hub.api_requests()] == ["/api/models/outputs/nope"]
    assert err.splitlines()[-1].split(": error: ", 1)[1] == (
        "--trunk outputs/nope: no folder outputs/nope here; as a Hub id: HTTP 404: Repository not found.")


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("main, option", [(train_main, "--trunk"), (eval_main, "--model_name_or_path")])
def test_a_mistyped_folder_with_the_hub_unreachable_fails_at_once_naming_both_readings(
    tmp_path, monkeypatch, capsys, main, option
):
    from huggingface_hub import constants

    from tests.hub_standin import HubStandIn

    monkeypatch.chdir(tmp_path)
    HubStandIn().patch(monkeypatch)  # online, no token: then the endpoint below, where nothing listens
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    argv = ["--stage", "branch", "--trunk", "outputs/dcr-trunkk"] if main is train_main else [
        "--model_name_or_path", "outputs/dcr-trunkk", "--dataset", "synthetic"]
    code, err = _run(main, argv, capsys)
    assert code == 2
    line = err.splitlines()[-1].split(": error: ", 1)[1]
    assert line.startswith(f"{option} outputs/dcr-trunkk: no folder outputs/dcr-trunkk here; as a Hub id: the Hub at "
                           f"{endpoint} could not be reached (")