"""The `unified-rag` app; each module of this package adds its commands to it."""
from __future__ import annotations

import typer

from .checks import _Group

app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  help="RAG where one decoder LLM embeds the corpus, embeds the query and writes the answer.")

Verbose = typer.Option(False, "--verbose", "-v", help="Log what happens (device, dtype, GPU index).")
NOT_SAVED = "interrupted: nothing was saved, the last saved index is intact"
