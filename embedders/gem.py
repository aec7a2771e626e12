"""GEM (arXiv 2506.04344), inference side: k learned special tokens after the text; the embedding
is the mean of their last-layer states. Each special token sees the text and itself, not the other
special tokens (the mask the model was trained with, see adapters.gem_allowed).

GEM's point is one model that still generates. With LoRA (default) and `generate_with_adapter`
(default True) the adapter is left switched on in the shared model, so generation uses the GEM
weights too; the trainer reports perplexity before and after. Set it False to keep generation on
the base weights. With lora_r = 0 (full fine-tuning) the shared weights themselves change.
"""
from __future__ import annotations

import torch

from .adapters import LoraEmbedder, LoraEmbedderConfig, _tuner_layers, additive_mask, fresh_token_rows, gem_allowed


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
        if self.config.lora_r > 0 and self.config.generate_with_adapter:
            self.use_for_generation()

    def use_for_generation(self) -> None:
        """Leave this adapter on in the shared model outside embedding calls as well."""
        grads = [(p, p.requires_grad) for p in self.backbone.model.parameters()]
        for m in _tuner_layers(self.backbone.model):
            if self.adapter_name in m._get_available_adapters():
                m.enable_adapters(True)
                m.set_adapter(self.adapter_name)
        for p, g in grads:
            p.requires_grad_(g)

    def mask(self, batch):
        am = batch["attention_mask"]
        start = batch["special_mask"].float().argmax(-1)  # the specials sit right after each row's text
        k = torch.full_like(start, self.n_special)
        return additive_mask(gem_allowed(am, start, k), self.backbone.dtype)

    def embed_batch(self, batch):
        h = self.hidden(batch, self.mask(batch), rows=self.special_embeddings)
        B = h.shape[0]
        return h[batch["special_mask"]].view(B, self.n_special, -1).float().mean(1)
