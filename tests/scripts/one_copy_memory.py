"""Run the whole pipeline in a fresh process and print memory figures as JSON (used by a test).

    one_copy_memory.py CORPUS.jsonl [one|two]

"two" is the control: the generator gets a second copy of the backbone, as the LLM2Vec-Gen reference
code lays it out, so the test can see what a second copy costs."""
import json
import gc
import sys


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak() -> None:
    """Start the peak (VmHWM) afresh, so that the transient of loading (the float32 cache file is
    read and cast to bf16) does not hide what the pipeline itself holds."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


import torch  # noqa: E402  (imported after the helpers so the baseline includes the libraries)

from unified_rag import Backbone, UnifiedRAG  # noqa: E402
from unified_rag.integrations.llama_index import UnifiedRAGEmbedding, UnifiedRAGLLM  # noqa: E402

import faiss  # noqa: E402,F401
import transformers  # noqa: E402,F401

def load() -> Backbone:
    """bf16, whatever `dtype="auto"` would pick here: a float32 load maps the cache file (mmap), and
    the kernel may drop those clean file pages from RSS under memory pressure at any moment, so
    'loaded' would undercount the weights. A bf16 load casts them into anonymous memory, which
    stays resident. The dtype does not change what is tested: how many copies the pipeline holds."""
    return Backbone.from_pretrained(dtype="bf16")


base = rss_mb()
backbone = load()
loaded = rss_mb()
second = load() if len(sys.argv) > 2 and sys.argv[2] == "two" else None
gc.collect()
held = rss_mb()  # everything loaded, nothing run yet: no activations or allocator caches to blur it
reset_peak()
rag = UnifiedRAG.from_pretrained(backbone)
if second is not None:
    from unified_rag import Generator

    rag.generator = Generator(second)
docs = [line for line in open(sys.argv[1]).read().splitlines()[:40]]
rag.add_documents([json.loads(d)["text"] for d in docs], show_progress_bar=False)
ans = rag.answer("What does the Kraft inequality state?", k=3, max_new_tokens=16)
emb = UnifiedRAGEmbedding.from_rag(rag, embedder="llm2vec-gen")
emb.get_text_embedding_batch(["one", "two"])
UnifiedRAGLLM.from_rag(rag, max_new_tokens=4).complete("Hi")
models = [rag.embedder.backbone.model, rag.generator.backbone.model, emb._embedder.backbone.model]
same = all([p.data_ptr() for p in m.parameters()] == [p.data_ptr() for p in models[0].parameters()] for m in models)
peak = peak_mb()
gc.collect()
print(json.dumps(dict(base_mb=base, loaded_mb=loaded, held_mb=held, peak_mb=peak, after_mb=rss_mb(), param_mb=backbone.param_bytes() / 2**20,
                      same_storage=same, answer=ans.text, n_threads=torch.get_num_threads())))
