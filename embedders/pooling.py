"""Untrained poolings of the backbone's hidden states: baselines and fallbacks.

Optional per-dimension standardisation: decoder LLM states carry a large shared component and a few
outlier dimensions that swamp cosine similarity. Subtracting a mean vector and dividing by a std
vector, both estimated once on unlabelled text, removes them (see README for the measured effect).

`layers` picks which hidden layers to pool (default: the last). Early layers of a decoder can pool
better than the last, which is shaped for predicting the next token; several layers are concatenated,
and standardisation then puts them on one scale.

`query_frame="chat"` frames each query as the opening of the generator's question-first RAG prompt
(system turn, then "Question: " and the query) instead of the instruction line. These embedders run
the untouched backbone with causal attention, so a query's pass is then exactly the prefill of the
prompt's first tokens, and `answer()` reuses its KV cache (`encode_query_with_kv`).
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

from unified_rag.errors import InputError
from unified_rag.generator import SYSTEM_PROMPT, KVPrefix, question_head_ids
from unified_rag.types import check_texts

from unified_rag.embedder import Embedder, EmbedderConfig, last_token, mean_pool

_CHAT = "\x00chat-frame\x00"  # the instruction value that asks frame() for the chat opening


class PoolingConfig(EmbedderConfig):
    # Hidden layers to pool: 0 is the token embeddings, the model's layer count the last (normed).
    # Several are pooled one by one and concatenated. None: the last layer alone.
    layers: list[int] | None = None
    query_frame: Literal["instruction", "chat"] = "instruction"
    system_prompt: str = SYSTEM_PROMPT  # the generator's, for query_frame="chat"


class _PoolingEmbedder(Embedder):
    config_class = PoolingConfig

    def __init__(self, backbone, config=None, **overrides):
        super().__init__(backbone, config, **overrides)
        n = backbone.model.config.num_hidden_layers
        layers = self.config.layers
        if layers is not None and (not layers or any(not 0 <= i <= n for i in layers) or len(set(layers)) < len(layers)):
            raise InputError(f"layers must be distinct indices in 0..{n} for {backbone.name}, got {layers}")
        self.feature_mean: torch.Tensor | None = None
        self.feature_std: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size * len(self.config.layers or [None])

    def config_key(self) -> str:
        # Without the later options at their defaults: indexes saved before them keep their fingerprint.
        c = self.config
        later = {"layers": c.layers is None, "query_frame": c.query_frame == "instruction",
                 "system_prompt": c.query_frame == "instruction"}
        return c.model_dump_json(exclude={k for k, default in later.items() if default})

    # --- the chat frame, and the KV its query pass leaves -----------------------------------------
    @property
    def reuses_kv(self) -> bool:
        return self.config.query_frame == "chat"

    def frame(self, instruction):
        if instruction == _CHAT:
            return question_head_ids(self.backbone.tokenizer, self.config.system_prompt), []
        return super().frame(instruction)

    def encode_queries(self, texts, **kw) -> np.ndarray:
        if self.reuses_kv:
            kw.setdefault("instruction", _CHAT)
        return super().encode_queries(texts, **kw)

    def query_budget(self) -> int:
        return self.text_budget(_CHAT if self.reuses_kv else self.config.query_instruction)

    @torch.inference_mode()
    def encode_query_with_kv(self, query: str) -> tuple[np.ndarray, KVPrefix]:
        """One query's unit vector, as `encode_queries` gives it, and the KV cache of its pass: the
        prefill of a question-first RAG prompt's first tokens (`Generator.rag_prompt(prefix=)`)."""
        if not self.reuses_kv:
            raise InputError("KV reuse needs query_frame='chat': this embedder frames queries with an instruction")
        check_texts([query], "query")
        items = self.tokenize([query], _CHAT, warn=False)
        batch = self.collate(items)
        hidden, cache = self.backbone.hidden_states(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                                    layers=self.config.layers, return_cache=True)
        vec = torch.nn.functional.normalize(self._pooled(hidden, batch), dim=-1)
        return vec[0].cpu().numpy(), KVPrefix(tuple(items[0][0]), cache)

    @property
    def standardized(self) -> bool:
        return self.feature_mean is not None

    def pool(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def embed_batch(self, batch):
        hidden = self.backbone.hidden_states(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                             layers=self.config.layers)
        return self._pooled(hidden, batch)

    def _pooled(self, hidden, batch) -> torch.Tensor:
        pooled = (self.pool(hidden.float(), batch) if self.config.layers is None
                  else torch.cat([self.pool(h.float(), batch) for h in hidden], -1))
        if self.standardized:
            pooled = (pooled - self.feature_mean.to(pooled.device)) / self.feature_std.to(pooled.device)
        return pooled

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != (self.dim,) or std.shape != (self.dim,):
            raise ValueError(f"standardisation vectors must have shape ({self.dim},)")
        self.feature_mean, self.feature_std = mean.float().cpu(), std.float().clamp(min=1e-6).cpu()

    def fit_standardization(self, texts: Sequence[str], *, instruction: str | None = None,
                            batch_size: int = 32, show_progress_bar: bool | None = None):
        """Estimate the mean and std vectors from unlabelled texts (e.g. ../shared/data/train-queries)."""
        saved, self.feature_mean, self.feature_std = (self.feature_mean, self.feature_std), None, None
        try:
            feats = torch.from_numpy(self.encode(texts, instruction=instruction, batch_size=batch_size,
                                                 normalize=False, show_progress_bar=show_progress_bar))
        except BaseException:
            self.feature_mean, self.feature_std = saved
            raise
        self.set_standardization(feats.mean(0), feats.std(0))
        return self

    def adapter_state(self):
        if not self.standardized:
            return {}
        return {"feature_mean": self.feature_mean.contiguous(), "feature_std": self.feature_std.contiguous()}

    def load_adapter_state(self, state):
        if set(state) - {"feature_mean", "feature_std"}:
            raise ValueError(f"unexpected tensors {sorted(set(state))}")
        if state:
            self.set_standardization(state["feature_mean"], state["feature_std"])


class MeanPoolEmbedder(_PoolingEmbedder):
    """Mean of the states over the text tokens (the instruction is left out)."""

    kind = "mean"

    def pool(self, hidden, batch):
        return mean_pool(hidden, batch["text_mask"])


class LastTokenEmbedder(_PoolingEmbedder):
    """State of the final token: under causal attention it is the only one that saw everything."""

    kind = "last"

    def pool(self, hidden, batch):
        return last_token(hidden, batch["attention_mask"])
