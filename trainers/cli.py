"""`unified-rag train {llm2vec-gen,gem,llm2vec,birecon} --config FILE --out DIR`.

Options given on the command line override the config file. Heavy imports happen inside the commands,
so `unified-rag --help` stays fast. Several GPUs: prefix with accelerate, e.g.
`accelerate launch --num_processes 8 -m unified_rag.cli train gem --config gem.json --out runs/gem`
(several CPU processes: `torchrun --standalone --nproc_per_node 2 -m unified_rag.cli train ...`).
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from unified_rag.cli.checks import _friendly, path_arg
from unified_rag.errors import InputError

from .config import (AnswerTrainConfig, BiReconTrainConfig, GEMTrainConfig, LLM2VecGenTrainConfig,
                     LLM2VecTrainConfig, TrainConfig)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Adapt the shared backbone: LLM2Vec-Gen, GEM, LLM2Vec, bidirectional "
                  "reconstruction (embedders), and the generator's answer adapter.")

# command -> (the module that trains it, its config class). The classes are torch-free (trainers/config.py),
# so --help shows their own defaults; those apply where neither the command line nor --config sets a
# value (an option left at its default does not override the file).
METHODS: dict[str, tuple[str, type[TrainConfig]]] = {
    "llm2vec-gen": ("trainers.llm2vec_gen", LLM2VecGenTrainConfig),
    "gem": ("trainers.gem", GEMTrainConfig),
    "llm2vec": ("trainers.llm2vec", LLM2VecTrainConfig),
    "birecon": ("trainers.birecon", BiReconTrainConfig),
    "answer": ("trainers.answer", AnswerTrainConfig),
}
DATA_DEFAULTS = {"birecon": "none: give an LLM2Vec-Gen run's responses.jsonl",
                 "answer": "../shared/data/rc-train (SQuAD v1.1, NQ and SQuAD 2.0 train)"}



def _train(method: str, config: Optional[Path], out: Path, **overrides) -> None:
    from unified_rag.cli.checks import (
        _check_file,
        _check_inputs,
        _check_out,
        _check_positive,
        _quiet,
        _validation_message,
    )
    # Everything the command line can get wrong is checked before torch and the model load.
    if config is not None:
        _check_file(config, "--config")
    if overrides.get("data"):
        _check_inputs(overrides["data"], "--data path")
    else:
        overrides["data"] = None  # not given: the config file's or the class's
    _check_out(out, "a training run")
    _check_positive(**{k: overrides[k] for k in ("steps", "batch_size", "grad_accum", "max_examples", "save_every")})
    if overrides["lr"] is not None and not overrides["lr"] > 0:
        raise InputError(f"--lr must be positive, got {overrides['lr']}")
    if config is not None:
        try:
            raw = json.loads(config.read_text(encoding="utf-8"))
        except ValueError as e:  # bad JSON or not UTF-8
            raise InputError(f"--config {config} is not a JSON file: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise InputError(f"--config {config} must hold a JSON object of config fields, not a {type(raw).__name__}")
    _quiet(overrides.pop("verbose"))
    from pydantic import ValidationError

    module_name, config_class = METHODS[method]
    try:
        cfg = config_class.from_file(config, **overrides)
    except ValidationError as e:
        raise InputError(f"{config or 'options'}: " + _validation_message(e)) from None
    module = importlib.import_module(module_name)
    try:
        adapter = module.run(cfg, out)
    except KeyboardInterrupt:
        typer.secho(f"interrupted: rerun with --resume to continue from the last checkpoint in {out}",
                    fg="yellow", err=True)
        raise typer.Exit(130) from None
    if os.environ.get("RANK", "0") == "0":  # several processes (torchrun, accelerate launch): say it once
        typer.echo(f"adapter written to {adapter}; log {out / 'train_log.jsonl'}, plot {out / 'loss.png'}")


def _command(method: str):
    d = {k: f.default for k, f in METHODS[method][1].model_fields.items()}
    data_help = "Training files (.txt, .tsv, .jsonl) or BEIR train dirs; repeatable."
    if method in DATA_DEFAULTS:
        data_help += f" Default: {DATA_DEFAULTS[method]}."

    @_friendly
    def command(ctx: typer.Context,
                config: Optional[Path] = typer.Option(None, "--config", "-c", parser=path_arg, help="JSON config: an object of the "
                                                       "method's config fields (see trainers/configs/)."),
                out: Path = typer.Option(..., "--out", "-o", parser=path_arg, help="Run dir: checkpoints, log, plot, adapter/."),
                data: List[Path] = typer.Option([], "--data", parser=path_arg, help=data_help),
                model: Optional[str] = typer.Option(None, help="Backbone: HF id or dir, .gguf. Default: "
                                                    "SmolLM2-135M-Instruct."),
                steps: int = typer.Option(d["steps"], help="Optimizer steps."),
                batch_size: int = typer.Option(d["batch_size"], help="Examples per process and micro-step."),
                grad_accum: int = typer.Option(d["grad_accum"], help="Micro-steps per optimizer step."),
                lr: float = typer.Option(d["lr"], help="Learning rate."),
                max_examples: Optional[int] = typer.Option(None, help="Use only the first N examples after a "
                                                           "seeded shuffle. Default: all."),
                seed: int = typer.Option(d["seed"], help="Random seed (data order, initialisation)."),
                save_every: int = typer.Option(d["save_every"], help="Steps between checkpoints."),
                resume: bool = typer.Option(False, "--resume/--no-resume",
                                            help="Continue from the last checkpoint in --out."),
                verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens (device, dtype, GPU).")):
        given = dict(data=list(data), model=model, steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                     max_examples=max_examples, seed=seed, save_every=save_every, resume=resume)
        # Only what the command line sets overrides --config; the rest comes from the file or the class.
        overrides = {k: v if _from_command_line(ctx, k) else None for k, v in given.items()}
        _train(method, config, out, verbose=verbose, **overrides)

    command.__doc__ = (f"Train the {method} adapter on the shared backbone. Options given override --config; "
                       "the defaults shown apply where neither sets a value.")
    return command


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


for _name in METHODS:
    app.command(_name)(_command(_name))


@app.command("calibrate-answer")
@_friendly
def calibrate_answer(adapter: Path = typer.Argument(..., parser=path_arg, help="Answer adapter dir (answer_config.json)."),
                     config: Optional[Path] = typer.Option(None, "--config", "-c", parser=path_arg,
                                                           help="The run's config (data, sources per example, seed)."),
                     rows: int = typer.Option(300, help="Held-out questions to fit on (each with and without its gold)."),
                     max_false_decline: float = typer.Option(0.15, help="The share of answerable questions the bias "
                                                             "may decline; within it, the fewest missed declines. "
                                                             "A negative value: weigh both errors alike instead."),
                     sources: int = typer.Option(5, help="Sources in every calibration prompt: the k that answer() "
                                                 "uses (default 5). 0: the config's min_sources..max_sources mix."),
                     pipeline: bool = typer.Option(False, "--pipeline", help="Fit on the sources the default pipeline "
                                                   "retrieves (hybrid, relevance cut, k = --sources) over the calibration "
                                                   "half's paragraphs, gold present and deleted, instead of built "
                                                   "examples. Indexes them first (minutes)."),
                     reading: Optional[str] = typer.Option(None, help="Set the adapter's reading and fit for it: "
                                                           "joint (every source in one prompt) or per-source "
                                                           "(each alone; needs --pipeline). Default: the adapter's own."),
                     model: Optional[str] = typer.Option(None, help="Backbone (default: SmolLM2-135M-Instruct).")):
    """Fit the answer adapter's decline bias on held-out questions and write it into its config."""
    from unified_rag.cli.checks import _check_file, _check_positive, _quiet

    _check_file(adapter / "answer_config.json", "answer adapter config")
    if config is not None:
        _check_file(config, "--config")
    _check_positive(rows=rows)
    if sources < 0:
        raise InputError(f"--sources must be 0 or more, got {sources}")
    _quiet(False)
    from trainers.answer import calibrate

    report = calibrate(adapter, AnswerTrainConfig.from_file(config, model=model), n_rows=rows,
                       max_false_decline=None if max_false_decline < 0 else max_false_decline,
                       sources=sources or None, pipeline=pipeline, reading=reading)
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "margins"}, indent=2))
