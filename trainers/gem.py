"""GEM trainer (arXiv 2506.04344): teach a decoder to summarise a text into k special tokens while it
keeps generating.

Per text, with probability p_ntp plain next-token prediction; otherwise k special tokens are inserted
at a random position and the suffix may see the prefix only through them (mask: adapters.gem_allowed),
so predicting the suffix forces the specials to carry the prefix. Special positions are never targets.
From step `cl_start` on, the paper's mixed loss

    L = (1 - alpha) * NTP + alpha * CL,   0 <= alpha < 1

keeps the NTP term (GEM must still generate) beside InfoNCE on the special-token states: the
positive is the same text under prefix dropout (each text token dropped with prob `prefix_dropout`),
the negatives the rest of the batch, with a learnable temperature starting at log 20, clamped to
[0, log 100]. Before `cl_start`, NTP alone. LoRA by default; lora_r = 0 fine-tunes every shared weight.
With `pairs` (real query -> passage pairs), NTP reads the passages and CL is the shared supervised
contrastive stage (trainers/contrastive.py): real positives instead of dropout copies, which are too
easy for short texts (the first SmolLM2 run's CL loss fell to 0.002 within a few steps).

Generation quality: perplexity of the held-out texts before and after, with the adapter on as the
generator would have it (GEMEmbedder.generation), in generation_quality.json. `validate` scores the
`val_examples` held out of training: NTP and CL, with a fixed generator seed.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from embedders.adapters import additive_mask, gem_allowed, positions
from embedders.gem import GEMEmbedder
from unified_rag.batching import pad

from .config import GEMTrainConfig, lora_options
from .contrastive import ContrastiveStage
from .data import read_pairs, read_texts, subsample
from .distributed import gather_rows
from .losses import info_nce, token_ce
from .method import Method
from .run import run_method


class GEMMethod(Method):
    name = "gem"

    def __init__(self, backbone, cfg: GEMTrainConfig):
        super().__init__(GEMEmbedder(backbone, num_special_tokens=cfg.num_special_tokens, **lora_options(cfg)))
        self.cfg = cfg
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(20.0), device=backbone.device))
        self.supervised = ContrastiveStage(self.emb, cfg) if cfg.pairs else None

    def bottleneck_batch(self, texts: list[str], gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Rows of prefix | k specials | suffix (prob 1 - p_ntp) or plain text, right-padded, with the GEM mask."""
        tok, k = self.backbone.tokenizer, self.emb.n_special
        seqs, starts, ks = [], [], []
        for ids in tok(texts, add_special_tokens=False)["input_ids"]:
            ids = ids[: self.cfg.max_length]
            if len(ids) >= 2 and torch.rand((), generator=gen).item() >= self.cfg.p_ntp:
                p = int(torch.randint(1, len(ids), (), generator=gen))  # prefix and suffix both non-empty
                seqs.append((ids[:p], ids[p:]))
                starts.append(p)
                ks.append(k)
            else:
                seqs.append((ids, []))
                starts.append(len(ids))
                ks.append(0)
        input_ids, am = pad([a + [tok.pad_token_id] * kk + b for (a, b), kk in zip(seqs, ks)], tok.pad_token_id)
        special = torch.zeros(input_ids.shape, dtype=torch.bool)
        for i, ((a, b), kk) in enumerate(zip(seqs, ks)):
            special[i, len(a):len(a) + kk] = True
        dev = self.backbone.device
        return dict(input_ids=input_ids.to(dev), attention_mask=am.to(dev), special_mask=special.to(dev),
                    start=torch.tensor(starts, device=dev), k=torch.tensor(ks, device=dev))

    def ntp_loss(self, texts, gen):
        b = self.bottleneck_batch(texts, gen)
        embeds = self.model.get_input_embeddings()(b["input_ids"])
        which = (b["special_mask"].long().cumsum(-1) - 1).clamp(min=0)  # the j-th special of its row gets row j
        rows = self.emb.special_embeddings.to(embeds.dtype)[which.clamp(max=self.emb.n_special - 1)]
        embeds = torch.where(b["special_mask"].unsqueeze(-1), rows, embeds)
        mask = additive_mask(gem_allowed(b["attention_mask"], b["start"], b["k"]), embeds.dtype)
        with self.emb.adapter_active():
            logits = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(b["attention_mask"]),
                                use_cache=False).logits
        target_ok = b["attention_mask"][:, 1:].bool() & ~b["special_mask"][:, 1:]  # specials are never targets
        return token_ce(logits[:, :-1], b["input_ids"][:, 1:].masked_fill(~target_ok, -100))

    def contrastive_loss(self, texts, gen):
        e = self.emb
        items = e.tokenize(texts, e.config.document_instruction)
        dropped = []
        for ids, n_head, n_text in items:  # prefix dropout: the positive loses random text tokens
            body = ids[n_head:n_head + n_text]
            keep = [t for t in body if torch.rand((), generator=gen).item() >= self.cfg.prefix_dropout] or body[:1]
            dropped.append((ids[:n_head] + keep + ids[n_head + n_text:], n_head, len(keep)))
        a, p = e.embed_batch(e.collate(items)), e.embed_batch(e.collate(dropped))
        a, p = gather_rows(a), gather_rows(p)  # several processes: every process's texts are negatives
        return info_nce(a, p, self.logit_scale.clamp(0, math.log(100.0)).exp())

    def forward(self, examples, gen, step):
        texts = [x[2] if self.supervised else x[1] for x in examples]  # NTP reads the passages of pairs
        ntp = self.ntp_loss(texts, gen)
        if step < self.cfg.cl_start:
            return ntp, {"ntp": ntp.item()}
        if self.supervised is not None:
            cl, parts = self.supervised(self.emb, examples)
        else:
            cl, parts = self.contrastive_loss(texts, gen), {"scale": self.logit_scale.exp().item()}
        loss = (1 - self.cfg.alpha) * ntp + self.cfg.alpha * cl
        return loss, {"ntp": ntp.item(), "cl": cl.item(), **parts}

    def validate(self, examples):
        """Held-out NTP and CL, in training-sized batches (CL's negatives are the rest of a batch), with
        a fixed seed for the insert positions and the prefix dropout."""
        gen, bs = torch.Generator().manual_seed(0), self.cfg.batch_size
        sums = {"ntp": 0.0, "cl": 0.0}
        for i in range(0, len(examples), bs):
            batch = examples[i:i + bs]
            texts = [x[2] if self.supervised else x[1] for x in batch]
            sums["ntp"] += self.ntp_loss(texts, gen).item() * len(texts)
            cl = self.supervised(self.emb, batch)[0] if self.supervised else self.contrastive_loss(texts, gen)
            sums["cl"] += cl.item() * len(texts)
        return {k: v / len(examples) for k, v in sums.items()}


@torch.inference_mode()
def perplexity(backbone, texts: list[str], max_length: int = 256) -> float:
    """Perplexity of the shared model as the caller has it switched (GEM: inside `emb.generation()`)."""
    tok, total, n = backbone.tokenizer, 0.0, 0
    for t in texts:
        ids = torch.tensor([tok(t, add_special_tokens=False)["input_ids"][:max_length]], device=backbone.device)
        if ids.shape[1] < 2:
            continue
        logits = backbone.model(input_ids=ids, use_cache=False).logits
        total += token_ce(logits[:, :-1], ids[:, 1:]).item() * (ids.shape[1] - 1)
        n += ids.shape[1] - 1
    return math.exp(total / max(n, 1))


def run(cfg: GEMTrainConfig, out: str | os.PathLike) -> Path:
    rows = subsample(read_pairs(cfg.pairs) if cfg.pairs else read_texts(cfg.data), cfg.max_examples, cfg.seed)
    held, rows = [r[2] if cfg.pairs else r[1] for r in rows[: cfg.heldout]], rows[cfg.heldout:]
    report = {}

    def before(method, out):
        with method.emb.generation():
            report["perplexity_before"] = perplexity(method.backbone, held)

    def after(method, out):
        with method.emb.generation():
            report["perplexity_after"] = perplexity(method.backbone, held)
        report["generate_with_adapter"] = method.emb.config.generate_with_adapter
        report["heldout_texts"] = len(held)
        (Path(out) / "generation_quality.json").write_text(json.dumps(report, indent=2) + "\n")

    return run_method(cfg, out, "gem", rows, lambda b: GEMMethod(b, cfg), before=before, after=after)
