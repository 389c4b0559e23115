"""Tests of the synthetic identity data set (`dcr_hf.data.synthetic`)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from datasets import ClassLabel, DatasetDict, Image
from PIL import Image as PILImage
from sklearn.neighbors import NearestCentroid

from dcr_hf.data.features import PAIRS_FEATURES, gallery_features, identity_features, probe_features, subject_name
from dcr_hf.data.synthetic import CAMERAS, PROBE_SIZES, SYNTHETIC_SPLITS, load_synthetic
from dcr_hf.image_processing_dcr import simulate_low_resolution


SMALL = dict(
    num_identities=6, images_per_identity=3, num_verification_identities=20, verification_images_per_identity=3,
    num_pairs=40, num_surveillance_subjects=3,
)


@pytest.fixture(scope="module")
def small() -> DatasetDict:
    return load_synthetic(**SMALL, seed=0)


def _bytes(dataset, column: str = "image") -> list[bytes]:
    """The stored image files of a column, without decoding."""
    return [item["bytes"] for item in dataset.cast_column(column, Image(decode=False))[column]]


def _pixels(dataset) -> torch.Tensor:
    """Decoded images as floats in [0, 1], [n, 3, H, W]."""
    return torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in dataset["image"]]).float() / 255


def test_splits_columns_and_labels(small):
    assert tuple(small) == SYNTHETIC_SPLITS
    for name in ("train", "retrieval", "gallery", "probe"):
        image = small[name][0]["image"]
        assert isinstance(image, PILImage.Image) and image.mode == "RGB" and image.size == (120, 120)
    for name, classes in (("train", 6), ("retrieval", 20)):
        label = small[name].features["label"]
        assert isinstance(label, ClassLabel) and label.num_classes == classes
        assert Counter(small[name]["label"]) == {c: 3 for c in range(classes)}
    # Like the real LFW pairs, no identity columns: the pairs only say same or not.
    assert small["pairs"].column_names == ["image_a", "image_b", "is_same", "fold"]
    assert small["probe"].column_names == ["image", "label", "subject", "distance", "camera"]


def test_splits_have_the_shared_schemas(small):
    """The synthetic splits have exactly the features (types and column order) of the real loaders."""
    schemas = {
        "train": identity_features(small["train"].features["label"]),
        "retrieval": identity_features(small["retrieval"].features["label"]),
        "pairs": PAIRS_FEATURES,
        "gallery": gallery_features(small["gallery"].features["label"]),
        "probe": probe_features(small["probe"].features["label"]),
    }
    assert tuple(schemas) == SYNTHETIC_SPLITS
    for name, schema in schemas.items():
        assert small[name].features == schema, name
        assert list(small[name].features) == list(schema) == small[name].column_names, name
    assert all(isinstance(value, bool) for value in small["pairs"]["is_same"])
    assert all(isinstance(value, str) for name in ("gallery", "probe") for value in small[name]["subject"])


def test_same_seed_same_pixels_other_seed_other_pixels(small):
    again = load_synthetic("train", **SMALL, seed=0)
    assert _bytes(again) == _bytes(small["train"]) and again["label"] == small["train"]["label"]
    other = load_synthetic("train", **SMALL, seed=1)
    assert all(a != b for a, b in zip(_bytes(other), _bytes(small["train"])))


def test_one_split_equals_that_split_of_the_whole(small):
    for name in SYNTHETIC_SPLITS:
        alone = load_synthetic(name, **SMALL, seed=0)
        assert alone.features == small[name].features
        for column, feature in alone.features.items():
            if isinstance(feature, Image):
                assert _bytes(alone, column) == _bytes(small[name], column), (name, column)
            else:
                assert alone[column] == small[name][column], (name, column)


def test_held_out_identities_are_disjoint_and_independent_of_training_size(small):
    names = [set(small[name].features["label"].names) for name in ("train", "retrieval", "gallery")]
    assert not names[0] & names[1] and not names[0] & names[2] and not names[1] & names[2]
    assert not set(_bytes(small["train"])) & set(_bytes(small["retrieval"]))
    # Each group of identities has its own random stream: more training identities leave the
    # held-out faces unchanged, as a new LFW copy does not change because CASIA grew.
    bigger = load_synthetic("gallery", **{**SMALL, "num_identities": 9}, seed=0)
    assert _bytes(bigger) == _bytes(small["gallery"])


def test_pairs_form_ten_balanced_identity_disjoint_folds(small):
    pairs, retrieval = small["pairs"], small["retrieval"]
    folds = np.array(pairs["fold"])
    same = np.array(pairs["is_same"])
    # Pair images are byte-identical retrieval images (distinct ones, so each has one identity):
    # the retrieval labels recover each pair's identities, as the pairs carry none.
    label_of = dict(zip(_bytes(retrieval), retrieval["label"]))
    assert len(label_of) == len(retrieval)
    images_a, images_b = _bytes(pairs, "image_a"), _bytes(pairs, "image_b")
    assert all(a in label_of and b in label_of for a, b in zip(images_a, images_b))
    label_a, label_b = np.array([label_of[a] for a in images_a]), np.array([label_of[b] for b in images_b])
    assert same.dtype == bool and len(pairs) == 40
    assert (np.diff(folds) >= 0).all() and sorted(set(folds)) == list(range(10))  # contiguous blocks
    for fold in range(10):
        assert Counter(same[folds == fold]) == {False: 2, True: 2}
    np.testing.assert_array_equal(same, label_a == label_b)
    fold_identities = [set(label_a[folds == k]) | set(label_b[folds == k]) for k in range(10)]
    assert sum(len(s) for s in fold_identities) == len(set().union(*fold_identities))
    # No pair shows one image twice, and no pair repeats.
    assert all(a != b for a, b in zip(images_a, images_b))
    assert len({frozenset(p) for p in zip(images_a, images_b)}) == len(pairs)


def test_gallery_and_probes_follow_scface_layout(small):
    gallery, probe = small["gallery"], small["probe"]
    assert gallery["label"] == [0, 1, 2] and gallery["subject"] == ["001", "002", "003"]
    keys = Counter(zip(probe["label"], probe["camera"], probe["distance"]))
    assert keys == {(s, c, d): 1 for s in range(3) for c in CAMERAS for d in PROBE_SIZES}
    assert probe["subject"] == [subject_name(label) for label in probe["label"]]
    assert probe["subject"] == [f"{label + 1:03d}" for label in probe["label"]]
    assert gallery.features["label"] == probe.features["label"]


def test_farther_probes_hold_less_fine_detail():
    probe = load_synthetic("probe", **{**SMALL, "num_surveillance_subjects": 10}, seed=0)
    pixels = _pixels(probe)
    # Energy above what a 16-pixel image can hold; the same sensor noise is in every probe.
    detail = ((pixels - simulate_low_resolution(pixels, 16, downsample_interpolation="bicubic")) ** 2).mean(dim=(1, 2, 3)).numpy()
    distance = np.array(probe["distance"])
    by_distance = [detail[distance == d].mean() for d in (1, 2, 3)]
    # Measured (seeds 0, 1): d1/d3 ratio 0.53, d1 < d2 < d3.
    assert by_distance[0] < 0.75 * by_distance[2]
    assert by_distance[0] < by_distance[1] < by_distance[2]


def test_identification_is_clearly_harder_at_low_resolution():
    """Nearest class mean on standardized raw pixels: 5 views per identity make the means, 5 are queries."""
    dataset = load_synthetic("train", num_identities=100, images_per_identity=10, seed=0)
    pixels, labels = _pixels(dataset), np.array(dataset["label"])
    reference = np.arange(len(labels)) % 10 < 5

    def accuracy(images: torch.Tensor) -> float:
        x = images.flatten(1).numpy()
        x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)  # removes global brightness and contrast
        classifier = NearestCentroid().fit(x[reference], labels[reference])
        return float((classifier.predict(x[~reference]) == labels[~reference]).mean())

    scores = {120: accuracy(pixels)}
    for size in (8, 12, 16, 20):
        scores[size] = accuracy(simulate_low_resolution(pixels, size, downsample_interpolation="bicubic", clamp=(0.0, 1.0)))
    print("nearest-class-mean accuracy by resolution:", scores)
    chance = 1 / 100
    # Measured on seeds 0, 1, 2: 120 -> 0.23 / 0.23 / 0.20, 8 -> 0.11 / 0.09 / 0.09, 20 -> 0.18 / 0.18 / 0.17.
    assert scores[120] >= 12 * chance
    assert scores[8] >= 3 * chance
    assert scores[8] <= scores[120] - 0.06
    assert scores[8] < scores[20] < scores[120]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "test"}, "split"),
        ({"num_pairs": 30}, "num_pairs"),
        ({"images_per_identity": 1}, "images_per_identity"),
        ({"image_size": 32}, "image_size"),
        ({"num_verification_identities": 10}, "num_verification_identities"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_synthetic(**kwargs)


def test_verification_pairs_and_their_probes_depend_only_on_their_own_options():
    """The held-out splits follow their own options and the seed, never the training split's
    (`num_identities`, `images_per_identity`): an evaluation's pairs and LR probes are the same
    whatever training-data options are given with it."""
    from dcr_hf.data import registry
    from dcr_hf.data.transforms import PairTransform
    from dcr_hf.image_processing_dcr import DCRImageProcessor

    own = dict(synthetic_num_verification_identities=20, synthetic_verification_images_per_identity=3,
               synthetic_num_pairs=40, synthetic_image_size=48)
    transform = PairTransform(DCRImageProcessor(image_size=48), low_resolution_sizes=[8, 12, 16, 20])
    built = []
    for training in ({}, {"synthetic_num_identities": 12}, {"synthetic_images_per_identity": 3}):
        options = registry.DatasetOptions(**own, **training)
        pairs = registry.load_protocol_data("synthetic", "verification", options, 48)
        retrieval = registry.load_protocol_data("synthetic", "retrieval", options, 48)
        built.append((pairs, retrieval, transform(pairs[:40])))
    pairs, retrieval, probes = built[0]
    for other_pairs, other_retrieval, other_probes in built[1:]:
        assert _bytes(other_pairs, "image_a") == _bytes(pairs, "image_a")
        assert _bytes(other_pairs, "image_b") == _bytes(pairs, "image_b")
        assert other_pairs["is_same"] == pairs["is_same"] and other_pairs["fold"] == pairs["fold"]
        assert _bytes(other_retrieval) == _bytes(retrieval)
        for key, value in probes.items():
            assert torch.equal(other_probes[key], value), key
    assert len(retrieval) == 20 * 3
