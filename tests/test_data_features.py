"""The shared schemas: the real loaders and the synthetic stand-ins give splits of equal `features`."""

from __future__ import annotations

from datasets import ClassLabel, Features

from dcr_hf.data import load_casia, load_lfw_identities, load_lfw_pairs, load_scface, load_scface_finetune
from dcr_hf.data.features import (
    PAIRS_FEATURES,
    finetune_features,
    gallery_features,
    identity_features,
    probe_features,
)
from dcr_hf.data.generic import load_image_folder


def _kinds(features: Features) -> dict[str, str]:
    """Column name -> feature type, with a ClassLabel's data-dependent names left out."""
    return {name: "ClassLabel" if isinstance(f, ClassLabel) else repr(f) for name, f in features.items()}


def test_real_and_synthetic_splits_have_the_same_schema(synthetic_splits, casia_root, lfw_root, scface_root):
    casia = load_casia(casia_root, fold=1)
    scface = load_scface(scface_root, num_finetune_subjects=3)
    real = {
        "identities": [casia["train"], casia["validation"], load_lfw_identities(lfw_root),
                       load_image_folder(lfw_root / "LFW" / "LFW_120x120_120")],
        "pairs": [load_lfw_pairs(lfw_root)],
        "gallery": [scface["gallery"]],
        "probe": [scface["probe"]],
    }
    synthetic = {
        "identities": [synthetic_splits["train"], synthetic_splits["retrieval"]],
        "pairs": [synthetic_splits["pairs"]],
        "gallery": [synthetic_splits["gallery"]],
        "probe": [synthetic_splits["probe"]],
    }
    for kind in real:
        for split in real[kind] + synthetic[kind]:
            assert _kinds(split.features) == _kinds(synthetic[kind][0].features), (kind, split.features)
            assert list(split.column_names) == list(synthetic[kind][0].column_names), kind


def test_every_split_uses_its_schema_exactly(synthetic_splits, casia_root, lfw_root, scface_root):
    def label(split):
        return split.features["label"]

    casia = load_casia(casia_root, fold=1)
    for split in (casia["train"], casia["validation"], load_lfw_identities(lfw_root), synthetic_splits["train"]):
        assert split.features == identity_features(label(split))
    assert load_lfw_pairs(lfw_root).features == PAIRS_FEATURES == synthetic_splits["pairs"].features
    scface = load_scface(scface_root, num_finetune_subjects=3)
    for gallery in (scface["gallery"], synthetic_splits["gallery"]):
        assert gallery.features == gallery_features(label(gallery))
    for probe in (scface["probe"], synthetic_splits["probe"]):
        assert probe.features == probe_features(label(probe))
    finetune = load_scface_finetune(scface_root, num_finetune_subjects=3)
    assert finetune.features == finetune_features(label(finetune))
