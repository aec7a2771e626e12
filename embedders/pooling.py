"""Untrained poolings of the backbone's last hidden layer: baselines and fallbacks.

Optional per-dimension standardisation: decoder LLM states carry a large shared component and a few
outlier dimensions that swamp cosine similarity. Subtracting a mean vector and dividing by a std
vector, both estimated once on unlabelled text, removes them (see README for the measured effect).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Embedder


class _PoolingEmbedder(Embedder):
    def __init__(self, backbone, config=None, **overrides):
        super().__init__(backbone, config, **overrides)
        self.feature_mean: torch.Tensor | None = None
        self.feature_std: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    @property
    def standardized(self) -> bool:
        return self.feature_mean is not None

    def pool(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def embed_batch(self, batch):
        hidden = self.backbone.hidden_states(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        pooled = self.pool(hidden.float(), batch)
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
    """Mean of the last-layer states over the text tokens (the instruction is left out)."""

    kind = "mean"

    def pool(self, hidden, batch):
        m = batch["text_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


class LastTokenEmbedder(_PoolingEmbedder):
    """Last-layer state of the final token: under causal attention it is the only one that saw everything."""

    kind = "last"

    def pool(self, hidden, batch):
        idx = self.last_index(batch["attention_mask"])
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
