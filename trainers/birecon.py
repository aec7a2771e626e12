"""Bidirectional reconstruction trainer (EBQ2D / EBD2Q, arXiv 2509.03020).

Stage one (`recon_steps`): the last-token embedding of one side of a (query, passage) pair is fed as
ONE soft prefix token (inputs_embeds) and the same model, adapter on, reconstructs the other side
with teacher-forced CE: L = w_d2q * EBD2Q + w_q2d * EBQ2D (0.8 / 0.2). Stage two: InfoNCE with in-batch
negatives at temperature 0.02. Pairs: any .tsv (id<TAB>query<TAB>passage) or .jsonl with query and
passage (or response) fields; the offline default is the LLM2Vec-Gen run's responses.jsonl.
"""
from __future__ import annotations

import os
from pathlib import Path

from embedders.birecon import BiReconEmbedder

from .common import LoraTrainConfig, Method, info_nce, lora_options, prefix_ce, read_pairs, run_method, subsample


class BiReconTrainConfig(LoraTrainConfig):
    data: list[Path] = [Path("runs/llm2vec-gen-smollm2/responses.jsonl")]
    recon_steps: int = 500
    w_d2q: float = 0.8
    w_q2d: float = 0.2
    temperature: float = 0.02


class BiReconMethod(Method):
    name = "birecon"

    def __init__(self, backbone, cfg: BiReconTrainConfig):
        super().__init__(BiReconEmbedder(backbone, **lora_options(cfg)))
        self.cfg = cfg

    def forward(self, examples, gen, step):
        e, eos = self.emb, self.backbone.tokenizer.eos_token
        qs, ps = [x[1] for x in examples], [x[2] for x in examples]
        eq = e.embed_batch(self.batch(qs, e.config.query_instruction))
        ep = e.embed_batch(self.batch(ps, e.config.document_instruction))
        if step >= self.cfg.recon_steps:
            loss = info_nce(eq, ep, 1.0 / self.cfg.temperature)
            return loss, {"nce": loss.item()}
        with e.adapter_active():
            d2q = prefix_ce(self.backbone, ep.unsqueeze(1), [q + eos for q in qs], self.cfg.max_length)
            q2d = prefix_ce(self.backbone, eq.unsqueeze(1), [p + eos for p in ps], self.cfg.max_length)
        loss = self.cfg.w_d2q * d2q + self.cfg.w_q2d * q2d
        return loss, {"d2q": d2q.item(), "q2d": q2d.item()}


def run(cfg: BiReconTrainConfig, out: str | os.PathLike) -> Path:
    rows = subsample(read_pairs(cfg.data), cfg.max_examples, cfg.seed)
    return run_method(cfg, out, "birecon", rows, lambda b: BiReconMethod(b, cfg))
