"""Gallery search: enrolled faces in a faiss index (exact, IVF-SQ8, IVF-PQ or HNSW), saved with the id map
and the model that embedded them; probes routed to their branch by native size.

- `gallery`: `GalleryIndex` (build / add / remove / search / save / load).
- `kinds`: the index kinds as faiss factory strings, chosen by gallery size.
- `embedding`: faces to embeddings (HR gallery, routed probes) and the model's identity.
- `command`: the `dcr-index` console command (`python -m dcr_hf.index`).
"""

from .gallery import GalleryIndex
from .kinds import EXACT_UP_TO, HNSW_UP_TO, KINDS, IndexKind, choose_kind, index_kind


__all__ = ["EXACT_UP_TO", "HNSW_UP_TO", "KINDS", "GalleryIndex", "IndexKind", "choose_kind", "index_kind"]
