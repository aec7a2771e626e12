"""Answer trainer: RAG instruction tuning of the generator's own LoRA adapter (unified_rag.answer_adapter).

Each example is a question and k numbered sources (k drawn from [min_sources, max_sources]) laid out by
`Generator.rag_prompt`, the exact prompt `answer()` builds. The gold paragraph sits at a random
position; the other sources hold none of the gold answers: same-article paragraphs (hard distractors)
and the question's BM25 neighbours in the training pool, through the library's own sparse index. The
target is the data set's short answer and its marker, `Saint Bernadette Soubirous [2].`, then EOS.
A share of questions (`decline_share`, and every SQuAD 2.0 unanswerable one, whose own paragraph lacks
the answer) keeps no gold source, and its target is the adapter's decline sentence. The loss is on
target tokens only; no text comes from a model. Held-out: whole articles, chosen by a hash of the
title (`is_heldout`), never trained on; `val_examples` of them are scored at every checkpoint, and
`bench rag-qa --set rc-heldout` answers them.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from unified_rag.answer_adapter import AnswerAdapter
from unified_rag.errors import InputError
from unified_rag.batching import pad
from unified_rag.generator import Generator
from unified_rag.io import text_hash
from unified_rag.sparse import SparseIndex
from unified_rag.types import Hit

from .config import AnswerTrainConfig
from .losses import token_ce
from .method import Method
from .run import run_method

RC_FILES = ("squad11-train.jsonl.gz", "qed-nq-train.jsonl.gz", "squad2-train-first10articles.jsonl.gz")


def is_heldout(title: str, every: int = 50) -> bool:
    """Whether an article is in the held-out slice: a stable hash of its title, so every run agrees."""
    return int(text_hash(title, 8), 16) % every == 0


def normalize(s: str) -> str:
    from benchmarks.rag_qa import normalize_answer  # SQuAD's normalisation: one copy, the benchmark's

    return normalize_answer(s)


def default_data() -> list[Path]:
    from benchmarks.data import DATA

    return [DATA / "rc-train" / f for f in RC_FILES]


def read_rc(paths) -> list[dict]:
    """Reading-comprehension rows (question, context, answers, title, is_impossible). SQuAD 2.0 rows that
    repeat a SQuAD v1.1 question are dropped: only its unanswerable ones are new."""
    from benchmarks.data import read_jsonl

    rows, seen = [], set()
    for p in paths:
        for r in read_jsonl(p):
            key = (r["context"], r["question"])
            if key in seen or not r.get("question", "").strip() or not r.get("context", "").strip():
                continue
            if not r.get("is_impossible") and not any(a.strip() for a in r.get("answers", [])):
                continue
            seen.add(key)
            rows.append(r)
    if not rows:
        raise InputError(f"no reading-comprehension rows in {[str(p) for p in paths]}")
    return rows


class Pool:
    """Every distinct paragraph of the rows, by article, with BM25 over all of them."""

    def __init__(self, rows: list[dict]):
        self.texts, self.title, ids = [], [], {}
        self.by_article: dict[str, list[int]] = {}
        for r in rows:
            if r["context"] not in ids:
                ids[r["context"]] = len(self.texts)
                self.texts.append(r["context"])
                self.title.append(r["title"])
                self.by_article.setdefault(r["title"], []).append(ids[r["context"]])
        self.id_of = ids
        self.bm25 = SparseIndex()
        self.bm25.build(list(range(len(self.texts))), self.texts)
        self.norm = [None] * len(self.texts)  # normalised texts, filled on demand

    def holds(self, i: int, golds: list[str]) -> bool:
        """Whether paragraph i holds any of `golds`, which are already normalised."""
        if self.norm[i] is None:
            self.norm[i] = normalize(self.texts[i])
        return any(g and g in self.norm[i] for g in golds)


def make_example(r: dict, pool: Pool, gen: Generator, cfg: AnswerTrainConfig, rng: random.Random) -> dict:
    """One training example: prompt ids, target ids, and what it holds."""
    golds = [a for a in r.get("answers", []) if a.strip()]
    gold = pool.id_of[r["context"]]
    impossible = bool(r.get("is_impossible"))
    answerable = not impossible and rng.random() >= cfg.decline_share
    k = rng.randint(cfg.min_sources, cfg.max_sources)
    side = is_heldout(r["title"], cfg.heldout_every)

    normalized = [normalize(a) for a in golds]  # once per question, not once per candidate paragraph

    def usable(i: int) -> bool:  # an answer-free paragraph from the same side of the split
        return i != gold and is_heldout(pool.title[i], cfg.heldout_every) == side and not pool.holds(i, normalized)

    same = [i for i in pool.by_article[r["title"]] if usable(i)]
    near = [int(i) for i in pool.bm25.search(r["question"], cfg.bm25_depth)[0] if usable(int(i))]
    rng.shuffle(same)
    picked: list[int] = [gold] if impossible else []  # an unanswerable question's own paragraph lacks the answer
    first, second = (near, same) if cfg.distractor_first == "bm25" else (same, near)
    for pair in zip(first + [-1] * len(second), second + [-1] * len(first)):  # alternate the two kinds
        for i in pair:
            if i >= 0 and i not in picked and len(picked) < k - answerable:
                picked.append(i)
    rng.shuffle(picked)
    if answerable:
        picked.insert(rng.randint(0, len(picked)), gold)
    tok = gen.backbone.tokenizer
    while True:
        hits = [Hit(rank=n + 1, score=0.0, text=pool.texts[i], doc_id=str(i), chunk_id=-1) for n, i in enumerate(picked)]
        ids, used = gen.rag_prompt(r["question"], hits, cfg.max_new_tokens)
        at = [n + 1 for n, h in enumerate(used) if answerable and int(h.doc_id) == gold]
        target = f"{golds[0].strip().rstrip('.')} [{at[0]}]." if at else cfg.decline_text
        target_ids = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if len(ids) + len(target_ids) <= cfg.max_length or len(picked) <= 1:
            return dict(prompt=ids, target=target_ids, answerable=bool(at), k=len(used))
        drop = next(j for j, i in enumerate(picked) if i != gold)  # too long: one distractor fewer
        picked.pop(drop)


def example_rng(r: dict, seed: int) -> random.Random:
    """The same row always makes the same example (sources, position, decline), so a resume replays it."""
    return random.Random(f"{seed}-{r['id']}")


class AnswerMethod(Method):
    name = "answer"

    def __init__(self, backbone, cfg: AnswerTrainConfig, pool: Pool):
        super().__init__(AnswerAdapter(backbone, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                       lora_dropout=cfg.lora_dropout, decline_text=cfg.decline_text,
                                       lora_layers=cfg.lora_layers, init_seed=cfg.seed))
        self.cfg, self.pool = cfg, pool
        self.gen = Generator(backbone)  # only its prompt layout: the exact one answer() builds

    def example(self, r: dict) -> dict:
        return make_example(r, self.pool, self.gen, self.cfg, example_rng(r, self.cfg.seed))

    def target_logits(self, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        """Logits at the positions that predict target tokens only (the LM head over the whole prompt
        would be a fifth of the compute for nothing), and their labels."""
        examples = [self.example(r) for r in rows]
        dev = self.backbone.device
        ids, mask = pad([x["prompt"] + x["target"] for x in examples], self.backbone.tokenizer.pad_token_id, device=dev)
        rows_i, cols = [], []
        for b, x in enumerate(examples):
            p = len(x["prompt"])
            rows_i += [b] * len(x["target"])
            cols += range(p - 1, p - 1 + len(x["target"]))  # position t predicts token t + 1
        rows_t, cols_t = torch.tensor(rows_i, device=dev), torch.tensor(cols, device=dev)
        with self.emb.active():
            states = self.backbone.hidden_states(input_ids=ids, attention_mask=mask)
        logits = self.model.get_output_embeddings()(states[rows_t, cols_t])
        return logits, ids[rows_t, cols_t + 1], examples

    def forward(self, rows, gen, step):
        logits, labels, examples = self.target_logits(rows)
        return token_ce(logits[None], labels[None]), {"tokens": sum(len(x["prompt"]) for x in examples) / len(examples)}

    def validate(self, rows):
        """Target NLL per token, and how often the first target token is the greedy pick: the answer-or-
        decline decision, and the answer's first word."""
        nll, n, first_ok = 0.0, 0, 0
        for i in range(0, len(rows), self.cfg.batch_size):
            logits, labels, examples = self.target_logits(rows[i:i + self.cfg.batch_size])
            nll += torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
            n += len(labels)
            starts = torch.tensor([0] + [len(x["target"]) for x in examples]).cumsum(0)[:-1]
            first_ok += int((logits[starts].argmax(-1) == labels[starts]).sum())
        return {"nll": nll / max(n, 1), "first_token_acc": first_ok / len(rows)}

    def save_output(self, out: Path) -> None:
        self.emb.save_pretrained(out, dtype=torch.bfloat16)  # the shipped form: half the bytes


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, cfg: AnswerTrainConfig) -> Path:
    """A run's checkpoint (checkpoints/step-N) as an answer adapter dir, tensors in bf16: what ships,
    and what `init_from` continues from with a fresh optimizer."""
    from safetensors.torch import load_file, save

    from unified_rag.answer_adapter import CONFIG_NAME, WEIGHTS_NAME, AnswerAdapterConfig
    from unified_rag.io import atomic_write_bytes, atomic_write_json

    state = load_file(Path(checkpoint) / "trainable.safetensors")
    config = AnswerAdapterConfig(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 lora_layers=cfg.lora_layers, init_seed=cfg.seed, decline_text=cfg.decline_text)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / WEIGHTS_NAME, save({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}))
    atomic_write_json(out / CONFIG_NAME, config.model_dump())
    return out


def heldout_half(title: str) -> str:
    """Held-out articles are split once more, by another hash: "calibration" (the decline bias is fitted
    there) and "report" (bench rag-qa --set rc-heldout answers those), so no figure is scored where a
    setting was chosen."""
    return "calibration" if int(text_hash(f"{title}#calibration", 8), 16) % 2 else "report"


@torch.inference_mode()
def decline_margins(adapter: AnswerAdapter, rows: list[dict], pool: Pool, cfg: AnswerTrainConfig) -> list[dict]:
    """For each row, its example with the gold source and without it: the first answer step's logit of
    the decline sentence's first token minus the best other token's, with the adapter on. Greedy
    decoding declines exactly where margin + decline_bias > 0 (the adapter runs without a repetition
    penalty, so the first step sees the raw logits)."""
    gen = Generator(adapter.backbone, adapter=adapter)
    out = []
    for r in tqdm(rows, desc="decline margins", unit="question"):
        for share, want in ((0.0, True), (0.999, False)):
            x = make_example(r, pool, gen, cfg.model_copy(update={"decline_share": share}), example_rng(r, cfg.seed + 1))
            if x["answerable"] == want:
                out.append(dict(answerable=want, margin=gen.decline_margin(x["prompt"])[0]))
    return out


@torch.inference_mode()
def pipeline_margins(rag, qa, n_rows: int, seed: int, k: int = 5, max_new_tokens: int = 32) -> tuple[list[dict], dict]:
    """Margins on what `rag.answer(question, k)` reads: its default retrieval (hybrid) and relevance
    cut over `qa`'s whole corpus, for n_rows sampled questions, then for n_rows // 3 more after their
    gold paragraphs are deleted; the joint prompt's margin, or with per-source reading the chosen
    source's (the lowest). A question is answerable when a source holds the gold paragraph or a gold
    answer (as `bench rag-qa` counts false declines), answer-free otherwise; the relevance cut's own
    declines (no source left) never reach the model and are only counted. `rag` must be empty and
    carry the adapter as its generator's."""
    from benchmarks.rag_qa import draw_questions, holds_answer
    from unified_rag.retriever import _UNSET, DEFAULT_RETRIEVAL

    if len(rag):
        raise InputError("pipeline calibration indexes its corpus itself: pass an empty UnifiedRAG")
    gen = rag.generator
    sample, gone, removed = draw_questions(qa, n_rows, n_rows // 3, seed)
    rag.add_documents(qa.documents())
    out, cut = [], 0

    def ask(questions: list[str], desc: str) -> None:
        nonlocal cut
        for q in tqdm(questions, desc=desc, unit="question"):
            hits, _, _, prefix = rag._relevant(qa.questions[q], k, DEFAULT_RETRIEVAL, _UNSET)
            if not hits:
                cut += 1
                continue
            read = gen.read(qa.questions[q], hits, max_new_tokens, prefix)
            holds = any(h.doc_id == qa.gold[q] or holds_answer(h.text, qa.answers[q]) for h in read.used)
            margin = read.margin if read.margin is not None else gen.decline_margin(read.ids)[0]
            out.append(dict(answerable=holds, margin=margin))

    ask(sample, "decline margins (pipeline)")
    rag.delete(removed)
    ask(gone, "decline margins (gold deleted)")
    return out, dict(paragraphs=len(qa.corpus), asked=len(sample) + len(gone), gold_deleted=len(gone), cut_declined=cut)


def fit_decline_bias(margins: list[dict], max_false_decline: float | None = None) -> tuple[float, dict]:
    """The bias that minimises false declines (answerable) plus missed declines (answer-free), the two
    error kinds weighted alike; or, with `max_false_decline`, the fewest missed declines among the
    biases whose false-decline rate stays within it. Ties go to the bias nearest 0. Returns it and
    both error rates at it."""
    import numpy as np

    ans = np.array([m["margin"] for m in margins if m["answerable"]])
    free = np.array([m["margin"] for m in margins if not m["answerable"]])
    if not len(ans) or not len(free):
        raise InputError("calibrating the decline bias needs answerable and answer-free examples")
    edges = np.sort(np.concatenate([ans, free, [0.0]]))
    candidates = np.concatenate([[-edges[-1] - 1.0], -(edges[:-1] + edges[1:]) / 2, [-edges[0] + 1.0], [0.0]])

    def errors(b):
        return float(np.mean(ans + b > 0)), float(np.mean(free + b <= 0))

    if max_false_decline is None:
        best = min(candidates, key=lambda b: (sum(errors(b)), abs(b)))
    else:
        allowed = [b for b in candidates if errors(b)[0] <= max_false_decline] or [min(candidates)]
        best = min(allowed, key=lambda b: (errors(b)[1], abs(b)))
    false_decline, missed = errors(best)
    base = errors(0.0)
    return float(best), dict(false_decline=false_decline, missed_decline=missed, false_decline_at_0=base[0],
                             missed_decline_at_0=base[1], answerable=len(ans), answer_free=len(free))


def calibrate(adapter_dir: str | os.PathLike, cfg: AnswerTrainConfig, n_rows: int = 300,
              backbone=None, max_false_decline: float | None = 0.15, sources: int | None = 5,
              pipeline: bool = False, reading: str | None = None) -> dict:
    """Fit the adapter's decline bias on the calibration half of the held-out articles and write it into
    its answer_config.json (atomically), with the figures and every margin in calibration.json beside
    it. Default rule: the fewest missed declines while false declines stay within 15% (None: the two
    error kinds weighted alike).

    `sources`: every prompt carries exactly this many sources, as `answer(k=5)` asks (the margins shift
    with k: a bias fitted on a 1-to-5 mix declined 23% of answerable squad-rag questions at k=5 where it
    targeted 15%); None keeps the config's [min_sources, max_sources] mix.

    `pipeline`: fit on what the pipeline really hands the model instead of built examples: the
    default retrieval's `sources` best paragraphs of the calibration half, gold present and deleted
    (`pipeline_margins`). Built examples hold BM25 and same-article distractors, the pipeline its hybrid
    neighbours (for the shipped adapter both gave nearly the same bias: docs/results.md). `reading`: set the adapter's reading ("joint" or "per-source", which only the
    pipeline prompts can fit) and fit the bias for it; None keeps the adapter's own."""
    import json

    from unified_rag.answer_adapter import CONFIG_NAME, READING_MODES
    from unified_rag.io import atomic_write_json

    from .data import subsample
    from .run import load_backbone

    config = json.loads((Path(adapter_dir) / CONFIG_NAME).read_text())
    reading = reading or config.get("reading", "joint")
    if reading not in READING_MODES:
        raise InputError(f"reading must be {' or '.join(READING_MODES)}, got {reading!r}")
    if reading == "per-source" and not pipeline:
        raise InputError("per-source reading is fitted on the pipeline's own prompts: add pipeline=True (--pipeline)")
    if pipeline:
        from benchmarks.rag_qa import rc_heldout_set
        from unified_rag import UnifiedRAG

        if sources is None:
            raise InputError("pipeline calibration retrieves a fixed k: --sources (answer()'s k) must be 1 or more")
        qa = rc_heldout_set(half="calibration", cfg=cfg)
        rag = UnifiedRAG.from_pretrained(backbone or cfg.model, generator_adapter=adapter_dir)
        rag.generator.adapter.config.reading = reading
        margins, drawn = pipeline_margins(rag, qa, n_rows, cfg.seed + 2, k=sources)
        rows_note = (f"rc-train held-out articles, calibration half: the default pipeline's sources (hybrid, k={sources}, "
                     f"relevance cut {rag.min_relevance}) over its {len(qa.corpus)} paragraphs, gold present and deleted")
    else:
        rows, _, held = split_rows(cfg)
        held = [r for r in held if heldout_half(r["title"]) == "calibration"]
        sample = subsample(held, n_rows, cfg.seed + 2)
        drawn = dict(questions=len(sample))
        if sources is not None:
            cfg = cfg.model_copy(update=dict(min_sources=sources, max_sources=sources))
        adapter = AnswerAdapter.from_pretrained(adapter_dir, backbone=backbone or load_backbone(cfg))
        margins = decline_margins(adapter, sample, Pool(rows), cfg)
        rows_note = "rc-train held-out articles, calibration half (trainers/answer.py heldout_half)"
    bias, figures = fit_decline_bias(margins, max_false_decline)
    bias = round(bias, 4) + 0.0  # + 0.0: never a "-0.0" in the config
    config.update(decline_bias=bias, reading=reading)
    atomic_write_json(Path(adapter_dir) / CONFIG_NAME, config)
    report = dict(decline_bias=bias, **drawn, max_false_decline=max_false_decline,
                  sources=[sources] * 2 if pipeline else [cfg.min_sources, cfg.max_sources], **figures,
                  rows=rows_note, prompts="pipeline" if pipeline else "built", reading=reading,
                  margins=[dict(answerable=m["answerable"], margin=round(m["margin"], 4)) for m in margins])
    atomic_write_json(Path(adapter_dir) / "calibration.json", report)
    return report


def split_rows(cfg: AnswerTrainConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """(every row, the training rows, the held-out rows) of cfg.data."""
    rows = read_rc(cfg.data or default_data())
    train = [r for r in rows if not is_heldout(r["title"], cfg.heldout_every)]
    return rows, train, [r for r in rows if is_heldout(r["title"], cfg.heldout_every)]


def run(cfg: AnswerTrainConfig, out: str | os.PathLike) -> Path:
    from .data import subsample

    if cfg.min_sources > cfg.max_sources:
        raise InputError(f"min_sources={cfg.min_sources} is above max_sources={cfg.max_sources}")
    rows, train_rows, held = split_rows(cfg)
    # Every unanswerable question is kept (they are few, and the only real ones), beside max_examples answerable.
    impossible = [r for r in train_rows if r.get("is_impossible")]
    answerable = subsample([r for r in train_rows if not r.get("is_impossible")], cfg.max_examples, cfg.seed)
    chosen = subsample(impossible + answerable, None, cfg.seed)
    # The loop holds out the last val_examples rows: here they are whole held-out articles' questions.
    val = subsample(held, cfg.val_examples, cfg.seed + 1) if cfg.val_examples else []
    pool = Pool(rows)
    return run_method(cfg, out, "answer", chosen + val, lambda b: AnswerMethod(b, cfg, pool))
