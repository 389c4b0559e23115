"""Tiny face datasets in the real on-disk layouts, for tests (imported as `tests.layouts`).

Every image is a 120x120 RGB JPEG of seeded noise, different for every path, so tests can tell
images apart by their pixels.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

IMAGE_SIZE = 120


def save_face(path: Path, seed: int | None = None) -> Path:
    """Write a 120x120 JPEG of noise seeded by `seed` (default: the CRC32 of the path's last two parts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed is None:
        seed = zlib.crc32("/".join(path.parts[-2:]).encode())
    pixels = np.random.default_rng(seed).integers(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


def make_casia(root: Path, subjects: Iterable[int], images_per_subject: int = 2) -> list[tuple[str, int]]:
    """`root/Casia/120x120_120/<subject:07d>/<i:03d>.jpg` + `casia_cleaned_list.txt`; returns the list lines."""
    casia = Path(root) / "Casia"
    entries = []
    for subject in subjects:
        for index in range(1, images_per_subject + 1):
            relative = f"{subject:07d}/{index:03d}.jpg"
            save_face(casia / "120x120_120" / relative)
            entries.append((relative, subject))
    write_casia_list(root, entries)
    return entries


def write_casia_list(root: Path, entries: Sequence[tuple[str, int]] | Sequence[str]) -> Path:
    """Write `casia_cleaned_list.txt` from (path, subject) tuples or raw lines."""
    lines = [entry if isinstance(entry, str) else f"{entry[0]} {entry[1]}" for entry in entries]
    path = Path(root) / "Casia" / "casia_cleaned_list.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def lfw_name(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


def make_lfw(root: Path, identities: dict[str, int]) -> list[str]:
    """`root/LFW/LFW_120x120_120/<Name>/<Name>_0001.jpg`, `count` images per name; returns relative paths."""
    image_dir = Path(root) / "LFW" / "LFW_120x120_120"
    relatives = []
    for name, count in identities.items():
        for number in range(1, count + 1):
            save_face(image_dir / lfw_name(name, number))
            relatives.append(lfw_name(name, number))
    return relatives


def write_original_pairs(root: Path, pairs: Sequence[tuple[str, str, int]]) -> Path:
    """`root/LFW/lfw_test_pair.txt`: `a b 0|1` per line."""
    path = Path(root) / "LFW" / "lfw_test_pair.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{a} {b} {same}\n" for a, b, same in pairs))
    return path


def write_official_pairs(
    root: Path,
    sets: Sequence[tuple[Sequence[tuple[str, int, int]], Sequence[tuple[str, int, str, int]]]],
    header: bool = True,
    name: str = "pairs.txt",
) -> Path:
    """Official View 2 file: per set, matched `name\\tn1\\tn2` lines then mismatched `n1\\ti\\tn2\\tj` lines."""
    lines = [f"{len(sets)}\t{len(sets[0][0])}"] if header else []
    for matched, mismatched in sets:
        lines += ["\t".join(map(str, fields)) for fields in matched]
        lines += ["\t".join(map(str, fields)) for fields in mismatched]
    path = Path(root) / "LFW" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def make_scface(
    root: Path,
    subjects: Iterable[int],
    cameras: Sequence[int] = (1, 2, 3, 4, 5),
    distances: Sequence[int] = (1, 2, 3),
    skip: Iterable[tuple[int, int, int]] = (),
    skip_mugshots: Iterable[int] = (),
    camera_subfolders: bool = True,
) -> None:
    """SCface tree for 1-based `subjects`: mugshots and `NNN_camK_D.jpg` surveillance images.

    `skip` lists (subject, camera, distance) images not to write; `skip_mugshots` subjects without mugshot.
    """
    scface = Path(root) / "SCface"
    skip, skip_mugshots = set(skip), set(skip_mugshots)
    for subject in subjects:
        if subject not in skip_mugshots:
            save_face(scface / "mugshot_frontal_cropped_all" / f"{subject:03d}_frontal.JPG")
        for distance in distances:
            for camera in cameras:
                if (subject, camera, distance) in skip:
                    continue
                folder = scface / f"surveillance_cameras_distance_{distance}"
                if camera_subfolders:
                    folder = folder / f"cam{camera}"
                save_face(folder / f"{subject:03d}_cam{camera}_{distance}.jpg")
    for distance in distances:
        (scface / f"surveillance_cameras_distance_{distance}").mkdir(parents=True, exist_ok=True)


def make_identity_folder(root: Path, identities: dict[str, int]) -> list[str]:
    """`root/<identity>/<identity>_<i>.jpg`; returns relative paths."""
    relatives = []
    for name, count in identities.items():
        for index in range(count):
            relative = f"{name}/{name}_{index}.jpg"
            save_face(Path(root) / relative)
            relatives.append(relative)
    return relatives


def pixels(image: Image.Image) -> np.ndarray:
    """Decoded RGB pixels, [H, W, 3] uint8."""
    return np.asarray(image.convert("RGB"))


def read_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return pixels(image)


def smooth_photo(rng: np.random.Generator, height: int = 120, width: int = 120) -> np.ndarray:
    """A smooth, asymmetric RGB image, uint8 `[height, width, 3]`, like a blurred photo."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3))
    for _ in range(5):
        center = rng.random(2) * (height, width)
        spread = rng.uniform(0.1, 0.4) * min(height, width)
        image += rng.random(3) * np.exp(-((rows - center[0]) ** 2 + (cols - center[1]) ** 2) / (2 * spread**2))[..., None]
    image += cols[..., None] / width * 0.3 + rng.normal(0, 0.02, (height, width, 3))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def pil_low_resolution(image: Image.Image, size: int, upsample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """The original's LR copy by PIL itself: Lanczos to size x size, then `upsample` back; uint8 [H, W, 3]."""
    low = image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(low.resize(image.size, upsample))


def pil_low_resolution_batch(pixel_values, size: int, mean: float = 0.5, std: float = 0.5):
    """`pil_low_resolution` of normalized pixels `[batch, 3, H, W]` (rounded to 8 bits), normalized back."""
    import torch

    levels = (pixel_values * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    low = np.stack([pil_low_resolution(Image.fromarray(np.ascontiguousarray(image)), size) for image in levels])
    return (torch.from_numpy(low).permute(0, 3, 1, 2).float() / 255 - mean) / std


def matlab_cell(rows: Sequence[Sequence[str]]) -> np.ndarray:
    """A MATLAB cell array of char arrays (`{N x k}`), as `scipy.io.savemat` writes it from an object array."""
    cell = np.empty((len(rows), len(rows[0])), dtype=object)
    for i, row in enumerate(rows):
        for j, name in enumerate(row):
            cell[i, j] = name
    return cell


def write_survface_pairs(path: Path, name: str, pairs: Sequence[Sequence[str]]) -> Path:
    """`Face_Verification_Test_Set/<name>.mat` as the release has it: one variable `name`, an
    `{N x 2}` cell array of image file names (loadmat gives `[N, 2]` objects of `[1]` string arrays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {name: matlab_cell(pairs)})
    return path


def write_survface_ids(path: Path, names_key: str, ids_key: str, entries: Sequence[tuple[str, int]],
                       id_dtype: type = np.uint16) -> Path:
    """`<role>_img_ID_pairs.mat` as the release has it: `names_key` an `{N x 1}` cell array of file
    names and `ids_key` an `N x 1` column of positive integer ids (`uint16` as public tests of
    loaders of the release write it, unverified against the release; `double` reads the same)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {names_key: matlab_cell([[name] for name, _ in entries]),
                   ids_key: np.array([[identity] for _, identity in entries], dtype=id_dtype)})
    return path


def save_sized_face(path: Path, width: int, height: int, seed: int) -> Path:
    """Write a `width` x `height` image of seeded noise (a native low-resolution face)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def make_hub_dataset(root: Path, labels: list[int], num_shards: int = 2, size: int = 32, label_column: str = "label",
                     class_label: bool = True, seed: int = 0) -> Path:
    """A dataset folder in the layout `push_to_hub` writes (`data/train-0000i-of-0000N.parquet`): PNG
    `image` + `label` (a `ClassLabel` `id0..`, or plain ints), row `i` of identity `labels[i]`,
    split into `num_shards` contiguous shards."""
    import io

    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature, Value

    rng = np.random.default_rng(seed)
    images = []
    for _ in labels:
        buffer = io.BytesIO()
        Image.fromarray(smooth_photo(rng, size, size)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    names = [f"id{i}" for i in range(max(labels) + 1)]
    features = Features({"image": ImageFeature(), label_column: ClassLabel(names=names) if class_label else Value("int64")})
    dataset = Dataset.from_dict({"image": images, label_column: labels}, features=features)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for shard in range(num_shards):
        dataset.shard(num_shards, shard, contiguous=True).to_parquet(
            str(root / "data" / f"train-{shard:05d}-of-{num_shards:05d}.parquet"))
    return root
