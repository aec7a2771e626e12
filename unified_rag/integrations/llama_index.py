"""LlamaIndex integration: an embedding model and an LLM that share one `Backbone`.

    rag = UnifiedRAG.from_pretrained()
    Settings.embed_model = UnifiedRAGEmbedding.from_rag(rag)
    Settings.llm = UnifiedRAGLLM.from_rag(rag)
    retriever = UnifiedRAGRetriever(rag, k=5, mode="hybrid")   # this library's own index, as a retriever
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Iterator, Optional

from unified_rag.errors import require

require("llama_index.core", "llama-index", "the LlamaIndex integration")
from llama_index.core.base.llms.types import (  # noqa: E402
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.embeddings import BaseEmbedding  # noqa: E402
from llama_index.core.llms import CustomLLM  # noqa: E402
from llama_index.core.llms.callbacks import llm_completion_callback  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from unified_rag.backbone import Backbone
from unified_rag.embedder import Embedder, load_embedder
from unified_rag.generator import GenerationConfig, Generator


def _backbone_of(source) -> Backbone:
    from unified_rag.rag import UnifiedRAG

    if isinstance(source, UnifiedRAG):
        return source.backbone
    if isinstance(source, Embedder):
        return source.backbone
    if isinstance(source, Backbone):
        return source
    raise TypeError(f"expected a UnifiedRAG, Backbone or Embedder, got {type(source).__name__}")


class UnifiedRAGEmbedding(BaseEmbedding):
    """A llama-index embedding model backed by a unified-rag embedder (queries get the query instruction)."""

    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Embedder, **kw: Any):
        kw.setdefault("model_name", f"unified-rag/{embedder.backbone.name}/{embedder.kind}")
        super().__init__(**kw)
        self._embedder = embedder

    @classmethod
    def from_rag(cls, source, embedder: str | Embedder | None = None, **kw) -> UnifiedRAGEmbedding:
        from unified_rag.rag import UnifiedRAG

        if embedder is None and isinstance(source, UnifiedRAG):
            return cls(source.embedder, **kw)
        if embedder is None and isinstance(source, Embedder):
            return cls(source, **kw)
        return cls(load_embedder(embedder or "auto", _backbone_of(source)), **kw)

    @classmethod
    def class_name(cls) -> str:
        return "UnifiedRAGEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.encode_queries([query], show_progress_bar=False)[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.encode_documents([text], show_progress_bar=False)[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.encode_documents(texts, batch_size=self.embed_batch_size).tolist()

    # Async: the forward runs in a worker thread (torch releases the GIL), so the event loop stays free.
    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)  # one batched encode, not one per text


class UnifiedRAGLLM(CustomLLM):
    """A llama-index LLM that generates with the shared backbone. A prompt gets the model's chat
    template unless `formatted=True` says it is already the model's own text."""

    max_new_tokens: Optional[int] = Field(None, description="Overrides the generation config's max_new_tokens.")
    _generator: Generator = PrivateAttr()

    def __init__(self, backbone: Backbone, generation: GenerationConfig | dict | None = None, **kw: Any):
        super().__init__(**kw)
        cfg = GenerationConfig.model_validate(generation or {})
        if self.max_new_tokens is not None:
            cfg = cfg.model_copy(update={"max_new_tokens": self.max_new_tokens})
        self._generator = Generator(backbone, cfg)

    @classmethod
    def from_rag(cls, source, **kw) -> UnifiedRAGLLM:
        from unified_rag.rag import UnifiedRAG

        if isinstance(source, UnifiedRAG):
            kw.setdefault("generation", source.generator.config)
        return cls(_backbone_of(source), **kw)

    @classmethod
    def class_name(cls) -> str:
        return "UnifiedRAGLLM"

    @property
    def metadata(self) -> LLMMetadata:
        b = self._generator.backbone
        return LLMMetadata(context_window=b.max_length, num_output=self._generator.config.max_new_tokens,
                           model_name=f"unified-rag/{b.name}", is_chat_model=False)

    def _complete(self, prompt: str, formatted: bool, max_new_tokens: int | None) -> CompletionResponse:
        g = self._generator
        return CompletionResponse(text=g.generate_ids(g.prompt_ids(prompt, formatted), max_new_tokens))

    def _stream(self, prompt: str, formatted: bool, max_new_tokens: int | None) -> Iterator[CompletionResponse]:
        g, text = self._generator, ""
        for delta in g.stream_ids(g.prompt_ids(prompt, formatted), max_new_tokens):
            text += delta
            yield CompletionResponse(text=text, delta=delta)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        return self._complete(prompt, formatted, kw.get("max_new_tokens"))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponseGen:
        return self._stream(prompt, formatted, kw.get("max_new_tokens"))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        return await asyncio.to_thread(self._complete, prompt, formatted, kw.get("max_new_tokens"))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponseAsyncGen:
        parts = self._stream(prompt, formatted, kw.get("max_new_tokens"))

        async def gen() -> AsyncIterator[CompletionResponse]:
            done = object()
            while (part := await asyncio.to_thread(next, parts, done)) is not done:  # each token off the loop
                yield part

        return gen()


class UnifiedRAGRetriever(BaseRetriever):
    """A llama-index retriever over a UnifiedRAG index, in any of its modes (dense, sparse, hybrid)."""

    def __init__(self, rag, k: int = 5, mode: str | None = None, **kw: Any):
        from unified_rag.rag import DEFAULT_RETRIEVAL, RETRIEVAL_MODES

        mode = DEFAULT_RETRIEVAL if mode is None else mode
        if mode not in RETRIEVAL_MODES:
            from unified_rag.errors import InputError

            raise InputError(f"mode must be one of {', '.join(RETRIEVAL_MODES)}, got {mode!r}")
        super().__init__(**kw)
        self._rag, self._k, self._mode = rag, k, mode

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._rag.retrieve(query_bundle.query_str, k=min(self._k, self._rag.index.ntotal), mode=self._mode)
        return [NodeWithScore(node=TextNode(text=h.text, id_=f"{h.doc_id}#{h.chunk_index}",
                                            metadata={"doc_id": h.doc_id, "source": h.source, **h.metadata}),
                              score=h.score) for h in hits]
