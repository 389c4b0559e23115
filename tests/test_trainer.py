"""`DCRTrainer.evaluate`: the face-protocol metrics of the dataset it is given, its arguments never ignored."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from dcr_hf import DCRForImageClassification, DCRImageProcessor
from dcr_hf.data.synthetic import load_synthetic
from dcr_hf.training import DCRTrainer
from tests.models import tiny_config


def _pairs(num_pairs: int, seed: int):
    return load_synthetic("pairs", image_size=48, num_pairs=num_pairs, num_verification_identities=20,
                          images_per_identity=3, seed=seed)


@pytest.fixture(scope="module")
def validation():
    return _pairs(20, seed=0)


@pytest.fixture(scope="module")
def other():
    return _pairs(40, seed=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DCRForImageClassification(tiny_config()).eval()


def _trainer(tmp_path, model, validation, protocol="verification") -> DCRTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_eval_batch_size=16,
                             disable_tqdm=True)
    return DCRTrainer(model=model, args=args, eval_dataset=validation, processing_class=DCRImageProcessor(image_size=32),
                      validation=validation, validation_protocol=protocol, validation_sizes=[8, 12])


def test_evaluate_scores_the_dataset_it_is_given(tmp_path, model, validation, other):
    trainer = _trainer(tmp_path, model, validation)
    own = trainer.evaluate()
    given = trainer.evaluate(eval_dataset=other)
    assert own["eval_num_pairs"] == len(validation) and given["eval_num_pairs"] == len(other)
    assert trainer.last_validation["num_pairs"] == len(other)
    # The same metrics as a run validated on that dataset.
    assert given == _trainer(tmp_path, model, other).evaluate()
    assert given != own


def test_evaluate_refuses_arguments_it_cannot_honour(tmp_path, model, validation, other):
    trainer = _trainer(tmp_path, model, validation)
    with pytest.raises(ValueError, match=r"ignore_keys=\['logits'\]\): DCR validation computes face-protocol metrics"):
        trainer.evaluate(ignore_keys=["logits"])
    with pytest.raises(TypeError, match="eval_dataset must be a datasets.Dataset or DatasetDict .* got str"):
        trainer.evaluate(eval_dataset="validation")
    without = _trainer(tmp_path, model, None, protocol=None)
    assert without.evaluate() == {}
    with pytest.raises(ValueError, match="this run has no validation protocol"):
        without.evaluate(eval_dataset=other)
