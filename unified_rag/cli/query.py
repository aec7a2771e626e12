"""`unified-rag search`, `ask`, `info`, `verify`: use an index dir."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .app import Verbose, app
from .checks import Mode, ModeOption, _check_index_dir, _check_positive, _check_text, _friendly, _quiet, _show, path_arg

IndexDir = typer.Argument(..., parser=path_arg, help="An index dir written by `unified-rag index`.")


@app.command()
@_friendly
def search(index_dir: Path = IndexDir, query: str = typer.Argument(..., help="What to look for."),
           k: int = typer.Option(5, "-k", help="Hits to return."),
           mode: Mode = ModeOption,
           as_json: bool = typer.Option(False, "--json", help="One JSON object per hit."), verbose: bool = Verbose):
    """Retrieve the chunks nearest to a query."""
    _check_text(query, "the query")
    _check_index_dir(index_dir, k)
    _quiet(verbose)
    from unified_rag.rag import UnifiedRAG

    for h in UnifiedRAG.load(index_dir).retrieve(query, k, mode=mode.value):
        if as_json:
            typer.echo(h.model_dump_json())
        else:
            snippet = " ".join(h.text.split())[:160]
            typer.echo(f"{h.rank:>2}. {h.score:.3f}  {h.doc_id}\n    {snippet}")


@app.command()
@_friendly
def ask(index_dir: Path = IndexDir, question: str = typer.Argument(..., help="The question to answer."),
        k: int = typer.Option(5, "-k", help="Sources retrieved; only those passing the relevance cut are used."),
        max_new_tokens: int = typer.Option(256, help="Longest answer, in tokens."), mode: Mode = ModeOption,
        extractive: bool = typer.Option(False, "--extractive", help="Quote the source sentences nearest the "
                                        "question instead of generating."),
        min_relevance: Optional[float] = typer.Option(None, help="Cosine a source needs to be used (default: the "
                                                      "embedder's calibrated cut; -1 uses every source)."),
        generator_adapter: str = typer.Option("auto", help="The generator's answer adapter: auto (the one shipped "
                                              "for the backbone), none (the base model), a dir or a hub id."),
        stream: bool = typer.Option(True, help="Print as it is generated."), verbose: bool = Verbose):
    """Answer a question from the index, citing numbered sources, or say it cannot."""
    _check_positive(max_new_tokens=max_new_tokens)
    _check_text(question, "the question")
    if min_relevance is not None and not -1 <= min_relevance <= 1:
        raise typer.BadParameter("a cosine in [-1, 1]", param_hint="--min-relevance")
    _check_index_dir(index_dir, k)
    _quiet(verbose)
    from unified_rag.rag import UnifiedRAG

    rag = UnifiedRAG.load(index_dir, generator_adapter=None if generator_adapter.lower() == "none" else generator_adapter)
    if min_relevance is not None:
        rag.min_relevance = min_relevance
    if stream and not extractive:
        s = rag.stream_answer(question, k=k, max_new_tokens=max_new_tokens, retrieval=mode.value)
        streamed = "".join(_echo_pieces(s)).strip()
        ans = s.answer
        if ans.text != streamed:  # citations were attributed after the text was generated
            typer.echo(f"\nWith citations: {ans.text}")
    else:
        ans = rag.answer(question, k=k, max_new_tokens=max_new_tokens, retrieval=mode.value,
                         mode="extractive" if extractive else "generative")
        typer.echo(ans.text)
    if not ans.answerable and ans.sources:
        typer.echo("(the model found the answer in none of these sources)")
    if not ans.sources:
        return
    origin = {c.source: c.origin for c in sorted(ans.citations, key=lambda c: c.origin != "model")}
    typer.echo("\nSources: (* cited by the model, + attributed by embedding, > quoted)")
    for h in ans.sources:
        mark = {"model": "*", "attributed": "+", "extracted": ">"}.get(origin.get(h.rank), " ")
        typer.echo(f"{mark}[{h.rank}] {h.doc_id}  (score {h.score:.3f}, relevance {h.relevance:.3f})")


def _echo_pieces(stream):
    for piece in stream:
        typer.echo(piece, nl=False)
        sys.stdout.flush()
        yield piece
    typer.echo()


@app.command()
@_friendly
def info(index_dir: Path = IndexDir):
    """Show what an index holds and what built it (no model is loaded)."""
    m = _check_index_dir(index_dir)
    typer.echo(json.dumps(m.model_dump(mode="json", exclude={"files"}), indent=2))


@app.command()
@_friendly
def verify(index_dir: Path = IndexDir):
    """Check every file of a saved index against its SHA-256 (load() checks only presence and sizes)."""
    m = _check_index_dir(index_dir)
    from unified_rag.rag import UnifiedRAG

    UnifiedRAG.verify(index_dir, m)
    typer.echo(f"ok: {len(m.files)} files of {_show(index_dir)} match their checksums")


