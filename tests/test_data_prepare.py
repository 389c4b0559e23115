"""`python -m dcr_hf.data prepare`: embedded bytes, round trips, survival of the source tree, the CLI."""

from __future__ import annotations

import io
import json
import shutil
import runpy
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import DatasetDict, Image
from tests.hub_standin import HubStandIn
from tests.layouts import (
    lfw_name,
    make_casia,
    make_identity_folder,
    make_lfw,
    make_scface,
    pixels,
    write_original_pairs,
)

from dcr_hf.data.command import build_parser, main, prepare_main
from dcr_hf.data.casia import load_casia
from dcr_hf.data.generic import load_face_dataset, load_image_folder
from dcr_hf.data.lfw import load_lfw_identities, load_lfw_pairs
from dcr_hf.data.prepare import prepare_dataset
from dcr_hf.data.scface import load_scface, load_scface_finetune


def _rows(dataset, image_columns=("image",)) -> list[tuple]:
    """Every row with its images decoded to pixel arrays (as bytes, hashable) and other values kept."""
    rows = []
    for row in dataset:
        values = []
        for key in sorted(row):
            value = row[key]
            if key in image_columns:
                value = pixels(value).tobytes()
            elif isinstance(value, list):
                value = tuple(pixels(image).tobytes() for image in value)
            values.append((key, value))
        rows.append(tuple(values))
    return rows


def _same(a, b, image_columns=("image",)) -> None:
    assert a.features == b.features
    assert _rows(a, image_columns) == _rows(b, image_columns)


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    make_casia(root, range(12), images_per_subject=2)
    make_lfw(root, {"Ann": 3, "Bob": 2, "Cy": 1})
    write_original_pairs(
        root,
        [
            (lfw_name("Ann", 1), lfw_name("Ann", 2), 1),
            (lfw_name("Ann", 3), lfw_name("Bob", 1), 0),
            (lfw_name("Bob", 1), lfw_name("Bob", 2), 1),
            (lfw_name("Cy", 1), lfw_name("Ann", 2), 0),
        ],
    )
    make_scface(root, range(1, 5), cameras=(1, 2), skip=[(1, 2, 2)])
    make_identity_folder(root / "folder", {"p1": 2, "p2": 2})
    return root


def test_casia_round_trip_survives_deleting_the_source(data_root, tmp_path):
    expected = {fold: load_casia(data_root, fold=fold, num_subjects=12) for fold in (None, 3)}
    expected_rows = {fold: {name: _rows(split) for name, split in d.items()} for fold, d in expected.items()}
    output = tmp_path / "casia_prepared"
    prepared = prepare_dataset("casia", data_root, output, fold=3, num_subjects=12, num_shards=2)
    assert json.loads((output / "dcr_hf_prepared.json").read_text())["dataset"] == "casia"
    assert (
        len(list((output / "train").glob("*.arrow"))) == 2 and len(list((output / "validation").glob("*.arrow"))) == 2
    )

    shutil.rmtree(data_root / "Casia")
    assert set(prepared) == {"train", "validation"}
    for fold in (3, None, 0):
        loaded = load_casia(output, fold=fold, num_subjects=12)
        if fold == 3:  # the prepared fold: identical, in the same order
            assert {name: _rows(split) for name, split in loaded.items()} == expected_rows[fold]
        elif fold is None:  # re-split from train + validation: same rows, merged order
            assert {name: sorted(_rows(split)) for name, split in loaded.items()} == {
                name: sorted(rows) for name, rows in expected_rows[fold].items()
            }
        if fold in expected:
            assert all(loaded[name].features == expected[fold][name].features for name in loaded)
        else:  # a fold the directory was not prepared with is cut from it on load
            assert loaded["validation"].features["label"].names == ["0", "1"]
            assert len(loaded["train"]) == 20
    # The prepared fold comes back as stored, without a re-split; num_subjects defaults to the prepared one.
    assert load_casia(output, fold=3)["train"]._indices is None
    assert load_casia(output, fold=0)["validation"].features["label"].names == ["0", "1"]
    with pytest.raises(ValueError, match="list_file"):
        load_casia(output, list_file="x.txt")


def test_lfw_round_trip_survives_deleting_the_source(data_root, tmp_path):
    pairs = load_lfw_pairs(data_root)
    identities = load_lfw_identities(data_root, cache_dir=tmp_path / "cache")
    expected_pairs, expected_identities = _rows(pairs, ("image_a", "image_b")), _rows(identities)
    output = tmp_path / "lfw_prepared"
    prepare_dataset("lfw", data_root, output)
    shutil.rmtree(data_root / "LFW")

    loaded_pairs = load_lfw_pairs(output)
    assert loaded_pairs.features == pairs.features
    assert _rows(loaded_pairs, ("image_a", "image_b")) == expected_pairs
    loaded_identities = load_lfw_identities(output)
    assert loaded_identities.features == identities.features and _rows(loaded_identities) == expected_identities
    assert len(load_lfw_identities(output, min_images_per_identity=1)) == 6


def test_scface_round_trip_survives_deleting_the_source(data_root, tmp_path):
    test = load_scface(data_root, num_finetune_subjects=2, cameras=(1, 2))
    finetune = load_scface_finetune(data_root, num_finetune_subjects=2, cameras=(1, 2))
    expected = {name: _rows(split) for name, split in test.items()}
    expected_finetune = _rows(finetune)
    output = tmp_path / "scface_prepared"
    prepare_dataset("scface", data_root, output, max_shard_size="1MB")
    shutil.rmtree(data_root / "SCface")

    loaded = load_scface(output, num_finetune_subjects=2, cameras=(1, 2))
    assert {name: _rows(split) for name, split in loaded.items()} == expected
    loaded_finetune = load_scface_finetune(output, num_finetune_subjects=2, cameras=(1, 2))
    assert loaded_finetune.features == finetune.features and _rows(loaded_finetune) == expected_finetune
    assert len(loaded_finetune) == 3  # subject 001 camera 2 misses distance 2


def test_folder_round_trip_and_generic_loader(data_root, tmp_path):
    source = load_image_folder(data_root / "folder", cache_dir=tmp_path / "cache")
    expected = _rows(source)
    output = tmp_path / "folder_prepared"
    prepare_dataset("folder", data_root / "folder", output)
    shutil.rmtree(data_root / "folder")
    _rows_loaded = _rows(load_image_folder(output))
    assert _rows_loaded == expected
    assert _rows(load_face_dataset(output, split="train")) == expected


def test_wrong_kind_of_prepared_directory(data_root, tmp_path):
    output = tmp_path / "casia_prepared"
    prepare_dataset("casia", data_root, output, num_subjects=12)
    with pytest.raises(ValueError, match="holds a prepared 'casia' dataset, not 'lfw'"):
        load_lfw_pairs(output)
    with pytest.raises(ValueError, match="already a prepared directory"):
        prepare_dataset("casia", output, tmp_path / "again", num_subjects=12)


def test_output_directory_protection(data_root, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_dataset("folder", data_root / "folder", occupied)
    with pytest.raises(FileExistsError, match="not written by this command"):
        prepare_dataset("folder", data_root / "folder", occupied, overwrite=True)
    assert (occupied / "keep.txt").exists()

    output = tmp_path / "out"
    prepare_dataset("folder", data_root / "folder", output)
    prepare_dataset("folder", data_root / "folder", output, overwrite=True)
    assert len(load_image_folder(output)) == 4
    with pytest.raises(ValueError, match="either num_shards or max_shard_size"):
        prepare_dataset("folder", data_root / "folder", tmp_path / "o2", num_shards=2, max_shard_size="1MB")
    with pytest.raises(FileNotFoundError, match=r"(?s)Data root not found: '.*no_such_root'.*Expected layout"):
        prepare_dataset("casia", tmp_path / "no_such_root", tmp_path / "o3")
    (tmp_path / "root_without_casia").mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)CASIA folder not found: '.*root_without_casia/Casia'"):
        prepare_dataset("casia", tmp_path / "root_without_casia", tmp_path / "o3")


def test_cli_prepare_and_push_to_the_hub_privately_with_the_token(data_root, tmp_path, monkeypatch, capsys):
    """The real `DatasetDict.push_to_hub`, against a local stand-in for the Hub's HTTP API."""
    output = tmp_path / "cli_out"
    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        argv = ["prepare", "--dataset", "casia", "--data_root", str(data_root), "--output_dir", str(output),
                "--num_subjects", "12", "--num_shards", "3", "--push_to_hub", "--hub_model_id",
                "org/casia-120", "--private", "--hub_token", hub.token]
        assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "train: 24 rows, 3 shard(s)" in printed
    assert "and pushed to org/casia-120" in printed
    sent = hub.api_requests()
    # Token, repo and write access checked first, before anything was prepared.
    assert [r.path for r in sent[:4]] == ["/api/whoami-v2", "/api/repos/create", "/api/datasets/org/casia-120/auth-check/write",
                                          "/api/datasets/org/casia-120"]
    assert sent[1].json() == {"name": "casia-120", "organization": "org", "visibility": "private", "type": "dataset"}
    assert {r.headers.get("authorization") for r in sent} == {f"Bearer {hub.token}"}
    assert hub.repos[("dataset", "org/casia-120")]["private"] is True
    [commit] = hub.commits
    shards = sorted(name for name in commit.files if name.endswith(".parquet"))
    assert len(shards) == 3 and "README.md" in commit.files
    tables = [pq.read_table(io.BytesIO(commit.files[name])) for name in shards]
    assert sum(table.num_rows for table in tables) == 24
    # The image bytes are embedded, as in the prepared folder.
    prepared = load_casia(output)["train"].cast_column("image", Image(decode=False))
    assert sorted(row["image"]["bytes"] for table in tables for row in table.to_pylist()) == \
        sorted(row["image"]["bytes"] for row in prepared)


@pytest.mark.parametrize("dataset", ["lfw", "scface"])
def test_splits_of_different_columns_go_to_the_hub_as_one_config_each(data_root, tmp_path, monkeypatch, dataset):
    output = tmp_path / dataset
    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        prepare_main(["--dataset", dataset, "--data_root", str(data_root), "--output_dir", str(output),
                      "--push_to_hub", "--hub_model_id", "org/faces", "--hub_token", hub.token])
    prepared = DatasetDict.load_from_disk(str(output))
    assert len(hub.commits) == len(prepared) == 2
    files = {name: content for commit in hub.commits for name, content in commit.files.items()}
    for name, split in prepared.items():
        [shard] = [file for file in files if file.startswith(f"{name}/") and file.endswith(".parquet")]
        assert pq.read_table(io.BytesIO(files[shard])).num_rows == len(split)
        assert f"config_name: {name}" in files["README.md"].decode()


def test_cli_prepare_checks_the_hub_before_preparing(data_root, tmp_path, monkeypatch, capsys):
    output = tmp_path / "cli_out"
    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        with pytest.raises(SystemExit) as exit_info:
            main(["prepare", "--dataset", "lfw", "--data_root", str(data_root), "--output_dir", str(output),
                  "--push_to_hub", "--hub_model_id", "org/lfw", "--hub_token", "hf_wrong"])
    assert exit_info.value.code == 2 and not output.exists()
    assert "prepare: error: the Hub at http://127.0.0.1" in capsys.readouterr().err


def test_a_failed_dataset_push_says_where_the_prepared_set_is(data_root, tmp_path, monkeypatch, capsys):
    output = tmp_path / "lfw"
    with HubStandIn(fail_commits=True) as hub:
        hub.patch(monkeypatch)
        with pytest.raises(SystemExit) as exit_info:
            prepare_main(["--dataset", "lfw", "--data_root", str(data_root), "--output_dir", str(output),
                          "--push_to_hub", "--hub_model_id", "org/lfw", "--hub_token", hub.token, "--private"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in error
    assert f"the prepared dataset is saved in {output}. Push it later with: python -c \"from dcr_hf.data.prepare import " \
           f"push_prepared; push_prepared('{output}', 'org/lfw', private=True)\"" in error
    assert len(load_lfw_pairs(output)) == len(load_lfw_pairs(data_root))


def test_cli_reports_layout_errors_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "prepare",
                "--dataset",
                "scface",
                "--data_root",
                str(tmp_path / "nowhere"),
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "prepare: error: Data root not found" in error and "nowhere" in error and "Traceback" not in error


def test_cli_argument_parsing():
    args = build_parser().parse_args(
        ["prepare", "--dataset", "lfw", "--data_root", "r", "--output_dir", "o", "--max_shard_size", "1GB"]
    )
    assert (args.dataset, args.data_root, args.output_dir, args.max_shard_size, args.num_shards, args.casia_fold) == (
        "lfw",
        "r",
        "o",
        "1GB",
        None,
        None,
    )
    for bad in (
        ["prepare", "--dataset", "mnist", "--data_root", "r", "--output_dir", "o"],
        [
            "prepare",
            "--dataset",
            "lfw",
            "--data_root",
            "r",
            "--output_dir",
            "o",
            "--num_shards",
            "2",
            "--max_shard_size",
            "1GB",
        ],
        ["prepare", "--dataset", "lfw", "--output_dir", "o"],
        [],
    ):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)


def test_module_entry_point_runs(monkeypatch, capsys):
    # In-process `python -m dcr_hf.data prepare --help` (a subprocess would re-import torch & co.).
    monkeypatch.delitem(sys.modules, "dcr_hf.data.__main__", raising=False)
    monkeypatch.setattr(sys, "argv", ["python -m dcr_hf.data", "prepare", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("dcr_hf.data", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "--push_to_hub" in usage and "{casia,lfw,scface,folder,recordio}" in usage


def test_a_failed_overwrite_leaves_the_earlier_prepared_set_intact(data_root, tmp_path):
    output = tmp_path / "casia_prepared"
    prepare_dataset("casia", data_root, output, num_subjects=12)
    before = _rows(load_casia(output, num_subjects=12)["train"])
    list_file = data_root / "Casia" / "casia_cleaned_list.txt"
    list_file.write_text(list_file.read_text() + "no-subject-id-here\n")
    with pytest.raises(ValueError, match="malformed line"):
        prepare_dataset("casia", data_root, output, num_subjects=12, overwrite=True)
    assert _rows(load_casia(output, num_subjects=12)["train"]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["casia_prepared", "data"]  # no temporary left behind


def test_only_decodable_images_are_embedded(data_root, tmp_path):
    # A pairs file naming a file that is not an image (here: a text file with a .jpg name).
    impostor = data_root / "LFW" / "LFW_120x120_120" / "Cy" / "Cy_0002.jpg"
    impostor.write_text("api_key = hunter2\n")
    write_original_pairs(data_root, [(lfw_name("Ann", 1), lfw_name("Cy", 2), 0)])
    output = tmp_path / "lfw_prepared"
    with pytest.raises(ValueError, match=r"(?s)1 image file\(s\).*cannot be decoded.*Cy_0002\.jpg"):
        prepare_dataset("lfw", data_root, output)
    assert not output.exists()


def test_output_that_is_a_file_is_refused_before_reading(data_root, tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    with pytest.raises(FileExistsError, match="is a file"):
        prepare_dataset("folder", data_root / "folder", target)
    assert target.read_text() == "mine"


def test_dcr_prepare_is_the_prepare_command(data_root, tmp_path, capsys):
    """`dcr-prepare` takes prepare's options without the command word; a Hub push needs --hub_model_id."""
    output = tmp_path / "lfw"
    assert prepare_main(["--dataset", "lfw", "--data_root", str(data_root), "--output_dir", str(output)]) == 0
    assert "Prepared lfw in" in capsys.readouterr().out
    assert len(load_lfw_pairs(output)) == len(load_lfw_pairs(data_root))
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["--dataset", "lfw", "--data_root", str(data_root), "--output_dir", str(tmp_path / "x"),
                      "--push_to_hub"])
    assert exit_info.value.code == 2
    assert "--push_to_hub needs --hub_model_id" in capsys.readouterr().err
