"""The dataset registry: one spec per dataset serves training, evaluation, prepare and the cards."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict

from dcr_hf.data import registry
from dcr_hf.data.registry import DatasetOptions


def test_one_card_name_per_dataset_whoever_asks():
    assert registry.card_name("lfw") == "LFW"
    assert registry.card_name("scface") == "SCface"
    assert registry.card_name("casia") == "CASIA-WebFace"
    assert registry.card_name("synthetic") == "dcr-hf synthetic faces"
    # A generic source is named by its folder or Hub id.
    assert registry.card_name("folder", DatasetOptions(data_root="/data/my_faces/")) == "my_faces"
    assert registry.card_name("org/faces") == "faces"
    assert registry.card_name(None) is None


def test_validation_follows_the_training_dataset():
    assert registry.validation_for("synthetic") == ("synthetic", "verification")
    assert registry.validation_for("casia") == ("lfw", "verification")
    assert registry.validation_for("scface") == ("scface", "identification")
    assert registry.validation_for("folder") == (None, None)
    assert registry.validation_for("org/faces") == (None, None)
    assert registry.validation_for("casia", "none") == (None, None)
    assert registry.validation_for("synthetic", "lfw") == ("lfw", "verification")
    with pytest.raises(ValueError, match="cannot validate training"):
        registry.validation_for("synthetic", "casia")
    with pytest.raises(ValueError, match="is not one of"):
        registry.validation_for("synthetic", "imagenet")


def test_protocols_and_data_roots_are_checked_before_reading(tmp_path):
    with pytest.raises(ValueError, match="does not apply to dataset 'scface'"):
        registry.check_dataset_protocol("scface", "verification", DatasetOptions(data_root=str(tmp_path)))
    with pytest.raises(ValueError, match="--dataset lfw needs --data_root"):
        registry.check_dataset_protocol("lfw", "verification", DatasetOptions())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        registry.check_dataset_protocol("lfw", "verification", DatasetOptions(data_root=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="protocol 'ranking' is not one of"):
        registry.check_dataset_protocol("synthetic", "ranking", DatasetOptions())
    with pytest.raises(ValueError, match="for evaluation only"):
        registry.check_training_dataset("lfw", DatasetOptions(data_root=str(tmp_path)))
    with pytest.raises(ValueError, match="unknown dataset './nowhere'"):
        registry.check_training_dataset("./nowhere", DatasetOptions())


def test_every_protocol_of_the_synthetic_data_loads_with_the_shared_option_names():
    options = DatasetOptions(
        synthetic_num_identities=4, synthetic_images_per_identity=2, synthetic_num_pairs=20,
        synthetic_num_verification_identities=20, synthetic_verification_images_per_identity=2, synthetic_num_subjects=2,
        synthetic_image_size=48,
    )
    pairs = registry.load_protocol_data("synthetic", "verification", options, image_size=120)
    assert isinstance(pairs, Dataset) and len(pairs) == 20 and pairs[0]["image_a"].size == (48, 48)
    surveillance = registry.load_protocol_data("synthetic", "identification", options, image_size=120)
    assert isinstance(surveillance, DatasetDict) and set(surveillance) == {"gallery", "probe"}
    assert len(registry.load_protocol_data("synthetic", "retrieval", options, image_size=120)) == 40
    train = registry.load_training_split("synthetic", options, image_size=120)
    assert len(train.dataset) == 8 and not train.real_low_resolution
    # Without --synthetic_image_size the faces take the model's image size.
    options.synthetic_image_size = None
    assert registry.load_protocol_data("synthetic", "verification", options, image_size=56)[0]["image_b"].size == (56, 56)


def test_real_layouts_load_through_the_registry(lfw_root, scface_root, casia_root):
    lfw = DatasetOptions(data_root=str(lfw_root))
    assert len(registry.load_protocol_data("lfw", "verification", lfw, 120)) == 20
    assert set(registry.load_protocol_data("lfw", "retrieval", lfw, 120).column_names) == {"image", "label"}
    scface = DatasetOptions(data_root=str(scface_root), num_finetune_subjects=3)
    assert len(registry.load_protocol_data("scface", "identification", scface, 120)["gallery"]) == 2
    assert registry.load_training_split("scface", scface, 120).real_low_resolution
    casia = DatasetOptions(data_root=str(casia_root), casia_fold=1)
    assert len(registry.load_protocol_data("casia", "retrieval", casia, 120)) == 2  # subject 1058's two images
    assert len(registry.load_training_split("casia", casia, 120).dataset) == 6
    assert len(registry.load_training_split("casia", DatasetOptions(data_root=str(casia_root)), 120).dataset) == 8
    with pytest.raises(ValueError, match="holds out no subjects"):
        registry.load_protocol_data("casia", "retrieval", DatasetOptions(data_root=str(casia_root), casia_fold=11), 120)


def test_prepare_serves_the_registrys_preparable_datasets():
    from dcr_hf.data.prepare import PREPARABLE_DATASETS

    assert set(PREPARABLE_DATASETS) == {"casia", "lfw", "scface", "folder", "recordio"}
    assert all(registry.get_spec(name).needs_data_root for name in PREPARABLE_DATASETS)
