"""TPIR at FPIR on a case worked out by hand (2-D embeddings, scores are cosines of known angles)."""

from __future__ import annotations

import numpy as np
import pytest

from dcr_hf.errors_dcr import DCRInputError
from dcr_hf.metrics.open_set import open_set_identification


def _at(degrees: float) -> list[float]:
    radians = np.deg2rad(degrees)
    return [np.cos(radians), np.sin(radians)]


# Identity 1: two gallery images at +20 and -20 degrees, whose template (mean, normalized) is (1, 0);
# identity 2: one at 90 degrees, template (0, 1). A probe at angle a scores cos(a) with template 1, sin(a) with 2.
GALLERY = np.array([_at(20), _at(-20), _at(90)])
GALLERY_LABELS = np.array([1, 1, 2])
# Mated probes: 5 deg (id 1: rank 1, score cos 5 = 0.9962), 50 deg (id 1: rank 2, cos 50 = 0.6428),
# 70 deg (id 2: rank 1, sin 70 = 0.9397), 30 deg (id 2: rank 2, sin 30 = 0.5).
MATED = np.array([_at(5), _at(50), _at(70), _at(30)])
MATED_LABELS = np.array([1, 1, 2, 2])
# Unmated probes whose best template score is exactly b (angle arccos b <= 45 degrees, template 1).
BEST = [0.99, 0.97, 0.95, 0.9, 0.85, 0.8, 0.78, 0.76, 0.74, 0.72]
UNMATED = np.array([_at(np.rad2deg(np.arccos(b))) for b in BEST])


def test_tpir_at_fpir_by_hand():
    result = open_set_identification(MATED, MATED_LABELS, GALLERY, GALLERY_LABELS, UNMATED,
                                     fpir_targets=(0.3, 0.2, 0.1, 0.5, 1.0), ranks=(1, 20))
    # FPIR 0.3 of 10 unmated: at most 3 above the threshold -> threshold = 4th best = 0.9.
    # Accepted mates (rank <= r and score > threshold): 5 deg (0.996) and 70 deg (0.940) -> 2 / 4.
    assert result.thresholds[0.3] == pytest.approx(0.9)
    assert result.fpir[0.3] == pytest.approx(0.3)
    assert result.tpir[1][0.3] == pytest.approx(0.5)
    assert result.tpir[20][0.3] == pytest.approx(0.5)
    # FPIR 0.2: threshold 0.95 -> only 5 deg (0.996) -> 1 / 4; FPIR 0.1: threshold 0.97 -> still 5 deg.
    # (Scored image by image instead of by template, the 5 deg probe would score cos 15 = 0.966 < 0.97.)
    assert result.tpir[1][0.2] == pytest.approx(0.25)
    assert result.tpir[1][0.1] == pytest.approx(0.25)
    assert result.thresholds[0.1] == pytest.approx(0.97)
    # FPIR 0.5: threshold = 6th best = 0.8 -> 5 and 70 deg -> 2 / 4.
    assert result.tpir[1][0.5] == pytest.approx(0.5)
    # FPIR 1: everything accepted -> rank 1: 2 of 4 mates are first; rank 20: all 4.
    assert result.tpir[1][1.0] == pytest.approx(0.5)
    assert result.tpir[20][1.0] == pytest.approx(1.0)
    assert (result.num_mated, result.num_unmated, result.num_templates) == (4, 10, 2)


def test_the_curve_runs_from_no_false_positive_to_all():
    result = open_set_identification(MATED, MATED_LABELS, GALLERY, GALLERY_LABELS, UNMATED)
    fpir, tpir = result.curves[20]
    assert fpir[0] == 0 and fpir[-1] == 1 and np.all(np.diff(fpir) >= 0)
    assert tpir[0] == pytest.approx(0.25) and tpir[-1] == pytest.approx(1.0)


def test_a_mated_probe_without_gallery_identity_is_refused():
    with pytest.raises(DCRInputError, match="no gallery identity"):
        open_set_identification(MATED, np.array([1, 1, 2, 3]), GALLERY, GALLERY_LABELS, UNMATED)


def test_blocks_do_not_change_the_result():
    whole = open_set_identification(MATED, MATED_LABELS, GALLERY, GALLERY_LABELS, UNMATED)
    blocked = open_set_identification(MATED, MATED_LABELS, GALLERY, GALLERY_LABELS, UNMATED, block_size=1)
    assert blocked.tpir == whole.tpir and blocked.thresholds == whole.thresholds


def test_tpir_is_the_best_operating_point_of_the_published_definition():
    # qmul-survface.github.io/protocols.html: FPIR(t) is the share of unmated searches with a gallery
    # candidate scoring at or above t; a mated search is a true positive at rank r when its mate is
    # among the r best candidates and scores at or above t. Swept over every t, the best TPIR with
    # FPIR <= f must be what open_set_identification reports (it accepts "> threshold" instead).
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(20, 8))
    gallery_labels = np.repeat(np.arange(1, 21), 3)
    gallery = centres[gallery_labels - 1] + rng.normal(scale=0.3, size=(60, 8))
    mated_labels = rng.integers(1, 21, size=80)
    mated = centres[mated_labels - 1] + rng.normal(scale=0.9, size=(80, 8))
    unmated = rng.normal(size=(50, 8))
    result = open_set_identification(mated, mated_labels, gallery, gallery_labels, unmated, ranks=(1, 5))

    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    templates = np.stack([unit[gallery_labels == identity].mean(0) for identity in range(1, 21)])
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    mated_scores = mated / np.linalg.norm(mated, axis=1, keepdims=True) @ templates.T
    mate = mated_scores[np.arange(80), mated_labels - 1]
    rank = 1 + (mated_scores > mate[:, None]).sum(axis=1)
    best = (unmated / np.linalg.norm(unmated, axis=1, keepdims=True) @ templates.T).max(axis=1)
    candidates = np.concatenate([best, mate, [np.inf]])
    for target in (0.3, 0.2, 0.1):
        for r in (1, 5):
            expected = max(np.mean((rank <= r) & (mate >= t)) for t in candidates if np.mean(best >= t) <= target)
            assert result.tpir[r][target] == pytest.approx(expected, abs=1e-9), (target, r)
