"""Bidirectional reconstruction (EBQ2D / EBD2Q, arXiv 2509.03020), inference side: LoRA on the shared
model, the tokenizer's EOS appended after the text, and that EOS token's last-layer state as the
embedding (the paper's anchor). Training makes that state a one-token soft prompt from which the
model reconstructs the other side of a (query, passage) pair.
"""
from __future__ import annotations


from unified_rag.embedder import last_token
from unified_rag.errors import ModelLoadError

from .adapters import LoraEmbedder, LoraEmbedderConfig


class BiReconConfig(LoraEmbedderConfig):
    kind: str = "birecon"


class BiReconEmbedder(LoraEmbedder):
    kind = "birecon"
    config_class = BiReconConfig

    def frame(self, instruction):
        head, _ = super().frame(instruction)
        eos = self.backbone.tokenizer.eos_token_id
        if eos is None:
            raise ModelLoadError("birecon embeds the EOS token's state, and this tokenizer has no EOS token")
        return head, [eos]  # never truncated: tokenize() cuts the text, not the frame

    def embed_batch(self, batch):
        h = self.hidden(batch)  # the EOS closes every row, so it is the last real token
        return last_token(h, batch["attention_mask"]).float()
