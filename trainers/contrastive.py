"""The supervised contrastive stage on real (query, positive[, negative]) pairs, written once.

LLM2Vec's supervised stage, GEM's contrastive term with real positives and BiRecon's stage two all
train this way. Queries carry the embedder's query instruction, passages its document instruction
(the papers' asymmetric prompts), and

    L = InfoNCE(q, [p ; n], scale = 1/temperature)  +  λ · (1 − cos(W · student(x), teacher(x)))

- InfoNCE uses in-batch negatives: every other row's positive, plus every hard negative in the
  batch. A column whose text equals the row's own positive is dropped from that row's negatives, so
  a duplicate positive (two questions on one passage) is never pushed away from itself.
- Hard negatives come from the file (`negative`), or are mined once from the pair pool by BM25: the
  highest-ranked other positive for each query (`hard_negatives="bm25"`), optionally only among
  those the teacher puts clearly below the query's own positive (`negative_margin`). Mining by the current
  model is not offered: it would change as the model trains and break exact resume.
- The temperature is fixed, or learned (`learn_temperature`, clamped to [0.01, 1]).
- On several processes the negatives are every process's rows (trainers/distributed.py): the loss
  and its gradient are those of one process with the global batch, not of each process's slice.
- Distillation (λ = `distill_weight` > 0) pulls a trained linear map W of the student's embedding
  of each *input* text, query and passage alike, towards the offline teacher's embedding of that
  same text. LLM2Vec-Gen aligns instead to teacher(the backbone's own *answer*), which makes the
  student embed what it would say; that target is capped by the quality of the 135M model's answers
  (docs/training.md). teacher(input) has no such cap. It only asks the student to keep the teacher's
  geometry of the text itself. W is the trainer's: it is not part of the shipped embedder.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

from unified_rag.io import atomic_write_json

from .distributed import active, gather_list, gather_rows
from .config import ContrastiveOptions
from .losses import cosine_distill, info_nce


def mine_bm25_negatives(rows: list[tuple[str, str, str, str]], margin: float | None = None, depth: int = 8,
                        cache: Path | None = None, teacher: str | None = None) -> list[tuple[str, str, str, str]]:
    """Each pair gets the positive of another pair that BM25 ranks highest for its query (and whose
    text differs from its own positive).

    With `margin`, a candidate is kept only when the teacher's cosine to the query is below margin x
    its cosine to the query's own positive (positive-aware mining, NV-Retriever's TopK-PercPos, 0.95
    there); the first of BM25's `depth` best that passes is the negative, and a row with none gets no
    negative. `teacher` is the run's distillation teacher (None: the offline all-MiniLM-L6-v2).
    Unfiltered, about a fifth of BM25's picks on the shipped pairs are ones the teacher ranks at or
    above the positive: likely false negatives (docs/training.md).

    Deterministic, and with `cache` (a JSON file) mined once: a resumed run reads the same choices
    back instead of depending on the teacher's last bits on another machine."""
    passages = sorted({r[2] for r in rows})
    setting = [margin, depth] + ([teacher] if teacher is not None else [])  # the default keeps older caches valid
    key = hashlib.sha256(json.dumps(setting + [[[r[1], r[2]] for r in rows]]).encode()).hexdigest()
    saved = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    if saved.get("key") == key:
        picks = saved["negatives"]
    else:
        picks = _bm25_picks(rows, passages, margin, depth, teacher)
        if cache is not None:
            atomic_write_json(cache, {"key": key, "margin": margin, "depth": depth, "negatives": picks})
    return [(r[0], r[1], r[2], passages[j] if j >= 0 else "") for r, j in zip(rows, picks)]


def _bm25_picks(rows, passages: list[str], margin: float | None, depth: int, teacher: str | None) -> list[int]:
    """For each row, the index in `passages` of its negative, or -1 for none."""
    import bm25s

    retriever = bm25s.BM25(k1=0.9, b=0.4)
    retriever.index(bm25s.tokenize(passages, stopwords="en", show_progress=False), show_progress=False)
    hits, _ = retriever.retrieve(bm25s.tokenize([r[1] for r in rows], stopwords="en", show_progress=False),
                                 k=min(depth, len(passages)), show_progress=False)
    own = {t: i for i, t in enumerate(passages)}
    candidates = [[j for j in ranked if j != own[r[2]]] for r, ranked in zip(rows, hits.tolist())]
    if margin is None:
        return [cand[0] if cand else -1 for cand in candidates]
    teacher = Teacher(teacher)
    P = teacher(passages, progress="teacher: mined-negative filter")
    Q = teacher([r[1] for r in rows], progress="teacher: queries")
    picks = []
    for i, (r, cand) in enumerate(zip(rows, candidates)):
        limit = margin * float(Q[i] @ P[own[r[2]]])
        sims = (P[cand] @ Q[i]).tolist() if cand else []
        picks.append(next((j for j, sim in zip(cand, sims) if sim < limit), -1))
    return picks


class Teacher:
    """The offline teacher, frozen, on the CPU: a separate small model used only while training."""

    def __init__(self, name: str | None = None):
        from unified_rag.backbone import default_teacher_path
        from unified_rag.errors import require

        SentenceTransformer = require("sentence_transformers", "train", "the distillation teacher").SentenceTransformer

        self.model = SentenceTransformer(name or str(default_teacher_path()), device="cpu", trust_remote_code=False)
        self.dim = self.model.get_embedding_dimension()

    @torch.no_grad()
    def __call__(self, texts: list[str], progress: str | None = None) -> torch.Tensor:
        from tqdm.auto import tqdm

        out = []
        with torch.autocast("cpu", enabled=False), \
                tqdm(total=len(texts), desc=progress, disable=progress is None, unit="text") as bar:
            # autocast off: the teacher's own precision, whatever the student's
            for i in range(0, len(texts), 1024):
                out.append(self.model.encode(texts[i:i + 1024], convert_to_tensor=True, normalize_embeddings=True,
                                             batch_size=64, show_progress_bar=False).float())
                bar.update(len(out[-1]))
        return torch.cat(out) if out else torch.empty(0, self.dim)


class ContrastiveStage(torch.nn.Module):
    """The loss of one supervised step. A submodule of the Method, so its temperature and distillation
    map are trained and checkpointed with the rest."""

    def __init__(self, embedder, opts: ContrastiveOptions):
        super().__init__()
        self.opts = opts
        log_scale = torch.tensor(math.log(1.0 / opts.temperature))
        if opts.learn_temperature:
            self.log_scale = torch.nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.teacher = Teacher(opts.teacher) if opts.distill_weight > 0 else None
        if self.teacher is not None:
            self.distill_map = torch.nn.Linear(embedder.dim, self.teacher.dim, bias=False)

    def embed(self, emb, texts: list[str], instruction: str | None, max_length: int) -> torch.Tensor:
        return emb.embed_batch(emb.collate(emb.tokenize(texts, instruction, max_length=max_length, warn=False)))

    def forward(self, emb, examples: list[tuple[str, str, str, str]]) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.opts
        queries, positives = [x[1] for x in examples], [x[2] for x in examples]
        negatives = [x[3] for x in examples if x[3]] if o.hard_negatives != "none" else []
        passages = positives + negatives
        q = self.embed(emb, queries, emb.config.query_instruction, o.query_max_length)
        p = self.embed(emb, passages, emb.config.document_instruction, o.passage_max_length)
        distill = None
        if self.teacher is not None:  # per text: this process's own rows
            student = torch.cat([q, p[: len(positives)]])
            target = self.teacher(queries + positives).to(q.device)
            distill = cosine_distill(self.distill_map(student.float()), target)
        if active():  # several processes: every process's queries, positives, then negatives, in rank order
            n = len(positives)
            q, p = gather_rows(q), torch.cat([gather_rows(p[:n]), gather_rows(p[n:])])
            positives = gather_list(positives)
            passages = positives + gather_list(negatives)
        same = torch.tensor([[i != j and passages[j] == positives[i] for j in range(len(passages))]
                             for i in range(len(positives))], device=q.device)
        scale = self.log_scale.clamp(0.0, math.log(100.0)).exp()
        nce = info_nce(q, p, scale, exclude=same)
        parts = {"nce": nce.item(), "scale": scale.item()}
        loss = nce
        if distill is not None:
            loss = loss + o.distill_weight * distill
            parts["distill"] = distill.item()
        return loss, parts

    def validate(self, emb, examples: list[tuple[str, str, str, str]], batch_size: int = 64) -> dict[str, float]:
        """Held-out pairs: each query against every held-out positive. nce, and recall@1 (acc)."""
        o = self.opts
        q = torch.cat([self.embed(emb, [x[1] for x in examples[i:i + batch_size]], emb.config.query_instruction,
                                  o.query_max_length) for i in range(0, len(examples), batch_size)])
        p = torch.cat([self.embed(emb, [x[2] for x in examples[i:i + batch_size]], emb.config.document_instruction,
                                  o.passage_max_length) for i in range(0, len(examples), batch_size)])
        positives = [x[2] for x in examples]
        same = torch.tensor([[i != j and positives[j] == positives[i] for j in range(len(p))]
                             for i in range(len(q))], device=q.device)
        scale = self.log_scale.clamp(0.0, math.log(100.0)).exp()
        sims = torch.nn.functional.normalize(q.float(), dim=-1) @ torch.nn.functional.normalize(p.float(), dim=-1).T
        acc = (sims.masked_fill(same, float("-inf")).argmax(-1) == torch.arange(len(q), device=q.device)).float().mean()
        return {"nce": info_nce(q, p, scale, exclude=same).item(), "acc": acc.item()}
