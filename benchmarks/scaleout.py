"""Ray Data encoding against the in-process path, same machine, same documents, one run.

    python -m benchmarks.scaleout --docs 300 --actors 2 -o benchmarks/results/cpu-2core/scaleout

Each path indexes the first N and then the first 2N SciFact abstracts into a fresh index. The wall
time of N includes Ray's start-up and each actor's model load; the difference between 2N and N is
the steady cost of N more documents, from which the steady throughput is computed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def run(n_docs: int = 300, actors: int = 2, model=None, dtype: str = "auto", batch_size: int = 32) -> dict:
    import ray

    from embedders import load_embedder
    from unified_rag import UnifiedRAG
    from unified_rag.backbone import Backbone
    from unified_rag.ray_engine import add_documents_ray
    from unified_rag.readers import texts_as_documents

    from .data import scifact_texts

    texts, _ = scifact_texts(2 * n_docs)
    backbone = Backbone.from_pretrained(model, dtype=dtype)
    embedder = load_embedder("auto", backbone)  # one embedder for every run: the same adapter everywhere
    ray.init(num_cpus=None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    for engine in ("local", "ray"):
        for n in (n_docs, 2 * n_docs):
            rag = UnifiedRAG(backbone, embedder)
            t = time.perf_counter()
            if engine == "local":
                rag.add_texts(texts[:n], batch_size=batch_size, show_progress_bar=False)
            else:
                add_documents_ray(rag, texts_as_documents(texts[:n]), model=model, actors=actors,
                                  batch_size=batch_size, show_progress_bar=False)
            wall = time.perf_counter() - t
            rows.append(dict(engine=engine, docs=n, chunks=rag.index.ntotal, wall_s=wall, chunks_per_s=rag.index.ntotal / wall))
    ray.shutdown()
    steady = []
    for engine in ("local", "ray"):
        a, b = [r for r in rows if r["engine"] == engine]
        extra = b["chunks"] - a["chunks"]
        steady.append(dict(engine=engine, steady_chunks_per_s=extra / (b["wall_s"] - a["wall_s"]),
                           fixed_s=a["wall_s"] - a["chunks"] * (b["wall_s"] - a["wall_s"]) / extra))
    return dict(suite="scaleout", title="Ray Data encoding vs one process", main_metric="steady_chunks_per_s",
                methods={}, tables={"Runs": rows, "Steady state": steady},
                table_plots={"Runs": ("chunks_per_s", "engine")},
                notes=[f"auto on {backbone.name} in {str(backbone.dtype).removeprefix('torch.')}, SciFact abstracts, "
                       f"{actors} Ray actors (one backbone each) against one process; steady = (2N - N) chunks over "
                       "the wall-time difference; fixed = start-up (Ray, actor model loads) by extrapolation to 0"])


PROG = "unified-rag bench scaleout"


def main(argv=None) -> None:
    from .report import write

    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("-o", "--out", type=Path, required=True)
    a = ap.parse_args(argv)
    write(run(a.docs, a.actors, a.model, a.dtype), a.out, seed=0)
    print((a.out / "report.md").read_text())


if __name__ == "__main__":
    main()
