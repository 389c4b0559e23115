"""Evaluation runners: embedding routing against direct model calls, distributed gathering, bad inputs."""

from __future__ import annotations

import multiprocessing
import os
import socket
import traceback

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from tests.models import tiny_config

from dcr_hf import DCRForImageClassification, DCRImageProcessor, DCRModel
from dcr_hf.data.synthetic import load_synthetic
from dcr_hf.evaluation import (
    compute_embeddings,
    default_probe_resolutions,
    evaluate_identification,
    evaluate_retrieval,
    evaluate_verification,
    get_dcr_model,
    summary_metrics,
)
from dcr_hf.hub import load_model_and_processor
from dcr_hf.metrics import clustering_metrics


# The synthetic faces are rendered at 48 px and the tiny models take 48 px images, so the image
# processor (the oracle path) and the dataset transforms see the same pixels without a resize.
IMAGE_SIZE = 48


def _model(use_branches: bool, seed: int = 0) -> DCRModel:
    torch.manual_seed(seed)
    model = DCRModel(tiny_config(image_size=IMAGE_SIZE, use_branches=use_branches)).eval()
    if use_branches:
        # Distinct branches, so that routing an image to the wrong one changes its embedding.
        with torch.no_grad():
            for branch in model.branches:
                branch.projection.weight.normal_()
    return model


@pytest.fixture(scope="module")
def trunk_model() -> DCRModel:
    return _model(False)


@pytest.fixture(scope="module")
def branch_model() -> DCRModel:
    return _model(True)


@pytest.fixture(scope="module")
def pairs() -> Dataset:
    return load_synthetic(
        split="pairs", num_verification_identities=20, verification_images_per_identity=3, num_pairs=20, image_size=IMAGE_SIZE
    )


@pytest.fixture(scope="module")
def surveillance() -> tuple[Dataset, Dataset]:
    gallery = load_synthetic(split="gallery", num_surveillance_subjects=4, image_size=IMAGE_SIZE)
    probe = load_synthetic(split="probe", num_surveillance_subjects=4, image_size=IMAGE_SIZE)
    return gallery, probe


@pytest.fixture(scope="module")
def processor() -> DCRImageProcessor:
    return DCRImageProcessor(image_size=IMAGE_SIZE)


def _oracle(model: DCRModel, processor: DCRImageProcessor, images, size=None, resolution=None) -> np.ndarray:
    """Embeddings by the public model API: image processor, then one direct model call."""
    pixel_values = processor(list(images), low_resolution_size=size).pixel_values
    with torch.no_grad():
        return model(pixel_values, resolution=resolution).pooler_output.numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ----------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("use_branches", [False, True])
@pytest.mark.parametrize("resolution", [None, 8])
def test_compute_embeddings_matches_direct_model_calls(use_branches, resolution, pairs, processor):
    model = _model(use_branches)
    images = pairs.select(range(10)).rename_column("image_a", "image").select_columns(["image"])
    embeddings = compute_embeddings(model, images, resolution=resolution, batch_size=4, show_progress=False)
    expected = _oracle(model, processor, images["image"], size=resolution, resolution=resolution)
    assert embeddings.shape == (10, 32)
    np.testing.assert_allclose(embeddings, expected, atol=2e-4)
    if use_branches and resolution == 8:
        # The 8x8 probes went through the 8x8 branch, not the HR one.
        wrong_branch = _oracle(model, processor, images["image"], size=8, resolution=None)
        assert np.abs(embeddings - wrong_branch).max() > 1e-2


def test_flip_tta_averages_mirrored_embeddings(trunk_model, pairs, processor):
    images = pairs.select(range(6)).rename_column("image_a", "image").select_columns(["image"])
    embeddings = compute_embeddings(trunk_model, images, flip_tta=True, batch_size=4, show_progress=False)
    pixel_values = processor(list(images["image"])).pixel_values
    with torch.no_grad():
        plain = trunk_model(pixel_values).pooler_output
        mirrored = trunk_model(pixel_values.flip(-1)).pooler_output
    np.testing.assert_allclose(embeddings, ((plain + mirrored) / 2).numpy(), atol=2e-4)


def test_training_mode_is_restored(pairs):
    model = DCRForImageClassification(tiny_config(image_size=IMAGE_SIZE)).train()
    images = pairs.select(range(3)).rename_column("image_a", "image").select_columns(["image"])
    compute_embeddings(model, images, show_progress=False)
    assert model.training and model.dcr.training


def _distributed_worker(rank: int, port: int, folder: str, out: str) -> None:
    try:
        torch.set_num_threads(1)  # no OpenMP pool in a forked child
        os.environ.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        )
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(True)  # the forked parent's single-process state
        accelerator = Accelerator(cpu=True)
        model = DCRModel.from_pretrained(folder).eval()
        rows_seen = []
        model.trunk.register_forward_hook(lambda module, args, output: rows_seen.append(args[0].shape[0]))
        dataset = Dataset.load_from_disk(os.path.join(folder, "images"))
        embeddings = compute_embeddings(
            model, dataset, accelerator=accelerator, resolution=8, batch_size=2, show_progress=False
        )
        np.savez(f"{out}_{rank}.npz", embeddings=embeddings, rows_seen=sum(rows_seen))
        accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


@pytest.mark.slow
def test_distributed_embeddings_are_gathered_exactly_once(tmp_path, pairs, branch_model):
    """Two CPU processes (gloo), 7 images in batches of 2: each process embeds part of the data,
    and both get all 7 embeddings in dataset order, none twice."""
    folder = tmp_path / "model"
    branch_model.save_pretrained(folder)
    images = pairs.select(range(7)).rename_column("image_a", "image").select_columns(["image"])
    images.save_to_disk(str(folder / "images"))
    expected = compute_embeddings(branch_model, images, resolution=8, batch_size=2, show_progress=False)

    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    # fork: the children reuse the imported modules, so the test takes about a second.
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_distributed_worker, args=(rank, port, str(folder), str(tmp_path / "out")))
        for rank in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        if worker.is_alive():
            worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0]
    for rank in range(2):
        result = np.load(tmp_path / f"out_{rank}.npz")
        assert result["embeddings"].shape == (7, 32)
        np.testing.assert_allclose(result["embeddings"], expected, atol=1e-5)
        assert 0 < int(result["rows_seen"]) < 7  # the work was split between the processes


# ----------------------------------------------------------------------------- verification


@pytest.mark.parametrize("use_branches", [False, True])
@pytest.mark.parametrize("intra", [False, True])
def test_verification_routes_images_like_the_protocol(use_branches, intra, pairs, processor):
    """Oracle: the first image at HR (HR branch), the second at each LR size (that size's branch);
    in intra mode both at the LR size. Scored with the same fold split."""
    from dcr_hf.metrics import verification_accuracy

    model = _model(use_branches)
    results = evaluate_verification(model, pairs, sizes=(8, 12), intra=intra, batch_size=16, show_progress=False)
    assert list(results["by_resolution"]) == ["8", "12", "hr"]
    assert results["num_pairs"] == len(pairs)
    is_same = np.asarray(pairs["is_same"], dtype=bool)
    folds = np.asarray(pairs["fold"])
    hr_a = _oracle(model, processor, pairs["image_a"])
    for key, size in (("8", 8), ("12", 12), ("hr", None)):
        b = _oracle(model, processor, pairs["image_b"], size=size, resolution=size)
        a = _oracle(model, processor, pairs["image_a"], size=size, resolution=size) if intra else hr_a
        expected = verification_accuracy(_cosine(a, b), is_same, folds)
        column = results["by_resolution"][key]
        assert column["accuracy"] == pytest.approx(expected.accuracy)
        assert column["accuracy_std"] == pytest.approx(expected.accuracy_std)
        assert column["threshold"] == pytest.approx(expected.threshold, abs=1e-4)
        assert 0.0 <= column["auc"] <= 1.0 and set(column["tar_at_far"]) == {"0.001", "0.01", "0.1"}
        assert len(results["curves"][key]["fpr"]) == len(results["curves"][key]["tpr"])
    mean = np.mean([results["by_resolution"][k]["accuracy"] for k in ("8", "12")])
    assert results["mean_lr_accuracy"] == pytest.approx(mean)
    metrics = summary_metrics(results)
    assert metrics["mean_lr_accuracy"] == pytest.approx(mean)
    assert metrics["accuracy_12"] == results["by_resolution"]["12"]["accuracy"]
    assert metrics["tar@far=0.01_hr"] == results["by_resolution"]["hr"]["tar_at_far"]["0.01"]
    assert all(isinstance(value, float) for value in metrics.values())


def test_verification_original_threshold_grid(trunk_model, pairs):
    results = evaluate_verification(trunk_model, pairs, sizes=(8,), threshold_grid="original", show_progress=False)
    # Fold thresholds on the original grid are multiples of 0.005, so their mean over 10 folds is one of 0.0005.
    threshold = results["by_resolution"]["8"]["threshold"]
    assert threshold * 2000 == pytest.approx(round(threshold * 2000), abs=1e-6)


def test_classification_model_is_evaluated_through_its_embedder(pairs):
    torch.manual_seed(0)
    classifier = DCRForImageClassification(tiny_config(image_size=IMAGE_SIZE)).eval()
    assert get_dcr_model(classifier) is classifier.dcr
    with_head = evaluate_verification(classifier, pairs, sizes=(8,), show_progress=False)
    bare = evaluate_verification(classifier.dcr, pairs, sizes=(8,), show_progress=False)
    assert with_head["by_resolution"] == bare["by_resolution"]


# ----------------------------------------------------------------------------- bad inputs


def test_non_dcr_model_is_rejected(tmp_path):
    from transformers import ResNetConfig, ResNetModel

    resnet = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1]))
    resnet.save_pretrained(tmp_path / "resnet")
    with pytest.raises(ValueError, match="holds a model of type 'resnet'.*DCR models only"):
        load_model_and_processor(str(tmp_path / "resnet"))
    with pytest.raises(ValueError, match="Expected a DCR model"):
        get_dcr_model(resnet)


def test_missing_branch_fails_before_reading_any_image(branch_model):
    # Image paths that do not exist: decoding them would raise something else.
    broken = Dataset.from_dict(
        {"image_a": ["/nonexistent/a.png"] * 20, "image_b": ["/nonexistent/b.png"] * 20, "is_same": [0, 1] * 10},
        features=Features({"image_a": Image(), "image_b": Image(), "is_same": Value("int8")}),
    )
    with pytest.raises(ValueError, match=r"no branch for 16x16.*\[8, 12\]"):
        evaluate_verification(branch_model, broken, sizes=(8, 16), show_progress=False)
    with pytest.raises(ValueError, match="no branch for 20x20"):
        evaluate_retrieval(branch_model, broken.rename_column("image_a", "image"), sizes=(20,), show_progress=False)
    with pytest.raises(ValueError, match="below image_size=48"):
        evaluate_verification(_model(False), broken, sizes=(IMAGE_SIZE,), show_progress=False)


def test_nan_embeddings_are_reported_by_the_metrics(pairs):
    model = _model(False)
    with torch.no_grad():
        model.trunk.projection.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_verification(model, pairs, sizes=(8,), show_progress=False)


def test_dataset_with_a_transform_is_rejected(trunk_model, pairs):
    with pytest.raises(ValueError, match="raw dataset"):
        evaluate_verification(trunk_model, pairs.with_transform(lambda batch: batch), sizes=(8,), show_progress=False)


# ----------------------------------------------------------------------------- identification


def _brute_force_rank1(probes: np.ndarray, probe_labels, gallery: np.ndarray, gallery_labels) -> float:
    similarity = (probes / np.linalg.norm(probes, axis=1, keepdims=True)) @ (
        gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    ).T
    return float(np.mean(np.asarray(gallery_labels)[similarity.argmax(1)] == np.asarray(probe_labels)))


def test_identification_routes_probes_by_distance(branch_model, surveillance, processor):
    gallery, probe = surveillance
    mapping = {1: 8, 2: 12, 3: "hr"}
    results = evaluate_identification(branch_model, gallery, probe, probe_resolution=mapping, show_progress=False)
    assert list(results["by_distance"]) == ["d1", "d2", "d3", "all"]
    gallery_embeddings = _oracle(branch_model, processor, gallery["image"])
    distances = np.asarray(probe["distance"])
    labels = np.asarray(probe["label"])
    for distance, resolution in mapping.items():
        rows = np.flatnonzero(distances == distance)
        # Real probes are used as they are: no LR simulation, only the branch changes.
        embedded = _oracle(branch_model, processor, probe.select(rows)["image"], resolution=resolution)
        column = results["by_distance"][f"d{distance}"]
        assert column["rank_1"] == pytest.approx(_brute_force_rank1(embedded, labels[rows], gallery_embeddings, gallery["label"]))
        assert column["num_probes"] == len(rows) and column["probe_resolution"] == resolution
    assert results["by_distance"]["all"]["num_probes"] == len(probe)
    assert results["probe_resolution"] == {"1": 8, "2": 12, "3": "hr"}
    mean_rank1 = np.mean([results["by_distance"][f"d{d}"]["rank_1"] for d in (1, 2, 3)])
    assert results["mean_rank1"] == pytest.approx(mean_rank1)
    assert summary_metrics(results)["rank_1_d2"] == results["by_distance"]["d2"]["rank_1"]


def test_identification_counts_probes_without_gallery_subject(trunk_model, surveillance):
    gallery, probe = surveillance
    labels = np.asarray(gallery["label"])
    reduced = gallery.select(np.flatnonzero(labels != labels[0]))
    results = evaluate_identification(trunk_model, reduced, probe, show_progress=False)
    orphans = np.asarray(probe["label"]) == labels[0]
    distances = np.asarray(probe["distance"])
    for distance in (1, 2, 3):
        column = results["by_distance"][f"d{distance}"]
        assert column["num_unmatched_probes"] == int((orphans & (distances == distance)).sum())
        # Unmatched probes are misses over all probes, and left out of the matched-only accuracy.
        matched = column["num_probes"] - column["num_unmatched_probes"]
        assert column["rank_1_all_probes"] == pytest.approx(column["rank_1"] * matched / column["num_probes"])
    assert results["by_distance"]["all"]["num_unmatched_probes"] == int(orphans.sum())


def test_identification_probe_resolution_checks(branch_model, surveillance):
    gallery, probe = surveillance
    assert default_probe_resolutions(branch_model, [1, 2, 3]) == {1: 8, 2: 12, 3: 12}
    assert default_probe_resolutions(_model(False), [1, 2]) == {1: "hr", 2: "hr"}
    with pytest.raises(ValueError, match=r"distance\(s\) \[3\]"):
        evaluate_identification(branch_model, gallery, probe, probe_resolution={1: 8, 2: 12}, show_progress=False)
    with pytest.raises(ValueError, match="no branch for 16x16"):
        evaluate_identification(branch_model, gallery, probe, probe_resolution=16, show_progress=False)


# ----------------------------------------------------------------------------- retrieval


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("rule", ["exclude_own", "original"])
@pytest.mark.parametrize("intra", [False, True])
def test_retrieval_queries_low_resolution_against_references(branch_model, processor, rule, intra):
    dataset = load_synthetic(split="retrieval", num_verification_identities=20, verification_images_per_identity=2,
                             image_size=IMAGE_SIZE)
    results = evaluate_retrieval(branch_model, dataset, sizes=(8,), rule=rule, intra=intra, show_progress=False)
    assert results["protocol"] == ("intra-retrieval" if intra else "retrieval") and results["retrieval_rule"] == rule
    labels = np.asarray(dataset["label"])
    hr = _oracle(branch_model, processor, dataset["image"])
    low = _oracle(branch_model, processor, dataset["image"], size=8, resolution=8)
    for key, queries, references in (("8", low, low if intra else hr), ("hr", hr, hr)):
        # Brute-force precision@1 (2 images per identity: R = 1): the nearest reference by cosine,
        # the query's own image left out (exclude_own) or the first neighbour dropped (original).
        similarity = _unit(queries) @ _unit(references).T
        if rule == "exclude_own":
            np.fill_diagonal(similarity, -np.inf)
            nearest = similarity.argmax(1)
        else:
            nearest = np.argsort(-similarity, axis=1)[:, 1]
        column = results["by_resolution"][key]
        assert column["precision_at_1"] == pytest.approx(np.mean(labels[nearest] == labels))
        assert column["num_queries"] == len(dataset)
        clusters = clustering_metrics(queries, labels)  # k-means of the queries, one cluster per identity
        assert (column["nmi"], column["ami"]) == pytest.approx((clusters.nmi, clusters.ami))
    assert results["mean_lr_precision_at_1"] == results["by_resolution"]["8"]["precision_at_1"]


def test_retrieval_requires_labels(trunk_model, pairs):
    unlabeled = pairs.rename_column("image_a", "image").select_columns(["image"])
    with pytest.raises(KeyError, match="'label'"):
        evaluate_retrieval(trunk_model, unlabeled, sizes=(8,), show_progress=False)


def test_label_feature_is_not_needed_for_identification(trunk_model, surveillance):
    """Plain integer labels (no ClassLabel) work too."""
    gallery, probe = surveillance
    plain = probe.cast_column("label", Value("int64"))
    assert not isinstance(plain.features["label"], ClassLabel)
    results = evaluate_identification(trunk_model, gallery, plain, show_progress=False)
    assert results["by_distance"]["all"]["num_probes"] == len(probe)
