"""`unified-rag index`: build or add to an index dir, saving periodically on long runs."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from unified_rag.errors import InputError

from .app import NOT_SAVED, Verbose, app
from .checks import (EMBEDDER_CONFIG, EMBEDDER_KINDS, Engine, IndexKind, _check_embedder, _check_inputs, _check_out,
                     _check_positive, _friendly, _quiet, _validation_message, path_arg)

# index's layout options, as the command line names them: they shape a new index only
LAYOUT_OPTIONS = {"kind": "--index-kind", "nlist": "--nlist", "nprobe": "--nprobe", "hnsw_m": "--hnsw-m",
                  "ef_search": "--ef-search", "uri": "--milvus-uri",
                  "chunk_tokens": "--chunk-tokens", "overlap_tokens": "--overlap"}


def _check_same_layout(out: Path, stored, index_cfg, chunk_cfg) -> None:
    """Adding to an index keeps the layout it was built with. An option set to something other than
    its default that disagrees with the stored layout would be silently ignored, so it is refused."""
    clash = [f"{flag} {getattr(given, k)} (the index has {getattr(have, k)})"
             for given, have in [(index_cfg, stored.index), (chunk_cfg, stored.chunking)]
             for k, flag in LAYOUT_OPTIONS.items() if k in type(given).model_fields
             and getattr(given, k) != type(given).model_fields[k].default and getattr(given, k) != getattr(have, k, None)]
    if clash:
        raise InputError(f"{out} already holds an index, and adding keeps its layout: {'; '.join(clash)}. "
                         "Drop these options, or index into a new --out")



def _index_config(kind: str, options: dict):
    """The store's own config from the store options given (None: not given, so the store's default).
    An option the kind has no use for is refused: it would be silently ignored."""
    from unified_rag.vectors import IndexConfig, config_class

    given = {k: v for k, v in options.items() if v is not None}
    stray = [LAYOUT_OPTIONS[k] for k in given if k not in config_class(kind).model_fields]
    if stray:
        raise InputError(f"{', '.join(stray)} do{'es' if len(stray) == 1 else ''} not apply to --index-kind {kind}")
    return IndexConfig(kind=kind, **given)


@app.command()
@_friendly(interrupted=NOT_SAVED)
def index(paths: List[Path] = typer.Argument(..., parser=path_arg, help="Files or folders: .txt, .md, .jsonl (BEIR corpus.jsonl too)."),
          out: Path = typer.Option(..., "--out", "-o", parser=path_arg, help="Index dir. If it holds an index, documents are added."),
          model: Optional[str] = typer.Option(None, help="Backbone: HF id or dir, .gguf. Default: "
                                              "SmolLM2-135M-Instruct."),
          embedder: str = typer.Option("auto", help=f"One of {', '.join(EMBEDDER_KINDS)}, or an adapter dir "
                                       f"(a folder holding {EMBEDDER_CONFIG})."),
          chunk_tokens: int = typer.Option(256, help="Tokens per chunk (at least 8)."),
          overlap: int = typer.Option(32, help="Tokens shared by neighbouring chunks (smaller than --chunk-tokens)."),
          index_kind: IndexKind = typer.Option(IndexKind.flat, help="flat: exact search; ivf: clustered, approximate "
                                               "(exact until it holds 39 x --nlist chunks, then trains); hnsw: graph; milvus: a "
                                               "Milvus collection (embedded Milvus Lite, or --milvus-uri)."),
          milvus_uri: Optional[str] = typer.Option(None, help="milvus: a server's URI, e.g. http://host:19530 "
                                                   "(token from MILVUS_TOKEN); default: embedded Milvus Lite."),
          nlist: Optional[int] = typer.Option(None, help="ivf: number of clusters (default 1024)."),
          nprobe: Optional[int] = typer.Option(None, help="ivf: clusters visited per query (default 16)."),
          hnsw_m: Optional[int] = typer.Option(None, help="hnsw: neighbours per node (default 32)."),
          ef_search: Optional[int] = typer.Option(None, help="hnsw: candidate list size per query (default: "
                                                  "scaled with the index size, for recall@10 >= 0.95)."),
          batch_size: int = typer.Option(32, help="Chunks embedded per forward pass."),
          engine: Engine = typer.Option(Engine.local, help="local: this process; ray: chunk and encode on Ray "
                                        "Data (one backbone per actor), then index here."),
          address: Optional[str] = typer.Option(None, help="ray: a running cluster ('auto', 'ray://host:10001'); "
                                                "default: a local Ray."),
          actors: int = typer.Option(2, help="ray: encoding actors (one GPU each when the cluster has GPUs)."),
          reembed: bool = typer.Option(False, "--reembed", help="Embed again documents already in the index "
                                       "unchanged (same id, source, metadata and chunks); by default they are skipped."),
          save_every: float = typer.Option(10.0, help="local: also save (atomically) when this many minutes have "
                                           "passed since the last save, so an interrupted run continues where it "
                                           "was when the same command runs again. 0: save at the end only."),
          verbose: bool = Verbose):
    """Chunk, embed and index documents, then save atomically. Running the same command again adds only
    what is new or changed, which is also how an interrupted run continues."""
    _check_positive(batch_size=batch_size, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search,
                    actors=actors)
    if not save_every >= 0:  # also refuses nan
        raise InputError(f"--save-every must be 0 or more minutes, got {save_every}")
    _check_inputs(list(paths))
    _check_out(out)
    _check_embedder(embedder)
    from pydantic import ValidationError

    from unified_rag.chunking import ChunkConfig

    try:
        index_cfg = _index_config(index_kind.value, dict(nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search,
                                                         uri=milvus_uri))
        chunk_cfg = ChunkConfig(chunk_tokens=chunk_tokens, overlap_tokens=overlap)
    except ValidationError as e:
        raise InputError(_validation_message(e, {"chunk_tokens": "--chunk-tokens", "overlap_tokens": "--overlap"})) \
            from None
    _quiet(verbose)
    from unified_rag.rag import MANIFEST, UnifiedRAG

    if (out / MANIFEST).is_file():
        stored = UnifiedRAG.read_manifest(out)  # a corrupt index is reported before the model loads
        _check_same_layout(out, stored, index_cfg, chunk_cfg)
        rag = UnifiedRAG.load(out, model=model, embedder=None if embedder == "auto" else embedder)
        typer.echo(f"adding to {out} ({len(rag)} documents)")
    else:
        rag = UnifiedRAG.from_pretrained(model, embedder=embedder, index=index_cfg, chunking=chunk_cfg)
    if engine is Engine.ray:
        from unified_rag.ray_engine import add_documents_ray

        ids = add_documents_ray(rag, list(paths), model=model, address=address, actors=actors, batch_size=batch_size)
    else:
        ids = _add_saving(rag, paths, out, batch_size=batch_size, skip_unchanged=not reembed, save_every=save_every)
    rag.save(out)
    i = rag.info()
    typer.echo(f"indexed {len(ids)} documents; {out} now holds {i['documents']} documents, {i['chunks']} chunks "
               f"({i['embedder']}, dim {i['dim']})")


def _add_saving(rag, paths, out: Path, *, batch_size: int, skip_unchanged: bool, save_every: float) -> list[str]:
    """rag.add_documents, saving whenever `save_every` minutes have passed since the last save. Ctrl-C
    after a save says what the index holds and how to continue."""
    last_save, saved = time.monotonic(), None  # saved: (clock time, documents) of the last save, if any

    def save_when_due():
        nonlocal last_save, saved
        if save_every and time.monotonic() - last_save >= save_every * 60:
            rag.save(out)
            last_save, saved = time.monotonic(), (time.strftime("%H:%M:%S"), len(rag))

    try:
        return rag.add_documents(list(paths), batch_size=batch_size, show_progress_bar=True,
                                 skip_unchanged=skip_unchanged, on_commit=save_when_due)
    except KeyboardInterrupt:
        if saved is None:
            raise
        typer.secho(f"interrupted: {out} holds the {saved[1]} documents saved at {saved[0]}; run the same command "
                    "again to continue (documents already indexed unchanged are skipped)", fg="yellow", err=True)
        raise typer.Exit(130) from None


