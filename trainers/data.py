"""Training data files: the readers live in the core (`unified_rag.datafiles`), since the CLI's
`standardize` reads the same formats; imported here under their old path."""
from unified_rag.datafiles import read_pairs, read_texts, subsample  # noqa: F401
