import json

import pytest

from dcr_hf import DCRConfig


def test_defaults_match_the_original():
    config = DCRConfig()
    assert config.model_type == "dcr"
    assert config.trunk_type == "resnet"
    assert config.depths == [1, 2, 5, 3]
    assert config.hidden_sizes == [64, 128, 256, 512]
    assert config.embedding_size == 512 and config.branch_hidden_size == 512
    assert config.image_size == 120
    assert config.low_resolution_sizes == [8, 12, 16, 20]
    assert config.resolutions == [120, 8, 12, 16, 20]
    assert (config.center_loss_weight, config.center_momentum, config.coupling_loss_weight) == (0.008, 0.6, 0.008)
    assert config.stem_hidden_size == 64
    assert DCRConfig(trunk_type="paper").stem_hidden_size == 32


def test_num_labels_the_transformers_way(tmp_path):
    config = DCRConfig(num_labels=7, depths=[2, 2, 2, 2])
    assert config.num_labels == 7 and len(config.id2label) == 7
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "dcr" and saved["depths"] == [2, 2, 2, 2]
    reloaded = DCRConfig.from_pretrained(tmp_path)
    assert reloaded.num_labels == 7 and reloaded.depths == [2, 2, 2, 2]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(depths=[1, 2]), "depths"),
        (dict(hidden_sizes=[64, 128, 256]), "hidden_sizes"),
        (dict(depths=[1, 0, 1, 1]), "depths"),
        (dict(low_resolution_sizes=[8, 120]), "low_resolution_sizes"),
        (dict(low_resolution_sizes=[0, 8]), "low_resolution_sizes"),
        (dict(low_resolution_sizes=[8, 8]), "low_resolution_sizes"),
        (dict(trunk_type="vgg"), "trunk_type"),
        (dict(center_loss_weight=-0.1), "center_loss_weight"),
        (dict(coupling_loss_weight=-1.0), "coupling_loss_weight"),
        (dict(center_momentum=-0.5), "center_momentum"),
        (dict(embedding_size=0), "embedding_size"),
        (dict(layer_type="wide"), "layer_type"),
        (dict(layer_type="bottleneck", trunk_type="paper"), "layer_type"),
        (dict(layer_type="bottleneck", hidden_sizes=[64, 128, 256, 510]), "hidden_sizes"),
        (dict(trunk_miner="hard"), "trunk_miner"),
        (dict(branch_miner="BatchHardMiner"), "branch_miner"),
        (dict(trunk_miner="batch_hard", trunk_mining_reference="centre"), "trunk_mining_reference"),
        (dict(trunk_mining_reference="embedding"), "trunk_mining_reference"),
        (dict(trunk_mining_margin=-0.05), "trunk_mining_margin"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DCRConfig(**kwargs)
