"""LLM2Vec trainer (arXiv 2404.05961): bidirectional attention, then MNTP, then unsupervised SimCSE.

One LoRA adapter on the shared model, trained first with MNTP for `mntp_steps` (mask `mask_prob` of
the text tokens; token i is predicted from the output at position i-1, as the reference does for
decoders), then with SimCSE for the remaining steps (two dropout views of each text are positives,
the rest of the batch negatives, cosine x 20). Attention is bidirectional through the embedder's
4-D mask in both stages.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch

from embedders.llm2vec import LLM2VecEmbedder

from .common import LoraTrainConfig, Method, info_nce, lora_options, read_texts, run_method, subsample, token_ce


class LLM2VecTrainConfig(LoraTrainConfig):
    mntp_steps: int = 500
    mask_prob: float = 0.2
    simcse_scale: float = 20.0
    simcse_dropout: float = 0.1  # attention dropout during SimCSE: the source of the two views


class LLM2VecMethod(Method):
    name = "llm2vec"

    def __init__(self, backbone, cfg: LLM2VecTrainConfig):
        super().__init__(LLM2VecEmbedder(backbone, **lora_options(cfg)))
        self.cfg = cfg
        tok = backbone.tokenizer
        mask_id = tok.convert_tokens_to_ids("_")  # the reference's mask for tokenizers without one
        self.mask_id = tok.mask_token_id or (mask_id if mask_id != tok.unk_token_id else tok.pad_token_id)

    def mntp_loss(self, texts, gen):
        b = self.batch(texts, self.emb.config.document_instruction)
        ids = b["input_ids"]
        pick = (torch.rand(ids.shape, generator=gen) < self.cfg.mask_prob).to(ids.device) & b["text_mask"]
        pick[:, 0] = False  # position 0 has no predecessor
        if not pick.any():  # tiny batches: always predict at least one token
            row = int(b["text_mask"].sum(1).argmax())
            pick[row, b["text_mask"][row].nonzero()[-1]] = True
        masked = dict(b, input_ids=ids.masked_fill(pick, self.mask_id))
        h = self.emb.token_states(masked)
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
        return info_nce(a, p, self.cfg.simcse_scale)

    def forward(self, examples, gen, step):
        texts = [x[1] for x in examples]
        if step < self.cfg.mntp_steps:
            loss = self.mntp_loss(texts, gen)
            return loss, {"mntp": loss.item()}
        loss = self.simcse_loss(texts)
        return loss, {"simcse": loss.item()}


def run(cfg: LLM2VecTrainConfig, out: str | os.PathLike) -> Path:
    rows = subsample(read_texts(cfg.data), cfg.max_examples, cfg.seed)
    return run_method(cfg, out, "llm2vec", rows, lambda b: LLM2VecMethod(b, cfg))
