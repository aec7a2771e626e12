"""The `unified-rag` app; each module of this package adds its commands to it."""
from __future__ import annotations

import typer

from unified_rag.registry import lookup, names

from .checks import _Group, _tidy


class _Root(_Group):
    """The top-level group. The command groups other installed packages register (pyproject.toml's
    `unified_rag.cli` entry points: `train`, `bench`) join when the commands are listed or one is
    called, not when this package is imported: those packages import the checks here, so either can
    be imported first."""

    def list_commands(self, ctx):
        return [*super().list_commands(ctx), *(n for n in names("cli") if n not in self.commands)]

    def get_command(self, ctx, name):
        if name not in self.commands and name in names("cli"):
            group = typer.main.get_group(lookup("cli", name))
            group.name, group.__class__ = name, _Group
            _tidy(group)
            self.add_command(group, name)
        return super().get_command(ctx, name)


app = typer.Typer(cls=_Root, add_completion=False, no_args_is_help=True,
                  help="RAG where one decoder LLM embeds the corpus, embeds the query and writes the answer.")

Verbose = typer.Option(False, "--verbose", "-v", help="Log what happens (device, dtype, GPU index).")
NOT_SAVED = "interrupted: nothing was saved, the last saved index is intact"
