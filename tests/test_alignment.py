"""Five-point alignment to the ArcFace template (`dcr_hf.alignment_dcr`, `processor(images, landmarks=...)`):
a face warped by a known similarity transform comes back onto the template, landmarks on the template
give the identity, the least-squares fit against scipy, bad landmarks refused, remote code alone."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import torch
from scipy.optimize import least_squares
from tests.test_hub_loading import _run_without_dcr_hf

from dcr_hf import DCRImageProcessor
from dcr_hf.alignment_dcr import ARCFACE_TEMPLATE, alignment_matrix, arcface_template, similarity_transform

# insightface's arcface_dst, written out here as the test's own reference.
INSIGHTFACE_TEMPLATE = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]]


def _face(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A synthetic face in 112 x 112 template coordinates: a dark blob (sigma 2.5 px) at each template
    landmark on a smooth bright background, as 8-bit levels."""
    values = 200.0 - 0.3 * x - 0.2 * y
    for lx, ly in INSIGHTFACE_TEMPLATE:
        values = values - 150.0 * np.exp(-((x - lx) ** 2 + (y - ly) ** 2) / (2 * 2.5**2))
    return values


def _render(width: int, height: int, to_template: np.ndarray | None = None) -> np.ndarray:
    """`_face` sampled at the pixel centres (whole x, y) of a `width` x `height` RGB image; with
    `to_template` `[2, 3]` each pixel is first mapped into the template's coordinates."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    if to_template is not None:
        x, y = (to_template[0, 0] * x + to_template[0, 1] * y + to_template[0, 2],
                to_template[1, 0] * x + to_template[1, 1] * y + to_template[1, 2])
    grey = np.clip(np.round(_face(x, y)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    angle = math.radians(degrees)
    return np.array([[scale * math.cos(angle), -scale * math.sin(angle), tx],
                     [scale * math.sin(angle), scale * math.cos(angle), ty]])


def _blob_centres(image: np.ndarray) -> np.ndarray:
    """The darkness-weighted centroid of each blob, in a 13 x 13 window around each template point."""
    darkness = 255.0 - image[..., 0].astype(np.float64)
    centres = []
    for lx, ly in INSIGHTFACE_TEMPLATE:
        x0, y0 = int(round(lx)) - 6, int(round(ly)) - 6
        window = darkness[y0:y0 + 13, x0:x0 + 13]
        window = window - window.min()
        ys, xs = np.mgrid[y0:y0 + 13, x0:x0 + 13]
        centres.append([(window * xs).sum() / window.sum(), (window * ys).sum() / window.sum()])
    return np.array(centres)


def test_template_is_insightfaces_and_scales_with_the_size():
    np.testing.assert_array_equal(ARCFACE_TEMPLATE, INSIGHTFACE_TEMPLATE)
    np.testing.assert_allclose(arcface_template(224), 2 * np.array(INSIGHTFACE_TEMPLATE), rtol=0, atol=1e-12)
    np.testing.assert_allclose(arcface_template(120), np.array(INSIGHTFACE_TEMPLATE) * 120 / 112, rtol=0, atol=1e-12)


def test_landmarks_on_the_template_give_the_identity():
    np.testing.assert_allclose(alignment_matrix(np.array(INSIGHTFACE_TEMPLATE)), [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    image = _render(112, 112)
    processor = DCRImageProcessor(image_size=112, do_normalize=False)
    pixels = processor(PIL.Image.fromarray(image), landmarks=[INSIGHTFACE_TEMPLATE]).pixel_values
    np.testing.assert_array_equal((pixels[0].permute(1, 2, 0) * 255).round().byte().numpy(), image)
    # At another size the same landmarks give the template scaled: image_size / 112.
    np.testing.assert_allclose(alignment_matrix(np.array(INSIGHTFACE_TEMPLATE), 120),
                               [[120 / 112, 0, 0], [0, 120 / 112, 0]], atol=1e-9)


@pytest.mark.parametrize("scale, degrees, tx, ty", [(1.7, 20.0, 80.0, 25.0), (0.8, -35.0, 30.0, 60.0)])
def test_a_face_warped_by_a_known_similarity_comes_back_to_the_template(scale, degrees, tx, ty):
    photo_from_template = _similarity(scale, degrees, tx, ty)
    template_from_photo = np.linalg.inv(np.vstack([photo_from_template, [0, 0, 1]]))[:2]
    photo = _render(280, 290, to_template=template_from_photo)  # the whole crop inside
    landmarks = (photo_from_template[:, :2] @ np.array(INSIGHTFACE_TEMPLATE).T).T + photo_from_template[:, 2]
    np.testing.assert_allclose(alignment_matrix(landmarks), template_from_photo, atol=1e-9)

    processor = DCRImageProcessor(image_size=112, do_normalize=False)
    pixels = processor([PIL.Image.fromarray(photo)], landmarks=landmarks[None]).pixel_values
    aligned = (pixels[0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert aligned.shape == (112, 112, 3)
    # Every landmark's blob is back on its template point within a pixel ...
    error = np.linalg.norm(_blob_centres(aligned) - np.array(INSIGHTFACE_TEMPLATE), axis=1)
    assert error.max() < 1.0, error
    # ... and the whole crop matches the face rendered on the template (bilinear resampling aside).
    reference = _render(112, 112)
    assert np.abs(aligned.astype(int) - reference.astype(int)).mean() < 1.0


def test_the_fit_is_the_least_squares_similarity():
    rng = np.random.default_rng(0)
    source = np.array(INSIGHTFACE_TEMPLATE) * 2.3 + rng.normal(0, 3.0, (5, 2)) + 50
    target = arcface_template()

    def residuals(params):
        scale, angle, tx, ty = params
        matrix = _similarity(scale, math.degrees(angle), tx, ty)
        return ((matrix[:, :2] @ source.T).T + matrix[:, 2] - target).ravel()

    oracle = least_squares(residuals, x0=[0.5, 0.0, 0.0, 0.0], xtol=1e-14, ftol=1e-14, gtol=1e-14).x
    fitted = similarity_transform(source, target)
    np.testing.assert_allclose(fitted, _similarity(oracle[0], math.degrees(oracle[1]), oracle[2], oracle[3]), atol=1e-6)


def test_mirrored_landmarks_are_not_reflected():
    mirrored = np.array(INSIGHTFACE_TEMPLATE) * [-1, 1] + [112, 0]  # left and right swapped by a mirror
    matrix = alignment_matrix(mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


@pytest.mark.parametrize(
    "images, landmarks, match",
    [
        (1, np.zeros((5, 2)), r"landmarks has shape \[5, 2\]; expected \[1, 5, 2\]"),
        (1, np.zeros((2, 5, 2)), r"landmarks has shape \[2, 5, 2\]; expected \[1, 5, 2\]"),
        (2, np.zeros((2, 4, 2)), r"landmarks has shape \[2, 4, 2\]; expected \[2, 5, 2\]"),
        (1, np.full((1, 5, 2), np.nan), r"landmarks holds a value that is not finite"),
        (1, [["a"] * 2] * 5, r"landmarks must be numbers"),
        (1, np.ones((1, 5, 2)), r"are all one point"),
    ],
)
def test_bad_landmarks_are_refused_in_one_line(images, landmarks, match):
    photos = [PIL.Image.fromarray(_render(112, 112))] * images
    with pytest.raises(ValueError, match=match):
        DCRImageProcessor(image_size=112)(photos, landmarks=landmarks)


def test_float_images_with_landmarks_are_refused():
    with pytest.raises(ValueError, match="landmarks are applied to decoded 8-bit images"):
        DCRImageProcessor(image_size=112)(torch.rand(1, 3, 112, 112), landmarks=[INSIGHTFACE_TEMPLATE])


def test_uint8_batches_align_like_pil_images():
    photos = np.stack([_render(112, 112), _render(112, 112)[:, ::-1]])
    landmarks = np.stack([INSIGHTFACE_TEMPLATE, np.array(INSIGHTFACE_TEMPLATE) + 3])
    processor = DCRImageProcessor(image_size=112)
    from_arrays = processor(photos, landmarks=landmarks).pixel_values
    from_tensor = processor(torch.from_numpy(photos).permute(0, 3, 1, 2), landmarks=landmarks).pixel_values
    from_pil = processor([PIL.Image.fromarray(p) for p in photos], landmarks=landmarks).pixel_values
    torch.testing.assert_close(from_arrays, from_pil, rtol=0, atol=0)
    torch.testing.assert_close(from_tensor, from_pil, rtol=0, atol=0)


@pytest.mark.slow
def test_saved_processor_aligns_with_remote_code_alone(tmp_path):
    processor = DCRImageProcessor(image_size=112)
    processor.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "alignment_dcr.py").is_file()
    photo_from_template = _similarity(1.5, 10.0, 20.0, 10.0)
    photo = _render(200, 200, np.linalg.inv(np.vstack([photo_from_template, [0, 0, 1]]))[:2])
    PIL.Image.fromarray(photo).save(tmp_path / "photo.png")
    landmarks = (photo_from_template[:, :2] @ np.array(INSIGHTFACE_TEMPLATE).T).T + photo_from_template[:, 2]
    expected = processor(str(tmp_path / "photo.png"), landmarks=landmarks[None]).pixel_values
    out = _run_without_dcr_hf(
        f"""
        import torch
        from transformers import AutoImageProcessor
        processor = AutoImageProcessor.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        pixels = processor({str(tmp_path / "photo.png")!r}, landmarks=[{landmarks.tolist()!r}]).pixel_values
        torch.save(pixels, {str(tmp_path / "out.pt")!r})
        print(type(processor).__module__)
        """,
        cwd=tmp_path,
    )
    assert "transformers_modules" in out
    torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), expected, rtol=0, atol=0)
