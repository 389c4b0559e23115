"""Gallery search: `GalleryIndex` and `dcr-index` (through `python -m dcr_hf.index`) on a tiny
model and a handful of faces in the real folder layout."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcr_hf import DCRImageProcessor, DCRModel
from dcr_hf.index import GalleryIndex, choose_kind, index_kind
from dcr_hf.index.command import main
from dcr_hf.index.embedding import embed_probes, model_identity, read_probes
from dcr_hf.hub.loading import load_model_and_processor

from .layouts import make_identity_folder
from .models import tiny_config

ROOT = Path(__file__).resolve().parent.parent
IDENTITIES = {"ada": 2, "bob": 2, "cyd": 1}


def _model_dir(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    DCRModel(tiny_config(use_branches=True)).save_pretrained(folder)
    DCRImageProcessor(image_size=32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    gallery = root / "gallery"
    make_identity_folder(gallery, IDENTITIES)
    extra = root / "extra"
    make_identity_folder(extra, {"dee": 2})
    probes = root / "probes"
    probes.mkdir()
    # An enrolled image itself (120 px: the HR branch), and a 9 x 9 native LR crop of another.
    shutil.copy(gallery / "bob" / "bob_1.jpg", probes / "bob_hr.png")
    Image.open(gallery / "ada" / "ada_0.jpg").resize((9, 9)).save(probes / "ada_lr.png")
    return {"root": root, "gallery": gallery, "extra": extra, "probes": probes,
            "model": _model_dir(root / "model", 0), "other": _model_dir(root / "other", 1)}


def _command(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dcr_hf.index", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two `python -m dcr_hf.index` subprocesses
def test_build_search_round_trip_add_remove_through_the_command(setup, tmp_path):
    index_dir = str(tmp_path / "idx")
    built = _command("build", "--gallery", str(setup["gallery"]), "--model_name_or_path", str(setup["model"]), "--index_dir", index_dir)
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    assert (summary["index_kind"], summary["num_faces"], summary["num_identities"]) == ("flat", 5, 3)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["dimension"] == 32 and manifest["index"]["factory"] == "IDMap2,Flat"
    assert manifest["model"]["name_or_path"] == str(setup["model"]) and len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["preprocessing"]["image_size"] == 32 and manifest["identities"] == ["ada", "bob", "cyd"]

    found = _command("search", "--index_dir", index_dir, "-k", "3", str(setup["probes"] / "bob_hr.png"), str(setup["probes"] / "ada_lr.png"))
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["k"] == 3 and [p["probe"] for p in result["probes"]] == [str(setup["probes"] / n) for n in ("bob_hr.png", "ada_lr.png")]
    hr, lr = result["probes"]
    assert (hr["resolution"], lr["resolution"], lr["width"]) == ("hr", 8, 9)  # 9 px: the 8 branch
    for probe in result["probes"]:
        assert len(probe["results"]) == 3
        assert set(probe["results"][0]) == {"id", "identity", "source", "score"}
        scores = [r["score"] for r in probe["results"]]
        assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)
    # The enrolled image itself is its own nearest face, at cosine 1 (same pixels, same branch).
    assert hr["results"][0]["identity"] == "bob" and hr["results"][0]["source"].endswith("bob_1.jpg")
    assert hr["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)

    # add and remove in-process (`dcr-index` is `command.main`): each subprocess costs an import of the stack.
    added, removed, after = (_main_json(args) for args in (
        ["add", "--index_dir", index_dir, "--gallery", str(setup["extra"])],
        ["remove", "--index_dir", index_dir, "--identity", "bob", "dee"],
        ["search", "--index_dir", index_dir, "-k", "10", str(setup["probes"] / "bob_hr.png")],
    ))
    assert (added["num_faces"], added["added_faces"]) == (7, 2)
    assert (removed["removed_faces"], removed["num_faces"]) == (4, 3)
    assert {r["identity"] for r in after["probes"][0]["results"]} == {"ada", "cyd"}


def _main_json(args: list[str]) -> dict:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        main(args)
    return json.loads(output.getvalue())


def test_a_cpu_build_keeps_freed_memory(setup, tmp_path, monkeypatch):
    """The model embeds on a CPU: its batches reuse the memory the previous one freed (`host_memory`)."""
    import dcr_hf.host_memory as host_memory

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(True) or True)
    built = _main_json(["build", "--gallery", str(setup["gallery"]), "--model_name_or_path", str(setup["model"]),
                        "--index_dir", str(tmp_path / "idx")])
    assert built["num_faces"] == 5 and calls == [True]


@pytest.mark.slow  # one `python -m dcr_hf.index` subprocess, models loaded per case
def test_command_refusals_are_one_line(setup, tmp_path):
    index_dir = tmp_path / "idx"
    assert _command("build", "--gallery", str(setup["gallery"]), "--model_name_or_path", str(setup["model"]),
                    "--index_dir", str(index_dir)).returncode == 0
    probe = str(setup["probes"] / "bob_hr.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    broken_gallery = tmp_path / "broken"
    make_identity_folder(broken_gallery, {"eve": 1})
    (broken_gallery / "eve" / "bad.png").write_bytes(b"not an image")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "manifest.json").write_text((index_dir / "manifest.json").read_text())
    (truncated / "index.faiss").write_bytes((index_dir / "index.faiss").read_bytes()[:100])
    other_dim = tmp_path / "dim64"
    DCRModel(tiny_config(use_branches=True, embedding_size=64, branch_hidden_size=64)).save_pretrained(other_dim)
    DCRImageProcessor(image_size=32).save_pretrained(other_dim)
    cases = {
        "another model": (["search", "--index_dir", str(index_dir), "--model_name_or_path", str(setup["other"]), probe],
                          f"was built with model '{setup['model']}'"),
        "empty gallery": (["build", "--gallery", str(empty), "--model_name_or_path", str(setup["model"]), "--index_dir", str(tmp_path / "x")],
                          "has no identity sub-folders"),
        "unreadable image": (["build", "--gallery", str(broken_gallery), "--model_name_or_path", str(setup["model"]),
                              "--index_dir", str(tmp_path / "y")], "Cannot read image"),
        "unreadable probe": (["search", "--index_dir", str(index_dir), str(broken_gallery / "eve" / "bad.png")], "Cannot read probe image"),
        "truncated index": (["search", "--index_dir", str(truncated), probe], "is not a readable faiss index"),
        "dimension": (["search", "--index_dir", str(index_dir), "--model_name_or_path", str(other_dim), probe],
                      "makes 64-d embeddings but the index holds 32-d"),
        "k": (["search", "--index_dir", str(index_dir), "-k", "0", probe], "expected a positive integer"),
        "unknown identity": (["remove", "--index_dir", str(index_dir), "--identity", "zed"], "No face of identity 'zed'"),
        "existing index": (["build", "--gallery", str(setup["gallery"]), "--model_name_or_path", str(setup["model"]),
                            "--index_dir", str(index_dir)], "already holds an index"),
    }
    for name, (args, message) in cases.items():
        # In-process (`dcr-index` is `command.main`), but for one case through the real command line.
        if name == "another model":
            done = _command(*args)
            status, stderr = done.returncode, done.stderr
        else:
            stderr_capture = io.StringIO()
            with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(stderr_capture):
                main(list(args))
            status, stderr = exit_info.value.code, stderr_capture.getvalue()
        assert status == 2, (name, stderr)
        assert message in stderr.strip().splitlines()[-1] and "Traceback" not in stderr, (name, stderr)


def test_api_round_trip_save_load_and_model_check(setup, tmp_path):
    model, processor = load_model_and_processor(str(setup["model"]))
    identity = model_identity(model, str(setup["model"]))
    index = GalleryIndex.build(setup["gallery"], model, processor, identity)
    assert len(index) == 5 and index.identity_names == ["ada", "bob", "cyd"]
    probe = [str(setup["probes"] / "bob_hr.png")]
    first = index.search(probe, model, processor, identity, k=2)
    index.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    again = loaded.search(probe, model, processor, identity, k=2)
    assert again == first and first[0]["results"][0]["identity"] == "bob"
    ids = loaded.add(setup["extra"], model, processor, identity)
    assert ids.tolist() == [5, 6] and len(loaded) == 7
    assert loaded.remove(["dee"]) == 2 and len(loaded) == 5
    other, _ = load_model_and_processor(str(setup["other"]))
    with pytest.raises(ValueError, match="was built with model"):
        loaded.search(probe, other, processor, model_identity(other, str(setup["other"])), k=2)


def test_probe_routing_by_native_size(setup):
    model, processor = load_model_and_processor(str(setup["model"]))  # LR branches 8 and 12, HR 32
    folder = setup["root"] / "sizes"
    folder.mkdir(exist_ok=True)
    paths = []
    for side in (7, 10, 11, 12, 20, 23, 40):
        path = folder / f"{side}.png"
        Image.new("RGB", (side + 3, side), (120, 80, 40)).save(path)
        paths.append(str(path))
    embeddings, routes = embed_probes(model, processor, read_probes(paths))
    assert routes == [8, 8, 12, 12, 12, "hr", "hr"]
    # Each probe's embedding is the model's own output through its branch.
    pixels = processor([Image.open(paths[0]).convert("RGB")], return_tensors="pt").pixel_values
    with torch.inference_mode():
        expected = model(pixels, resolution=8).pooler_output.numpy()
    np.testing.assert_allclose(embeddings[:1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["flat", "ivfsq8", "ivfpq", "hnswsq8", "hnsw"])
def test_index_kinds_find_the_exact_neighbours_and_remove(kind, tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 16)).astype(np.float32)
    labels = np.repeat(np.arange(40), 10)
    vectors = centers[labels] + 0.1 * rng.normal(size=(400, 16)).astype(np.float32)
    names = [f"id{label}" for label in labels]
    index = GalleryIndex.from_embeddings(vectors, names, kind=kind, nlist=8, nprobe=8, pq_m=8)
    assert index.kind.kind == kind
    found = index.search_embeddings(centers, k=1)
    assert [row[0]["identity"] for row in found] == [f"id{i}" for i in range(40)]
    index.save(tmp_path / kind)
    loaded = GalleryIndex.load(tmp_path / kind)
    assert loaded.kind.search_parameters == index.kind.search_parameters
    assert loaded.remove(["id3", "id7"]) == 20 and len(loaded) == 380
    names_left = {row[0]["identity"] for row in loaded.search_embeddings(centers, k=1)}
    assert "id3" not in names_left and "id7" not in names_left
    # Enrolled again (no rebuild, new ids), saved and loaded: found again, scores cosine similarities.
    ids = loaded.add_embeddings(vectors[labels == 3], ["back3"] * 10)
    assert ids.tolist() == list(range(400, 410)) and len(loaded) == 390
    loaded.save(tmp_path / "again")
    again = GalleryIndex.load(tmp_path / "again")
    hits = again.search_embeddings(centers[3:4], k=10)[0]
    assert {hit["identity"] for hit in hits} == {"back3"} and {hit["id"] for hit in hits} == set(range(400, 410))
    enrolled = vectors[labels == 3] / np.linalg.norm(vectors[labels == 3], axis=1, keepdims=True)
    exact = enrolled @ (centers[3] / np.linalg.norm(centers[3]))
    assert sorted(hit["score"] for hit in hits) == pytest.approx(sorted(exact.tolist()), abs=0.02)
    with pytest.raises(ValueError, match="k must be a positive"):
        loaded.search_embeddings(centers, k=0)
    with pytest.raises(ValueError, match="dimension 8 but the index holds 16-d"):
        loaded.search_embeddings(centers[:, :8], k=1)


def test_kind_choice_by_size():
    assert choose_kind("auto", 100_000) == "flat" and choose_kind("auto", 100_001) == "hnswsq8"
    assert choose_kind("auto", 4_000_000) == "hnswsq8" and choose_kind("auto", 4_000_001) == "ivfpq"
    kind = index_kind("auto", 1_000_000, 512)
    assert (kind.factory, kind.search_parameters) == ("IDMap2,HNSW32,SQ8,RFlat", {"efSearch": 96, "k_factor_rf": 2})
    kind = index_kind("auto", 10_000_000, 512)
    assert (kind.factory, kind.search_parameters) == ("IVF16384,PQ128np", {"nprobe": 512})
    assert index_kind("hnsw", 1000, 16).search_parameters == {"efSearch": 128}
    assert index_kind("hnswsq8", 1000, 16, hnsw_m=16, ef_search=40, k_factor=4).to_dict() == {
        "kind": "hnswsq8", "factory": "IDMap2,HNSW16,SQ8,RFlat", "metric": "l2", "search_parameters": {"efSearch": 40, "k_factor_rf": 4}}
    kind = index_kind("ivfsq8", 1_000_000, 512)
    assert (kind.kind, kind.factory, kind.search_parameters) == ("ivfsq8", "IVF4096,SQ8", {"nprobe": 4})
    assert index_kind("ivfsq8", 1000, 16).search_parameters == {"nprobe": 4}
    assert index_kind("ivfsq8", 100, 16).factory == "IVF2,SQ8"  # at least 39 training faces a cluster
    assert index_kind("ivfsq8", 100, 16).search_parameters == {"nprobe": 2}
    with pytest.raises(ValueError, match="at least 256 faces"):
        index_kind("ivfpq", 100, 512)


def test_build_from_a_prepared_dataset_folder(setup, tmp_path):
    """A `save_to_disk` folder of enrolled faces (images embedded as bytes) indexes like the folder tree."""
    from dcr_hf.data.generic import load_image_folder

    prepared = tmp_path / "prepared"
    load_image_folder(setup["gallery"], cache_dir=tmp_path / "cache").save_to_disk(str(prepared))
    model, processor = load_model_and_processor(str(setup["model"]))
    identity = model_identity(model, str(setup["model"]))
    from_tree = GalleryIndex.build(setup["gallery"], model, processor, identity)
    from_prepared = GalleryIndex.build(prepared, model, processor, identity)
    assert len(from_prepared) == 5 and from_prepared.identity_names == ["ada", "bob", "cyd"]
    queries = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
    hits = [[(h["identity"], round(h["score"], 5)) for h in row] for row in from_tree.search_embeddings(queries, 5)]
    assert [[(h["identity"], round(h["score"], 5)) for h in row] for row in from_prepared.search_embeddings(queries, 5)] == hits


def test_hnswsq8_saves_its_search_parameters_reranks_exactly_and_rebuilds_from_exact_vectors(tmp_path):
    """The graph walks 8-bit codes; the refine step's exact vectors give the scores and survive a remove."""
    import faiss

    from dcr_hf.index.kinds import hnsw_of

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(600, 32)).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    names = [f"id{i // 6}" for i in range(600)]
    index = GalleryIndex.from_embeddings(vectors, names, kind="hnswsq8", ef_search=50, k_factor=3)
    index.save(tmp_path / "sq8")
    loaded = GalleryIndex.load(tmp_path / "sq8")
    assert loaded.kind.search_parameters == {"efSearch": 50, "k_factor_rf": 3}
    refine = faiss.downcast_index(loaded.index.index)
    assert isinstance(refine, faiss.IndexRefineFlat) and refine.k_factor == 3 and hnsw_of(loaded.index).hnsw.efSearch == 50
    assert isinstance(faiss.downcast_index(refine.base_index), faiss.IndexHNSWSQ)
    # Scores are the exact cosines (re-ranked with the float vectors, not the 8-bit codes), nearest first.
    queries = unit[:20] + 0.05 * rng.normal(size=(20, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for query, hits in zip(queries, loaded.search_embeddings(queries, k=5)):
        exact = unit @ query
        assert hits[0]["id"] == int(np.argmax(exact))
        np.testing.assert_allclose([hit["score"] for hit in hits], exact[[hit["id"] for hit in hits]], atol=1e-5)
        assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
    # remove rebuilds the graph from the refine index's exact vectors, codes trained as before, parameters kept.
    assert loaded.remove(["id0", "id5"]) == 12 and len(loaded) == 588
    kept = np.array(sorted(set(range(600)) - set(range(6)) - set(range(30, 36))))
    np.testing.assert_allclose(loaded.index.reconstruct_batch(kept), unit[kept], rtol=0, atol=1e-6)  # codes: ~1e-2 off
    refine = faiss.downcast_index(loaded.index.index)
    assert refine.k_factor == 3 and hnsw_of(loaded.index).hnsw.efSearch == 50 and loaded.index.is_trained
    hits = loaded.search_embeddings(unit[6:7], k=1)[0]
    assert hits[0]["id"] == 6 and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert {row[0]["identity"] for row in loaded.search_embeddings(unit[:6], k=1)}.isdisjoint({"id0"})
    # Everything removed, then enrolled again: the emptied index keeps its trained codes.
    assert loaded.remove(loaded.identity_names) == 588 and len(loaded) == 0
    ids = loaded.add_embeddings(vectors[:6], ["again"] * 6)
    assert ids.tolist() == list(range(600, 606))
    assert loaded.search_embeddings(unit[:1], k=1)[0][0]["id"] == 600


def test_command_builds_hnswsq8_with_its_search_options(setup, tmp_path):
    """`dcr-index build --index_kind hnswsq8 --ef_search --k_factor`: saved in the manifest, searched and removed from."""
    index_dir = str(tmp_path / "sq8")
    built = _main_json(["build", "--gallery", str(setup["gallery"]), "--model_name_or_path", str(setup["model"]),
                        "--index_dir", index_dir, "--index_kind", "hnswsq8", "--ef_search", "40", "--k_factor", "3"])
    assert (built["index_kind"], built["factory"], built["num_faces"]) == ("hnswsq8", "IDMap2,HNSW32,SQ8,RFlat", 5)
    manifest = json.loads((tmp_path / "sq8" / "manifest.json").read_text())
    assert manifest["index"]["search_parameters"] == {"efSearch": 40, "k_factor_rf": 3}
    found = _main_json(["search", "--index_dir", index_dir, "-k", "2", str(setup["probes"] / "bob_hr.png")])
    hits = found["probes"][0]["results"]
    assert hits[0]["identity"] == "bob" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)  # exact re-ranked score
    assert _main_json(["remove", "--index_dir", index_dir, "--identity", "bob"])["num_faces"] == 3
    after = _main_json(["search", "--index_dir", index_dir, "-k", "5", str(setup["probes"] / "bob_hr.png")])
    assert {hit["identity"] for hit in after["probes"][0]["results"]} == {"ada", "cyd"}
    assert json.loads((tmp_path / "sq8" / "manifest.json").read_text())["index"]["search_parameters"] == {"efSearch": 40, "k_factor_rf": 3}
