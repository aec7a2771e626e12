"""LLM2Vec (arXiv 2404.05961), inference side: bidirectional attention + LoRA + mean pooling.

Bidirectional attention is a custom 4-D mask handed to the unchanged model (see adapters.py), so
it applies to this embedder's forward only; generation on the same weights stays causal, and the
LoRA adapter (MNTP, then SimCSE) is on only while this embedder runs.
"""
from __future__ import annotations

from unified_rag.embedder import mean_pool

from .adapters import LoraEmbedder, LoraEmbedderConfig, additive_mask, bidirectional_allowed


class LLM2VecConfig(LoraEmbedderConfig):
    kind: str = "llm2vec"
    bidirectional: bool = True


class LLM2VecEmbedder(LoraEmbedder):
    kind = "llm2vec"
    config_class = LLM2VecConfig

    def mask(self, attention_mask):
        if not self.config.bidirectional:
            return None
        return additive_mask(bidirectional_allowed(attention_mask), self.backbone.dtype)

    def token_states(self, batch):
        return self.hidden(batch, self.mask(batch["attention_mask"]))

    def embed_batch(self, batch):
        return mean_pool(self.token_states(batch).float(), batch["text_mask"])  # the instruction is not pooled
