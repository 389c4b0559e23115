import collections

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard

from dcr_hf.data.sampler import MPerClassSampler


def make_labels(seed=0):
    """40 classes of 1 to 12 images each, shuffled so that rows of a class are not contiguous."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(40), rng.integers(1, 13, size=40))
    return rng.permutation(labels)


def assert_m_per_class(indices, labels, m, batch_size):
    assert len(indices) % batch_size == 0
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        counts = collections.Counter(int(labels[i]) for i in chunk)
        assert len(counts) == batch_size // m, counts
        assert set(counts.values()) == {m}, counts
        for label in counts:
            members = [i for i in chunk if labels[i] == label]
            # No image twice in a group unless its class is too small to fill the group.
            if np.sum(labels == label) >= m:
                assert len(set(members)) == m


@pytest.mark.parametrize("m,batch_size", [(4, 32), (2, 8), (1, 16), (6, 12)])
def test_every_batch_has_m_images_of_batch_size_over_m_classes(m, batch_size):
    labels = make_labels()
    sampler = MPerClassSampler(labels, m=m, batch_size=batch_size)
    indices = list(sampler)
    assert len(indices) == len(sampler) == (len(labels) // batch_size) * batch_size
    assert all(0 <= i < len(labels) for i in indices)
    assert_m_per_class(indices, labels, m, batch_size)


def test_small_classes_are_completed_with_replacement_and_every_image_is_used():
    labels = np.array([0] * 1 + [1] * 2 + [2] * 9 + [3] * 9)
    sampler = MPerClassSampler(labels, m=4, batch_size=8, length_before_new_iter=80)
    indices = list(sampler)
    assert_m_per_class(indices, labels, 4, 8)
    assert set(indices) == set(range(len(labels)))


def test_classes_are_visited_evenly():
    labels = np.repeat(np.arange(30), 8)
    sampler = MPerClassSampler(labels, m=4, batch_size=24, length_before_new_iter=24 * 50)
    counts = collections.Counter(int(labels[i]) for i in sampler)
    # 50 batches x 6 classes = 300 class slots over 30 classes: 10 visits each, give or take the
    # seams between class permutations.
    assert min(counts.values()) >= 4 * 9 and max(counts.values()) <= 4 * 11


def test_deterministic_per_seed_and_epoch():
    labels = make_labels()
    first, second = MPerClassSampler(labels, 4, 16, seed=3), MPerClassSampler(labels, 4, 16, seed=3)
    assert list(first) == list(second)
    assert list(first) == list(first)
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0
    second.set_epoch(1)
    assert list(first) == list(second)
    assert list(MPerClassSampler(labels, 4, 16, seed=4)) != epoch0


def test_length_before_new_iter_is_rounded_down_to_whole_batches():
    labels = make_labels()
    sampler = MPerClassSampler(labels, m=2, batch_size=8, length_before_new_iter=70)
    assert len(sampler) == 64 == len(list(sampler))


def test_accepts_tensors_and_lists():
    labels = make_labels()
    assert list(MPerClassSampler(torch.tensor(labels), 2, 8)) == list(MPerClassSampler(labels.tolist(), 2, 8))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"m": 3, "batch_size": 8}, "multiple of m"),
        ({"m": 1, "batch_size": 64}, "distinct classes"),
        ({"m": 0, "batch_size": 8}, "positive integer"),
        ({"m": 2, "batch_size": 8, "length_before_new_iter": 4}, "length_before_new_iter"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MPerClassSampler(make_labels(), **kwargs)


def test_rejects_non_integer_labels():
    with pytest.raises(ValueError, match="integers"):
        MPerClassSampler([0.5, 1.5, 2.5, 3.5], m=1, batch_size=2)


def test_structure_survives_dataloader_and_accelerate_sharding():
    labels = make_labels()
    sampler = MPerClassSampler(labels, m=4, batch_size=16)
    loader = torch.utils.data.DataLoader(torch.arange(len(labels)), batch_size=16, sampler=sampler)
    assert_m_per_class(torch.cat(list(loader)).tolist(), labels, 4, 16)
    batch_sampler = torch.utils.data.BatchSampler(sampler, batch_size=16, drop_last=True)
    for process_index in range(2):
        shard = BatchSamplerShard(batch_sampler, num_processes=2, process_index=process_index)
        batches = list(shard)
        assert batches and all(len(batch) == 16 for batch in batches)
        assert_m_per_class([i for batch in batches for i in batch], labels, 4, 16)
