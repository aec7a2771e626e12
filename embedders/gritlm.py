"""GritLM (arXiv 2402.09906): one model that embeds with bidirectional attention and generates causally.

Loads a published GritLM checkpoint (e.g. `GritLM/GritLM-7B`) as a plain Mistral through the shared
Backbone: no remote code, one copy of the weights. Matches the official `gritlm.GritLM.encode`
(tests/fixtures/published/gritlm, recorded with gritlm 1.0.2):

- the text follows GritLM's instruction frame with BOS: `<s><|user|>\\n{task}\\n<|embed|>\\n{text}` for a
  query task, `<s><|embed|>\\n{text}` for documents (`instruction=""` or None);
- every real token attends to every other (a 4-D mask on the unchanged model; generation stays causal);
- the mean of the last hidden states over the text's tokens only: the frame is attended to, not pooled;
- L2-normalised (encode's default).

Unlike the official code, text that tokenizes to nothing is an InputError, not a NaN vector.
"""
from __future__ import annotations

from unified_rag.embedder import Embedder, EmbedderConfig, mean_pool

from .adapters import additive_mask, bidirectional_allowed, positions


def gritlm_instruction(task: str | None) -> str:
    """GritLM's frame: `<|user|>\\n{task}\\n<|embed|>\\n`, or `<|embed|>\\n` with no task (documents)."""
    return f"<|user|>\n{task}\n<|embed|>\n" if task else "<|embed|>\n"


class GritLMConfig(EmbedderConfig):
    kind: str = "gritlm"
    # The task GritLM's README uses for retrieval queries; documents take the bare embed frame.
    query_instruction: str | None = "Given a question, retrieve passages that answer it"
    document_instruction: str | None = None


class GritLMEmbedder(Embedder):
    kind = "gritlm"
    config_class = GritLMConfig

    @classmethod
    def claims_backbone(cls, backbone) -> bool:
        """A GritLM config's auto_map names its modeling file (never run here: the stock model is)."""
        cfg = backbone.model.config
        named = [*(getattr(cfg, "auto_map", None) or {}).values(), *(getattr(cfg, "architectures", None) or [])]
        return any("gritlm" in str(n).lower() for n in named)

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    def frame(self, instruction):
        head = self.backbone.tokenizer(gritlm_instruction(instruction), add_special_tokens=True)["input_ids"]
        return list(head), []

    def embed_batch(self, batch):
        am = batch["attention_mask"]
        mask = additive_mask(bidirectional_allowed(am), self.backbone.dtype)
        hidden = self.backbone.hidden_states(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions(am))
        return mean_pool(hidden.float(), batch["text_mask"])
