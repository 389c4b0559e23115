"""Gallery search with distractors (CMC, mAP) on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dcr_hf.metrics.search import gallery_search


def _at(degrees: float) -> list[float]:
    radians = np.deg2rad(degrees)
    return [np.cos(radians), np.sin(radians)]


# Gallery (angle, label): identity A at 10 and 30 degrees, B at 5, distractors (-1) at 20 and 60.
GALLERY = np.array([_at(10), _at(5), _at(30), _at(20), _at(60)])
GALLERY_LABELS = np.array(["A", "B", "A", "-1", "-1"])


def test_ranks_and_average_precision_by_hand():
    probes = np.array([_at(0), _at(5), _at(0)])
    result = gallery_search(probes, np.array(["A", "B", "C"]), GALLERY, GALLERY_LABELS)
    # Probe A at 0 deg ranks 5 (B), 10 (A), 20 (d), 30 (A), 60 (d): mates at ranks 2 and 4, AP = (1/2 + 2/4) / 2.
    # Probe B at 5 deg: its only mate first, AP 1. Probe C: no mate in the gallery.
    assert result.first_mate_rank.tolist() == [2, 1, 0]
    assert result.average_precision == pytest.approx([0.5, 1.0, 0.0])
    # CMC over the probes that have a mate: ranks 2 and 1.
    assert result.cmc(3) == pytest.approx([0.5, 1.0, 1.0])


def test_a_tie_with_a_non_mate_counts_for_the_probe():
    # The mate at +20 deg and a distractor at -20 deg score exactly the same for a probe at 0 deg.
    gallery = np.array([_at(20), [np.cos(np.deg2rad(20)), -np.sin(np.deg2rad(20))], _at(1)])
    result = gallery_search(np.array([_at(0)]), np.array([7]), gallery, np.array([7, -1, -1]))
    # The distractor at 1 deg is above both; the tie leaves the mate second.
    assert result.first_mate_rank.tolist() == [2]
    assert result.average_precision == pytest.approx([0.5])


def test_blocks_do_not_change_the_result():
    rng = np.random.default_rng(0)
    gallery, probes = rng.normal(size=(50, 8)), rng.normal(size=(9, 8))
    gallery_labels, probe_labels = rng.integers(0, 5, 50), rng.integers(0, 5, 9)
    one = gallery_search(probes, probe_labels, gallery, gallery_labels, block_size=2)
    other = gallery_search(probes, probe_labels, gallery, gallery_labels, block_size=256)
    assert one.first_mate_rank.tolist() == other.first_mate_rank.tolist()
    assert one.average_precision == pytest.approx(other.average_precision)
