"""GEM (arXiv 2506.04344), inference side: k learned special tokens after the text; the embedding
is the mean of their last-layer states. Each special token sees the text and itself, not the other
special tokens (the mask the model was trained with, see adapters.gem_allowed).

GEM's point is one model that still generates. With LoRA (default) its adapter is on only inside
its own forward, like every adapter here (adapters.py), so building or using it never changes the
generator's or another embedder's output. `generate_with_adapter` (default True) says that answers
should come from the GEM weights too: whoever generates enters `generation()` around that call
(`with emb.generation(): generator.generate_ids(...)`), which switches the adapter on for it alone.
The trainer reports perplexity before and after that way. With lora_r = 0 (full fine-tuning) the
shared weights themselves change, and so does every generation.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from .adapters import LoraEmbedder, LoraEmbedderConfig, additive_mask, fresh_token_rows, gem_allowed


class GEMConfig(LoraEmbedderConfig):
    kind: str = "gem"
    num_special_tokens: int = 1
    generate_with_adapter: bool = True
    query_instruction: str | None = None


class GEMEmbedder(LoraEmbedder):
    kind = "gem"
    config_class = GEMConfig

    def __init__(self, backbone, config=None, **overrides):
        super().__init__(backbone, config, **overrides)
        self.n_special = self.config.num_special_tokens
        self.special_embeddings = torch.nn.Parameter(fresh_token_rows(backbone, self.n_special, self.config.init_seed)
                                                     .to(backbone.device))

    def generation(self) -> AbstractContextManager:
        """Enter around a generate call to generate with the GEM weights (when `generate_with_adapter`):
        the adapter is on for that call only, and every switch is restored when it ends."""
        return self.adapter_active() if self.config.generate_with_adapter else nullcontext()

    def mask(self, batch):
        am = batch["attention_mask"]
        start = batch["special_mask"].float().argmax(-1)  # the specials sit right after each row's text
        k = torch.full_like(start, self.n_special)
        return additive_mask(gem_allowed(am, start, k), self.backbone.dtype)

    def embed_batch(self, batch):
        h = self.hidden(batch, self.mask(batch), rows=self.special_embeddings)
        B = h.shape[0]
        return h[batch["special_mask"]].view(B, self.n_special, -1).float().mean(1)
