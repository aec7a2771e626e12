"""The LlamaIndex wrappers on the tiny model: `formatted`, the generation config's budget, and async
methods that really leave the event loop free (real llama-index-core classes, no mocks)."""
import asyncio

import numpy as np

from tests.conftest import need_module
from unified_rag.generator import GenerationConfig

li = need_module("unified_rag.integrations.llama_index")


def test_formatted_prompt_skips_the_chat_template(tiny_backbone):
    llm = li.UnifiedRAGLLM(tiny_backbone, max_new_tokens=4)
    g, tok = llm._generator, tiny_backbone.tokenizer
    assert g.prompt_ids("Paris is", formatted=True) == tok("Paris is")["input_ids"]
    assert g.prompt_ids("Paris is") != g.prompt_ids("Paris is", formatted=True)
    assert llm.complete("Paris is", formatted=True).text == g.generate_ids(tok("Paris is")["input_ids"], 4)
    assert llm.complete("Paris is").text == g.complete("Paris is", 4)


def test_generation_config_budget_is_kept_unless_overridden(tiny_backbone):
    cfg = GenerationConfig(max_new_tokens=7)
    assert li.UnifiedRAGLLM(tiny_backbone, generation=cfg).metadata.num_output == 7
    assert li.UnifiedRAGLLM(tiny_backbone, generation=cfg, max_new_tokens=3).metadata.num_output == 3
    assert li.UnifiedRAGLLM(tiny_backbone).metadata.num_output == GenerationConfig().max_new_tokens


def _ticks_while(coro_fn):
    """Run coro_fn() while a ticker task counts how often the event loop gets control back."""
    async def main():
        ticks, done = [0], [False]

        async def ticker():
            while not done[0]:
                ticks[0] += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks[0]
        result = await coro_fn()
        done[0] = True
        await task
        return result, ticks[0] - before

    return asyncio.run(main())


def test_async_completion_runs_off_the_event_loop(tiny_backbone):
    llm = li.UnifiedRAGLLM(tiny_backbone, max_new_tokens=6)
    sync = llm.complete("Paris is").text
    res, ticks = _ticks_while(lambda: llm.acomplete("Paris is"))
    assert res.text == sync and ticks > 0  # an `async def` that calls the sync method would give 0

    async def streamed():
        parts = [p async for p in await llm.astream_complete("Paris is")]
        return parts

    parts, ticks = _ticks_while(streamed)
    assert parts and parts[-1].text.strip() == sync and "".join(p.delta for p in parts) == parts[-1].text and ticks > 0


def test_async_text_embeddings_are_one_batch(rag, monkeypatch):
    emb = li.UnifiedRAGEmbedding.from_rag(rag)
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    sync = np.array(emb.get_text_embedding_batch(texts))
    calls = []
    orig = emb._embedder.encode_documents
    monkeypatch.setattr(emb._embedder, "encode_documents", lambda t, **kw: calls.append(len(t)) or orig(t, **kw))
    out, ticks = _ticks_while(lambda: emb.aget_text_embedding_batch(texts))
    np.testing.assert_allclose(np.array(out), sync, rtol=1e-5, atol=1e-6)
    assert calls == [3] and ticks > 0
    q, _ = _ticks_while(lambda: emb.aget_query_embedding("alpha"))
    np.testing.assert_allclose(q, emb.get_query_embedding("alpha"), rtol=1e-5, atol=1e-6)


def test_llama_index_on_milvus_keeps_the_one_backbone_embedding(rag, tmp_path):
    """LlamaIndex's own Milvus vector store (embedded Milvus Lite), with our embedding: the engine
    holds the vectors, the shared backbone makes them."""
    need_module("llama_index.vector_stores.milvus")
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.vector_stores.milvus import MilvusVectorStore

    from tests.conftest import CORPUS
    from unified_rag.integrations.llama_index import UnifiedRAGEmbedding

    embed = UnifiedRAGEmbedding.from_rag(rag)
    store = MilvusVectorStore(uri=str(tmp_path / "milvus.db"), dim=rag.embedder.dim, overwrite=True)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in CORPUS], embed_model=embed,
                                            storage_context=StorageContext.from_defaults(vector_store=store))
    nodes = index.as_retriever(similarity_top_k=2).retrieve(CORPUS[2])
    assert nodes[0].text == CORPUS[2]
    assert embed._embedder is rag.embedder  # the rag's own embedder: no second model
