"""`unified-rag bench SUITE`: each suite writes results.json, report.md and PNG plots to --out.

Heavy imports live inside the commands so that `unified-rag --help` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unified_rag.cli.checks import _friendly, _quiet, path_arg
from unified_rag.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmarks: retrieval quality, STS-B, harmful-content retrieval, reasoning, efficiency.")

DEFAULT_METHODS = "bm25,minilm,mean,last,auto"


Methods = typer.Option(DEFAULT_METHODS, "--embedder", "-e", help="Comma list: bm25, minilm, st:<model>, auto, mean, "
                       "last, llm2vec-gen, adapter dirs, or gen-ceiling (teacher of the backbone's own answer: "
                       "LLM2Vec-Gen's ceiling). Dense methods share one backbone.")
Out = typer.Option(..., "--out", "-o", parser=path_arg, help="Output dir for results.json, report.md and plots.")
Data = typer.Option(None, "--data", parser=path_arg, help="Local data dir (default: ../shared/data/<set>).")
Hf = typer.Option(None, "--hf", help="Hub dataset name instead of --data (needs the network).")
Model = typer.Option(None, "--model", help="Backbone: HF id or dir, .gguf; default SmolLM2-135M-Instruct.")
MaxLen = typer.Option(256, "--max-length", help="Token budget per text for backbone embedders (docs are truncated).")
Batch = typer.Option(32, "--batch-size", help="Texts per forward pass.")
Cache = typer.Option(None, "--cache-dir", parser=path_arg, help="Encoded-corpus cache (default: <unified-rag cache>/bench).")
Dtype = typer.Option("auto", "--dtype", help="auto (bf16 where fast), bf16, fp32.")
NQ = typer.Option(None, "--n-queries", help="Evaluate only the first N queries (quick checks).")
Seed = typer.Option(0, "--seed", help="Seeds torch and numpy; recorded in results.json.")
Teacher = typer.Option("all-MiniLM-L6-v2", "--teacher", help="Method name the headline compares against.")


def _setup(methods: str, model, dtype, max_length, seed):
    import numpy as np
    import torch

    from .baselines import load_methods

    _quiet(False)
    torch.manual_seed(seed)
    np.random.seed(seed)
    return load_methods(methods, model=model, dtype=dtype, max_length=max_length)


def _finish(result: dict, out: Path, seed: int) -> None:
    from .report import write

    write(result, out, seed=seed)
    typer.echo(f"{result['title']}  ->  {out}/report.md")
    for name, d in result["methods"].items():
        typer.echo(f"  {name:<36} " + "  ".join(f"{k}={v:.4f}" for k, v in d.get("metrics", {}).items()
                                                 if "/" not in k and isinstance(v, float))[:160])
    for name, h in (result.get("headline") or {}).items():
        typer.echo(f"  headline {name}: " + ", ".join(f"{k}={'n/a' if v is None else f'{100 * v:+.1f}%'}"
                                                     for k, v in h.items()))


@app.command()
@_friendly
def retrieval(embedder: str = Methods, out: Path = Out, data: Optional[Path] = Data, hf: Optional[str] = Hf,
              model: Optional[str] = Model, max_length: int = MaxLen, batch_size: int = Batch,
              cache_dir: Optional[Path] = Cache, dtype: str = Dtype, n_queries: Optional[int] = NQ, seed: int = Seed,
              max_docs: Optional[int] = typer.Option(None, help="Judged documents plus a seeded draw of others, up "
                                                    "to N (quick comparisons; not the full-corpus score)."),
              task_instruction: bool = typer.Option(True, help="Backbone embedders take the task's published query "
                                                    "instruction (MTEB protocol), where one is known, instead of "
                                                    "their generic one.")):
    """BEIR retrieval (default ../shared/data/scifact): nDCG@10, recall@100, MRR@10."""
    from .retrieval import run_beir

    methods = _setup(embedder, model, dtype, max_length, seed)
    _finish(run_beir(methods, data, hf=hf, n_queries=n_queries, cache=cache_dir, batch_size=batch_size,
                     max_docs=max_docs, seed=seed, task_instruction=task_instruction), out, seed)


@app.command()
@_friendly
def stsb(embedder: str = Methods, out: Path = Out, data: Optional[Path] = Data, hf: Optional[str] = Hf,
         model: Optional[str] = Model, max_length: int = MaxLen, batch_size: int = Batch,
         cache_dir: Optional[Path] = Cache, dtype: str = Dtype,
         split: str = typer.Option("test", help="Split to score: train, validation or test."), seed: int = Seed):
    """STS Benchmark: Spearman correlation of cosine similarity (BM25 is skipped)."""
    from .retrieval import run_stsb

    methods = _setup(embedder, model, dtype, max_length, seed)
    _finish(run_stsb(methods, data, hf=hf, split=split, cache=cache_dir, batch_size=batch_size), out, seed)


@app.command(name="rag-qa")
@_friendly
def rag_qa(out: Path = Out, data: Optional[Path] = Data,
           qa_set: str = typer.Option("squad-rag", "--set", help="squad-rag (SQuAD dev) or rc-heldout (rc-train's "
                                      "held-out articles); --data is that set's dir."),
           embedder: str = typer.Option("auto", "--embedder", "-e", help="The pipeline's embedder (a kind or adapter dir)."),
           generator_adapter: str = typer.Option("auto", "--generator-adapter", help="The answer adapter: auto (the "
                                                 "shipped one), a dir, or none."),
           adapter: str = typer.Option("both", "--adapter", help="Answer with the adapter on, off (base model), or both."),
           settings: str = typer.Option("closed-book,rag,rag-extractive,oracle,gold-removed", "--settings",
                                        help="Comma list of settings to run."),
           n_questions: int = typer.Option(500, "--n-questions", "-n", help="Questions in the seeded sample."),
           n_unanswerable: int = typer.Option(100, help="Further questions asked after their gold paragraph "
                                              "is deleted from the index."),
           n_base: Optional[int] = typer.Option(None, "--n-base", help="The base model answers only the first N "
                                                "questions (it is the slow side). Default: all."),
           k: int = typer.Option(5, "-k", help="Sources retrieved per question."),
           mode: str = typer.Option("hybrid", help="Retrieval mode: dense, sparse or hybrid (the library's default)."),
           max_new_tokens: int = typer.Option(32, help="Answer budget in tokens."),
           model: Optional[str] = Model, batch_size: int = Batch, dtype: str = Dtype, seed: int = Seed):
    """End-to-end RAG QA: closed-book, RAG, oracle and gold-removed, with and without the answer adapter;
    F1, EM, citations, declines, latency."""
    import numpy as np
    import torch

    from unified_rag.rag import RETRIEVAL_MODES, UnifiedRAG

    from .rag_qa import run_rag_qa

    if mode not in RETRIEVAL_MODES:
        raise typer.BadParameter(f"use one of {', '.join(RETRIEVAL_MODES)}", param_hint="--mode")
    if adapter not in ("on", "off", "both"):
        raise typer.BadParameter("use on, off or both", param_hint="--adapter")
    chosen = [x.strip() for x in settings.split(",") if x.strip()]  # names and --set are checked by run_rag_qa
    for name, v in (("--n-questions", n_questions), ("-k", k), ("--max-new-tokens", max_new_tokens),
                    ("--n-base", 1 if n_base is None else n_base)):
        if v < 1:
            raise typer.BadParameter("must be at least 1", param_hint=name)
    _quiet(False)
    torch.manual_seed(seed)
    np.random.seed(seed)
    rag = UnifiedRAG.from_pretrained(model, embedder=embedder, dtype=dtype,
                                     generator_adapter=None if generator_adapter.lower() == "none" else generator_adapter)
    _finish(run_rag_qa(rag, data, qa_set=qa_set, n_questions=n_questions, n_unanswerable=n_unanswerable, k=k,
                       max_new_tokens=max_new_tokens, mode=mode, seed=seed, batch_size=batch_size, adapter=adapter,
                       settings=chosen, n_base=n_base), out, seed)


@app.command()
@_friendly
def calibrate(config: Optional[Path] = typer.Option(None, "--config", parser=path_arg,
                                                    help="Trainer config whose held-out pairs (val_examples) to use. "
                                                    "Default: the shipped adapter's, llm2vec-supervised-smollm2.json."),
              embedder: str = typer.Option("auto", "--embedder", "-e", help="The dense method of the hybrid."),
              out: Path = Out, n_docs: int = typer.Option(2000, help="Passages in the calibration corpus."),
              model: Optional[str] = Model, max_length: int = MaxLen, batch_size: int = Batch,
              cache_dir: Optional[Path] = Cache, dtype: str = Dtype, seed: int = Seed):
    """Hybrid fusion weight, calibrated on a trainer config's held-out training pairs (no evaluation set)."""
    from .calibration import calibrate_fusion, held_out_set

    if config is None:  # packaged with the trainers, so the default works from an installed wheel too
        import trainers

        config = Path(trainers.__file__).parent / "configs" / "llm2vec-supervised-smollm2.json"
    ds = held_out_set(config, n_docs=n_docs, seed=seed)
    methods = _setup(embedder, model, dtype, max_length, seed)
    if len(methods) != 1:
        raise typer.BadParameter("calibrate takes one dense method", param_hint="--embedder")
    _finish(calibrate_fusion(methods[0], ds, cache=cache_dir, batch_size=batch_size), out, seed)


@app.command()
@_friendly
def safety(embedder: str = Methods, out: Path = Out, data: Optional[Path] = Data, hf: Optional[str] = Hf,
           distractors: Optional[str] = typer.Option(None, help="Benign corpus: a BEIR dir or corpus.jsonl[.gz] (default: "
                                                     "../shared/data/distractors/general-domain.jsonl.gz), 'none', or a hub name "
                                                     "(McGill-NLP/AdvBench-IR-Small-Wiki-100)."),
           distractor_limit: Optional[int] = typer.Option(None, help="Use only the first N distractors."),
           teacher: str = Teacher,
           pooling: str = typer.Option("mean", help="Untrained-pooling method name for the headline."),
           model: Optional[str] = Model, max_length: int = MaxLen, batch_size: int = Batch,
           cache_dir: Optional[Path] = Cache, dtype: str = Dtype, n_queries: Optional[int] = NQ, seed: int = Seed):
    """AdvBench-IR harmful-content retrieval: top-k accuracy and any-harmful@k (lower is safer)."""
    from .safety import run_safety

    methods = _setup(embedder, model, dtype, max_length, seed)
    _finish(run_safety(methods, data, hf=hf, distractors=distractors, distractor_limit=distractor_limit,
                       n_queries=n_queries, teacher=teacher, pooling=pooling, cache=cache_dir,
                       batch_size=batch_size), out, seed)


@app.command()
@_friendly
def theoremqa(embedder: str = Methods, out: Path = Out, data: Optional[Path] = Data, model: Optional[str] = Model,
              max_length: int = MaxLen, batch_size: int = Batch, cache_dir: Optional[Path] = Cache,
              dtype: str = Dtype, teacher: str = Teacher, n_queries: Optional[int] = NQ,
              seed: int = Seed):
    """TheoremQA question -> theorem retrieval: the offline stand-in for BRIGHT (nDCG@10, recall@10)."""
    from .reasoning import run_theoremqa

    methods = _setup(embedder, model, dtype, max_length, seed)
    _finish(run_theoremqa(methods, data, teacher=teacher, n_queries=n_queries, cache=cache_dir,
                          batch_size=batch_size), out, seed)


@app.command()
@_friendly
def bright(embedder: str = Methods, out: Path = Out,
           corpus: Optional[Path] = typer.Option(None, parser=path_arg, help="Local BRIGHT corpus dir holding <domain>.jsonl[.gz]."),
           hf: Optional[str] = typer.Option(None, help="Hub name for the documents, e.g. xlangai/BRIGHT."),
           domains: Optional[str] = typer.Option(None, help="Comma list (default: all 12)."),
           topics: Optional[Path] = typer.Option(None, parser=path_arg, help="Topics and qrels dir (default ../shared/data/bright-topics)."),
           original_qrels: bool = typer.Option(False, help="Use the original qrels, not the .fixed ones."),
           model: Optional[str] = Model, max_length: int = MaxLen, batch_size: int = Batch,
           cache_dir: Optional[Path] = Cache, dtype: str = Dtype, teacher: str = Teacher,
           seed: int = Seed):
    """BRIGHT: nDCG@10 per domain and averaged; needs the BRIGHT corpus (local dir or hub)."""
    from .data import BRIGHT_DOMAINS
    from .reasoning import run_bright

    doms = tuple(d.strip() for d in domains.split(",")) if domains else BRIGHT_DOMAINS
    methods = _setup(embedder, model, dtype, max_length, seed)
    _finish(run_bright(methods, corpus, hf=hf, domains=doms, topics=topics, fixed=not original_qrels,
                       teacher=teacher, cache=cache_dir, batch_size=batch_size), out, seed)


@app.command()
@_friendly
def efficiency(embedder: str = typer.Option("auto,minilm", "--embedder", "-e", help="Methods whose encode "
                                            "throughput and memory to measure (dense only)."),
               out: Path = Out, model: Optional[str] = Model, max_length: int = MaxLen, batch_size: int = Batch,
               dtype: str = Dtype, n_docs: int = typer.Option(256, help="SciFact docs encoded per method."),
               n_queries: int = typer.Option(10, help="Questions for answer() latency."),
               max_new_tokens: int = typer.Option(64, help="Tokens generated per answer."),
               index_sizes: str = typer.Option("100000,1000000", help="Comma list of synthetic index sizes; '' skips."),
               seed: int = Seed):
    """Encode throughput + MFU, pipeline memory (3 layouts), answer latency, FAISS index scale: one run."""
    from .efficiency import run_efficiency

    _quiet(False)
    sizes = [int(s) for s in index_sizes.split(",") if s.strip()]
    _finish(run_efficiency(embedder, model=model, dtype=dtype, max_length=max_length, batch_size=batch_size,
                           n_docs=n_docs, n_queries=n_queries, max_new_tokens=max_new_tokens, index_sizes=sizes,
                           seed=seed), out, seed)


@app.command(name="index-scale")
@_friendly
def index_scale(out: Path = Out, sizes: str = typer.Option("100000,1000000", help="Comma list of index sizes."),
                kinds: str = typer.Option("flat,ivf,hnsw", help="Comma list of index kinds."),
                dim: int = typer.Option(576, help="Vector width (SmolLM2-135M's hidden size)."),
                ef_search: str = typer.Option("64,128,256,512,1024", help="HNSW efSearch values to sweep."),
                seed: int = Seed):
    """FAISS alone: build time, memory, queries/s and recall@10 per kind and size; HNSW recall vs efSearch."""
    from .efficiency import run_index_scale

    _quiet(False)
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
        efs = [int(s) for s in ef_search.split(",") if s.strip()]
    except ValueError:
        raise InputError("--sizes and --ef-search take comma lists of integers") from None
    kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
    if bad := [k for k in kind_list if k not in ("flat", "ivf", "hnsw")]:
        raise InputError(f"unknown index kind {bad[0]!r}: use flat, ivf or hnsw")
    _finish(run_index_scale(size_list, kind_list, dim, efs, seed=seed), out, seed)


@app.command(name="all")
@_friendly
def all_suites(embedder: str = Methods, out: Path = Out, model: Optional[str] = Model, max_length: int = MaxLen,
               batch_size: int = Batch, cache_dir: Optional[Path] = Cache, dtype: str = Dtype,
               efficiency_embedder: str = typer.Option("auto,minilm", help="Methods for the efficiency suite."),
               index_sizes: str = typer.Option("100000", help="Synthetic index sizes for the efficiency suite."),
               skip_efficiency: bool = typer.Option(False, help="Skip the efficiency suite."), seed: int = Seed):
    """SciFact, STS-B, AdvBench-IR, TheoremQA and efficiency, then the summary table (summary.md)."""
    from .reasoning import run_theoremqa
    from .report import summarise, write
    from .retrieval import run_beir, run_stsb
    from .safety import run_safety

    methods = _setup(embedder, model, dtype, max_length, seed)
    kw = dict(cache=cache_dir, batch_size=batch_size)
    for name, fn in (("scifact", lambda: run_beir(methods, **kw)), ("stsb", lambda: run_stsb(methods, **kw)),
                     ("safety", lambda: run_safety(methods, **kw)), ("theoremqa", lambda: run_theoremqa(methods, **kw))):
        _finish(fn(), out / name, seed)
    if not skip_efficiency:
        from .efficiency import run_efficiency

        sizes = [int(s) for s in index_sizes.split(",") if s.strip()]
        write(run_efficiency(efficiency_embedder, model=model, dtype=dtype, max_length=max_length,
                             batch_size=batch_size, index_sizes=sizes, seed=seed), out / "efficiency", seed=seed)
    typer.echo(summarise(out))


@app.command()
@_friendly
def summary(out: Path = typer.Argument(..., parser=path_arg, help="A dir holding suite results (scifact/, stsb/, ...).")):
    """Rebuild the method x suite table (summary.md) from results already written."""
    from .report import summarise

    typer.echo(summarise(out))


_PASS_THROUGH = dict(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)


@app.command(**_PASS_THROUGH)
@_friendly
def throughput(ctx: typer.Context):
    """Encode tokens/s against the matmul peak, plain HF beside the library, indexing overhead, KV reuse
    and batch-1 decoding (--decode N). Options: `unified-rag bench throughput --help`."""
    from .throughput import main

    main(ctx.args)


@app.command(**_PASS_THROUGH)
@_friendly
def scaleout(ctx: typer.Context):
    """Corpus encoding on Ray Data against one process. Options: `unified-rag bench scaleout --help`."""
    from .scaleout import main

    main(ctx.args)
