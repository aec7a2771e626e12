"""LLM2Vec trainer (arXiv 2404.05961): bidirectional attention, MNTP, then SimCSE or the supervised stage.

One LoRA adapter on the shared model:
1. MNTP for `mntp_steps`: `mask_prob` of the text tokens are picked; as in the reference, 80% of them
   become the mask token, 10% a random token and 10% stay, and token i is predicted from the output
   at position i-1.
2. Then, for the remaining steps, either unsupervised SimCSE (two dropout views of each text are
   positives, cosine x 20) or, when `pairs` are given, the supervised contrastive stage on real
   (query, passage) pairs (trainers/contrastive.py).
Attention is bidirectional through the embedder's 4-D mask; `bidirectional: false` keeps it causal.

Deviation: the reference merges the MNTP LoRA into the weights and starts a new LoRA for the second
stage. Here the second stage continues the same adapter, so the shipped embedder stays one adapter
that the generator never sees; the two are the same function class (merged-A + new-B equals one
adapter of rank 2r at most), and the second stage starts where the first ended either way.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch

from embedders.llm2vec import LLM2VecEmbedder

from .config import LLM2VecTrainConfig, lora_options
from .contrastive import ContrastiveStage, mine_bm25_negatives
from .data import read_pairs, read_texts, subsample
from .distributed import gather_rows
from .losses import info_nce, token_ce
from .method import Method
from .run import run_method


class LLM2VecMethod(Method):
    name = "llm2vec"

    def __init__(self, backbone, cfg: LLM2VecTrainConfig):
        super().__init__(LLM2VecEmbedder(backbone, bidirectional=cfg.bidirectional, **lora_options(cfg)))
        self.cfg = cfg
        tok = backbone.tokenizer
        mask_id = tok.convert_tokens_to_ids("_")  # the reference's mask for tokenizers without one
        self.mask_id = tok.mask_token_id or (mask_id if mask_id != tok.unk_token_id else tok.pad_token_id)
        self.supervised = ContrastiveStage(self.emb, cfg) if cfg.pairs else None

    def mntp_loss(self, texts, gen):
        b = self.batch(texts, self.emb.config.document_instruction)
        ids = b["input_ids"]
        draw = torch.rand((2, *ids.shape), generator=gen).to(ids.device)
        pick = (draw[0] < self.cfg.mask_prob) & b["text_mask"]
        pick[:, 0] = False  # position 0 has no predecessor
        if not pick.any():  # tiny batches: always predict at least one token
            row = int(b["text_mask"].sum(1).argmax())
            pick[row, b["text_mask"][row].nonzero()[-1]] = True
        random_ids = torch.randint(len(self.backbone.tokenizer), ids.shape, generator=gen).to(ids.device)
        corrupted = torch.where(draw[1] < 0.8, torch.full_like(ids, self.mask_id),
                                torch.where(draw[1] < 0.9, random_ids, ids))  # 80 / 10 / 10
        h = self.emb.token_states(dict(b, input_ids=torch.where(pick, corrupted, ids)))
        rows, cols = pick.nonzero(as_tuple=True)
        logits = self.model.get_output_embeddings()(h[rows, cols - 1])  # token i from position i-1
        return token_ce(logits.unsqueeze(0), ids[rows, cols].unsqueeze(0))

    @contextmanager
    def attention_dropout(self, p):
        mods = [m for m in self.model.modules() if hasattr(m, "attention_dropout")]
        saved = [m.attention_dropout for m in mods]
        for m in mods:
            m.attention_dropout = p
        try:
            yield
        finally:
            for m, s in zip(mods, saved):
                m.attention_dropout = s

    def simcse_loss(self, texts):
        b = self.batch(texts, self.emb.config.document_instruction)
        with self.attention_dropout(self.cfg.simcse_dropout):
            a, p = self.emb.embed_batch(b), self.emb.embed_batch(b)  # two dropout masks, one text
        return info_nce(gather_rows(a), gather_rows(p), self.cfg.simcse_scale)  # negatives: every process's texts

    def forward(self, examples, gen, step):
        texts = [x[2] if self.supervised else x[1] for x in examples]  # MNTP/SimCSE read passages of pairs
        if step < self.cfg.mntp_steps:
            loss = self.mntp_loss(texts, gen)
            return loss, {"mntp": loss.item()}
        if self.supervised is not None:
            return self.supervised(self.emb, examples)
        loss = self.simcse_loss(texts)
        return loss, {"simcse": loss.item()}

    def validate(self, examples):
        if self.supervised is not None:
            return self.supervised.validate(self.emb, examples)
        texts = [x[1] for x in examples]
        gen = torch.Generator().manual_seed(0)
        return {"mntp": self.mntp_loss(texts, gen).item()}


def load_rows(cfg: LLM2VecTrainConfig, out: Path | None = None) -> list:
    if not cfg.pairs:
        return subsample(read_texts(cfg.data), cfg.max_examples, cfg.seed)
    rows = subsample(read_pairs(cfg.pairs), cfg.max_examples, cfg.seed)
    if cfg.hard_negatives == "bm25":  # mined once per run dir: a resume reads the same negatives back
        rows = mine_bm25_negatives(rows, cfg.negative_margin, cache=out / "negatives.json" if out else None,
                                   teacher=cfg.teacher)
    return rows


def run(cfg: LLM2VecTrainConfig, out: str | os.PathLike) -> Path:
    Path(out).mkdir(parents=True, exist_ok=True)
    return run_method(cfg, out, "llm2vec", load_rows(cfg, Path(out)), lambda b: LLM2VecMethod(b, cfg))
