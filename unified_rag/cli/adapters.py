"""`unified-rag standardize` and `export-adapter`: make and convert embedder adapter dirs."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unified_rag.errors import InputError

from .app import Verbose, app
from .checks import DType, Pooling, _check_file, _check_inputs, _check_out, _check_positive, _friendly, _quiet, path_arg


@app.command()
@_friendly
def standardize(texts: List[Path] = typer.Argument(..., parser=path_arg, help="Unlabelled texts, one per line (.txt, .tsv id<TAB>text, .jsonl)."),
                out: Path = typer.Option(..., "--out", "-o", parser=path_arg, help="Adapter dir to write."),
                model: Optional[str] = typer.Option(None, help="Backbone (default: offline SmolLM2)."),
                pooling: Pooling = typer.Option(Pooling.mean, help="Untrained pooling to standardise."),
                layers: Optional[str] = typer.Option(None, help="Hidden layers to pool, a comma list (0: embeddings; "
                                                     "default: the last); several are concatenated."),
                limit: int = typer.Option(4000, help="Texts to use, sampled with --seed."),
                seed: int = typer.Option(0, help="Seed of the sample."), verbose: bool = Verbose):
    """Fit per-dimension standardisation of an untrained pooling and save it as an adapter dir."""
    _check_positive(limit=limit)
    try:
        picked = None if layers is None else [int(x) for x in layers.split(",")]
    except ValueError:
        raise InputError(f"--layers must be a comma list of integers, got {layers!r}") from None
    _check_inputs(list(texts))
    _check_out(out, "an adapter")
    _quiet(verbose)
    import random

    from unified_rag.backbone import Backbone
    from unified_rag.datafiles import read_texts
    from unified_rag.embedder import embedder_class

    pool = [t for _, t in read_texts(texts)]
    random.Random(seed).shuffle(pool)
    emb = embedder_class(pooling.value)(Backbone.from_pretrained(model), **({} if picked is None else {"layers": picked}))
    # Queries are embedded with the query instruction, so the statistics describe that input.
    emb.fit_standardization(pool[:limit], instruction=emb.config.query_instruction, show_progress_bar=True)
    emb.save_pretrained(out)
    typer.echo(f"fitted {type(emb).__name__} standardisation on {min(limit, len(pool))} texts -> {out}")


@app.command(name="export-adapter")
@_friendly
def export_adapter(adapter: Path = typer.Argument(..., parser=path_arg, help="Adapter dir (embedder_config.json + adapter.safetensors)."),
                   out: Path = typer.Option(..., "--out", "-o", parser=path_arg, help="Adapter dir to write."),
                   dtype: DType = typer.Option(DType.bf16, help="Storage dtype of the floating tensors.")):
    """Copy an adapter dir with its tensors stored in another dtype (bf16 halves a shipped adapter)."""
    _check_file(adapter / "embedder_config.json", "adapter config")
    _check_out(out, "an adapter")
    import torch

    from unified_rag.embedder import cast_adapter

    cast_adapter(adapter, out, {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype.value])
    typer.echo(f"{adapter} -> {out} ({dtype.value})")

