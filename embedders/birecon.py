"""Bidirectional reconstruction (EBQ2D / EBD2Q, arXiv 2509.03020), inference side: LoRA on the shared
model and the last token's last-layer state. Training makes that state a one-token soft prompt from
which the model reconstructs the other side of a (query, passage) pair.
"""
from __future__ import annotations

import torch

from .adapters import LoraEmbedder, LoraEmbedderConfig


class BiReconConfig(LoraEmbedderConfig):
    kind: str = "birecon"


class BiReconEmbedder(LoraEmbedder):
    kind = "birecon"
    config_class = BiReconConfig

    def embed_batch(self, batch):
        h = self.hidden(batch)
        return h[torch.arange(h.shape[0], device=h.device), self.last_index(batch["attention_mask"])].float()
