"""`unified-rag train {llm2vec-gen,gem,llm2vec,birecon} --config FILE --out DIR`.

Options given on the command line override the config file. Heavy imports happen inside the commands,
so `unified-rag --help` stays fast. Several GPUs: prefix with accelerate, e.g.
`accelerate launch --num_processes 8 -m unified_rag.cli train gem --config gem.json --out runs/gem`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Adapt the shared backbone: LLM2Vec-Gen, GEM, LLM2Vec, bidirectional reconstruction.")

METHODS = {  # command -> (module, config class)
    "llm2vec-gen": ("trainers.llm2vec_gen", "LLM2VecGenTrainConfig"),
    "gem": ("trainers.gem", "GEMTrainConfig"),
    "llm2vec": ("trainers.llm2vec", "LLM2VecTrainConfig"),
    "birecon": ("trainers.birecon", "BiReconTrainConfig"),
}


def _train(method: str, config: Optional[Path], out: Path, **overrides) -> None:
    from unified_rag.cli import _quiet

    _quiet(overrides.pop("verbose"))
    from unified_rag.errors import UnifiedRAGError

    module_name, cfg_name = METHODS[method]
    module = importlib.import_module(module_name)
    if overrides.get("data") == []:
        overrides["data"] = None
    try:
        cfg = getattr(module, cfg_name).from_file(config, **overrides)
    except (ValueError, OSError) as e:
        raise typer.BadParameter(str(e).splitlines()[-1] if isinstance(e, ValueError) else str(e)) from None
    try:
        adapter = module.run(cfg, out)
    except UnifiedRAGError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        typer.secho(f"interrupted: rerun with --resume to continue from the last checkpoint in {out}",
                    fg="yellow", err=True)
        raise typer.Exit(130)
    typer.echo(f"adapter written to {adapter}; log {out / 'train_log.jsonl'}, plot {out / 'loss.png'}")


def _command(method: str):
    def command(config: Optional[Path] = typer.Option(None, "--config", "-c", exists=True, dir_okay=False,
                                                       help="JSON config (fields of the method's config class)."),
                out: Path = typer.Option(..., "--out", "-o", help="Run dir: checkpoints, log, plot, adapter/."),
                data: List[Path] = typer.Option([], "--data", help="Training files (.txt, .tsv, .jsonl); repeatable."),
                model: Optional[str] = typer.Option(None, help="Backbone; default SmolLM2-135M-Instruct."),
                steps: Optional[int] = typer.Option(None), batch_size: Optional[int] = typer.Option(None),
                grad_accum: Optional[int] = typer.Option(None), lr: Optional[float] = typer.Option(None),
                max_examples: Optional[int] = typer.Option(None), seed: Optional[int] = typer.Option(None),
                save_every: Optional[int] = typer.Option(None),
                resume: Optional[bool] = typer.Option(None, "--resume/--no-resume",
                                                      help="Continue from the last checkpoint in --out."),
                verbose: bool = typer.Option(False, "--verbose", "-v")):
        _train(method, config, out, data=list(data), model=model, steps=steps, batch_size=batch_size,
               grad_accum=grad_accum, lr=lr, max_examples=max_examples, seed=seed, save_every=save_every,
               resume=resume, verbose=verbose)

    command.__doc__ = f"Train a {method} adapter on the shared backbone."
    return command


for _name in METHODS:
    app.command(_name)(_command(_name))
