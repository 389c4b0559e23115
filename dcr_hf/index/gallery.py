"""`GalleryIndex`: enrolled faces in a faiss index, with the id map and what built it, saved as a folder.

A saved index is a folder with two files:

- `index.faiss`: the faiss index (`faiss.write_index`), ids = the gallery's int64 face ids;
- `manifest.json`: the format version, the index kind (`kinds.IndexKind`: factory string, metric,
  search parameters), the dimension, the model (`name_or_path`, `revision`, `weights_sha256`),
  its preprocessing (the image processor's dict), the identity names and the id map (each face id
  -> its identity and source file).

Embeddings go in L2-normalised; scores come out as cosine similarities (exact for `flat`,
approximated by the codes for `ivfsq8` and `ivfpq`; `hnswsq8` re-ranks with the exact vectors). The model-level methods (`build`, `add`, `search`)
embed with `dcr_hf.index.embedding`; the `*_embeddings` methods take embeddings directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from ..errors_dcr import DCRFileError, DCRFileNotFoundError, DCRInputError
from .kinds import (
    EXACT_UP_TO,
    IndexKind,
    faiss_module,
    index_kind,
    new_index,
    scores_from_distances,
    set_search_parameters,
    to_gpu,
)

logger = logging.get_logger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
#: IVF training sample: this many faces a coarse cluster at most.
TRAINING_POINTS_PER_LIST = 64


def _normalized(embeddings: np.ndarray, what: str, dimension: int | None = None) -> np.ndarray:
    """float32 L2-normalised rows `[n, dim]`; one-line errors for bad shapes and values."""
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or len(array) == 0:
        raise DCRInputError(f"{what} must be a non-empty [n, dim] array, got shape {array.shape}.")
    if dimension is not None and array.shape[1] != dimension:
        raise DCRInputError(f"{what} have dimension {array.shape[1]} but the index holds {dimension}-d embeddings.")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
    if len(bad):
        raise DCRInputError(f"{what}: row {bad[0]} is zero or not finite; it has no direction to search by.")
    return np.ascontiguousarray(array / norms)


class GalleryIndex:
    """A searchable gallery of enrolled faces (see the module docstring).

    Args:
        index: the faiss index (CPU), holding `len(sources)` faces.
        kind: its `IndexKind`.
        dimension: embedding size.
        model: `{"name_or_path", "revision", "weights_sha256"}` of the model that embedded the faces.
        preprocessing: the image processor's `to_dict()`.
        identities: `{face id: identity name}`; sources: `{face id: source file or ""}`.
        next_id: the id the next enrolled face gets.
    """

    def __init__(self, index: Any, kind: IndexKind, dimension: int, model: dict[str, Any], preprocessing: dict[str, Any],
                 identities: dict[int, str], sources: dict[int, str], next_id: int) -> None:
        self.index, self.kind, self.dimension = index, kind, dimension
        self.model, self.preprocessing = model, preprocessing
        self.identities, self.sources, self.next_id = identities, sources, next_id
        self._gpu_index = None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def identity_names(self) -> list[str]:
        """The enrolled identities, sorted."""
        return sorted(set(self.identities.values()))

    # ------------------------------------------------------------------ embeddings in, results out

    @classmethod
    def from_embeddings(
        cls, embeddings: np.ndarray, identities: Sequence[str], sources: Sequence[str] | None = None, *,
        kind: str = "auto", model: dict[str, Any] | None = None, preprocessing: dict[str, Any] | None = None,
        **kind_options: Any,
    ) -> GalleryIndex:
        """A new index of `embeddings` `[n, dim]` with their `identities` `[n]` (and `sources`).

        `kind`: "auto" (`flat` up to `kinds.EXACT_UP_TO` faces, `hnswsq8` up to `kinds.HNSW_UP_TO`, else
        `ivfpq`), "flat", "ivfsq8", "ivfpq", "hnswsq8" or "hnsw"; `kind_options` go to `kinds.index_kind`
        (nlist, nprobe, pq_m, hnsw_m, ef_search, k_factor). The IVF kinds train on these embeddings, at most
        `TRAINING_POINTS_PER_LIST` x nlist of them (a seeded random sample): faiss' k-means needs 39 to 256 a
        cluster, and its cost grows with them. `hnswsq8`'s 8-bit codes train on all of them (one pass for
        each dimension's range).
        """
        vectors = _normalized(embeddings, "The gallery embeddings")
        chosen = index_kind(kind, len(vectors), vectors.shape[1], **kind_options)
        index = new_index(chosen, vectors.shape[1])
        if not index.is_trained:
            ivf = faiss_module().try_extract_index_ivf(index)
            limit = len(vectors) if ivf is None else TRAINING_POINTS_PER_LIST * ivf.nlist
            sample = vectors if len(vectors) <= limit else vectors[np.sort(np.random.default_rng(0).choice(len(vectors), limit, replace=False))]
            index.train(sample)
        gallery = cls(index, chosen, vectors.shape[1], dict(model or {}), dict(preprocessing or {}), {}, {}, 0)
        gallery.add_embeddings(vectors, identities, sources)
        return gallery

    def add_embeddings(self, embeddings: np.ndarray, identities: Sequence[str], sources: Sequence[str] | None = None) -> np.ndarray:
        """Enroll faces `[n, dim]` (no rebuild); returns their new ids `[n]`."""
        vectors = _normalized(embeddings, "The embeddings to add", self.dimension)
        identities = [str(name) for name in identities]
        sources = [""] * len(vectors) if sources is None else [str(source) for source in sources]
        if not len(identities) == len(sources) == len(vectors):
            raise DCRInputError(f"{len(vectors)} embeddings but {len(identities)} identities and {len(sources)} sources.")
        ids = np.arange(self.next_id, self.next_id + len(vectors), dtype=np.int64)
        self.index.add_with_ids(vectors, ids)
        for face_id, name, source in zip(ids.tolist(), identities, sources):
            self.identities[face_id], self.sources[face_id] = name, source
        self.next_id += len(vectors)
        self._gpu_index = None
        if self.kind.kind == "flat" and len(self) > EXACT_UP_TO:
            logger.warning(f"The exact index now holds {len(self)} faces; beyond {EXACT_UP_TO} rebuild it with --index_kind hnswsq8, ivfsq8 or ivfpq.")
        return ids

    def remove(self, identities: Sequence[str]) -> int:
        """Delete every face of `identities` (no rebuild for flat and the IVF kinds; HNSW rebuilds its graph).

        Returns the number of faces removed; an identity that is not enrolled is a `DCRInputError`.
        """
        names = {str(name) for name in identities}
        unknown = sorted(names - set(self.identities.values()))
        if unknown:
            raise DCRInputError(f"No face of identity {unknown[0]!r} is enrolled in this index ({len(self.identity_names)} identities).")
        ids = np.array([face_id for face_id, name in self.identities.items() if name in names], dtype=np.int64)
        if self.kind.kind in ("hnsw", "hnswsq8"):
            self._rebuild_without(ids)
        else:
            removed = self.index.remove_ids(faiss_module().IDSelectorBatch(ids))
            if removed != len(ids):
                raise RuntimeError(f"faiss removed {removed} of {len(ids)} faces; the id map and the index disagree.")
        for face_id in ids.tolist():
            del self.identities[face_id], self.sources[face_id]
        self._gpu_index = None
        return len(ids)

    def _rebuild_without(self, ids: np.ndarray) -> None:
        """HNSW: a new graph of the kept faces' stored vectors (faiss' HNSW has no deletion).

        The vectors are the exact ones (`Flat` storage, or `hnswsq8`'s refine index); `reset` empties the
        graph, the vectors and the id map but keeps the trained SQ8 ranges and the search parameters.
        """
        faiss = faiss_module()
        keep = np.array(sorted(set(self.identities) - set(ids.tolist())), dtype=np.int64)
        positions = {face_id: position for position, face_id in enumerate(faiss.vector_to_array(self.index.id_map))}
        inner = faiss.downcast_index(self.index.index)
        vectors = inner.reconstruct_batch(np.array([positions[i] for i in keep.tolist()], dtype=np.int64)) if len(keep) else None
        self.index.reset()
        if vectors is not None:
            self.index.add_with_ids(vectors, keep)

    def search_embeddings(self, queries: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """The `k` nearest enrolled faces of each query `[q, dim]`: per query, nearest first,
        `{"id", "identity", "source", "score"}` (cosine similarity); fewer when the gallery is smaller."""
        if int(k) <= 0:
            raise DCRInputError(f"k must be a positive number of results, got {k}.")
        vectors = _normalized(queries, "The query embeddings", self.dimension)
        if len(self) == 0:
            return [[] for _ in range(len(vectors))]
        distances, ids = self._searcher().search(vectors, min(int(k), len(self)))
        scores = scores_from_distances(self.kind, distances)
        return [
            [{"id": int(i), "identity": self.identities[int(i)], "source": self.sources[int(i)], "score": float(s)}
             for i, s in zip(row_ids, row_scores) if i >= 0]
            for row_ids, row_scores in zip(ids, scores)
        ]

    def _searcher(self):
        """The index searches run on: a GPU copy when faiss has GPU support and a GPU, else the index."""
        if self._gpu_index is None:
            self._gpu_index = to_gpu(self.index) or self.index
            if self._gpu_index is not self.index:
                set_search_parameters(self._gpu_index, self.kind)
        return self._gpu_index

    # ------------------------------------------------------------------ save / load

    def manifest(self) -> dict[str, Any]:
        names = self.identity_names
        code = {name: position for position, name in enumerate(names)}
        return {
            "format_version": FORMAT_VERSION,
            "index": self.kind.to_dict(),
            "dimension": self.dimension,
            "similarity": "cosine",
            "num_faces": len(self),
            "model": self.model,
            "preprocessing": self.preprocessing,
            "identities": names,
            "next_id": self.next_id,
            # [face id, position in "identities", source]: one row a face.
            "faces": [[face_id, code[self.identities[face_id]], self.sources[face_id]] for face_id in sorted(self.identities)],
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `index.faiss` and `manifest.json` into `folder` (created); returns it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss_module().write_index(self.index, str(folder / INDEX_FILE))
        (folder / MANIFEST_FILE).write_text(json.dumps(self.manifest(), indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> GalleryIndex:
        """Read a folder written by `save`; a missing, truncated or inconsistent file is one `DCRInputError` line."""
        folder = Path(folder)
        index_path, manifest_path = folder / INDEX_FILE, folder / MANIFEST_FILE
        for path in (index_path, manifest_path):
            if not path.is_file():
                raise DCRFileNotFoundError(f"{path} not found; expected an index folder written by `dcr-index build`.")
        try:
            manifest = json.loads(manifest_path.read_text())
            kind = IndexKind.from_dict(manifest["index"])
            dimension, faces, names = int(manifest["dimension"]), manifest["faces"], manifest["identities"]
            identities = {int(face_id): names[int(code)] for face_id, code, _ in faces}
            sources = {int(face_id): str(source) for face_id, _, source in faces}
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise DCRFileError(f"{manifest_path} is not a gallery manifest ({type(error).__name__}: {error}).") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DCRFileError(f"{manifest_path} has format_version {manifest.get('format_version')!r}; this dcr_hf reads {FORMAT_VERSION}.")
        try:
            index = faiss_module().read_index(str(index_path))
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
            raise DCRFileError(f"{index_path} is not a readable faiss index (truncated or damaged?): {reason}") from None
        if index.d != dimension or index.ntotal != len(faces):
            raise DCRFileError(
                f"{index_path} holds {index.ntotal} faces of dimension {index.d} but {manifest_path} lists "
                f"{len(faces)} of dimension {dimension}; the two files do not belong together."
            )
        set_search_parameters(index, kind)
        return cls(index, kind, dimension, manifest.get("model", {}), manifest.get("preprocessing", {}),
                   identities, sources, int(manifest.get("next_id", len(faces))))

    # ------------------------------------------------------------------ faces in, results out

    @classmethod
    def build(cls, source: str | os.PathLike, model: Any, processor: Any, model_identity: dict[str, Any], *,
              kind: str = "auto", batch_size: int = 64, follow_symlinks_outside_root: bool = False,
              **kind_options: Any) -> GalleryIndex:
        """Embed the enrolled faces of `source` (an identity-per-folder tree or a prepared dataset
        folder) at HR and index them (see `from_embeddings`)."""
        from .embedding import embed_gallery, load_gallery

        gallery = load_gallery(source, follow_symlinks_outside_root=follow_symlinks_outside_root)
        embeddings, identities, sources = embed_gallery(model, processor, gallery, batch_size=batch_size)
        return cls.from_embeddings(embeddings, identities, sources, kind=kind, model=model_identity,
                                   preprocessing=processor.to_dict(), **kind_options)

    def check_model(self, model_identity: dict[str, Any]) -> None:
        """Refuse a model other than the one that built the index (its weights' hash differs)."""
        built = self.model.get("weights_sha256")
        if built != model_identity.get("weights_sha256"):
            raise DCRInputError(
                f"This index was built with model {self.model.get('name_or_path')!r} (weights sha256 {str(built)[:12]}), "
                f"not with {model_identity.get('name_or_path')!r} (weights sha256 {str(model_identity.get('weights_sha256'))[:12]}); "
                "search it with its own model or build a new index."
            )

    def add(self, source: str | os.PathLike, model: Any, processor: Any, model_identity: dict[str, Any], *,
            batch_size: int = 64, follow_symlinks_outside_root: bool = False) -> np.ndarray:
        """Embed and enroll the faces of `source` (as `build`); returns their ids."""
        from .embedding import embed_gallery, load_gallery

        self.check_model(model_identity)
        gallery = load_gallery(source, follow_symlinks_outside_root=follow_symlinks_outside_root)
        embeddings, identities, sources = embed_gallery(model, processor, gallery, batch_size=batch_size)
        return self.add_embeddings(embeddings, identities, sources)

    def search(self, images: Sequence[str | os.PathLike], model: Any, processor: Any, model_identity: dict[str, Any],
               k: int = 5, *, batch_size: int = 64) -> list[dict[str, Any]]:
        """Search the probe `images` (files): each embedded through the branch nearest its native size
        (a branch model), then the `k` nearest enrolled faces. Returns, per probe,
        `{"probe", "width", "height", "resolution", "results": [{"id", "identity", "source", "score"}, ...]}`."""
        from .embedding import embed_probes, read_probes

        if int(k) <= 0:
            raise DCRInputError(f"k must be a positive number of results, got {k}.")
        self.check_model(model_identity)
        probes = read_probes(images)
        embeddings, routes = embed_probes(model, processor, probes, batch_size=batch_size)
        results = self.search_embeddings(embeddings, k)
        return [{"probe": str(path), "width": image.width, "height": image.height, "resolution": route, "results": found}
                for (path, image), route, found in zip(probes, routes, results)]


__all__ = ["FORMAT_VERSION", "INDEX_FILE", "MANIFEST_FILE", "GalleryIndex"]
