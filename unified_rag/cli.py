"""`unified-rag` command line: index, search, ask, info. User mistakes give one line, not a traceback."""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="RAG where one decoder LLM embeds the corpus, embeds the query and writes the answer.")


def _quiet(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _friendly(fn):
    """Turn this library's typed errors into one-line messages and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from unified_rag.errors import UnifiedRAGError

        try:
            return fn(*a, **kw)
        except UnifiedRAGError as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.secho("interrupted: nothing was saved, the last saved index is intact", fg="yellow", err=True)
            raise typer.Exit(130)
    return wrapper


Verbose = typer.Option(False, "--verbose", "-v", help="Log what happens (device, dtype, GPU index).")


@app.command()
@_friendly
def index(paths: List[Path] = typer.Argument(..., help="Files or folders: .txt, .md, .jsonl (BEIR corpus.jsonl too)."),
          out: Path = typer.Option(..., "--out", "-o", help="Index dir. If it holds an index, documents are added."),
          model: Optional[str] = typer.Option(None, help="Backbone: HF id or dir, .gguf; default SmolLM2-135M-Instruct."),
          embedder: str = typer.Option("auto", help="auto, mean, last, llm2vec-gen, or an adapter dir."),
          chunk_tokens: int = typer.Option(256, help="Tokens per chunk."),
          overlap: int = typer.Option(32, help="Tokens shared by neighbouring chunks."),
          index_kind: str = typer.Option("flat", help="flat (exact), ivf or hnsw."),
          batch_size: int = typer.Option(32),
          verbose: bool = Verbose):
    """Chunk, embed and index documents, then save atomically."""
    _quiet(verbose)
    from unified_rag.rag import MANIFEST, UnifiedRAG

    if (out / MANIFEST).is_file():
        rag = UnifiedRAG.load(out, model=model, embedder=None if embedder == "auto" else embedder)
        typer.echo(f"adding to {out} ({len(rag)} documents)")
    else:
        try:
            cfg = dict(index={"kind": index_kind}, chunking={"chunk_tokens": chunk_tokens, "overlap_tokens": overlap})
            rag = UnifiedRAG.from_pretrained(model, embedder=embedder, **cfg)
        except ValueError as e:  # pydantic validation of the options
            raise typer.BadParameter(str(e).splitlines()[-1]) from None
    ids = rag.add_documents(list(paths), batch_size=batch_size, show_progress_bar=True)
    rag.save(out)
    i = rag.info()
    typer.echo(f"indexed {len(ids)} documents; {out} now holds {i['documents']} documents, {i['chunks']} chunks "
               f"({i['embedder']}, dim {i['dim']})")


@app.command()
@_friendly
def search(index_dir: Path, query: str, k: int = typer.Option(5, "-k", help="Hits to return."),
           as_json: bool = typer.Option(False, "--json", help="One JSON object per hit."), verbose: bool = Verbose):
    """Retrieve the chunks nearest to a query."""
    _quiet(verbose)
    from unified_rag.rag import UnifiedRAG

    for h in UnifiedRAG.load(index_dir).retrieve(query, k):
        if as_json:
            typer.echo(h.model_dump_json())
        else:
            snippet = " ".join(h.text.split())[:160]
            typer.echo(f"{h.rank:>2}. {h.score:.3f}  {h.doc_id}\n    {snippet}")


@app.command()
@_friendly
def ask(index_dir: Path, question: str, k: int = typer.Option(5, "-k"),
        max_new_tokens: int = typer.Option(256), stream: bool = typer.Option(True, help="Print as it is generated."),
        verbose: bool = Verbose):
    """Answer a question from the index, citing numbered sources."""
    _quiet(verbose)
    from unified_rag.rag import UnifiedRAG

    rag = UnifiedRAG.load(index_dir)
    if stream:
        s = rag.stream_answer(question, k=k, max_new_tokens=max_new_tokens)
        for piece in s:
            typer.echo(piece, nl=False)
            sys.stdout.flush()
        typer.echo()
        ans = s.answer
    else:
        ans = rag.answer(question, k=k, max_new_tokens=max_new_tokens)
        typer.echo(ans.text)
    typer.echo("\nSources:")
    for h in ans.sources:
        mark = "*" if h.rank in ans.cited else " "
        typer.echo(f"{mark}[{h.rank}] {h.doc_id}  ({h.score:.3f})")


@app.command()
@_friendly
def info(index_dir: Path):
    """Show what an index holds and what built it (no model is loaded)."""
    from unified_rag.rag import UnifiedRAG

    m = UnifiedRAG.read_manifest(index_dir)
    typer.echo(json.dumps(m.model_dump(mode="json", exclude={"files"}), indent=2))


@app.command()
@_friendly
def standardize(texts: List[Path] = typer.Argument(..., help="Unlabelled texts, one per line (.txt, .tsv id<TAB>text, .jsonl)."),
                out: Path = typer.Option(..., "--out", "-o", help="Adapter dir to write."),
                model: Optional[str] = typer.Option(None, help="Backbone (default: offline SmolLM2)."),
                pooling: str = typer.Option("mean", help="mean or last."),
                limit: int = typer.Option(4000, help="Texts to use, sampled with --seed."),
                seed: int = typer.Option(0), verbose: bool = Verbose):
    """Fit per-dimension standardisation of an untrained pooling and save it as an adapter dir."""
    _quiet(verbose)
    import random

    from embedders import EMBEDDERS, load_embedder
    from unified_rag.backbone import Backbone
    from unified_rag.errors import InputError
    from trainers.common import read_texts

    if pooling not in ("mean", "last"):
        raise InputError(f"--pooling must be mean or last, not {pooling!r}")
    pool = [t for _, t in read_texts(texts)]
    random.Random(seed).shuffle(pool)
    emb = load_embedder(pooling, Backbone.from_pretrained(model))
    # Queries are embedded with the query instruction, so the statistics describe that input.
    emb.fit_standardization(pool[:limit], instruction=emb.config.query_instruction, show_progress_bar=True)
    emb.save_pretrained(out)
    typer.echo(f"fitted {EMBEDDERS[pooling].__name__} standardisation on {min(limit, len(pool))} texts -> {out}")


def _add_subcommands() -> None:
    """`train` and `bench` live with their packages; they import heavy modules only when run."""
    import importlib

    for module, name in (("trainers.cli", "train"), ("benchmarks.cli", "bench")):
        try:
            sub = importlib.import_module(module).app
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        app.add_typer(sub, name=name)


_add_subcommands()

if __name__ == "__main__":
    app()
