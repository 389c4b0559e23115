"""Model cards (templates, model-index results that replace rather than duplicate) and pushing (to a local
stand-in for the Hub's HTTP API)."""

from __future__ import annotations

import enum
import json
import re

import pytest
from tests.models import tiny_config
from huggingface_hub import ModelCard
from tests.hub_standin import HubStandIn

import torch

from dcr_hf import DCRForImageClassification, DCRImageProcessor, DCRModel
from dcr_hf.hub import (
    RESULTS_END,
    RESULTS_START,
    files_to_push,
    model_hub_id,
    prepare_hub_repo,
    push_folder_to_hub,
    render_model_card,
    results_to_eval_results,
    update_model_card_results,
    write_model_card,
)


def _verification(accuracy: float, sizes=("8", "12")) -> dict:
    columns = {key: {"accuracy": accuracy, "accuracy_std": 0.01, "auc": 0.9, "eer": 0.1} for key in (*sizes, "hr")}
    return {"protocol": "verification", "by_resolution": columns}


def _identification(rank_1: float) -> dict:
    return {
        "protocol": "identification",
        "by_distance": {"d1": {"rank_1": rank_1, "rank_5": 0.9}, "all": {"rank_1": rank_1, "rank_5": 0.95}},
    }


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "dcr-branch"
    DCRModel(tiny_config(use_branches=True)).save_pretrained(folder)
    DCRImageProcessor(image_size=32, image_mean=[0.4, 0.5, 0.6]).save_pretrained(folder)
    return folder


def _cells(line: str) -> list[str]:
    return line.strip().strip("|").split("|")


def assert_tables_well_formed(markdown: str) -> int:
    """Every Markdown table outside code blocks has a blank line before and after it, a separator
    row of the header's width, and rows of the header's width. Returns the number of tables."""
    lines, tables, index, in_code = markdown.splitlines(), 0, 0, False
    while index < len(lines):
        line = lines[index]
        in_code = in_code != line.startswith("```")
        if in_code or not line.startswith("|"):
            index += 1
            continue
        assert index == 0 or not lines[index - 1].strip(), f"no blank line before the table: {lines[index - 1]!r}"
        width = len(_cells(line))
        separator = _cells(lines[index + 1])
        assert len(separator) == width and all(re.fullmatch(r":?-+:?", c.strip()) for c in separator), lines[index + 1]
        end = index + 2
        while end < len(lines) and lines[end].startswith("|"):
            assert len(_cells(lines[end])) == width, f"{lines[end]!r} has not the {width} columns of {line!r}"
            end += 1
        assert end == len(lines) or not lines[end].strip(), f"no blank line after the table: {lines[end]!r}"
        tables, index = tables + 1, end
    return tables


def _results(card: ModelCard) -> dict:
    return {(r.dataset_type, r.metric_config, r.metric_type): r.metric_value for r in card.data.eval_results or []}


@pytest.mark.parametrize("kind", ["trunk", "branch"])
def test_rendered_card(kind):
    recipe = {"learning_rate": 0.01, "epochs": 200, "augmentation": "aug_plus"}
    card = render_model_card(kind, repo_id="org/dcr-" + kind, training_recipe=recipe, config=tiny_config())
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0"
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert "face-recognition" in data["tags"]
    text = card.text
    for loader in ("AutoModel", "AutoImageProcessor"):
        assert f'{loader}.from_pretrained("org/dcr-{kind}", trust_remote_code=True)' in text
    assert 'pipeline("image-feature-extraction", model="org/dcr-' + kind + '", trust_remote_code=True)' in text
    # Nothing but transformers is needed.
    assert all("dcr_hf" not in code for code in re.findall(r"```python\n(.*?)```", text, re.S))
    assert "low_resolution_size=8" in text and "resolution=8" in text
    assert "| learning_rate | 0.01 |" in text and "| augmentation | aug_plus |" in text
    assert "Deep Coupled ResNet for Low-Resolution Face Recognition" in text and "pages   = {526--530}" in text
    assert "surveillance" in text and "Limitations and bias" in text
    assert RESULTS_START in text and "No results recorded yet" in text
    assert ("Pick the branch that matches the image" in text) == (kind == "branch")
    assert "{{" not in card.content and "{%" not in card.content
    assert assert_tables_well_formed(text) == 2  # model details, recipe


class _Optimizer(str, enum.Enum):
    ADAMW = "adamw_torch_fused"


@pytest.mark.parametrize("kind", ["trunk", "branch"])
def test_recipe_values_metadata_and_tables(kind):
    """Recipe rows show values, not reprs or None; base model, datasets and metrics in the metadata;
    every table of a card with results of several protocols is well formed."""
    recipe = {"optimizer": _Optimizer.ADAMW, "trunk": None, "low_resolution_sizes": [8, 12], "epochs": 3.0,
              "specialized_initialization": False}
    card = render_model_card(kind, repo_id="org/x", training_recipe=recipe, config=tiny_config(),
                             results=_verification(0.8), dataset_name="dcr-hf synthetic faces",
                             training_data="dcr-hf synthetic faces (8 identities)", datasets=["org/faces"],
                             base_model="org/dcr-trunk")
    text = card.text
    assert "| optimizer | adamw_torch_fused |" in text and "| low_resolution_sizes | 8, 12 |" in text
    assert "| epochs | 3 |" in text and "| specialized_initialization | no |" in text
    assert "| trunk |" not in text and "Optimizer" not in card.content
    assert not re.search(r"\|\s*None\s*\||: (None|null)$", card.content, re.M)
    assert "Training data: dcr-hf synthetic faces (8 identities)." in text
    assert card.data.base_model == "org/dcr-trunk" and "(https://huggingface.co/org/dcr-trunk)" in text
    assert card.data.datasets == ["org/faces"]
    assert card.data.metrics == ["accuracy", "auc", "eer"]
    assert assert_tables_well_formed(text) == 3  # model details, recipe, results


def test_rendered_card_with_results():
    card = render_model_card("trunk", results=_verification(0.9), dataset_name="LFW")
    assert len(card.data.eval_results) == 9 and card.data.eval_results[0].dataset_name == "LFW"
    assert "| verification accuracy | 90.00 | 90.00 | 90.00 |" in card.text
    with pytest.raises(ValueError, match="dataset_name"):
        render_model_card("trunk", results=_verification(0.9))


def test_card_without_recipe_describes_the_published_one():
    text = render_model_card("trunk").text
    assert "No training recipe was recorded" in text and "Adam" in text


@pytest.mark.parametrize("kind", ["trunk", "branch"])
def test_a_card_shows_this_models_results_only(kind):
    # Without results, no figure reads as this model's: not the original's published LFW numbers either.
    text = render_model_card(kind, config=tiny_config(use_branches=kind == "branch")).text
    assert "Published numbers" not in text
    assert not re.search(r"\b\d{2}\.\d \((8x8|HR)\)", text)
    section = text.split(RESULTS_START)[1].split(RESULTS_END)[0]
    assert "No results recorded yet" in section and not re.search(r"\d+\.\d", section)


def test_unknown_kind_and_missing_templates(tmp_path):
    with pytest.raises(ValueError, match="card kind"):
        render_model_card("head")
    with pytest.raises(FileNotFoundError, match="template"):
        render_model_card("trunk", template_dir=tmp_path)


def test_eval_results_are_percentages_per_column():
    results = results_to_eval_results(_verification(0.8691), "LFW")
    configs = {(r.metric_config, r.metric_type): r.metric_value for r in results}
    assert configs[("verification/8x8", "accuracy")] == 86.91
    assert configs[("verification/HR", "eer")] == 10.0
    assert len(results) == 3 * 3  # 3 columns x (accuracy, auc, eer)
    assert {r.dataset_type for r in results} == {"lfw"}
    with pytest.raises(ValueError, match="Unknown protocol"):
        results_to_eval_results({"protocol": "x", "by_resolution": {}}, "LFW")


def test_update_twice_replaces_and_round_trips(model_dir):
    # No README yet: the card is rendered from the branch template first.
    update_model_card_results(model_dir, _verification(0.5), "LFW", dataset_type="lfw")
    card = update_model_card_results(model_dir, _verification(0.75), "LFW", dataset_type="lfw")
    loaded = ModelCard.load(model_dir / "README.md")
    assert _results(loaded) == _results(card)
    assert len(loaded.data.eval_results) == 9  # no duplicates
    assert _results(loaded)[("lfw", "verification/8x8", "accuracy")] == 75.0
    assert "Pick the branch" in loaded.text  # the branch template, inferred from config.use_branches
    assert loaded.data.model_name == "dcr-branch"
    # The Markdown table between the markers shows the latest values only.
    section = loaded.text.split(RESULTS_START)[1].split(RESULTS_END)[0]
    assert "75.00" in section and "50.00" not in section
    assert loaded.text.count(RESULTS_START) == 1


def test_other_datasets_protocols_and_resolutions_are_kept(model_dir):
    simulated = {"real_low_resolution_probes": False}
    update_model_card_results(model_dir, _verification(0.5, sizes=("8", "12")), "LFW", **simulated)
    intra = dict(_verification(0.6, sizes=("8",)), protocol="intra-verification")
    update_model_card_results(model_dir, intra, "LFW", **simulated)
    update_model_card_results(model_dir, _identification(0.7), "SCface", dataset_type="scface",
                              real_low_resolution_probes=True)
    # Measuring only 8x8 again replaces 8x8 and keeps 12x12.
    card = update_model_card_results(model_dir, _verification(0.9, sizes=("8",)), "LFW", **simulated)
    results = _results(ModelCard.load(model_dir / "README.md"))
    assert results[("lfw", "verification/8x8", "accuracy")] == 90.0
    assert results[("lfw", "verification/12x12", "accuracy")] == 50.0
    assert results[("lfw", "intra-verification/8x8", "accuracy")] == 60.0
    assert results[("scface", "identification/d1", "rank_1")] == 70.0
    assert len(results) == len(card.data.eval_results) == 9 + 6 + 4
    assert card.data.metrics == ["accuracy", "auc", "eer", "rank_1", "rank_5"]
    # The headings say which LR images were simulated (LFW) and which real (SCface).
    assert "**LFW: verification, HR gallery vs simulated LR probe** (%)" in card.text
    assert "**SCface: identification, HR gallery vs real LR probes** (%)" in card.text
    assert "**LFW: verification, both images at the same simulated resolution** (%)" in card.text
    # The kind of probe is card metadata (model-index `dataset.args`), read back from the README.
    assert {r.dataset_name: (r.dataset_args or {}).get("low_resolution_probes")
            for r in ModelCard.load(model_dir / "README.md").data.eval_results} == {"LFW": "simulated", "SCface": "real"}
    assert assert_tables_well_formed(card.text) == 1 + 3  # model details + one table per dataset and protocol
    # Different splits of one dataset are different results.
    update_model_card_results(model_dir, _identification(0.1), "SCface", dataset_type="scface", dataset_split="test")
    assert len(ModelCard.load(model_dir / "README.md").data.eval_results) == 9 + 6 + 4 + 4


def test_a_result_that_does_not_say_how_its_probes_were_made_claims_neither(model_dir):
    card = update_model_card_results(model_dir, _identification(0.7), "SCface", dataset_type="scface")
    assert "**SCface: identification, HR gallery vs LR probes** (%)" in card.text
    assert "real" not in card.text.split(RESULTS_START)[1].split(RESULTS_END)[0]


def test_hand_written_card_gets_a_results_section(model_dir):
    (model_dir / "README.md").write_text("---\nlicense: apache-2.0\n---\n# My model\n\nNotes.\n")
    update_model_card_results(model_dir, _verification(0.5), "LFW")
    text = (model_dir / "README.md").read_text()
    assert "Notes." in text and "## Evaluation results" in text and RESULTS_START in text


def test_write_model_card_uses_the_folder_and_keeps_results(model_dir):
    update_model_card_results(model_dir, _verification(0.5), "LFW")
    path = write_model_card(model_dir, training_recipe={"epochs": 3}, results=_identification(0.7), dataset_name="SCface")
    card = ModelCard.load(path)
    assert len(card.data.eval_results) == 9 + 4  # the earlier LFW results are kept
    assert "| epochs | 3 |" in card.text
    assert "mean [0.4, 0.5, 0.6]" in card.text  # from the saved processor
    assert "8, 12" in card.text  # the folder's low-resolution sizes


def test_non_dcr_folder_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    with pytest.raises(ValueError, match="model_type='resnet'"):
        write_model_card(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_model_card(tmp_path / "missing")


def _trunk_folder(tmp_path):
    folder = tmp_path / "trunk"
    DCRForImageClassification(tiny_config()).save_pretrained(folder)
    return folder


def test_push_folder_to_hub_sends_one_commit_with_the_token(tmp_path, monkeypatch):
    """Against a local stand-in for the Hub's HTTP API (what the real client sends)."""
    folder = _trunk_folder(tmp_path)
    (folder / "checkpoint-3").mkdir()
    (folder / "checkpoint-3" / "optimizer.pt").write_bytes(b"state")
    (folder / "training_args.bin").write_bytes(b"pickled arguments")
    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        (folder / "notes.txt").write_text(f"token={hub.token}\n")  # e.g. a log that captured the token
        commit = push_folder_to_hub(folder, "org/dcr-trunk", commit_message="Trunk", private=True, token=hub.token)
    create = next(r for r in hub.api_requests() if r.path == "/api/repos/create")
    assert create.json() == {"name": "dcr-trunk", "organization": "org", "visibility": "private", "type": "model"}
    assert {r.headers.get("authorization") for r in hub.api_requests()} == {f"Bearer {hub.token}"}
    # The weights went to LFS storage (binary, as on the Hub), without the token.
    [upload] = hub.storage_requests()
    assert "authorization" not in upload.headers and upload.body == (folder / "model.safetensors").read_bytes()
    [sent] = hub.commits
    assert commit.oid and (sent.repo_id, sent.revision, sent.summary) == ("org/dcr-trunk", "main", "Trunk")
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(sent.files) == on_disk - {"checkpoint-3/optimizer.pt", "training_args.bin", "notes.txt"}
    assert all(sent.files[name] == (folder / name).read_bytes() for name in sent.files)
    # A card was written before the upload, with the repo id in its examples.
    assert 'from_pretrained("org/dcr-trunk", trust_remote_code=True)' in sent.files["README.md"].decode()
    with pytest.raises(FileNotFoundError):
        push_folder_to_hub(tmp_path / "missing", "org/x")


def test_files_to_push_leave_out_every_file_holding_the_token(tmp_path, caplog):
    folder = _trunk_folder(tmp_path)
    token = "hf_" + "x" * 37
    # The token across the boundary of two read chunks is found too.
    (folder / "big.log").write_bytes(b"." * (4 * 1024 * 1024 - 10) + token.encode() + b"\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "ok.json").write_text("{}")
    kept = files_to_push(folder, token=token)
    assert "big.log" not in kept and "sub/ok.json" in kept and "model.safetensors" in kept
    assert f"Not pushing {folder / 'big.log'}: it contains the Hub token." in caplog.text


@pytest.mark.parametrize("problem", ["offline", "no-token", "bad-token", "namespace", "read-only", "public", "ok"])
def test_prepare_hub_repo_checks_everything_before_any_work(monkeypatch, problem):
    with HubStandIn(writable=problem != "read-only") as hub:
        hub.patch(monkeypatch)
        hub.add_repo("org/existing", private=False)
        token = {"no-token": None, "bad-token": "hf_wrong"}.get(problem, hub.token)
        repo = {"namespace": "someone/x", "public": "org/existing", "read-only": "org/existing"}.get(problem, "fresh")
        if problem == "offline":
            monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        expected = {
            "offline": "pushing to fresh needs the Hub, but HF_HUB_OFFLINE is set",
            "no-token": "pushing to fresh needs a Hub token with write access: pass --hub_token, set HF_TOKEN or log in",
            "bad-token": f"the Hub at {hub.endpoint} did not accept the token: Invalid user token.",
            "namespace": "--hub_model_id someone/x: tester's token cannot create or write to it: HTTP 403: You don't have "
                         "the rights to create a model under the namespace \"someone\"",
            "read-only": "--hub_model_id org/existing: tester's token cannot create or write to it: HTTP 403: You don't "
                         "have write access",
            "public": "--hub_model_id org/existing exists and is public; --hub_private_repo does not change an existing repo",
        }.get(problem)
        if expected is None:
            assert prepare_hub_repo(repo, token=token, private=True, revision="v2") == "tester/fresh"
            repo = hub.repos[("model", "tester/fresh")]
            assert repo["private"] is True and sorted(repo["branches"]) == ["main", "v2"]
        else:
            with pytest.raises(ValueError, match=re.escape(expected)):
                prepare_hub_repo(repo, token=token, private=True)
        assert not hub.commits


@pytest.mark.parametrize("use_branches", [False, True])
def test_card_usage_examples_run(tmp_path, use_branches):
    """The card's Python examples work as written, on a local folder and generated images."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "model"
    DCRModel(tiny_config(use_branches=use_branches)).save_pretrained(folder)
    DCRImageProcessor(image_size=32).save_pretrained(folder)
    card = render_model_card("branch" if use_branches else "trunk", repo_id=str(folder), config=tiny_config())
    rng = np.random.default_rng(0)
    images = {"cctv_8x8.png": (8, 8), "mugshot.jpg": (50, 40), "face.jpg": (60, 60)}
    for name, shape in images.items():
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(tmp_path / name)
    usage, pipeline_example = re.findall(r"```python\n(.*?)```", card.text, re.S)[:2]
    namespace = {"__name__": "card_example"}
    for code in (usage, pipeline_example):
        code = re.sub(r'Image\.open\("([^"]+)"\)', lambda m: f"Image.open({str(tmp_path / m.group(1))!r})", code)
        exec(compile(code.replace("print(", "similarity = ("), "card_example", "exec"), namespace)
    size = 32
    assert namespace["g"].shape == namespace["p"].shape == (1, size)
    assert -1.0 <= float(namespace["similarity"]) <= 1.0
    assert namespace["crop"].shape == namespace["forced"].shape == namespace["simulated"].shape == (1, size)
    # The simulated 8x8 probe goes to the 8x8 branch, like the forced one: their embeddings differ
    # from the HR branch's only for a branch model.
    hr = namespace["pipe"](str(tmp_path / "face.jpg"), return_tensors=True)
    assert torch.equal(hr, namespace["forced"]) != use_branches


def test_model_hub_id(tmp_path):
    assert model_hub_id("org/dcr-trunk") == "org/dcr-trunk"
    assert model_hub_id(None) is None and model_hub_id(str(tmp_path)) is None
    (tmp_path / "training_recipe.json").write_text(json.dumps({"hub_model_id": "me/trunk"}))
    assert model_hub_id(str(tmp_path)) == "me/trunk"
    snapshot = tmp_path / "hub" / "models--org--dcr-trunk" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    assert model_hub_id(str(snapshot)) == "org/dcr-trunk"
