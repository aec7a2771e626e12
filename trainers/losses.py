"""The training losses, each a few lines. Embeddings are compared in float32 whatever the autocast.
`prefix_ce` alone runs the model: the reconstruction CE (LLM2Vec-Gen, BiRecon) from soft prefix tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unified_rag.batching import pad


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE; `labels` are already aligned with `logits`, -100 = ignored."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Row i of `a` should pick row i of `b` (b may hold extra rows: hard negatives) by cosine x scale.
    `exclude[i, j]` drops column j from row i's negatives: a duplicate of its own positive is no negative."""
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T * scale
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def cosine_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cos(student, teacher), averaged over the batch."""
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def prefix_ce(backbone, prefix: torch.Tensor, targets: list[str], max_tokens: int) -> torch.Tensor:
    """Teacher-forced CE of `targets` given soft prefix tokens [B, P, H] fed as inputs_embeds to the
    same causal LM. Targets are right-padded (the tokenizer's own padding side may be left)."""
    tok, model = backbone.tokenizer, backbone.model
    rows = [ids[:max_tokens] for ids in tok(targets, add_special_tokens=False)["input_ids"]]
    tgt, tmask = pad(rows, tok.pad_token_id, device=prefix.device)
    emb = model.get_input_embeddings()
    P = prefix.shape[1]
    inputs = torch.cat([prefix.to(emb.weight.dtype), emb(tgt)], 1)
    mask = torch.cat([torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device), tmask], 1)
    logits = model(inputs_embeds=inputs, attention_mask=mask, use_cache=False).logits
    return token_ce(logits[:, P - 1:-1], tgt.masked_fill(tmask == 0, -100))
