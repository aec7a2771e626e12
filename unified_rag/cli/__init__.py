"""`unified-rag`: index, search, ask, info, verify, standardize, export-adapter; and the command groups
that other packages register (pyproject.toml's `unified_rag.cli` entry points: `train`, `bench`).

    checks.py    every argument checked before a model loads; one-line errors
    app.py       the typer app
    index.py     unified-rag index
    query.py     search, ask, info, verify
    adapters.py  standardize, export-adapter
"""
from __future__ import annotations

# Each module adds its commands to the app, in the order --help lists them.
from . import index  # noqa: F401, I001
from . import query  # noqa: F401
from . import adapters  # noqa: F401
from .app import app  # noqa: F401  (the `unified-rag` entry point)
from .checks import (EMBEDDER_KINDS, _check_file, _check_inputs, _check_out, _check_positive, _friendly, _quiet,  # noqa: F401
                     _validation_message, path_arg)
