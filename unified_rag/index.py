"""Moved: the vector stores live in `unified_rag.vectors` (FAISS in vectors/faiss_store.py). Kept as
an import path."""
from .vectors import IndexConfig, check_search_params, index_file, load_index, open_index, save_index  # noqa: F401
from .vectors.faiss_store import (HNSW_REBUILD_FRACTION, IVF_TRAIN_PER_LIST, IVF_TRAIN_SAMPLE_PER_LIST,  # noqa: F401
                                  VectorIndex, auto_ef_search)
