"""Five-point face alignment to the ArcFace template (the crop insightface's IResNets and AdaFace's
IR networks were trained on).

A face detector (none is bundled: RetinaFace or SCRFD from insightface, MTCNN) gives five landmarks
per face: left eye, right eye, nose tip, left and right mouth corners, in pixel x, y of the image
(pixel centres at whole numbers, OpenCV's convention). The similarity transform (scale, rotation,
translation) that maps them onto the template in the least-squares sense is estimated in closed
form (Umeyama 1991) and the image is warped through it with PIL's bilinear filter, black outside
the image, as insightface's `norm_crop` does with OpenCV.

Hand-written: scikit-image's `SimilarityTransform` and OpenCV's `warpAffine` do this, but this file
travels to every Hub repository beside `image_processing_dcr.py` (which imports it), so it imports
only numpy, PIL and `.errors_dcr`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image

from .errors_dcr import DCRInputError

#: insightface's `arcface_dst`: the five landmarks of the 112 x 112 ArcFace crop, pixel x, y.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
#: The side of the crop `ARCFACE_TEMPLATE` is given for; other sizes scale it.
TEMPLATE_SIZE = 112
NUM_LANDMARKS = 5


def arcface_template(image_size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The template `[5, 2]` for an `image_size` x `image_size` crop: insightface's, times `image_size / 112`."""
    return ARCFACE_TEMPLATE * (image_size / TEMPLATE_SIZE)


def check_landmarks(landmarks: Any, count: int | None = None, name: str = "landmarks") -> np.ndarray:
    """Landmarks as float64 `[count, 5, 2]` (pixel x, y per face), or `DCRInputError` naming `name`,
    the shape found and the one expected: not numbers, another shape, a value not finite."""
    expected = f"[{count if count is not None else 'N'}, {NUM_LANDMARKS}, 2] (pixel x, y of 5 points per image)"
    try:
        array = np.asarray(landmarks.detach().cpu() if hasattr(landmarks, "detach") else landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        raise DCRInputError(f"{name} must be numbers of shape {expected}, got {type(landmarks).__name__}.") from None
    if array.ndim != 3 or array.shape[1:] != (NUM_LANDMARKS, 2) or (count is not None and array.shape[0] != count):
        raise DCRInputError(f"{name} has shape {list(array.shape)}; expected {expected}.")
    if not np.isfinite(array).all():
        raise DCRInputError(f"{name} holds a value that is not finite (NaN or inf).")
    return array


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The similarity transform `[2, 3]` (`[s R | t]`, no reflection) that maps the points `source`
    `[n, 2]` onto `target` `[n, 2]` with the least squared error (Umeyama's closed form).

    `DCRInputError` when `source` has no spread (every point the same): no scale fits it.
    """
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centered, target_centered = source - source_mean, target - target_mean
    source_variance = (source_centered**2).sum() / len(source)
    if source_variance <= 1e-12:
        raise DCRInputError(f"the landmarks {source.tolist()} are all one point; no similarity transform fits them.")
    covariance = target_centered.T @ source_centered / len(source)
    u, singular_values, vt = np.linalg.svd(covariance)
    # A reflection would mirror the face: the last axis flips sign where the best orthogonal map is one.
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = (singular_values * signs).sum() / source_variance
    translation = target_mean - scale * rotation @ source_mean
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def alignment_matrix(landmarks: np.ndarray, image_size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The transform `[2, 3]` from an image's pixel x, y to the aligned `image_size` crop's, given the
    face's landmarks `[5, 2]` (as insightface's `estimate_norm`, the template scaled for other sizes)."""
    return similarity_transform(landmarks, arcface_template(image_size))


def align_face(image: PIL.Image.Image, landmarks: np.ndarray, image_size: int = TEMPLATE_SIZE) -> PIL.Image.Image:
    """The `image_size` x `image_size` crop of `image` whose landmarks `[5, 2]` land on the template.

    PIL maps each output pixel back into the input with the inverse transform, in its own convention
    (pixel `i` spans `[i, i + 1]`, its centre at `i + 0.5`), so the inverse is shifted by half a pixel
    on both sides to keep landmark coordinates in OpenCV's (centres at whole numbers).
    """
    forward = np.vstack([alignment_matrix(landmarks, image_size), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]
    linear, offset = inverse[:, :2], inverse[:, 2]
    offset = offset + 0.5 - linear @ np.array([0.5, 0.5])
    # The closed form leaves ~1e-15 of float noise, and PIL's bilinear filter moves a value by one
    # level at any fractional position: rounded to 1e-9 of a pixel, a transform meant to land on
    # whole pixels (landmarks already on the template) copies them exactly.
    coefficients = tuple(float(c) for c in np.round(
        [linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1]], 9
    ))
    fill = 0 if len(image.getbands()) == 1 else (0,) * len(image.getbands())
    return image.transform(
        (image_size, image_size), PIL.Image.Transform.AFFINE, coefficients, resample=PIL.Image.Resampling.BILINEAR,
        fillcolor=fill,
    )


__all__ = [
    "ARCFACE_TEMPLATE",
    "NUM_LANDMARKS",
    "TEMPLATE_SIZE",
    "align_face",
    "alignment_matrix",
    "arcface_template",
    "check_landmarks",
    "similarity_transform",
]
