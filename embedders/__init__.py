"""Embedding methods over the shared backbone. Each is an `Embedder`; see base.py for the interface."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from unified_rag.backbone import DEFAULT_MODEL, Backbone
from unified_rag.errors import ModelLoadError

from .base import CONFIG_NAME, Embedder, EmbedderConfig
from .birecon import BiReconEmbedder
from .gem import GEMEmbedder
from .llm2vec import LLM2VecEmbedder
from .llm2vec_gen import LLM2VecGenConfig, LLM2VecGenEmbedder
from .pooling import LastTokenEmbedder, MeanPoolEmbedder

log = logging.getLogger(__name__)

EMBEDDERS: dict[str, type[Embedder]] = {
    "mean": MeanPoolEmbedder,
    "last": LastTokenEmbedder,
    "llm2vec-gen": LLM2VecGenEmbedder,
    "gem": GEMEmbedder,
    "llm2vec": LLM2VecEmbedder,
    "birecon": BiReconEmbedder,
}

ASSETS = Path(__file__).parent / "assets"
# What embedder="auto" gives on the default backbone: the best adapter that ships, as measured on
# SciFact (README, "Results"): LLM2Vec's supervised contrastive LoRA, trained on the real pairs.
# "mean-std" (standardised mean pooling, no training) was the default before it and stays for
# comparison. Other backbones fall back to untrained mean pooling.
AUTO_ADAPTER = {DEFAULT_MODEL: ASSETS / "smollm2-135m-instruct" / "llm2vec-supervised"}


def load_embedder(spec: str | os.PathLike | Embedder = "auto", backbone: Backbone | None = None) -> Embedder:
    """An embedder on `backbone`: "auto", a kind name ("mean", "last", "llm2vec-gen"), or an adapter dir."""
    if isinstance(spec, Embedder):
        if backbone is not None and spec.backbone is not backbone:
            raise ModelLoadError("the embedder was built on another Backbone object; pass that one, "
                                 "so that only one copy of the weights is in memory")
        return spec
    if backbone is None:
        raise ModelLoadError("load_embedder needs the shared backbone")
    spec = str(spec)
    if spec == "auto":
        adapter = AUTO_ADAPTER.get(backbone.name)
        if adapter is not None and (adapter / CONFIG_NAME).is_file():
            return Embedder.from_pretrained(adapter, backbone=backbone)
        log.info("no shipped adapter for %s: using untrained mean pooling", backbone.name)
        return MeanPoolEmbedder(backbone)
    if spec in EMBEDDERS:
        return EMBEDDERS[spec](backbone)
    if Path(spec).is_dir():
        return Embedder.from_pretrained(spec, backbone=backbone)
    raise ModelLoadError(f"unknown embedder {spec!r}: use 'auto', one of {sorted(EMBEDDERS)}, or an adapter dir")


__all__ = ["EMBEDDERS", "Embedder", "EmbedderConfig", "LLM2VecGenConfig", "LLM2VecGenEmbedder",
           "LastTokenEmbedder", "MeanPoolEmbedder", "load_embedder"]
