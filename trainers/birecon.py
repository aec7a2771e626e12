"""Bidirectional reconstruction trainer (EBQ2D / EBD2Q, arXiv 2509.03020).

Stage one (`recon_steps`): the embedding of one side of a (query, passage) pair, the state of the EOS
token appended after its text (embedders/birecon.py), is fed as ONE soft prefix token (inputs_embeds)
and the same model, adapter on, reconstructs the other side with teacher-forced CE:
L = w_d2q * EBD2Q + w_q2d * EBQ2D (0.8 / 0.2). Stage two: the shared supervised contrastive stage
(trainers/contrastive.py: in-batch and optional hard negatives, duplicate positives masked) at the
paper's temperature 0.02. `validate` scores held-out pairs on both: reconstruction CE and in-batch InfoNCE
and accuracy. Pairs: any .tsv (id<TAB>query<TAB>passage) or .jsonl with query and passage (or
response) fields, such as the responses.jsonl an LLM2Vec-Gen run writes (no default: runs/ is not shipped).
"""
from __future__ import annotations

import os
from pathlib import Path

from embedders.birecon import BiReconEmbedder
from unified_rag.errors import InputError

from .config import BiReconTrainConfig, lora_options
from .contrastive import ContrastiveStage
from .data import read_pairs, subsample
from .losses import prefix_ce
from .method import Method
from .run import run_method


class BiReconMethod(Method):
    name = "birecon"

    def __init__(self, backbone, cfg: BiReconTrainConfig):
        super().__init__(BiReconEmbedder(backbone, **lora_options(cfg)))
        self.cfg = cfg
        self.stage = ContrastiveStage(self.emb, cfg)

    def embed_pairs(self, examples):
        e = self.emb
        qs, ps = [x[1] for x in examples], [x[2] for x in examples]
        eq = e.embed_batch(self.batch(qs, e.config.query_instruction))
        ep = e.embed_batch(self.batch(ps, e.config.document_instruction))
        return qs, ps, eq, ep

    def recon_losses(self, qs, ps, eq, ep):
        eos = self.backbone.tokenizer.eos_token
        with self.emb.adapter_active():
            d2q = prefix_ce(self.backbone, ep.unsqueeze(1), [q + eos for q in qs], self.cfg.max_length)
            q2d = prefix_ce(self.backbone, eq.unsqueeze(1), [p + eos for p in ps], self.cfg.max_length)
        return d2q, q2d

    def forward(self, examples, gen, step):
        if step >= self.cfg.recon_steps:
            return self.stage(self.emb, examples)
        qs, ps, eq, ep = self.embed_pairs(examples)
        d2q, q2d = self.recon_losses(qs, ps, eq, ep)
        loss = self.cfg.w_d2q * d2q + self.cfg.w_q2d * q2d
        return loss, {"d2q": d2q.item(), "q2d": q2d.item()}

    def validate(self, examples):
        """Both stages' scores on held-out pairs: reconstruction CE each way (training-sized batches),
        and the contrastive stage's InfoNCE and accuracy over all held-out pairs at once."""
        bs, sums = self.cfg.batch_size, {"d2q": 0.0, "q2d": 0.0}
        for i in range(0, len(examples), bs):
            d2q, q2d = self.recon_losses(*self.embed_pairs(examples[i:i + bs]))
            sums["d2q"] += d2q.item() * len(examples[i:i + bs])
            sums["q2d"] += q2d.item() * len(examples[i:i + bs])
        return {**{k: v / len(examples) for k, v in sums.items()}, **self.stage.validate(self.emb, examples)}


def run(cfg: BiReconTrainConfig, out: str | os.PathLike) -> Path:
    if not cfg.data:
        raise InputError("birecon trains on (query, response) pairs: give --data, e.g. the responses.jsonl that "
                         "`unified-rag train llm2vec-gen ... --out runs/llm2vec-gen-smollm2` writes into its run dir")
    rows = subsample(read_pairs(cfg.data), cfg.max_examples, cfg.seed)
    return run_method(cfg, out, "birecon", rows, lambda b: BiReconMethod(b, cfg))
