import json
import re

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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_labels=-3), "num_labels must be a positive integer (the number of identities), got -3."),
        (dict(num_labels=0), "num_labels must be a positive integer (the number of identities), got 0."),
        (dict(id2label={}), "num_labels must be a positive integer (the number of identities), got id2label={}."),
        (dict(center_momentum=float("nan")), "center_momentum must be a finite non-negative number, got nan."),
        (dict(coupling_loss_weight=float("inf")), "coupling_loss_weight must be a finite non-negative number, got inf."),
        (dict(image_size=8.7), "image_size must be a positive integer, got 8.7."),
        (dict(embedding_size=True), "embedding_size must be a positive integer, got True."),
        (dict(hidden_sizes=[8.7, 16, 32, 64]), "hidden_sizes must hold whole numbers, got 8.7 in [8.7, 16, 32, 64]."),
        (dict(depths="1111"), "depths must be a list of integers (one per stage), got '1111'."),
        (dict(depths=[1.5, 1, 1, 1]), "depths must hold whole numbers, got 1.5 in [1.5, 1, 1, 1]."),
        (dict(low_resolution_sizes=[8.7]), "low_resolution_sizes holds 8.7; every size must be a whole number"),
        (dict(low_resolution_sizes="8"), "low_resolution_sizes must be a list of integers, got '8'."),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DCRConfig(**kwargs)


def test_whole_float_sizes_from_json_are_accepted():
    assert DCRConfig(depths=[2.0, 2, 2, 2]).depths == [2, 2, 2, 2]


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_unsupported_problem_type_is_refused_at_config_time(tmp_path, problem_type):
    message = f"problem_type={problem_type!r} is not supported: a DCR head classifies one identity per face"
    with pytest.raises(ValueError, match=re.escape(message)):
        DCRConfig(num_labels=3, problem_type=problem_type)
    # A saved config.json naming one is refused when it is read, before any model is built.
    config = DCRConfig(num_labels=3).to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config, "problem_type": problem_type}))
    with pytest.raises(ValueError, match=re.escape(message)):
        DCRConfig.from_pretrained(tmp_path)


def test_single_label_problem_type_is_accepted():
    assert DCRConfig(num_labels=3, problem_type="single_label_classification").problem_type == "single_label_classification"


def test_all_names_what_other_modules_import():
    """Every name the package imports from configuration_dcr is public (in its `__all__`)."""
    import ast
    from pathlib import Path

    import dcr_hf.configuration_dcr as configuration

    imported = set()
    for path in Path(configuration.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("configuration_dcr"):
                imported.update(alias.name for alias in node.names)
    assert {"DCRConfig", "DEGRADATION_PRESETS", "check_degradation"} <= imported
    assert imported <= set(configuration.__all__), imported - set(configuration.__all__)
    assert all(hasattr(configuration, name) for name in configuration.__all__)


def test_branch_index_of_each_resolution():
    config = DCRConfig(image_size=32, low_resolution_sizes=[8, 12])
    assert [config.branch_index(r) for r in (None, "hr", "HR", 32, 8, 12.0, "12")] == [0, 0, 0, 0, 1, 2, 2]
    with pytest.raises(ValueError, match=re.escape("resolution 16 has no branch; available: HR (32, 'hr' or None)")):
        config.branch_index(16)
    with pytest.raises(ValueError, match=re.escape("resolution 8.5 is not a size")):
        config.branch_index(8.5)
